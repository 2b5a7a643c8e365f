"""Sharing a store across a team: pack it into one file, unpack it, verify it chunk by chunk, diff two stores.

- `pack_store`: every file of a store (any path or fsspec URL) into one ZIP file, entries stored uncompressed
  (the chunks are zstd already), in a fixed order with fixed timestamps: the same store packs to the same
  bytes. `vad.store.open_store("x.zip")` reads it in place (Zarr's `ZipStore`), read-only.
- `unpack_store`: the ZIP back into a folder store; refuses entries that would land outside that folder and
  anything that is not a vad store of this schema, before writing anything.
- `verify_store`: re-reads every block of every array and compares it with the crc32 recorded when it was
  written (the `checksums` array), lists every chunk key to find deleted chunks (Zarr would silently read
  a missing chunk as zeros).
- `diff_stores`: how two stores differ (schema, dataset, teachers, videos, frame counts, completeness,
  contents by checksum) and whether they are interchangeable.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from vad.errors import StoreError
from vad.store import (CHECKSUMMED, SPLITS, Store, block_range, digest, fingerprint, get_many, is_zip, open_store)

ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # fixed: the same store always packs to the same bytes
FETCH_BATCH = 32  # chunks fetched concurrently while packing (a remote store answers them in parallel)


def list_keys(zstore) -> list[str]:
    """Every key of a zarr store (chunk files and metadata), relative to its root."""
    from zarr.core.sync import sync

    async def collect() -> list[str]:
        return [key async for key in zstore.list()]

    return sync(collect())


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
    if not allow_incomplete:
        missing = store.missing_blocks()
        if missing:
            n = sum(len(v) for v in missing.values())
            raise StoreError(f"{source}: store is incomplete ({n} blocks in {len(missing)} videos not computed, "
                             f"e.g. {next(iter(missing))}): finish it with `pipeline precompute` first, or pass "
                             "--allow-incomplete")
    zstore = store.root.store
    keys = sorted(list_keys(zstore), key=lambda k: (k != "zarr.json", k))  # root metadata first
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


# ------------------------------------------------------------------------------------------------ verify


@dataclass
class Problem:
    video: str  # split/video, or "(root)"
    array: str
    frames: tuple[int, int] | None  # [start, stop)
    kind: str  # missing | undecodable | corrupted | not computed | unchecked | unreadable | inconsistent
    detail: str = ""

    def __str__(self) -> str:
        where = self.video if self.array == "-" else f"{self.video}/{self.array}"
        if self.frames is not None:
            a, b = self.frames
            where += f" [frames {a}-{b - 1}]" if b - a > 1 else f" [frame {a}]"
        return f"{where}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class VerifyReport:
    url: str
    videos: int = 0
    blocks: int = 0  # array blocks checked against their checksum
    bytes: int = 0  # decoded bytes read
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "videos": self.videos, "blocks": self.blocks, "bytes": self.bytes,
                "seconds": round(self.seconds, 3),
                "problems": [{"video": p.video, "array": p.array, "frames": list(p.frames) if p.frames else None,
                              "kind": p.kind, "detail": p.detail, "message": str(p)} for p in self.problems]}


def _chunk_key(arr, coords: tuple[int, ...]) -> str:
    return f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}"


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _read_blocks(arr, n_frames: int, chunk_frames: int, blocks: list[int],
                 problems: list[Problem], key: str, name: str) -> dict[int, np.ndarray]:
    """The given blocks of an array (one read when every chunk decodes, else block by block)."""
    try:
        whole = arr[:]
        return {b: whole[slice(*block_range(b, n_frames, chunk_frames))] for b in blocks}
    except Exception:
        pass
    out = {}
    for b in blocks:
        start, stop = block_range(b, n_frames, chunk_frames)
        try:
            out[b] = arr[start:stop]
        except Exception as exc:
            problems.append(Problem(key, name, (start, stop), "undecodable", _error(exc)))
    return out


def _verify_video(store: Store, split: str, vid: str, keys: set[str], report: VerifyReport) -> None:
    key = f"{split}/{vid}"
    problems = report.problems
    try:
        video = store.video(split, vid)
        video.validate()
    except Exception as exc:
        problems.append(Problem(key, "-", None, "unreadable", _error(exc)))
        return
    cf, n, nb = store.chunk_frames, video.n_frames, video.n_blocks
    ranges = [block_range(b, n, cf) for b in range(nb)]

    # bookkeeping arrays: one chunk per block
    flags = {}
    for name in ("blocks_done", "checksums"):
        arr = video.group[name]
        for b in range(nb):
            if _chunk_key(arr, (b,) + (0,) * (arr.ndim - 1)) not in keys:
                problems.append(Problem(key, name, ranges[b], "missing", "chunk file deleted"))
        flags[name] = _read_blocks(arr, nb, 1, list(range(nb)), problems, key, name)
        flags[name] = {b: v[0] for b, v in flags[name].items()}
    done = []
    not_computed = []
    for b in range(nb):
        flag = flags["blocks_done"].get(b)
        if flag is None:
            continue
        if int(flag) not in (0, 1):
            problems.append(Problem(key, "blocks_done", ranges[b], "corrupted", f"flag {int(flag)} is not 0 or 1"))
        elif int(flag) == 0:
            not_computed.append(b)
        elif b in flags["checksums"]:
            done.append(b)
    if not_computed:
        problems.append(Problem(key, "blocks_done", None, "not computed",
                                f"blocks {not_computed} (frames {ranges[not_computed[0]][0]}..): run "
                                "`pipeline precompute` to finish the store"))

    # data arrays: every block marked done must be present and match its recorded crc32
    for col, name in enumerate(CHECKSUMMED):
        if name not in video.group:
            continue
        arr = video.group[name]
        present = []
        for b in done:
            if _chunk_key(arr, (b,) + (0,) * (arr.ndim - 1)) in keys:
                present.append(b)
            else:
                problems.append(Problem(key, name, ranges[b], "missing", "chunk file deleted"))
        for b, values in _read_blocks(arr, n, cf, present, problems, key, name).items():
            report.blocks += 1
            report.bytes += values.nbytes
            expected, actual = int(flags["checksums"][b][col]), digest(values)
            if expected != actual:
                problems.append(Problem(key, name, ranges[b], "corrupted",
                                        f"crc32 {actual:08x}, recorded {expected:08x}"))

    if video.has_labels:
        arr = video.group["label"]
        recorded = arr.attrs.get("crc32")
        present = _chunk_key(arr, (0,)) in keys
        if not present and recorded is not None:
            problems.append(Problem(key, "label", (0, n), "missing", "chunk file deleted"))
        elif present:
            values = _read_blocks(arr, n, n, [0], problems, key, "label").get(0)
            if values is not None:
                report.bytes += values.nbytes
                if recorded is None:
                    problems.append(Problem(key, "label", (0, n), "unchecked", "no crc32 attribute recorded"))
                elif digest(values) != int(recorded):
                    problems.append(Problem(key, "label", (0, n), "corrupted",
                                            f"crc32 {digest(values):08x}, recorded {int(recorded):08x}"))


def verify_store(url: str | Path, *, storage_options: dict | None = None,
                 progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Re-read every chunk of a store and compare it with its recorded checksum; list every problem."""
    t0 = time.perf_counter()
    store = open_store(url, validate=False, storage_options=storage_options)
    report = VerifyReport(str(url))
    attrs = store.attrs
    build = attrs.get("build", {})
    if fingerprint(build) != attrs.get("fingerprint"):
        report.problems.append(Problem("(root)", "zarr.json", None, "inconsistent",
                                       "the fingerprint does not match the recorded build"))
    for name, value in (("teachers", attrs.get("teachers")), ("resolution", attrs.get("resolution")),
                        ("chunk_frames", attrs.get("chunk_frames")), ("schema_version", attrs.get("schema_version"))):
        if build.get(name) != value:
            report.problems.append(Problem("(root)", "zarr.json", None, "inconsistent",
                                           f"{name} differs from the recorded build"))
    keys = set(list_keys(store.root.store))
    videos = sorted({(k.split("/")[0], k.split("/")[1]) for k in keys
                     if k.count("/") >= 2 and k.split("/")[0] in SPLITS},
                    key=lambda sv: (SPLITS.index(sv[0]), sv[1]))
    for i, (split, vid) in enumerate(videos):
        if progress:
            progress(i, len(videos))
        _verify_video(store, split, vid, keys, report)
        report.videos += 1
    if progress:
        progress(len(videos), len(videos))
    report.seconds = time.perf_counter() - t0
    return report


# -------------------------------------------------------------------------------------------------- diff


PROVENANCE = ("created", "built_by", "vad_version", "pipeline_version", "source_root")


def _video_facts(store: Store) -> dict[str, dict[str, Any]]:
    facts = {}
    for video in store.videos():
        facts[video.key] = {"n_frames": video.n_frames, "done": video.blocks_done(),
                            "checksums": video.group["checksums"][:],
                            "label_crc32": video.group["label"].attrs.get("crc32") if video.has_labels else None}
    return facts


def diff_stores(a: str | Path, b: str | Path) -> dict[str, Any]:
    """How two stores differ, and whether a run trained or scored on one would be the same on the other."""
    sa, sb = open_store(a), open_store(b)
    aa, ab = sa.attrs, sb.attrs
    fields = []

    def row(name: str, va: Any, vb: Any) -> None:
        fields.append({"field": name, "a": va, "b": vb, "same": va == vb})

    row("schema_version", aa.get("schema_version"), ab.get("schema_version"))
    row("dataset", aa.get("dataset"), ab.get("dataset"))
    row("resolution", aa.get("resolution"), ab.get("resolution"))
    row("chunk_frames", aa.get("chunk_frames"), ab.get("chunk_frames"))
    for role in sorted(set(sa.teachers) | set(sb.teachers)):
        ta, tb = sa.teachers.get(role) or {}, sb.teachers.get(role) or {}
        row(f"{role} teacher", f"{ta.get('name')} v{ta.get('version')}" if ta else None,
            f"{tb.get('name')} v{tb.get('version')}" if tb else None)
        pa, pb = ta.get("params") or {}, tb.get("params") or {}
        changed = {k: (pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)}
        row(f"{role} params", {k: v[0] for k, v in changed.items()} or "same",
            {k: v[1] for k, v in changed.items()} or "same")
        row(f"{role} weights", ta.get("weights_sha256"), tb.get("weights_sha256"))
    row("classes", aa.get("classes"), ab.get("classes"))
    row("fingerprint", sa.fingerprint, sb.fingerprint)
    provenance = [{"field": k, "a": aa.get(k), "b": ab.get(k), "same": aa.get(k) == ab.get(k)} for k in PROVENANCE]

    fa, fb = _video_facts(sa), _video_facts(sb)
    only_a, only_b = sorted(set(fa) - set(fb)), sorted(set(fb) - set(fa))
    common = sorted(set(fa) & set(fb))
    frame_counts = [{"video": v, "a": fa[v]["n_frames"], "b": fb[v]["n_frames"]}
                    for v in common if fa[v]["n_frames"] != fb[v]["n_frames"]]
    missing_a = int(sum((f["done"] == 0).sum() for f in fa.values()))
    missing_b = int(sum((f["done"] == 0).sum() for f in fb.values()))

    # contents, by checksum: blocks computed in both, videos of equal length
    differing: dict[str, dict[str, int]] = {}
    labels_differ = []
    compared = 0
    for v in common:
        if fa[v]["n_frames"] != fb[v]["n_frames"]:
            continue
        both = (fa[v]["done"] == 1) & (fb[v]["done"] == 1)
        compared += int(both.sum())
        ne = fa[v]["checksums"][both] != fb[v]["checksums"][both]
        counts = {name: int(ne[:, i].sum()) for i, name in enumerate(CHECKSUMMED) if ne[:, i].any()}
        if counts:
            differing[v] = counts
        if fa[v]["label_crc32"] != fb[v]["label_crc32"]:
            labels_differ.append(v)
    inputs_differ = sorted(v for v, c in differing.items() if "frames" in c)
    outputs_differ = sorted(v for v, c in differing.items() if set(c) - {"frames"})

    reasons = []
    for f in fields:
        if not f["same"] and f["field"] in ("schema_version", "dataset", "fingerprint"):
            reasons.append(f"{f['field']} differs")
    if only_a or only_b:
        reasons.append(f"videos present in one store only ({len(only_a)} in A, {len(only_b)} in B)")
    if frame_counts:
        reasons.append(f"frame counts differ in {len(frame_counts)} videos")
    if missing_a or missing_b:
        reasons.append(f"incomplete (A: {missing_a} blocks missing, B: {missing_b})")
    if inputs_differ:
        reasons.append(f"input frames differ in {len(inputs_differ)} videos (other source footage)")
    if labels_differ:
        reasons.append(f"ground-truth labels differ in {len(labels_differ)} videos")
    notes = []
    if outputs_differ and not inputs_differ:
        notes.append(f"teacher outputs differ in {len(outputs_differ)} videos with identical input frames and "
                     "the same teachers: a non-deterministic teacher (GPU)? Scores may differ slightly")
    identical = not differing and not labels_differ and not reasons
    return {
        "a": str(a), "b": str(b),
        "fields": fields,
        "provenance": provenance,
        "videos": {"a": len(fa), "b": len(fb), "common": len(common), "only_a": only_a, "only_b": only_b,
                   "frame_counts": frame_counts},
        "missing_blocks": {"a": missing_a, "b": missing_b},
        "contents": {"blocks_compared": compared, "differing": differing, "labels_differ": labels_differ,
                     "identical": identical},
        "interchangeable": not reasons,
        "reasons": reasons,
        "notes": notes,
    }
