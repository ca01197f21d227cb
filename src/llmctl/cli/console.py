"""Terminal output shared by the commands: stderr for people, stdout left to results."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console


def err_console() -> Console:
    return Console(stderr=True)


@contextmanager
def status_spinner(
    console: Console, description: str, show: bool = True
) -> Iterator[Callable[[str], None]]:
    """A spinner with the elapsed time; yields a function that replaces its description, for
    waits on a cloud or a pod that report their state as they go."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        # Only on a terminal: piped or captured stderr gets no spinner frames or blank lines.
        disable=not (show and console.is_terminal),
    ) as bar:
        task = bar.add_task(description)
        try:
            yield lambda text: bar.update(task, description=text)
        finally:
            bar.stop()


def confirm(question: str) -> None:
    """Ask before a change; return only on yes.

    No is exit 1 ("Aborted."); Ctrl-C is exit 130, as everywhere else in llmctl (click's own
    confirm turns Ctrl-C into exit 1). When stdin is closed or not a terminal there is nobody to
    answer, so it says to pass --yes instead of printing a bare "Aborted!".
    """
    import typer

    from llmctl.errors import ConfigError

    console = err_console()
    while True:
        console.print(f"{question} [y/N]: ", end="", highlight=False, markup=False)
        try:
            answer = input()
        except EOFError:
            console.print()
            raise ConfigError(
                f"{question!r} needs an answer and there is no one at the terminal to give it",
                hint="pass --yes to go ahead without asking",
            ) from None
        # KeyboardInterrupt propagates: typer turns it into exit 130.
        answer = answer.strip().lower()
        if answer in ("y", "yes"):
            return
        if answer in ("", "n", "no"):
            console.print("Aborted.")
            raise typer.Exit(1)
