"""The store contract in code: array names, dtypes, shapes, chunking, quantisation, schema version.

`cache_schema.md` is the same contract for people; `tests/test_store.py` checks that the two agree and
that a real store matches both. `pipeline` writes through this module; `vad` reads through it.

Layout (Zarr v3):

    store/                      root attributes: schema_version, dataset, resolution, chunk_frames,
                                teachers (per role: name, version, params, weights_sha256), fingerprint, ...
      train/<video>/            attributes: n_frames, n_blocks, source, source_size, meta
        frames seg flow_mag flow_ang depth blocks_done checksums
      test/<video>/
        frames seg flow_mag flow_ang depth blocks_done checksums [label] [mask]

Values are quantised where it saves space without hurting the students (flow in 1/64 store pixel per
frame, angle in 2*pi/256 rad, depth in 1/65535); readers get float32 back in physical units.

Every block write records the crc32 of each array's block (`checksums`), so `vad store verify` can find a
corrupted or missing chunk. A store is data, never code: a video's arrays are checked against an allow-list
of data types and codecs before anything of them is decoded. A path ending in `.zip` is a packed store
(`vad store pack`), opened read-only in place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import shutil
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from vad import __version__
from vad.errors import StoreError

SCHEMA_VERSION = 2
SPLITS = ("train", "test")
DEFAULT_RESOLUTION = (256, 256)  # (H, W), the paper's input size
DEFAULT_CHUNK_FRAMES = 16
FLOW_VALID_FROM = 1  # frame 0 of a video has no previous frame: its flow is stored as zeros
COMPRESSION_LEVEL = 3  # zstd
# Below this flow magnitude (store pixels per frame) Farneback's direction is noise: stored as angle 0. Half of
# a Ped2 frame's pixels move less than 0.05 px; zeroing their angle makes flow_ang 4x smaller.
ANGLE_MIN_MAGNITUDE = 1 / 16
# A store is data, never code: only these Zarr v3 data types and codecs may appear in a video's arrays
# (object/string dtypes and codecs such as numcodecs.pickle could run code or allocate unboundedly on decode).
ALLOWED_DATA_TYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                                "float16", "float32", "float64"})
ALLOWED_CODECS = frozenset({"bytes", "zstd", "blosc", "gzip", "crc32c", "transpose", "sharding_indexed"})
STORAGE_OPTIONS_ENV = "VAD_STORAGE_OPTIONS"  # JSON dict of fsspec storage options for remote URLs


@dataclass(frozen=True)
class ArraySpec:
    """One per-video array of the contract."""

    name: str
    dtype: str
    dims: tuple[str, ...]  # T: frames, H/W: store resolution, C: 3 colour channels, B: blocks
    meaning: str
    scale: float | None = None  # physical value = stored value * scale
    units: str = ""
    splits: tuple[str, ...] = SPLITS
    optional: bool = False  # present only when the dataset provides it
    wraps: bool = False  # periodic values (angles): stored modulo the dtype's range

    def shape(self, n_frames: int, resolution: tuple[int, int], chunk_frames: int) -> tuple[int, ...]:
        sizes = {"T": n_frames, "H": resolution[0], "W": resolution[1], "C": 3,
                 "B": n_blocks(n_frames, chunk_frames), "A": len(CHECKSUMMED)}
        return tuple(sizes[d] for d in self.dims)

    def chunks(self, n_frames: int, resolution: tuple[int, int], chunk_frames: int) -> tuple[int, ...]:
        shape = self.shape(n_frames, resolution, chunk_frames)
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
        ArraySpec("frames", "uint8", ("T", "H", "W", "C"), "input frames, RGB, resized to the store resolution"),
        ArraySpec("seg", "uint8", ("T", "H", "W"), "segmentation teacher: class id per pixel, 0 = background"),
        ArraySpec("flow_mag", "uint16", ("T", "H", "W"),
                  "flow teacher: magnitude of the flow from frame t-1 to t (raw, not masked)",
                  scale=1 / 64, units="store pixels per frame"),
        ArraySpec("flow_ang", "uint8", ("T", "H", "W"),
                  "flow teacher: direction of that flow, atan2(dy, dx) with y pointing down, in [0, 2*pi); "
                  f"0 where the magnitude is below {ANGLE_MIN_MAGNITUDE} store pixels per frame",
                  scale=2 * math.pi / 256, units="radians", wraps=True),
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
TEACHER_ARRAYS = {"seg": ("seg",), "flow": ("flow_mag", "flow_ang"), "depth": ("depth",)}
BLOCK_ARRAYS = ("frames", "seg", "flow_mag", "flow_ang", "depth", "mask")  # written by block tasks
CHECKSUMMED = BLOCK_ARRAYS  # the columns of `checksums`, in this order (recorded in its attribute 'columns')


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


# ---------------------------------------------------------------------------------------------- opening


def is_zip(url: str | Path) -> bool:
    """A packed store (`vad store pack`): a local file whose name ends in .zip."""
    return _is_local(url) and str(url).lower().endswith(".zip")


def storage_options_from_env(url: str | Path, storage_options: dict | None = None) -> dict | None:
    """Explicit options win; for a remote URL without them, the JSON dict in $VAD_STORAGE_OPTIONS (if set).

    Credentials and endpoints usually need no options at all: s3fs (through botocore) reads AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL and
    AWS_ENDPOINT_URL_S3 itself; fsspec applies FSSPEC_<PROTOCOL>_<OPTION> variables to every filesystem."""
    if storage_options is not None or _is_local(url):
        return storage_options
    raw = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
    if not raw:
        return None
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StoreError(f"${STORAGE_OPTIONS_ENV} is not valid JSON ({exc}); give a JSON object, e.g. "
                         '\'{"anon": true}\'') from None
    if not isinstance(options, dict):
        raise StoreError(f"${STORAGE_OPTIONS_ENV} must be a JSON object, got {type(options).__name__}")
    return options


def _zarr_store(url: str | Path, read_only: bool, storage_options: dict | None = None):
    url = str(url)
    if is_zip(url):
        if not read_only:
            raise StoreError(f"{url}: a packed store (.zip) is read-only: `vad store unpack` it to a folder to "
                             "resume or change it")
        return zarr.storage.ZipStore(_local_path(url), mode="r")
    if "://" in url and not url.startswith("file://"):
        return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)
    return zarr.storage.LocalStore(url.removeprefix("file://"), read_only=read_only)


def _is_local(url: str | Path) -> bool:
    return "://" not in str(url) or str(url).startswith("file://")


def _local_path(url: str | Path) -> Path:
    return Path(str(url).removeprefix("file://"))


def _path_state(url: str | Path, storage_options: dict | None = None) -> str:
    """'missing', 'empty' (an empty folder), 'file', 'zip' (a .zip file), 'zarr' (has zarr.json) or 'other'
    (non-empty folder)."""
    import fsspec

    if is_zip(url):
        path = _local_path(url)
        if path.is_file():
            return "zip"
        return "other" if path.exists() else "missing"
    try:
        fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
        if fs.exists(path.rstrip("/") + "/zarr.json"):
            return "zarr"
        if not fs.exists(path):
            return "missing"
        if fs.isfile(path):
            return "file"
        return "other" if fs.ls(path) else "empty"
    except (ImportError, ValueError) as exc:  # no filesystem for this protocol (s3fs not installed, ...)
        raise StoreError(f"{url}: cannot open this URL ({exc})") from None
    except Exception as exc:  # unreachable endpoint, refused credentials, ...
        if _is_local(url):
            raise
        raise StoreError(
            f"{url}: cannot reach the store ({type(exc).__name__}: {exc}). For S3 check AWS_ACCESS_KEY_ID, "
            f"AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) and AWS_DEFAULT_REGION; other "
            f"fsspec options go in ${STORAGE_OPTIONS_ENV} as JSON") from None


def _open_root(url: str | Path, read_only: bool, storage_options: dict | None = None) -> zarr.Group:
    storage_options = storage_options_from_env(url, storage_options)
    state = _path_state(url, storage_options)
    if state == "zip":
        import zipfile

        try:
            with zipfile.ZipFile(_local_path(url)) as zf:
                has_root = "zarr.json" in zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise StoreError(f"{url}: not a readable zip file ({exc}); a packed store is written by "
                             "`vad store pack`") from None
        if not has_root:
            raise StoreError(f"{url}: a zip file but not a packed store (no zarr.json at its top level)")
    elif state != "zarr":
        raise StoreError(f"{url}: " + {
            "missing": "no store at this path",
            "empty": "an empty folder, not a store",
            "file": "a file, not a store (a store is a folder with zarr.json)",
            "other": "exists but is not a Zarr v3 store (no zarr.json)",
        }[state])
    zstore = _zarr_store(url, read_only, storage_options)
    try:
        root = zarr.open_group(zstore, mode="r" if read_only else "r+", zarr_format=3)
    except Exception as exc:  # malformed metadata JSON, an array where a group should be, ...
        raise StoreError(f"{url}: cannot be opened as a Zarr v3 group ({exc})") from exc
    if "schema_version" not in root.attrs:
        raise StoreError(f"{url}: a Zarr group but not a vad store (no 'schema_version' attribute)")
    version = root.attrs["schema_version"]
    if version != SCHEMA_VERSION:
        which = "newer" if int(version) > SCHEMA_VERSION else "older"
        raise StoreError(
            f"{url}: store has schema version {version}, this vad {__version__} reads version "
            f"{SCHEMA_VERSION} ({which} store): rebuild it with `pipeline precompute --overwrite`"
            + (" or upgrade vad" if which == "newer" else "")
        )
    return root


def _codec_names(codecs: Any) -> Iterator[str]:
    """Names of a zarr.json codec list, nested ones (sharding) included; malformed entries give '<...>'."""
    if not isinstance(codecs, list):
        yield f"<codecs {json.dumps(codecs)[:60]}>"
        return
    for codec in codecs:
        if isinstance(codec, str):
            yield codec
        elif isinstance(codec, dict) and isinstance(codec.get("name"), str):
            yield codec["name"]
            config = codec.get("configuration") or {}
            for key in ("codecs", "index_codecs"):
                if isinstance(config, dict) and key in config:
                    yield from _codec_names(config[key])
        else:
            yield f"<{json.dumps(codec)[:60]}>"


def check_array_metadata(raw: bytes, where: str) -> None:
    """Refuse an array whose zarr.json could make decoding run code: a data type or codec outside the
    allow-lists, a storage transformer, or metadata that is not Zarr v3 JSON. Reads the raw JSON, before
    zarr resolves anything of it."""
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{where}: zarr.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
        raise StoreError(f"{where}: zarr.json is not Zarr v3 metadata")
    if meta.get("node_type") != "array":
        return  # a group where an array should be: validate() names it
    dtype = meta.get("data_type")
    dtype_name = dtype.get("name") if isinstance(dtype, dict) else dtype
    if not isinstance(dtype_name, str) or dtype_name not in ALLOWED_DATA_TYPES:
        raise StoreError(f"{where}: data type {json.dumps(dtype)[:80]} is refused: a store is data, never code "
                         f"(allowed: {', '.join(sorted(ALLOWED_DATA_TYPES))})")
    for name in _codec_names(meta.get("codecs", [])):
        if name not in ALLOWED_CODECS:
            raise StoreError(f"{where}: codec {name!r} is refused: a store is data, never code "
                             f"(allowed: {', '.join(sorted(ALLOWED_CODECS))})")
    if meta.get("storage_transformers"):
        raise StoreError(f"{where}: storage transformers {json.dumps(meta['storage_transformers'])[:80]} are "
                         "refused: a store is data, never code")


def get_many(zstore, keys: list[str]) -> list[bytes | None]:
    """The raw bytes of several keys of a zarr store, fetched concurrently (None where absent)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    async def fetch() -> list:
        proto = default_buffer_prototype()
        return await asyncio.gather(*(zstore.get(key, proto) for key in keys))

    return [None if buf is None else buf.to_bytes() for buf in sync(fetch())]


