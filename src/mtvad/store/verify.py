"""`vad store verify`: re-read every block of every array and compare it with the crc32 recorded when it was
written (the `checksums` array); list every chunk key to find deleted chunks (Zarr would silently read a
missing chunk as zeros), and the recorded videos (root attribute `videos`) to find deleted videos and splits.
A chunk is missing only where it should exist: of a block marked done (`blocks_done`); the blocks of an
interrupted build are "not computed", not missing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtvad.store.access import Store, open_store
from mtvad.store.locations import list_keys
from mtvad.store.schema import ARRAYS, CHECKSUMMED, SPLITS, block_range, digest
from mtvad.written import is_zarr_partial


@dataclass
class Problem:
    video: str  # split/video, or "(root)"
    array: str
    frames: tuple[int, int] | None  # [start, stop)
    kind: str  # missing | undecodable | corrupted | not computed | unchecked | unreadable | inconsistent | stray
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


def _read_blocks(arr, n_frames: int, chunk_frames: int, blocks: list[int], problems: list[Problem], key: str,
                 name: str, frames: list[tuple[int, int]] | None = None) -> dict[int, np.ndarray]:
    """The given blocks of an array (one read when they are all of it and every chunk decodes, else block by
    block, naming each block that does not decode by its frames: `frames[block]` for a per-block array)."""
    nb = -(-n_frames // chunk_frames)
    if len(blocks) == nb:
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
            problems.append(Problem(key, name, frames[b] if frames else (start, stop), "undecodable", _error(exc)))
    return out


def _arrays(store: Store, video, problems: list[Problem]) -> set[str]:
    """The video's arrays that match the contract; the others (and the deleted ones) become problems."""
    found = video.contract_problems()
    problems.extend(Problem(video.key, name, None, kind, what) for name, kind, what in found)
    return {name for name in ARRAYS if name in video.group} - {name for name, _, _ in found}


