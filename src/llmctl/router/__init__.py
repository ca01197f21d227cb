"""The OpenAI-compatible router that runs in the llm-router image.

It imports only llmctl's leaf modules (config, catalog) and its own modules: the image needs no
cloud SDK, no Kubernetes client and no Typer.
"""