def open_store(url: str | Path, *, mode: str = "r", storage_options: dict | None = None,
               validate: bool = True) -> "Store":
    """Open an existing store ('r' read-only, 'r+' to write); validates it against the contract."""
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    store = Store(str(url), _open_root(url, mode == "r", storage_options))
    if validate:
        store.validate()
    return store


def is_store(url: str | Path) -> bool:
    try:
        _open_root(url, read_only=True)
    except StoreError:
        return False
    return True


def create_store(url: str | Path, *, dataset: str, build: dict, classes: dict[int, str],
                 extra: dict | None = None, overwrite: bool = False,
                 storage_options: dict | None = None) -> "Store":
    """Create a store, or reopen one built with the same `build` (teachers, resolution, chunking) to resume.

    `overwrite` replaces an existing Zarr store whatever it was built with; without it, a store built with
    another fingerprint is refused. A path that holds anything other than a Zarr store (a file, a folder
    without zarr.json) is always refused: nothing that is not a store is ever deleted.
    """
    fp = fingerprint(build)
    storage_options = storage_options_from_env(url, storage_options)
    if is_zip(url):
        raise StoreError(f"{url}: a packed store (.zip) is read-only: build into a folder (or an fsspec URL), "
                         "then `vad store pack` it")
    state = _path_state(url, storage_options)
    if state in ("file", "other"):
        _open_root(url, read_only=True, storage_options=storage_options)  # raises the precise error
    exists = state == "zarr"
    if exists and not overwrite:
        root = _open_root(url, read_only=False, storage_options=storage_options)  # refuses non-vad groups
        old = root.attrs.get("fingerprint")
        if old == fp and root.attrs.get("dataset") == dataset:
            return Store(str(url), root)  # resume
        raise StoreError(
            f"{url}: store was built from dataset {root.attrs.get('dataset')!r} with other teachers or "
            f"settings (fingerprint {str(old)[:12]} != {fp[:12]}): "
            f"{describe_build_change(root.attrs.get('build', {}), build)}. "
            "Use --overwrite to replace it, or another --store path"
        )
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "resolution": list(build["resolution"]),
        "chunk_frames": build["chunk_frames"],
        "build": build,
        "teachers": build["teachers"],
        "fingerprint": fp,
        "classes": {str(k): v for k, v in sorted(classes.items())},
        "flow_valid_from": FLOW_VALID_FROM,
        "vad_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    if exists and _is_local(url):
        # delete the root zarr.json last: a kill during deletion leaves a Zarr store that --overwrite replaces
        for child in _local_path(url).iterdir():
            if child.name != "zarr.json":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    # one write of the root zarr.json with its attributes: no window where the group lacks them
    root = zarr.create_group(_zarr_store(url, False, storage_options), overwrite=True, attributes=attrs)
    for split in SPLITS:
        root.require_group(split)
    return Store(str(url), root)


