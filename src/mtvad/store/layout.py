"""What `--overwrite` may delete: only a vad store, and of it only the files of its layout.

A vad store is recognised by its root zarr.json (a Zarr v3 group whose attributes hold an integer
`schema_version` and a `dataset`); its own files are the keys of the layout of cache_schema.md (metadata and
chunk keys of the contract's arrays, plus Zarr's `*.partial` files of an interrupted write). Anything else in
the folder (a user's file, another tool's array, a symbolic link) makes `--overwrite` refuse, naming it.

A local store is replaced atomically from the user's view: it is renamed aside (`.NAME.vad-overwritten`
beside it), the new store is created at the path (the old one is renamed back if that fails), and the old
store's layout files are deleted last. A remote store (fsspec URL) is deleted key by key, its root zarr.json
last, so that an interrupted overwrite leaves a vad store that the next `--overwrite` recognises."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

from mtvad.errors import StoreError
from mtvad.store.schema import ARRAYS, SPLITS

_SPLIT = "|".join(map(re.escape, SPLITS))
_ARRAY = "|".join(map(re.escape, ARRAYS))
_PARTIAL = r"(\.[0-9a-f]{32}\.partial)?"  # zarr's LocalStore writes NAME.<uuid>.partial, then renames it
_LAYOUT_FILE = re.compile(
    rf"^(zarr\.json|({_SPLIT})/zarr\.json|({_SPLIT})/[^/]+/zarr\.json|({_SPLIT})/[^/]+/({_ARRAY})/zarr\.json"
    rf"|({_SPLIT})/[^/]+/({_ARRAY})/c(/\d+)+){_PARTIAL}$")
_LAYOUT_DIR = re.compile(rf"^(({_SPLIT})(/[^/]+(/({_ARRAY})(/c(/\d+)*)?)?)?)$")


def aside_path(path: Path) -> Path:
    """Where a local store is moved while `--overwrite` replaces it."""
    return path.with_name(f".{path.name}.vad-overwritten")


def root_problem(raw: bytes | None) -> str | None:
    """Why a root zarr.json is not a vad store's (None when it is one)."""
    if raw is None:
        return "no zarr.json"
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "its zarr.json is not JSON"
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        return "its zarr.json is not a Zarr v3 group"
    attrs = meta.get("attributes")
    if not isinstance(attrs, dict) or "schema_version" not in attrs:
        return "its zarr.json has no 'schema_version': not a vad store"
    if isinstance(attrs["schema_version"], bool) or not isinstance(attrs["schema_version"], int) \
            or not isinstance(attrs.get("dataset"), str):
        return "its zarr.json is not a vad store's (schema_version and dataset malformed)"
    return None


def is_layout_file(key: str) -> bool:
    return bool(_LAYOUT_FILE.match(key))


def local_foreign(path: Path) -> tuple[list[str], list[str]]:
    """(the layout files of a local folder, what in it is not: 'relative path (why)'), without following links."""
    own, foreign = [], []
    for top, dirs, files in os.walk(path, followlinks=False):
        rel_top = Path(top).relative_to(path).as_posix()
        rel = (lambda name: name) if rel_top == "." else (lambda name: f"{rel_top}/{name}")
        for name in dirs:
            full = os.path.join(top, name)
            if os.path.islink(full):
                foreign.append(f"{rel(name)} (a symbolic link)")
            elif not _LAYOUT_DIR.match(rel(name)):
                foreign.append(f"{rel(name)}/ (a folder vad did not write)")
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d)) and _LAYOUT_DIR.match(rel(d))]
        for name in files:
            full = os.path.join(top, name)
            if os.path.islink(full):
                foreign.append(f"{rel(name)} (a symbolic link)")
            elif not os.path.isfile(full) or not is_layout_file(rel(name)):
                foreign.append(f"{rel(name)} (a file vad did not write)")
            else:
                own.append(rel(name))
    return own, sorted(foreign)


def _refuse(url: str, why: str, things: list[str]) -> StoreError:
    shown = ", ".join(things[:3]) + (f" and {len(things) - 3} more" if len(things) > 3 else "")
    return StoreError(f"{url}: --overwrite refused, nothing was deleted: {why}" + (f"; it holds {shown}" if shown
                      else "") + ". vad deletes only a store it built; move those out or delete the folder yourself")


def check_local(url: str, path: Path) -> list[str]:
    """The layout files of the local vad store at `path`, or a StoreError naming what overwriting would destroy."""
    if path.is_symlink():
        raise _refuse(url, "the store path is a symbolic link", [])
    raw = (path / "zarr.json").read_bytes() if (path / "zarr.json").is_file() else None
    own, foreign = local_foreign(path)
    why = root_problem(raw)
    if why is not None:
        raise _refuse(url, f"not a vad store ({why})", sorted(own + foreign))
    if foreign:
        raise _refuse(url, "files that are not part of a vad store are in it", foreign)
    return own


def delete_local(path: Path) -> None:
    """Delete the layout files of a local vad store, then its folders once empty (what else is there stays)."""
    own, _ = local_foreign(path)
    for rel in sorted(own, key=lambda k: (k == "zarr.json", k)):  # root metadata last
        (path / rel).unlink(missing_ok=True)
    for top, _dirs, _files in sorted(os.walk(path, topdown=False, followlinks=False), key=lambda t: -len(t[0])):
        try:
            os.rmdir(top)
        except OSError:
            pass  # not empty: something that is not ours, left in place


def check_keys(url: str, keys: list[str], root_raw: bytes | None) -> list[str]:
    """The same check for a store listed by keys (an fsspec URL): its keys, all of the layout, or a StoreError."""
    why = root_problem(root_raw)
    if why is not None:
        raise _refuse(url, f"not a vad store ({why})", sorted(keys))
    foreign = sorted(f"{k} (a key vad did not write)" for k in keys if not is_layout_file(k))
    if foreign:
        raise _refuse(url, "keys that are not part of a vad store are in it", foreign)
    return keys


def replace_local(url: str, path: Path, create: Callable[[], object]):
    """Replace the local vad store at `path` by what `create()` makes there: move it aside, create, delete it."""
    aside = aside_path(path)
    if aside.exists() or aside.is_symlink():  # left by an overwrite that was killed: delete it if it is ours
        check_local(str(aside), aside)
        delete_local(aside)
        if aside.exists():
            raise StoreError(f"{aside}: left by an interrupted --overwrite and could not be deleted; delete it")
    check_local(url, path)
    try:
        os.rename(path, aside)
    except OSError as exc:
        raise StoreError(f"{url}: cannot replace the store ({exc.strerror}); nothing was deleted") from None
    try:
        made = create()
    except BaseException:
        if path.exists():
            delete_local(path)  # the new store, partly made
        if not path.exists():
            os.rename(aside, path)
        raise
    delete_local(aside)
    return made
