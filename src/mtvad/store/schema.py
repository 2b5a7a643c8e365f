"""The store contract in code: array names, dtypes, shapes, chunking, quantisation, schema version.

`cache_schema.md` is the same contract for people; `tests/test_store.py` checks that the two agree and that a
real store matches both. Layout (Zarr v3):

    store/                      root attributes: schema_version, dataset, resolution, chunk_frames,
                                teachers (per role: name, version, params, weights_sha256), fingerprint, ...
      train/<video>/            attributes: n_frames, n_blocks, source, source_size, meta
        frames seg flow_mag flow_ang depth blocks_done checksums
      test/<video>/
        frames seg flow_mag flow_ang depth blocks_done checksums [label] [mask]

Values are quantised where it saves space without hurting the students (flow in 1/64 store pixel per frame,
angle in 2*pi/256 rad, depth in 1/65535); readers get float32 back in physical units. Every block write records
the crc32 of each array's block (`checksums`), so `vad store verify` can find a corrupted or missing chunk."""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 3
SPLITS = ("train", "test")
DEFAULT_RESOLUTION = (256, 256)  # (H, W), the paper's input size
DEFAULT_CHUNK_FRAMES = 16
FLOW_VALID_FROM = 1  # frame 0 of a video has no previous frame: its flow is stored as zeros
COMPRESSION_LEVEL = 1  # zstd: level 3 made Ped2's chunks 3-10% smaller at up to twice the cost
CHANNELS = (1, 3)  # frames: grey footage is stored with one channel, colour with three (RGB)
# Below this flow magnitude (store pixels per frame) Farneback's direction is noise: stored as angle 0. Half of
# a Ped2 frame's pixels move less than 0.05 px; zeroing their angle makes flow_ang 4x smaller.
ANGLE_MIN_MAGNITUDE = 1 / 16