def describe_build_change(old: dict, new: dict) -> str:
    changes = []
    for key in sorted(set(old) | set(new)):
        if key == "teachers":
            for role in sorted(set(old.get(key, {})) | set(new.get(key, {}))):
                a, b = old.get(key, {}).get(role), new.get(key, {}).get(role)
                if a != b:
                    changes.append(f"{role} teacher {_teacher_str(a)} -> {_teacher_str(b)}")
        elif old.get(key) != new.get(key):
            changes.append(f"{key} {old.get(key)} -> {new.get(key)}")
    return "; ".join(changes) or "unknown difference"


def _teacher_str(t: dict | None) -> str:
    if not t:
        return "none"
    return f"{t['name']} v{t['version']} {json.dumps(t.get('params', {}), sort_keys=True)}"


# ---------------------------------------------------------------------------------------------- access


class Store:
    """An open store: root attributes and the videos of each split."""

    def __init__(self, url: str, root: zarr.Group):
        self.url = url
        self.root = root
        self._checked: set[str] = set()  # videos whose arrays' metadata passed check_array_metadata

    # root attributes, typed
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    @property
    def dataset(self) -> str:
        return self.root.attrs["dataset"]

    @property
    def resolution(self) -> tuple[int, int]:
        h, w = self.root.attrs["resolution"]
        return (int(h), int(w))

    @property
    def chunk_frames(self) -> int:
        return int(self.root.attrs["chunk_frames"])

    @property
    def fingerprint(self) -> str:
        return self.root.attrs["fingerprint"]

    @property
    def teachers(self) -> dict[str, dict]:
        return dict(self.root.attrs["teachers"])

    @property
    def classes(self) -> dict[int, str]:
        return {int(k): v for k, v in self.root.attrs["classes"].items()}

    def video_ids(self, split: str) -> list[str]:
        _check_split(split)
        return sorted(name for name, _ in self.root[split].groups())

    def videos(self, split: str | None = None) -> Iterator["VideoStore"]:
        for s in (SPLITS if split is None else (split,)):
            for vid in self.video_ids(s):
                yield self.video(s, vid)

    def video(self, split: str, video_id: str) -> "VideoStore":
        _check_split(split)
        try:
            group = self.root[f"{split}/{video_id}"]
        except KeyError:
            raise StoreError(f"{self.url}: no video {split}/{video_id}") from None
        self._check_arrays(f"{split}/{video_id}")
        return VideoStore(self, split, video_id, group)

    def _check_arrays(self, key: str) -> None:
        """Before anything of a video is decoded: its arrays use only allowed data types and codecs."""
        if key in self._checked:
            return
        prefix = "/".join(p for p in (self.root.path, key) if p)
        names = list(ARRAYS)
        for name, raw in zip(names, get_many(self.root.store, [f"{prefix}/{n}/zarr.json" for n in names])):
            if raw is not None:
                check_array_metadata(raw, f"{self.url}: {key}/{name}")
        self._checked.add(key)

    def create_video(self, split: str, video_id: str, *, n_frames: int, has_labels: bool, has_masks: bool,
                     source: str = "", source_size: tuple[int, int] | None = None,
                     meta: dict | None = None) -> "VideoStore":
        """Create a video's group and arrays; idempotent for the same video (a resumed run)."""
        _check_split(split)
        path = f"{split}/{video_id}"
        if path in self.root:
            video = self.video(split, video_id)
            if video.n_frames != n_frames:
                raise StoreError(
                    f"{self.url}: {path} has {video.n_frames} frames in the store but {n_frames} in the "
                    "dataset: the source data changed since the store was built; rebuild with --overwrite"
                )
            group = video.group
        else:
            group = self.root.require_group(path)
            group.attrs.update({
                "n_frames": n_frames,
                "n_blocks": n_blocks(n_frames, self.chunk_frames),
                "source": source,
                "source_size": list(source_size) if source_size else None,
                "meta": meta or {},
            })
        for spec in ARRAYS.values():
            if split not in spec.splits or spec.name in group:
                continue
            if spec.name == "label" and not has_labels or spec.name == "mask" and not has_masks:
                continue
            attributes = {"meaning": spec.meaning, "scale": spec.scale, "units": spec.units}
            if spec.name == "checksums":
                attributes["columns"] = list(CHECKSUMMED)
            group.create_array(
                spec.name,
                shape=spec.shape(n_frames, self.resolution, self.chunk_frames),
                chunks=spec.chunks(n_frames, self.resolution, self.chunk_frames),
                dtype=spec.dtype,
                compressors=ZstdCodec(level=COMPRESSION_LEVEL),
                fill_value=0,
                attributes=attributes,
                dimension_names=list(spec.dims),
            )
        return VideoStore(self, split, video_id, group)

    def validate(self) -> None:
        """Every video has the arrays of the contract with the right dtype and shape."""
        for split in SPLITS:
            if split not in self.root:
                raise StoreError(f"{self.url}: no '{split}' group")
            for video in self.videos(split):
                video.validate()

    def missing_blocks(self) -> dict[str, list[int]]:
        """Blocks not yet computed, per 'split/video'."""
        out = {}
        for video in self.videos():
            todo = np.flatnonzero(video.blocks_done() == 0).tolist()
            if todo:
                out[video.key] = todo
        return out

    def require_complete(self) -> None:
        missing = self.missing_blocks()
        if missing:
            n = sum(len(v) for v in missing.values())
            raise StoreError(
                f"{self.url}: store is incomplete ({n} blocks of frames in {len(missing)} videos not computed, "
                f"e.g. {next(iter(missing))}): finish it with `pipeline precompute` (it resumes)"
            )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


