"""What the command modules share: the option types every command spells the same way, size parsing, the
progress bar (its description printed literally). Light: typer and rich only."""

from __future__ import annotations

from typing import Annotated

import typer
from mtvad.console import console

JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout, and nothing else there")]
ProgressFlag = Annotated[bool, typer.Option("--progress/--no-progress",
                                            help="progress bars on stderr")]


def parse_size(text: str, option: str, minimum: int = 1) -> tuple[int, int]:
    """'256' -> (256, 256); '240x360' -> (240, 360) as height x width. A malformed value is a usage error."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < minimum:
        raise typer.BadParameter(f"{text!r}: give N (square) or HEIGHTxWIDTH, each at least {minimum}",
                                 param_hint=option)
    return parts[0], parts[1]


def progress_bar(description: str, enabled: bool = True):
    """A transient progress bar on stderr, drawn only when enabled and stderr is a terminal:
    (context manager, update(done, total))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(description, markup=False), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console, transient=True, disable=not (enabled and console.is_terminal))
    task = bar.add_task(description, total=None)

    def update(done: int, total: int, *_) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update

