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
        disable=not show,
    ) as bar:
        task = bar.add_task(description)
        try:
            yield lambda text: bar.update(task, description=text)
        finally:
            bar.stop()