class VideoStore:
    """One video of a store: typed, decoded reads of frame ranges and chunk-aligned block writes."""

    def __init__(self, store: Store, split: str, video_id: str, group: zarr.Group):
        self.store, self.split, self.id, self.group = store, split, video_id, group

    @property
    def key(self) -> str:
        return f"{self.split}/{self.id}"

    @property
    def n_frames(self) -> int:
        return int(self.group.attrs["n_frames"])

    @property
    def n_blocks(self) -> int:
        return int(self.group.attrs["n_blocks"])

    @property
    def meta(self) -> dict:
        return dict(self.group.attrs.get("meta", {}))

    @property
    def has_labels(self) -> bool:
        return "label" in self.group

    @property
    def has_masks(self) -> bool:
        return "mask" in self.group

    def array(self, name: str) -> zarr.Array:
        try:
            return self.group[name]
        except KeyError:
            raise StoreError(f"{self.store.url}: video {self.key} has no array '{name}'") from None

    def _read(self, name: str, frames: slice | int | None) -> np.ndarray:
        arr = self.array(name)
        return ARRAYS[name].decode(arr[slice(None) if frames is None else frames])

    def frames(self, frames: slice | int | None = None) -> np.ndarray:
        """uint8 RGB (n, H, W, 3)."""
        return self._read("frames", frames)

    def seg(self, frames: slice | int | None = None) -> np.ndarray:
        """uint8 class ids (n, H, W); names in Store.classes."""
        return self._read("seg", frames)

    def flow_mag(self, frames: slice | int | None = None, masked: bool = False) -> np.ndarray:
        """float32 store pixels per frame (n, H, W); `masked` zeroes it where seg is background (paper 4.3)."""
        mag = self._read("flow_mag", frames)
        return mag * (self.seg(frames) > 0) if masked else mag

    def flow_ang(self, frames: slice | int | None = None) -> np.ndarray:
        """float32 radians in [0, 2*pi), image axes (x right, y down)."""
        return self._read("flow_ang", frames)

    def depth(self, frames: slice | int | None = None) -> np.ndarray:
        """float32 relative inverse depth in [0, 1] per frame, larger = nearer."""
        return self._read("depth", frames)

    def label(self) -> np.ndarray | None:
        """uint8 (T,) frame-level ground truth, or None when the video has none."""
        return self.group["label"][:] if self.has_labels else None

    def mask(self, frames: slice | int | None = None) -> np.ndarray | None:
        return self._read("mask", frames) if self.has_masks else None

    def blocks_done(self) -> np.ndarray:
        return self.array("blocks_done")[:]

    # writing (pipeline)
    def write_labels(self, labels: np.ndarray) -> None:
        """Write the frame labels and record their crc32 in the array's attribute `crc32` (first: a kill between
        the two leaves stored labels that differ from the dataset's, which the next run rewrites)."""
        arr = self.array("label")
        encoded = ARRAYS["label"].encode(labels)
        arr.attrs["crc32"] = digest(encoded)
        with zarr.config.set({"array.write_empty_chunks": True}):  # all-normal labels are a chunk too
            arr[:] = encoded

    def write_block(self, block: int, values: dict[str, np.ndarray]) -> None:
        """Write whole chunks of one block of frames, then mark the block done (last, so a kill never
        leaves a block marked done with missing data)."""
        start, stop = block_range(block, self.n_frames, self.store.chunk_frames)
        encoded = {}
        for name, data in values.items():
            if name not in BLOCK_ARRAYS:
                raise ValueError(f"{name!r} is not a per-block array ({BLOCK_ARRAYS})")
            if data.shape[0] != stop - start:
                raise ValueError(f"{self.key} block {block}: {name} has {data.shape[0]} frames, expected {stop - start}")
            encoded[name] = ARRAYS[name].encode(data)
        if "flow_ang" in encoded and "flow_mag" in encoded:
            still = ARRAYS["flow_mag"].decode(encoded["flow_mag"]) < ANGLE_MIN_MAGNITUDE
            encoded["flow_ang"][still] = 0  # no motion, no direction
        # the crc32 of every array's block as stored; an array this call does not write is read back
        row = np.zeros(len(CHECKSUMMED), np.uint32)
        for i, name in enumerate(CHECKSUMMED):
            if name in encoded:
                row[i] = digest(encoded[name])
            elif name in self.group:
                row[i] = digest(self.array(name)[start:stop])
        # every chunk is written, even one equal to the fill value: zarr's check for those costs 4x the write
        with zarr.config.set({"array.write_empty_chunks": True}):
            for name, data in encoded.items():
                self.array(name)[start:stop] = data
            self.array("checksums")[block] = row  # after the data, before the block is marked done
        self.array("blocks_done")[block] = 1

    def validate(self) -> None:
        res, cf = self.store.resolution, self.store.chunk_frames
        for spec in ARRAYS.values():
            if self.split not in spec.splits:
                continue
            if spec.name not in self.group:
                if spec.optional:
                    continue
                raise StoreError(f"{self.store.url}: video {self.key} lacks array '{spec.name}' (schema v{SCHEMA_VERSION})")
            arr = self.group[spec.name]
            if not isinstance(arr, zarr.Array):
                raise StoreError(f"{self.store.url}: {self.key}/{spec.name} is a group, expected an array")
            expected = spec.shape(self.n_frames, res, cf)
            if str(arr.dtype) != spec.dtype or tuple(arr.shape) != expected:
                raise StoreError(
                    f"{self.store.url}: {self.key}/{spec.name} is {arr.dtype}{tuple(arr.shape)}, "
                    f"the contract says {spec.dtype}{expected}"
                )
        columns = self.group["checksums"].attrs.get("columns")
        if columns != list(CHECKSUMMED):
            raise StoreError(f"{self.store.url}: {self.key}/checksums has columns {columns}, the contract says "
                             f"{list(CHECKSUMMED)}")


