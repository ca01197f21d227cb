"""The console script `llmctl`: the outermost frame, around everything else, imports included.

It imports only the standard library before it loads the commands, so that what can happen
outside a command ends as llmctl's conventions say (docs/cli.md) and never as a traceback:

- Ctrl-C while Python is still importing typer, rich and pydantic (about the first 0.2 s):
  exit 130, quietly, as Ctrl-C anywhere else;
- a second Ctrl-C while llmctl is already stopping (cleaning up after the first): SIGINT has
  its default action back by then, so it ends the process at once, quietly;
- stdout on a full disk outside a command (`llmctl --help > /dev/full`): one line, exit 1.
"""

from __future__ import annotations

import signal
import sys

INTERRUPTED = 130  # 128 + SIGINT, what every shell reports


def main() -> None:
    _on_first_sigint_only()
    code: int | str | None = 0
    try:
        from llmctl.cli.main import main as run

        run()
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        code = INTERRUPTED
    except OSError as exc:
        code = _write_failure(exc)
    sys.exit(code)


def _on_first_sigint_only() -> None:
    """The first Ctrl-C raises KeyboardInterrupt, as Python's own handler does, so commands
    clean up and exit 130; it also gives SIGINT back its default action, so a second Ctrl-C
    ends the process at once instead of interrupting that clean-up with a traceback."""

    def first(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        raise KeyboardInterrupt

    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, first)
    except ValueError:  # not the main thread (llmctl run from a test's worker thread)
        pass


def _write_failure(exc: OSError) -> int:
    """An OSError that escaped typer: help or an error box written to a full or closed output
    (commands' own errors are translated inside them, by cli/group.py)."""
    import errno
    import os

    # What is still buffered for stdout would fail again when Python flushes it at exit.
    sys.stdout = open(os.devnull, "w")  # lives until the process ends
    if exc.errno == errno.EPIPE:  # `llmctl --help | head -1`: the reader has what it wanted
        return 1
    try:
        sys.stderr.write(
            f"Error: cannot write the output: {exc.strerror or exc}\n"
            "Hint: free some space, or send the output somewhere else\n"
        )
    except OSError:
        pass  # stderr is gone too: the exit code is all that is left
    return 1
