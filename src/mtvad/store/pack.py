"""Sharing a store across a team as one file: pack it, unpack it (verify and diff are beside this module).

- `pack_store`: every file of a store (any path or fsspec URL) into one ZIP file, entries stored uncompressed
  (the chunks are zstd already), in a fixed order with fixed timestamps: the same store packs to the same
  bytes. `mtvad.store.access.open_store("x.zip")` reads it in place (Zarr's `ZipStore`), read-only.
- `unpack_store`: the ZIP back into a folder store; refuses entries that would land outside that folder and
  anything that is not a vad store of this schema, before writing anything."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from mtvad.errors import StoreError
from mtvad.store.access import open_store
from mtvad.store.locations import get_many, is_zip, list_keys
from mtvad.written import is_zarr_partial

ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed: the same store always packs to the same bytes
FETCH_BATCH = 32  # chunks fetched concurrently while packing (a remote store answers them in parallel)


def _batches(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


# -------------------------------------------------------------------------------------------------- pack


@dataclass
class PackResult:
    source: str
    out: str
    entries: int
    bytes: int
    seconds: float


def pack_store(source: str | Path, out: str | Path, *, overwrite: bool = False, allow_incomplete: bool = False,
               storage_options: dict | None = None,
               progress: Callable[[int, int], None] | None = None) -> PackResult:
    """Write the store at `source` (path or URL) into the single file `out` (*.zip), atomically."""
    t0 = time.perf_counter()
    out = Path(out)
    if not out.name.lower().endswith(".zip"):
        raise StoreError(f"{out}: a packed store's name must end in .zip (that is how vad recognises one)")
    if out.is_dir():
        raise StoreError(f"{out}: is a folder; give the path of the .zip file to write")
    if out.exists() and not overwrite:
        raise StoreError(f"{out}: already exists; pass --overwrite to replace it")
    store = open_store(source, storage_options=storage_options)  # the contract and the codec allow-list
    if allow_incomplete:
        store.require_intact()  # blocks may be missing, but none that is marked done lost its data
    else:
        store.require_complete(otherwise=", or pass --allow-incomplete to pack it as it is")
    zstore = store.root.store
    keys = sorted((k for k in list_keys(zstore) if not is_zarr_partial(k)),  # never an interrupted write's file
                  key=lambda k: (k != "zarr.json", k))  # root metadata first
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    total = 0
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            done = 0
            for batch in _batches(keys, FETCH_BATCH):
                for key, data in zip(batch, get_many(zstore, batch)):
                    if data is None:
                        raise StoreError(f"{source}: {key} vanished while packing (is the store being written?)")
                    info = zipfile.ZipInfo(key, date_time=ZIP_TIMESTAMP)
                    info.compress_type = zipfile.ZIP_STORED
                    info.external_attr = (stat.S_IFREG | 0o644) << 16
                    zf.writestr(info, data)
                    total += len(data)
                done += len(batch)
                if progress:
                    progress(done, len(keys))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return PackResult(str(source), str(out), len(keys), total, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ unpack


@dataclass
class UnpackResult:
    source: str
    out: str
    entries: int
    bytes: int
    seconds: float


_DRIVE = re.compile(r"^[A-Za-z]:")


def check_zip_member(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse an entry that would not land strictly inside the target folder as a plain file or folder."""
    name = info.filename
    parts = name.rstrip("/").split("/")
    bad = None
    if not name or "\x00" in name:
        bad = "an empty or NUL-containing name"
    elif name.startswith("/") or _DRIVE.match(name):
        bad = "an absolute path"
    elif "\\" in name:
        bad = "a backslash (a Windows path separator)"
    elif ".." in parts:
        bad = "a '..' component"
    elif any(p in ("", ".") for p in parts):
        bad = "an empty or '.' component"
    elif stat.S_ISLNK(info.external_attr >> 16):
        bad = "a symbolic link"
    if bad:
        raise StoreError(f"{where}: entry {name!r} would land outside the target folder ({bad}): refusing to "
                         "unpack; nothing was written")


def unpack_store(source: str | Path, out: str | Path,
                 progress: Callable[[int, int], None] | None = None) -> UnpackResult:
    """Restore a folder store from a packed one; `out` must not exist or be an empty folder."""
    t0 = time.perf_counter()
    source, out = Path(source), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StoreError(f"{out}: already exists and is not an empty folder: unpack into a new folder")
    if not source.is_file():
        raise StoreError(f"{source}: no such file")
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise StoreError(f"{source}: not a readable zip file ({exc})") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            check_zip_member(info, str(source))
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise StoreError(f"{source}: the zip holds the same entry twice: refusing to unpack")
        files = {n for n in names if not n.endswith("/")}
        for name in names:  # 'zz' a file and 'zz/inner' an entry: no folder can hold both
            parent = next((p for p in (name.rsplit("/", k)[0] for k in range(1, name.count("/") + 1)) if p in files), None)
            if parent is not None:
                raise StoreError(f"{source}: entry {name!r} lies inside {parent!r}, which is a file in the zip: "
                                 "refusing to unpack; nothing was written")
        if not is_zip(source):
            raise StoreError(f"{source}: a packed store's name must end in .zip")
        open_store(source)  # a vad store of this schema whose arrays pass the allow-list, before writing
        size = sum(i.file_size for i in infos)
        out.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(out.parent).free
        if size > free:
            raise StoreError(f"{source}: unpacks to {size / 2**30:.2f} GiB but {out.parent} has only "
                             f"{free / 2**30:.2f} GiB free")
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.unpack-", dir=out.parent))
        try:
            root = tmp.resolve()
            for k, info in enumerate(infos):
                target = tmp / info.filename
                if root not in target.resolve().parents and target.resolve() != root:  # belt and braces
                    raise StoreError(f"{source}: entry {info.filename!r} would land outside the target folder")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except zipfile.BadZipFile as exc:  # "Bad CRC-32 for file ..."
                    raise StoreError(f"{source}: entry {info.filename} is damaged ({exc}): the file was "
                                     "corrupted in transfer; fetch it again") from None
                if progress:
                    progress(k + 1, len(infos))
            if out.exists():
                out.rmdir()  # empty (checked above)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return UnpackResult(str(source), str(out), len(infos), size, time.perf_counter() - t0)