def store_summary(store: Store) -> dict[str, Any]:
    """What `vad store info` shows: videos, frames, per-array bytes, teachers, completeness."""
    per_array: dict[str, dict[str, Any]] = {}
    videos = {s: 0 for s in SPLITS}
    frames = {s: 0 for s in SPLITS}
    for video in store.videos():
        videos[video.split] += 1
        frames[video.split] += video.n_frames
        for name in ARRAYS:
            if name not in video.group:
                continue
            arr = video.group[name]
            row = per_array.setdefault(name, {"dtype": str(arr.dtype), "chunks": tuple(arr.chunks),
                                              "stored": 0, "raw": 0, "videos": 0})
            row["stored"] += arr.nbytes_stored()
            row["raw"] += arr.nbytes
            row["videos"] += 1
    missing = store.missing_blocks()
    return {
        "url": store.url,
        "dataset": store.dataset,
        "schema_version": store.attrs["schema_version"],
        "resolution": store.resolution,
        "chunk_frames": store.chunk_frames,
        "videos": videos,
        "frames": frames,
        "arrays": per_array,
        "teachers": store.teachers,
        "fingerprint": store.fingerprint,
        "classes": store.classes,
        "missing_blocks": sum(len(v) for v in missing.values()),
        "created": store.attrs.get("created"),
        "vad_version": store.attrs.get("vad_version"),
        "pipeline_version": store.attrs.get("pipeline_version"),
        "built_by": store.attrs.get("built_by"),
        "source_root": store.attrs.get("source_root"),
    }
