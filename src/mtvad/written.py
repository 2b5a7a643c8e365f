"""How vad writes files: atomically, recorded, and what an interrupted write leaves is cleaned by the next run.

Each folder a command writes its files into (`vad report --out`, a `vad detect` run folder, the folder of a
`vad eval --out` or `vad store show --out` file) gets a record, `.vad-written.json`: {relative path: sha256 of
the file as vad wrote it}. A command may replace an existing file only when the record names it with the hash
it still has; anything else there (a user's file, or vad's file changed since) is refused, naming it, before
the command writes anything. Deleting follows the same rule (`remove_written`).

Every file is written to a temporary name beside its target, `.NAME.tmp-PID` (a folder for a scores file), and
renamed into place; Zarr writes a store's chunks as `NAME.<uuid>.partial` first. A kill leaves those behind. The
next run of the command removes the ones in the folders it writes to (`remove_leftovers`, `remove_zarr_partials`)
when they are left over: owned by this user, untouched for STALE_AFTER_S, and their process (PID) gone. Another
live process's files are never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from mtvad.errors import VadError
from mtvad.hashing import file_sha256

RECORD = ".vad-written.json"
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)(\.[\w-]+)?")  # temp_path's names
ZARR_PARTIAL = re.compile(r".+\.[0-9a-f]{32}\.partial")  # zarr's LocalStore writes NAME.<uuid>.partial, renames it
# Untouched this long (and its process gone) a temporary file is left over: a writer touches its file while it
# writes, and the age keeps the file of a process of another host (a shared folder: its PID means nothing here).
STALE_AFTER_S = 10


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
    with _renamed_into_place(path) as tmp:
        yield tmp
    record_written(folder, [path])


def write_text(path: str | Path, text: str, folder: str | Path | None = None) -> Path:
    """`text` into `path`, atomically and recorded (`replacing`)."""
    with replacing(path, folder) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`text` into `path` atomically, not recorded: for the files a command owns by their names (a run folder's
    detect.json, a branch's history.json)."""
    path = Path(path)
    with _renamed_into_place(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path: str | Path, doc) -> Path:
    """`doc` as indented JSON into `path` (`atomic_write_text`)."""
    return atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


@contextmanager
def _renamed_into_place(path: Path) -> Iterator[Path]:
    """A temporary beside `path` to write, renamed onto `path` on success, removed on failure."""
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temp_path(path: str | Path, suffix: str = "") -> Path:
    """Where `path` is written before it is renamed into place: `.NAME.tmp-PID` beside it (`suffix` after it
    for writers that choose the format by the extension)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")


def remove_leftovers(folder: str | Path, names=None, folders: bool = False) -> list[Path]:
    """Remove the temporaries (`temp_path`) that killed processes left directly in `folder`: of the targets
    `names` when given, regular files (and with `folders`, folders, whole). Returns those removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = TEMP_NAME.fullmatch(entry.name)
        if not match or (names is not None and match["name"] not in names):
            continue
        if _left_over(entry, int(match["pid"]), folders):
            try:
                shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass  # gone meanwhile, or not ours to remove: left as it is
    return removed


def is_zarr_partial(key: str) -> bool:
    """Whether a store key (or path) is Zarr's temporary file of a write (`NAME.<uuid>.partial`)."""
    return bool(ZARR_PARTIAL.fullmatch(key.rsplit("/", 1)[-1]))


def zarr_partials(root: str | Path) -> list[Path]:
    """Zarr's temporary chunk and metadata files under a local store, whatever their age."""
    return sorted(Path(d) / f for d, _, files in os.walk(root) for f in files if is_zarr_partial(f))


def remove_zarr_partials(root: str | Path) -> list[Path]:
    """Remove the `zarr_partials` of an interrupted write (owned by this user, untouched for STALE_AFTER_S)."""
    removed = []
    for path in zarr_partials(root):
        try:
            st = path.lstat()
            if st.st_uid == os.getuid() and time.time() - st.st_mtime >= STALE_AFTER_S:
                path.unlink()
                removed.append(path)
        except OSError:
            pass
    return removed


def _left_over(entry: os.DirEntry, pid: int, folders: bool) -> bool:
    """Owned by this user, a regular file (or a folder, when `folders`), untouched for STALE_AFTER_S, and its
    process gone."""
    try:
        if not (entry.is_file(follow_symlinks=False) or folders and entry.is_dir(follow_symlinks=False)):
            return False
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    return (st.st_uid == os.getuid() and time.time() - st.st_mtime >= STALE_AFTER_S and pid != os.getpid()
            and not psutil.pid_exists(pid))


def _key(folder: Path, path: Path) -> str:
    return os.path.relpath(path, folder).replace(os.sep, "/")


def _write_record(folder: Path, record: dict[str, str]) -> None:
    write_json(_record_path(folder), dict(sorted(record.items())))
