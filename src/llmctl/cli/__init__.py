"""Typer commands only: each parses its options, calls one plain function and prints the result.

Modules here import nothing heavy at module level, so `llmctl --help` stays fast.
"""
