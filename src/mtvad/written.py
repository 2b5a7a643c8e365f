"""What vad wrote into a folder, so that a later run replaces only that and never a user's file.

Each folder a command writes its files into (`vad report --out`, a `vad detect` run folder, the folder of a
`vad eval --out` or `vad store show --out` file) gets a record, `.vad-written.json`: {relative path: sha256 of
the file as vad wrote it}. A command may replace an existing file only when the record names it with the hash
it still has; anything else there (a user's file, or vad's file changed since) is refused, naming it, before
the command writes anything. Deleting follows the same rule (`remove_written`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mtvad.errors import VadError
from mtvad.hashing import file_sha256

RECORD = ".vad-written.json"


class OutputError(VadError):
    """An output path holds a file that vad did not write (or that changed since): it is not replaced."""


def _record_path(folder: Path) -> Path:
    return folder / RECORD


def read_record(folder: str | Path) -> dict[str, str]:
    """{relative path: sha256} of the files vad wrote into `folder` ({} when none are recorded or the record is
    unreadable: then nothing there counts as vad's)."""
    try:
        doc = json.loads(_record_path(Path(folder)).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)}


def is_written(folder: str | Path, path: str | Path, record: dict[str, str] | None = None) -> bool:
    """Whether `path` (in `folder`) is a file vad wrote and nobody changed since."""
    folder, path = Path(folder), Path(path)
    record = read_record(folder) if record is None else record
    key = _key(folder, path)
    return path.is_file() and not path.is_symlink() and record.get(key) == file_sha256(path)


def check_replaceable(folder: str | Path, paths, what: str = "") -> None:
    """Refuse (OutputError naming the first) when any of `paths` exists and is not a file vad wrote into
    `folder`. `what`: the remedy's subject, e.g. "--out"."""
    folder = Path(folder)
    record = read_record(folder)
    for path in paths:
        path = Path(path)
        if (path.exists() or path.is_symlink()) and not is_written(folder, path, record):
            changed = _key(folder, path) in record
            raise OutputError(
                f"{path}: already exists and {'changed since vad wrote it' if changed else 'was not written by vad'}"
                f"; it is not replaced: choose another {what or 'output path'}, or move it away (nothing was written)")


def record_written(folder: str | Path, paths) -> None:
    """Add `paths` (files just written into `folder`) to the folder's record, atomically."""
    folder = Path(folder)
    record = read_record(folder)
    for path in paths:
        record[_key(folder, Path(path))] = file_sha256(path)
    _write_record(folder, record)


def remove_written(folder: str | Path, paths) -> list[Path]:
    """Delete those of `paths` that vad wrote into `folder` (and drop them from the record); any other file is
    kept. Returns the deleted paths."""
    folder = Path(folder)
    record = read_record(folder)
    removed = []
    for path in map(Path, paths):
        if is_written(folder, path, record):
            path.unlink()
            removed.append(path)
        record.pop(_key(folder, path), None)
    if removed:
        _write_record(folder, record)
    return removed


@contextmanager
def replacing(path: str | Path, folder: str | Path | None = None) -> Iterator[Path]:
    """Write `path` atomically and record it in `folder` (default: its own folder): yields a temporary path
    beside it to write, renamed into place on success, removed on failure. An existing file at `path` must be
    one vad wrote (`check_replaceable`)."""
    path = Path(path)
    folder = path.parent if folder is None else Path(folder)
    check_replaceable(folder, [path])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    record_written(folder, [path])


def write_text(path: str | Path, text: str, folder: str | Path | None = None) -> Path:
    """`text` into `path`, atomically and recorded (`replacing`)."""
    with replacing(path, folder) as tmp:
        tmp.write_text(text)
    return Path(path)


def _key(folder: Path, path: Path) -> str:
    return os.path.relpath(path, folder).replace(os.sep, "/")


def _write_record(folder: Path, record: dict[str, str]) -> None:
    target = _record_path(folder)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n")
    os.replace(tmp, target)
