"""Shared command-line plumbing: one rich console, and bad input reported as one line with exit code 1."""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import typer
from rich.console import Console

from mtvad.errors import VadError

console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable)


def clean_errors(fn: F) -> F:
    """Report a VadError (bad path, bad file, bad store) as `error: <message>` and exit 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VadError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError
