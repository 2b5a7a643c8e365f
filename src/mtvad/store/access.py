"""Opening, creating and validating a store; typed, decoded reads of a video's arrays and chunk-aligned block
writes (`Store`, `VideoStore`). The contract itself is `mtvad.store.schema`."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from mtvad import __version__
from mtvad.errors import StoreError
from mtvad.store.locations import (
    get_many,
    is_local,
    is_zip,
    local_path,
    path_state,
    storage_options_from_env,
    zarr_store,
)
from mtvad.store.safety import check_array_metadata
from mtvad.store.schema import (
    ANGLE_MIN_MAGNITUDE,
    ARRAYS,
    BLOCK_ARRAYS,
    CHECKSUMMED,
    COMPRESSION_LEVEL,
    FLOW_VALID_FROM,
    SCHEMA_VERSION,
    SPLITS,
    block_range,
    describe_build_change,
    digest,
    fingerprint,
    n_blocks,
)


def _open_root(url: str | Path, read_only: bool, storage_options: dict | None = None) -> zarr.Group:
    storage_options = storage_options_from_env(url, storage_options)
    state = path_state(url, storage_options)
    if state == "zip":
        import zipfile

        try:
            with zipfile.ZipFile(local_path(url)) as zf:
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
    zstore = zarr_store(url, read_only, storage_options)
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
            f"{SCHEMA_VERSION} ({which} store): rebuild it with `vad precompute --overwrite`"
            + (" or upgrade vad" if which == "newer" else "")
        )
    return root


def open_store(url: str | Path, *, mode: str = "r", storage_options: dict | None = None,
               validate: bool = True) -> "Store":
    """Open an existing store ('r' read-only, 'r+' to write); validates it against the contract."""
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    store = Store(str(url), _open_root(url, mode == "r", storage_options))
    if validate:
        store.validate()
    return store


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
    state = path_state(url, storage_options)
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
    if exists and is_local(url):
        # delete the root zarr.json last: a kill during deletion leaves a Zarr store that --overwrite replaces
        for child in local_path(url).iterdir():
            if child.name != "zarr.json":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    # one write of the root zarr.json with its attributes: no window where the group lacks them
    root = zarr.create_group(zarr_store(url, False, storage_options), overwrite=True, attributes=attrs)
    for split in SPLITS:
        root.require_group(split)
    return Store(str(url), root)


def class_ids(classes: dict) -> dict[int, str]:
    """A class vocabulary with int ids, from JSON's str keys (store, checkpoint and scores file attributes)."""
    return {int(k): v for k, v in classes.items()}


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
        return class_ids(self.root.attrs["classes"])

    def identity(self) -> dict[str, Any]:
        """Which store this is, as recorded in checkpoints and scores files (JSON-safe: class ids as str keys;
        `class_ids` reads them back): url, fingerprint, schema_version, dataset, resolution, classes, created
        (when this build began: a copy or a packed store keeps it, a rebuild does not) and videos
        ({split: {video id: frames}}). `mtvad.students.checkpoint.check_fits_store` compares them."""
        return {"url": self.url, "fingerprint": self.fingerprint,
                "schema_version": int(self.root.attrs["schema_version"]), "dataset": self.dataset,
                "resolution": list(self.resolution), "classes": {str(k): v for k, v in self.classes.items()},
                "created": self.root.attrs.get("created"),
                "videos": {split: {vid: int(group.attrs.get("n_frames", -1))
                                   for vid, group in sorted(self.root[split].groups())}
                           for split in SPLITS if split in self.root}}

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

    def missing_blocks(self, videos: Iterable[str] | None = None) -> dict[str, list[int]]:
        """Blocks not yet computed, per 'split/video' (of the given 'split/video' keys; default every video)."""
        if videos is None:
            chosen: Iterable[VideoStore] = self.videos()
        else:
            chosen = (self.video(*key.split("/", 1)) for key in videos)
        out = {}
        for video in chosen:
            todo = np.flatnonzero(video.blocks_done() == 0).tolist()
            if todo:
                out[video.key] = todo
        return out

    def require_complete(self, videos: Iterable[str] | None = None, *, otherwise: str = "") -> None:
        """The one completeness rule: every block of the given 'split/video' keys (default: every video) is
        computed, else a StoreError that names the first incomplete video and how to finish the store
        (`otherwise`: another way out, appended to the message)."""
        missing = self.missing_blocks(videos)
        if not missing:
            return
        n = sum(len(v) for v in missing.values())
        first = next(iter(missing))
        what = f"{first} is" if len(missing) == 1 else f"{len(missing)} videos are"
        where = "" if len(missing) == 1 else f", the first in {first}"
        raise StoreError(
            f"{self.url}: {what} incomplete ({n} block{'s' * (n != 1)} of frames not computed{where}): finish the "
            f"store with `vad precompute` (it resumes){otherwise}"
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

    # writing (mtvad.precompute)
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