def _verify_video(store: Store, split: str, vid: str, keys: set[str], report: VerifyReport) -> None:
    key = f"{split}/{vid}"
    problems = report.problems
    try:
        video = store.video(split, vid)  # the data type and codec allow-list
        cf, n, nb = store.chunk_frames, video.n_frames, video.n_blocks
        arrays = _arrays(store, video, problems)
    except Exception as exc:
        problems.append(Problem(key, "-", None, "unreadable", _error(exc)))
        return
    if not {"blocks_done", "checksums"} <= arrays:
        return  # nothing says which blocks are computed, or what they held
    ranges = [block_range(b, n, cf) for b in range(nb)]

    def present(arr, b: int) -> bool:
        return _chunk_key(arr, (b,) + (0,) * (arr.ndim - 1)) in keys

    # blocks_done: an absent chunk is a block not computed yet (never written), not a deleted one
    arr = video.group["blocks_done"]
    flags = {b: v[0] for b, v in _read_blocks(arr, nb, 1, list(range(nb)), problems, key, "blocks_done",
                                                          ranges).items()}
    done, not_computed = [], []
    for b in range(nb):
        flag = flags.get(b)
        if flag is None:
            done.append(b)  # undecodable flag (reported): check what the block holds
        elif int(flag) not in (0, 1):
            problems.append(Problem(key, "blocks_done", ranges[b], "corrupted", f"flag {int(flag)} is not 0 or 1"))
            done.append(b)
        elif int(flag) == 0:
            not_computed.append(b)
        else:
            done.append(b)
    if not_computed:
        problems.append(Problem(key, "blocks_done", None, "not computed",
                                f"blocks {not_computed} (frames {ranges[not_computed[0]][0]}..): run "
                                "`vad precompute` to finish the store"))

    # checksums: a chunk of every block marked done
    arr = video.group["checksums"]
    have = []
    for b in done:
        if present(arr, b):
            have.append(b)
        elif flags.get(b) is not None:
            problems.append(Problem(key, "checksums", ranges[b], "missing", "chunk file deleted"))
    recorded = {b: v[0] for b, v in _read_blocks(arr, nb, 1, have, problems, key, "checksums", ranges).items()}

    # data arrays: every block marked done must be present and match its recorded crc32
    mismatched: dict[int, list[Problem]] = {}
    compared: dict[int, int] = {}
    for col, name in enumerate(CHECKSUMMED):
        if name not in arrays:
            continue
        arr = video.group[name]
        blocks = []
        for b in done:
            if present(arr, b):
                blocks.append(b)
            elif flags.get(b) is not None:
                problems.append(Problem(key, name, ranges[b], "missing", "chunk file deleted"))
        for b, values in _read_blocks(arr, n, cf, blocks, problems, key, name).items():
            report.bytes += values.nbytes
            if b not in recorded:
                continue
            report.blocks += 1
            compared[b] = compared.get(b, 0) + 1
            expected, actual = int(recorded[b][col]), digest(values)
            if expected != actual:
                mismatched.setdefault(b, []).append(Problem(key, name, ranges[b], "corrupted",
                                                            f"crc32 {actual:08x}, recorded {expected:08x}"))
    for b, found in sorted(mismatched.items()):
        if len(found) >= 2 and len(found) == compared[b]:
            # every array of the block differs from its record: the record is what changed (a store without
            # the crc32c of its checksums chunks)
            problems.append(Problem(key, "checksums", ranges[b], "corrupted",
                                    f"the recorded crc32s match none of the block's {len(found)} arrays"))
        else:
            problems.extend(found)

    if "label" in arrays:
        arr = video.group["label"]
        crc = arr.attrs.get("crc32")
        if not present(arr, 0):
            if crc is not None:
                problems.append(Problem(key, "label", (0, n), "missing", "chunk file deleted"))
        else:
            values = _read_blocks(arr, n, n, [0], problems, key, "label").get(0)
            if values is not None:
                report.bytes += values.nbytes
                if crc is None:
                    problems.append(Problem(key, "label", (0, n), "unchecked", "no crc32 attribute recorded"))
                elif digest(values) != int(crc):
                    problems.append(Problem(key, "label", (0, n), "corrupted",
                                            f"crc32 {digest(values):08x}, recorded {int(crc):08x}"))


def verify_store(url: str | Path, *, storage_options: dict | None = None,
                 progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Re-read every chunk of a store and compare it with its recorded checksum; list every problem."""
    t0 = time.perf_counter()
    store = open_store(url, validate=False, storage_options=storage_options)
    report = VerifyReport(str(url))
    report.problems += [Problem("(root)", "zarr.json", None, "inconsistent", what) for what in store.root_problems()]
    keys = set(list_keys(store.root.store))
    for key in sorted(k for k in keys if is_zarr_partial(k)):
        report.problems.append(Problem("(store)", key, None, "stray", "the temporary file of an interrupted write; "
                                       "the next `vad precompute` of this store removes it"))
    recorded = store.recorded_videos() or {split: {} for split in SPLITS}
    for split in SPLITS:
        if f"{split}/zarr.json" not in keys:
            report.problems.append(Problem(split, "-", None, "missing", "split group deleted"))
    groups = {(k.split("/")[0], k.split("/")[1]) for k in keys
              if k.count("/") == 2 and k.endswith("/zarr.json") and k.split("/")[0] in SPLITS}
    for split in SPLITS:
        for vid, n in sorted(recorded[split].items()):
            if (split, vid) not in groups:
                report.problems.append(Problem(f"{split}/{vid}", "-", None, "missing",
                                               f"video group deleted ({n} frames recorded)"))
    videos = sorted(groups, key=lambda sv: (SPLITS.index(sv[0]), sv[1]))
    for i, (split, vid) in enumerate(videos):
        if progress:
            progress(i, len(videos))
        _verify_video(store, split, vid, keys, report)
        report.videos += 1
    if progress:
        progress(len(videos), len(videos))
    report.seconds = time.perf_counter() - t0
    return report
