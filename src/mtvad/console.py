"""Shared command-line plumbing: the rich consoles, the exit codes, bad input reported as one line.

Exit codes of every `vad` command (docs/cli.md):

    0  success
    1  an error the user can fix (`EXIT_ERROR`): a missing or malformed file, store, setting; one `error:` line
    2  a usage error: an unknown option, a missing argument, a malformed value (typer/click's own message)
    3  a check ran and found what it looks for (`EXIT_FOUND`): `vad store verify` found damaged or missing
       chunks or uncomputed blocks, `vad store diff` found the stores not interchangeable

Text is printed literally: neither console reads rich markup, so a path such as `runs/[north]/x` or `a[/]b` is
shown as given, in errors, warnings, notes, tables and summaries alike. Styles come only from `Text` objects
(`styled`, `error`, `warn`), never from brackets inside a string.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from mtvad.errors import VadError
from mtvad.written import is_zarr_partial

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FOUND = 3

# markup=False: a '[' in user text (a path, a video id, a message) is never read as a style tag
console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)  # messages, notes, progress
F = TypeVar("F", bound=Callable)


def stdout() -> Console:
    """A console on stdout for results (tables, summaries), literal like `console`; made per command, so it
    takes the terminal width (COLUMNS) of the moment."""
    return Console(soft_wrap=True, markup=False, highlight=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Literal text with styled pieces: styled(("ok", "green"), ": 3 videos") (no markup is parsed)."""
    return Text.assemble(*parts)


def one_line(message: object) -> str:
    return " ".join(str(message).split())


def error(message: object) -> None:
    """`error: <message>` on stderr, on exactly one line, the message printed literally."""
    console.print(styled(("error:", "bold red"), " ", one_line(message)))


def warn(message: object, **_: Any) -> None:
    """`warning: <message>` on stderr, the message printed literally."""
    console.print(styled(("warning:", "yellow"), " ", str(message)))


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warnings.showwarning` for the command line: `warning: <message>`, not the library file and line."""
    warn(message)


def note(message: object) -> None:
    """`note: <message>` on stderr, the message printed literally."""
    console.print(f"note: {message}")


def os_error_message(exc: OSError) -> str:
    """`<path>: <reason>` of an OSError (a read-only folder, a file where a folder should be, a full disk)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    path = exc.filename if exc.filename is not None else exc.filename2
    if path is not None and is_zarr_partial(str(path)):  # Zarr's temporary file: name the store it writes into
        path, reason = _store_root(Path(path)), f"cannot write into the store ({reason})"
    if isinstance(exc, NotADirectoryError):
        reason += " (a part of this path is a file, where a folder is needed)"
    elif isinstance(exc, FileExistsError) and path is not None and os.path.isfile(path):
        reason += " (a file, where a folder is needed)"
    return f"{path}: {reason}" if path is not None else reason


def _store_root(path: Path) -> Path:
    """The store's root above a file of it: the outermost of the first run of folders holding a zarr.json."""
    root = None
    for parent in path.parents:
        if (parent / "zarr.json").is_file():
            root = parent
        elif root is not None:
            break
    return root or path.parent


def clean_errors(fn: F) -> F:
    """Report bad input as `error: <message>` and exit 1, no traceback: a VadError (bad path, file, store), or
    an OSError of the file system (`error: <path>: <reason>`, e.g. a read-only output folder)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VadError as exc:
            error(exc)
        except OSError as exc:
            error(os_error_message(exc))
        raise typer.Exit(EXIT_ERROR)

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
