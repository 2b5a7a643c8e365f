"""Shared command-line plumbing: one rich console on stderr, the exit codes, bad input reported as one line.

Exit codes of every `vad` command (docs/cli.md):

    0  success
    1  an error the user can fix (`EXIT_ERROR`): a missing or malformed file, store, setting; one `error:` line
    2  a usage error: an unknown option, a missing argument, a malformed value (typer/click's own message)
    3  a check ran and found what it looks for (`EXIT_FOUND`): `vad store verify` found damaged or missing
       chunks or uncomputed blocks, `vad store diff` found the stores not interchangeable
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mtvad.errors import VadError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FOUND = 3

console = Console(stderr=True, soft_wrap=True)  # messages, notes, progress: never results
F = TypeVar("F", bound=Callable)


def clean_errors(fn: F) -> F:
    """Report a VadError (bad path, bad file, bad store) as `error: <message>` and exit 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VadError as exc:
            message = " ".join(str(exc).split())  # exactly one line, whatever the message holds
            console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """The `--json` output: one JSON document on stdout (nothing else goes there)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=_plain) + "\n")
    sys.stdout.flush()


def _plain(value: Any) -> Any:
    return sorted(value) if isinstance(value, (set, frozenset)) else str(value)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError
