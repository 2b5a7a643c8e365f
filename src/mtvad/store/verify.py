"""`vad store verify`: re-read every block of every array and compare it with the crc32 recorded when it was
written (the `checksums` array); list every chunk key to find deleted chunks (Zarr would silently read a
missing chunk as zeros)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtvad.store.access import Store, open_store
from mtvad.store.locations import list_keys
from mtvad.store.schema import CHECKSUMMED, SPLITS, block_range, digest, fingerprint


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
                                "`vad precompute` to finish the store"))

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
