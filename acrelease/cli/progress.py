"""Progress of long work on a terminal (rich), and nothing at all anywhere else.

Shown on stderr, only when stderr is a terminal and the command was not asked for ``--json``: a
pipe, a log file or a script sees exactly the lines it saw before, and ``--json`` stays one
document on stdout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from acrelease.cli.common import make_console


class PublishBar:
    """:class:`acrelease.catalog.store.PublishProgress` as a rich bar: files and bytes hashed and copied."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("[bold]Publishing[/] {task.fields[name]}"), BarColumn(),
                                 DownloadColumn(), TextColumn("{task.fields[files]}"), TimeRemainingColumn(),
                                 console=console, transient=True)
        self.task: TaskID | None = None
        self.files = 0
        self.done = 0

    def begin(self, files: int, size: int) -> None:
        self.files = files
        if files:
            self.progress.start()
            self.task = self.progress.add_task("publish", total=size, name="", files=f"0/{files} files")

    def placed(self, name: str, size: int) -> None:
        if self.task is not None:
            self.done += 1
            self.progress.update(self.task, advance=size, name=name.rsplit("/", 1)[-1],
                                 files=f"{self.done}/{self.files} files")

    def close(self) -> None:
        self.progress.stop()


@contextlib.contextmanager
def progress_bar(*, quiet: bool, console: Console | None = None) -> Iterator[PublishBar | None]:
    """A :class:`PublishBar` on a terminal, else ``None`` (no progress is reported at all)."""
    console = console or make_console(stderr=True)
    if quiet or not console.is_terminal:
        yield None
        return
    bar = PublishBar(console)
    try:
        yield bar
    finally:
        bar.close()
