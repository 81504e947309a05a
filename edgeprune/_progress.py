"""Progress display on stderr (rich), so stdout stays clean for --json."""

from __future__ import annotations

from contextlib import contextmanager
from typing import IO, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class Steps:
    """Named steps with a spinner, or a bar when the step knows its total; silent when disabled."""

    def __init__(self, enabled: bool = True, file: IO[str] | None = None):
        self.enabled = enabled
        self.console = Console(file=file) if file is not None else Console(stderr=True)

    @contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Callable[[int, int], None]]:
        """Yield `update(done, total)`; the step shows as finished when the block exits."""
        if not self.enabled:
            yield lambda done, total: None
            return
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task(description, total=total)

            def update(done: int, new_total: int) -> None:
                progress.update(task, completed=done, total=new_total)

            yield update
            progress.update(task, completed=progress.tasks[0].total or 1, total=progress.tasks[0].total or 1)

    def note(self, text: str) -> None:
        """A one-line message between steps."""
        if self.enabled:
            self.console.print(text)