@dataclass(frozen=True)
class ArraySpec:
    """One per-video array of the contract."""

    name: str
    dtype: str
    dims: tuple[str, ...]  # T: frames, H/W: store resolution, C: channels (1 grey, 3 RGB), B: blocks
    meaning: str
    scale: float | None = None  # physical value = stored value * scale
    units: str = ""
    splits: tuple[str, ...] = SPLITS
    optional: bool = False  # present only when the dataset provides it
    wraps: bool = False  # periodic values (angles): stored modulo the dtype's range
    compression: str = "zstd"  # a key of COMPRESSIONS

    def shape(self, n_frames: int, resolution: tuple[int, int], chunk_frames: int,
              channels: int = 3) -> tuple[int, ...]:
        sizes = {"T": n_frames, "H": resolution[0], "W": resolution[1], "C": channels,
                 "B": n_blocks(n_frames, chunk_frames), "A": len(CHECKSUMMED)}
        return tuple(sizes[d] for d in self.dims)

    def chunks(self, n_frames: int, resolution: tuple[int, int], chunk_frames: int,
               channels: int = 3) -> tuple[int, ...]:
        shape = self.shape(n_frames, resolution, chunk_frames, channels)
        if self.dims == ("T",):
            return shape  # one chunk: labels are tiny
        if self.dims[0] == "B":
            return (1,) + shape[1:]  # one chunk per block: each task writes its own flag / checksums
        return (chunk_frames,) + shape[1:]

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Physical values -> stored dtype (rounded, clipped to the dtype's range)."""
        if self.scale is None:
            return np.asarray(values).astype(self.dtype, copy=False)
        # float32 holds every integer of these dtypes exactly, and is 20x faster than float64 here
        q = np.rint(np.asarray(values, dtype=np.float32) * np.float32(1 / self.scale))
        info = np.iinfo(self.dtype)
        if self.wraps:  # an angle: 2*pi is 0 again
            return (q.astype(np.int32) & int(info.max)).astype(self.dtype)  # modulo 2**bits
        return np.clip(q, info.min, info.max, out=q).astype(self.dtype)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        if self.scale is None:
            return stored
        return stored.astype(np.float32) * np.float32(self.scale)


ARRAYS: dict[str, ArraySpec] = {
    spec.name: spec
    for spec in (
        ArraySpec("frames", "uint8", ("T", "H", "W", "C"),
                  "input frames, resized to the store resolution: C = 1 (grey footage) or 3 (RGB)",
                  compression="time-delta"),
        ArraySpec("seg", "uint8", ("T", "H", "W"), "segmentation teacher: class id per pixel, 0 = background",
                  compression="bitshuffle"),
        ArraySpec("flow_mag", "uint16", ("T", "H", "W"),
                  "flow teacher: magnitude of the flow from frame t-1 to t (raw, not masked)",
                  scale=1 / 64, units="store pixels per frame", compression="bitshuffle"),
        ArraySpec("flow_ang", "uint8", ("T", "H", "W"),
                  "flow teacher: direction of that flow, atan2(dy, dx) with y pointing down, in [0, 2*pi); "
                  f"0 where the magnitude is below {ANGLE_MIN_MAGNITUDE} store pixels per frame",
                  scale=2 * math.pi / 256, units="radians", wraps=True, compression="row-delta"),
        ArraySpec("depth", "uint16", ("T", "H", "W"),
                  "depth teacher: relative inverse depth (larger = nearer), min-max normalised per frame",
                  scale=1 / 65535, units="1 (in [0, 1])"),
        ArraySpec("blocks_done", "uint8", ("B",),
                  "1 where every array's chunk of that block of frames is written (resume bookkeeping)"),
        ArraySpec("checksums", "uint32", ("B", "A"),
                  "crc32 of each array's block of frames as stored (little-endian C-order bytes of the "
                  "block's values), one column per array of the attribute 'columns', 0 for an absent array",
                  units="crc32"),
        ArraySpec("label", "uint8", ("T",), "frame-level ground truth, 1 = anomalous",
                  splits=("test",), optional=True),
        ArraySpec("mask", "bool", ("T", "H", "W"), "pixel-level ground truth, nearest-resized",
                  splits=("test",), optional=True),
    )
}
# How each array's chunks are compressed (all lossless, all codecs that zarr-python reads as it is). Measured on
# Ped2 at 256x256, KiB per frame against zstd level 3: grey frames 32.4 -> 22.2 with the time delta (a fixed
# camera's frame differs little from the one before); flow_mag 27.4 -> 22.9 bit-shuffled; flow_ang 25.2 -> 19.4
# with the row delta (neighbours move alike; differences modulo 256 wrap as angles do).
COMPRESSIONS = {
    "zstd": "zstd",
    "bitshuffle": "blosc (zstd, bit-shuffled)",
    "time-delta": "transposed so that time varies fastest, numcodecs delta (each value minus the one of the frame "
                  "before, modulo 2**bits), zstd",
    "row-delta": "numcodecs delta (each value minus the one to its left, modulo 2**bits), zstd",
}
TEACHER_ARRAYS = {"seg": ("seg",), "flow": ("flow_mag", "flow_ang"), "depth": ("depth",)}
BLOCK_ARRAYS = ("frames", "seg", "flow_mag", "flow_ang", "depth", "mask")  # written by block tasks
CHECKSUMMED = BLOCK_ARRAYS  # the columns of `checksums`, in this order (recorded in its attribute 'columns')
BOOKKEEPING = ("blocks_done", "checksums")  # chunks with a crc32c of their own (Zarr's crc32c codec)
# Root attributes that say who built a store, when, from what and with which code: shown by `vad store info`,
# compared (never required equal) by `vad store diff`. `created` and `vad_version` are written by
# `create_store`, the others by `mtvad.precompute` (`pipeline_version` is the package version, as `vad_version`).
PROVENANCE = ("created", "built_by", "vad_version", "pipeline_version", "source_root")


def n_blocks(n_frames: int, chunk_frames: int) -> int:
    return -(-n_frames // chunk_frames)


def block_range(block: int, n_frames: int, chunk_frames: int) -> tuple[int, int]:
    start = block * chunk_frames
    return start, min(start + chunk_frames, n_frames)


def digest(values: np.ndarray) -> int:
    """crc32 of an array's values as stored: little-endian, C-order bytes (independent of the codecs)."""
    values = np.asarray(values)
    if values.dtype.byteorder == ">" or (values.dtype.byteorder == "=" and not np.little_endian):
        values = values.astype(values.dtype.newbyteorder("<"))
    return zlib.crc32(np.ascontiguousarray(values).view(np.uint8).reshape(-1))


def fingerprint(build: dict) -> str:
    """sha256 of the canonical JSON of what determines a store's values (resolution, teachers, schema)."""
    canon = json.dumps(build, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def describe_build_change(old: dict, new: dict) -> str:
    changes = []
    for key in sorted(set(old) | set(new)):
        if key == "teachers":
            for role in sorted(set(old.get(key, {})) | set(new.get(key, {}))):
                a, b = old.get(key, {}).get(role), new.get(key, {}).get(role)
                if a != b:
                    changes.append(f"{role} teacher {teacher_str(a)} -> {teacher_str(b)}")
        elif old.get(key) != new.get(key):
            changes.append(f"{key} {old.get(key)} -> {new.get(key)}")
    return "; ".join(changes) or "unknown difference"


def teacher_str(t: dict | None) -> str:
    if not t:
        return "none"
    return f"{t['name']} v{t['version']} {json.dumps(t.get('params', {}), sort_keys=True)}"
