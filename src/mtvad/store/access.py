"""Opening, creating and validating a store; typed, decoded reads of a video's arrays and chunk-aligned block
writes (`Store`, `VideoStore`). The contract itself is `mtvad.store.schema`."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, TransposeCodec, ZstdCodec

from mtvad import __version__
from mtvad.errors import StoreError
from mtvad.store import layout
from mtvad.store.locations import (
    MissingChunkError,
    get_many,
    is_local,
    is_zip,
    list_keys,
    local_path,
    path_state,
    run_sync,
    storage_options_from_env,
    zarr_store,
)
from mtvad.store.safety import check_array_metadata
from mtvad.store.schema import (
    ANGLE_MIN_MAGNITUDE,
    ARRAYS,
    BLOCK_ARRAYS,
    BOOKKEEPING,
    CHANNELS,
    CHECKSUMMED,
    COMPRESSION_LEVEL,
    COMPRESSIONS,
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
    if isinstance(version, bool) or not isinstance(version, int):
        raise StoreError(f"{url}: 'schema_version' is {json.dumps(version)[:40]}, not an integer: not a store "
                         "vad wrote (or its zarr.json was edited)")
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


def check_target(url: str | Path, *, overwrite: bool = False, storage_options: dict | None = None) -> None:
    """Refuse, before anything is computed, a path `create_store` would refuse: one that holds anything but a
    vad store, or (with `overwrite`) a vad store holding files that vad did not write (`mtvad.store.layout`)."""
    storage_options = storage_options_from_env(url, storage_options)
    if is_zip(url):
        raise StoreError(f"{url}: a packed store (.zip) is read-only: build into a folder (or an fsspec URL), "
                         "then `vad store pack` it")
    state = path_state(url, storage_options)
    if state in ("file", "other"):
        _open_root(url, read_only=True, storage_options=storage_options)  # raises the precise error
    if state == "zarr" and overwrite:
        _existing_layout(url, storage_options)


def _existing_layout(url: str | Path, storage_options: dict | None) -> list[str]:
    """The keys of the vad store at `url`, all of its layout, or a StoreError naming what is not."""
    if is_local(url):
        return layout.check_local(str(url), local_path(url))
    zstore = zarr_store(url, False, storage_options, strict=False)
    return layout.check_keys(str(url), list_keys(zstore), get_many(zstore, ["zarr.json"])[0])


def create_store(url: str | Path, *, dataset: str, build: dict, classes: dict[int, str],
                 extra: dict | None = None, overwrite: bool = False, videos: dict[str, dict[str, int]] | None = None,
                 storage_options: dict | None = None) -> "Store":
    """Create a store, or reopen one built with the same `build` (teachers, resolution, chunking) and dataset
    to resume.

    `videos` ({split: {video id: frames}}) is recorded in the root attribute `videos`: the videos the store
    must hold (`create_video` adds the ones created later). `overwrite` replaces an existing vad store whatever
    it was built with, deleting only its own files (`mtvad.store.layout`); without it, a store built with
    another fingerprint or dataset is refused. A path that holds anything other than a vad store is always
    refused: nothing vad did not write is ever deleted.
    """
    fp = fingerprint(build)
    storage_options = storage_options_from_env(url, storage_options)
    check_target(url, overwrite=overwrite, storage_options=storage_options)
    exists = path_state(url, storage_options) == "zarr"
    if exists and not overwrite:
        root = _open_root(url, read_only=False, storage_options=storage_options)  # refuses non-vad groups
        old, old_dataset = root.attrs.get("fingerprint"), root.attrs.get("dataset")
        if old == fp and old_dataset == dataset:
            for split in SPLITS:
                root.require_group(split)  # a deleted split comes back (its videos are recomputed)
            store = Store(str(url), root)
            store.record_videos(videos or {})
            return store  # resume
        if old == fp:
            raise StoreError(f"{url}: store was built from dataset {old_dataset!r}, not {dataset!r} (same teachers "
                             "and settings). Use --overwrite to replace it, or another --store path")
        other_dataset = "" if old_dataset == dataset else f"from dataset {old_dataset!r} (not {dataset!r}) and "
        raise StoreError(
            f"{url}: store was built {other_dataset}with other teachers or settings (fingerprint "
            f"{str(old)[:12]} != {fp[:12]}): {describe_build_change(root.attrs.get('build', {}), build)}. "
            "Use --overwrite to replace it, or another --store path"
        )
    recorded = {split: {} for split in SPLITS}
    for split, ids in (videos or {}).items():
        recorded[split].update({vid: int(n) for vid, n in ids.items()})
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
        "videos": recorded,
        "vad_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }

    def make() -> Store:
        # one write of the root zarr.json with its attributes: no window where the group lacks them
        root = zarr.create_group(zarr_store(url, False, storage_options), attributes=attrs)
        for split in SPLITS:
            root.require_group(split)
        return Store(str(url), root)

    if not exists:
        return make()
    if is_local(url):
        return layout.replace_local(str(url), local_path(url), make)
    zstore = zarr_store(url, False, storage_options, strict=False)
    keys = _existing_layout(url, storage_options)

    async def delete() -> None:
        for key in sorted(keys, key=lambda k: (k == "zarr.json", k)):  # root metadata last
            await zstore.delete(key)

    run_sync(delete())
    return make()


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

    def recorded_videos(self) -> dict[str, dict[str, int]] | None:
        """{split: {video id: frames}}: the videos the store must hold (root attribute `videos`), or None for a
        store made before stores recorded them."""
        recorded = self.root.attrs.get("videos")
        if not isinstance(recorded, dict):
            return None
        return {split: dict(recorded.get(split) or {}) for split in SPLITS}

    def record_videos(self, videos: dict[str, dict[str, int]]) -> None:
        """Add videos to the record (`recorded_videos`); one write of the root metadata, only if it changes. A store
        that records none yet (made before stores did) starts its record with the videos it holds."""
        old = self.recorded_videos()
        new = old or {split: {vid: self._group_frames(split, vid) for vid in self._present_ids(split)}
                      for split in SPLITS}
        new = {split: dict(ids) for split, ids in new.items()}
        for split, ids in videos.items():
            for vid, n in ids.items():
                new[split].setdefault(vid, int(n))
        if new != old:
            self.root.attrs["videos"] = new

    def _group_frames(self, split: str, vid: str) -> int:
        return int(self.root[f"{split}/{vid}"].attrs.get("n_frames", 0))

    def _present_ids(self, split: str) -> list[str]:
        """The video groups of a split that are in the store (none if the split group is gone)."""
        if split not in self.root:
            return []
        return sorted(name for name, _ in self.root[split].groups())

    def video_ids(self, split: str) -> list[str]:
        """The videos of a split; a StoreError if a video the store records (or the split itself) is gone."""
        _check_split(split)
        recorded = self.recorded_videos()
        if split not in self.root:
            raise StoreError(f"{self.url}: {Gap(split, '-', None, 'split group missing (deleted?)')}: the store is "
                             f"damaged; `vad store verify {self.url}` lists what is missing, `vad precompute` on "
                             "the store recomputes it")
        present = self._present_ids(split)
        lost = sorted(set(recorded[split]) - set(present)) if recorded else []
        if lost:
            gap = Gap(f"{split}/{lost[0]}", "-", None,
                      f"video group missing (deleted?), {recorded[split][lost[0]]} frames recorded")
            raise StoreError(f"{self.url}: {gap}" + (f" ({len(lost)} videos are missing)" if len(lost) > 1 else "")
                             + f": the store is damaged; `vad store verify {self.url}` lists what is missing, "
                             "`vad precompute` on the store recomputes it")
        return present

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
                     meta: dict | None = None, channels: int = 3) -> "VideoStore":
        """Create a video's group and arrays (`channels`: of its frames, 1 for grey footage); idempotent for the
        same video (a resumed run)."""
        _check_split(split)
        if channels not in CHANNELS:
            raise ValueError(f"frames have {CHANNELS} channels, not {channels}")
        path = f"{split}/{video_id}"
        recorded = self.recorded_videos()
        if recorded is not None and video_id not in recorded[split]:
            self.record_videos({split: {video_id: n_frames}})  # recorded first: a kill then leaves it missing
        if split not in self.root:
            self.root.require_group(split)
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
                "channels": channels,
                "arrays": sorted(name for name, spec in ARRAYS.items() if split in spec.splits
                                 and (name != "label" or has_labels) and (name != "mask" or has_masks)),
            })
        stored_channels = int(group.attrs.get("channels", 3))  # a resumed video keeps those it was created with
        for spec in ARRAYS.values():
            if split not in spec.splits or spec.name in group:
                continue
            if spec.name == "label" and not has_labels or spec.name == "mask" and not has_masks:
                continue
            attributes = {"meaning": spec.meaning, "scale": spec.scale, "units": spec.units}
            if spec.name == "checksums":
                attributes["columns"] = list(CHECKSUMMED)
            filters, compressors = _codecs(spec.compression, len(spec.dims), spec.dtype)
            if spec.name in BOOKKEEPING:
                compressors.append(Crc32cCodec())  # a damaged flag or checksum chunk is found as itself
            group.create_array(
                spec.name,
                shape=spec.shape(n_frames, self.resolution, self.chunk_frames, stored_channels),
                chunks=spec.chunks(n_frames, self.resolution, self.chunk_frames, stored_channels),
                dtype=spec.dtype,
                filters=filters,
                compressors=compressors,
                fill_value=0,
                attributes=attributes,
                dimension_names=list(spec.dims),
            )
        return VideoStore(self, split, video_id, group)

    def root_problems(self) -> list[str]:
        """How the root's record disagrees with itself: a fingerprint that is not its build's, or teachers,
        resolution, chunking or schema other than the build's (metadata only; `vad store verify` lists them)."""
        attrs = self.attrs
        build = attrs.get("build", {})
        out = ["the fingerprint does not match the recorded build"] if fingerprint(build) != attrs.get("fingerprint") \
            else []
        return out + [f"{name} differs from the recorded build" for name in
                      ("teachers", "resolution", "chunk_frames", "schema_version") if build.get(name) != attrs.get(name)]

    def validate(self) -> None:
        """The root agrees with its build (`root_problems`), and every recorded video is there, with the arrays of
        the contract (`VideoStore.contract_problems`): what verify checks without reading a chunk."""
        for problem in self.root_problems():
            raise StoreError(f"{self.url}: zarr.json: {problem}: the store is damaged; rebuild it with "
                             "`vad precompute --overwrite`")
        for split in SPLITS:
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

    def gaps(self, videos: Iterable[str] | None = None, *, arrays: bool = True) -> list["Gap"]:
        """What should be in the store and is not (of the given 'split/video' keys; default: every video, and
        the recorded videos and splits): see `VideoStore.gaps` (`arrays=False`: only chunks of the arrays
        present). Lists the chunk keys of each video once."""
        out: list[Gap] = []
        present = {split: set(self._present_ids(split)) for split in SPLITS}
        if videos is None:
            recorded = self.recorded_videos() or {split: {} for split in SPLITS}
            keys = []
            for split in SPLITS:
                if split not in self.root:
                    out.append(Gap(split, "-", None, "split group missing (deleted?)"))
                out += [Gap(f"{split}/{vid}", "-", None, f"video group missing (deleted?), {n} frames recorded")
                        for vid, n in sorted(recorded[split].items()) if vid not in present[split]]
                keys += [f"{split}/{vid}" for vid in sorted(present[split])]
        else:
            keys = list(videos)
        for key in keys:
            split, vid = key.split("/", 1)
            if vid not in present.get(split, ()):
                out.append(Gap(key, "-", None, "video group missing (deleted?)"))
                continue
            out += self.video(split, vid).gaps(arrays=arrays)
        return out

    def require_intact(self, videos: Iterable[str] | None = None, *, arrays: bool = True) -> None:
        """Nothing that should be in the store is missing (`gaps`), else a StoreError naming the first gap: Zarr
        would read a deleted chunk as zeros."""
        gaps = self.gaps(videos, arrays=arrays)
        if gaps:
            more = f" ({len(gaps)} things are missing)" if len(gaps) > 1 else ""
            raise StoreError(f"{self.url}: {gaps[0]}{more}: the store is damaged; `vad store verify {self.url}` lists "
                             "what is missing, `vad precompute` on the store recomputes it")

    def require_complete(self, videos: Iterable[str] | None = None, *, otherwise: str = "") -> None:
        """The one completeness rule: every block of the given 'split/video' keys (default: every video) is
        computed and no chunk of its arrays is missing (`require_intact`), else a StoreError that names the first
        incomplete video and how to finish the store (`otherwise`: another way out, appended to the message).
        A missing array is `validate`'s (and a branch's check of the arrays it needs)."""
        self.require_intact(videos, arrays=False)
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


# zarr-python warns on every numcodecs codec (here `numcodecs.delta`) that other Zarr implementations
# may lack one; zarr-python reads it, and the contract names it (cache_schema.md).
warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3 specification")


def _codecs(compression: str, ndim: int, dtype: str) -> tuple[list, list]:
    """(filters, compressors) of one of the contract's COMPRESSIONS, for an array of `ndim` dimensions."""
    if compression == "time-delta":
        from zarr.codecs.numcodecs import Delta

        order = tuple(range(1, ndim)) + (0,)  # time last: each pixel's values over the chunk's frames in a row
        return [TransposeCodec(order=order), Delta(dtype=dtype)], [ZstdCodec(level=COMPRESSION_LEVEL)]
    if compression == "row-delta":
        from zarr.codecs.numcodecs import Delta

        return [Delta(dtype=dtype)], [ZstdCodec(level=COMPRESSION_LEVEL)]
    if compression == "bitshuffle":
        return [], [BloscCodec(cname="zstd", clevel=COMPRESSION_LEVEL, shuffle="bitshuffle")]
    if compression == "zstd":
        return [], [ZstdCodec(level=COMPRESSION_LEVEL)]
    raise ValueError(f"unknown compression {compression!r}; the contract's are {sorted(COMPRESSIONS)}")


@dataclass(frozen=True)
class Gap:
    """Something that should be in a store and is not: a video group, an array, or an array's chunk of a block
    marked done (frames [start, stop))."""

    video: str  # split/video, or the split
    array: str  # "-" for the video (or split) itself
    frames: tuple[int, int] | None
    what: str

    def __str__(self) -> str:
        where = self.video if self.array == "-" else f"{self.video}/{self.array}"
        if self.frames is not None:
            a, b = self.frames
            where += f" [frames {a}-{b - 1}]" if b - a > 1 else f" [frame {a}]"
        return f"{where}: {self.what}"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


class VideoStore:
    """One video of a store: typed, decoded reads of frame ranges and chunk-aligned block writes."""

    def __init__(self, store: Store, split: str, video_id: str, group: zarr.Group):
        self.store, self.split, self.id, self.group = store, split, video_id, group
        self._arrays: dict[str, zarr.Array] = {}  # opened once: each opening reads the array's metadata

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
    def channels(self) -> int:
        """Channels of the stored frames: 1 for grey footage, 3 for RGB."""
        return int(self.group.attrs.get("channels", 3))

    def expected_shape(self, name: str) -> tuple[int, ...]:
        """The shape the contract gives this video's array `name`."""
        return ARRAYS[name].shape(self.n_frames, self.store.resolution, self.store.chunk_frames, self.channels)

    @property
    def has_labels(self) -> bool:
        return "label" in self.group

    @property
    def has_masks(self) -> bool:
        return "mask" in self.group

    def array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            try:
                self._arrays[name] = self.group[name]
            except KeyError:
                raise StoreError(f"{self.store.url}: video {self.key} has no array '{name}'") from None
        return self._arrays[name]

    def _read(self, name: str, frames: slice | int | None) -> np.ndarray:
        arr = self.array(name)
        try:
            return ARRAYS[name].decode(arr[slice(None) if frames is None else frames])
        except MissingChunkError as exc:
            block = int(exc.key.rsplit("/c/", 1)[1].split("/")[0])
            if block < self.n_blocks and not self.blocks_done()[block]:
                a, b = block_range(block, self.n_frames, self.store.chunk_frames)
                raise StoreError(f"{self.store.url}: {self.key}/{name} frames {a}-{b - 1} are not computed yet: "
                                 "finish the store with `vad precompute` (it resumes)") from None
            raise

    def frames(self, frames: slice | int | None = None) -> np.ndarray:
        """uint8 RGB (n, H, W, 3); grey frames (stored with one channel) have three equal channels."""
        stored = self._read("frames", frames)
        return np.repeat(stored, 3, axis=-1) if stored.shape[-1] == 1 else stored

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
        if not self.has_labels:
            return None
        arr = self.group["label"]
        try:
            return arr[:]
        except MissingChunkError:
            if "crc32" in arr.attrs:
                raise
            return np.zeros(arr.shape, arr.dtype)  # all-normal labels that stores before 0.1 never wrote

    def mask(self, frames: slice | int | None = None) -> np.ndarray | None:
        return self._read("mask", frames) if self.has_masks else None

    def blocks_done(self) -> np.ndarray:
        """uint8 (B,): 1 where the block is computed (an absent chunk: not yet)."""
        try:
            return self.array("blocks_done")[:]
        except StoreError:
            raise
        except Exception as exc:  # a chunk that fails its crc32c or does not decode
            raise StoreError(f"{self.store.url}: {self.key}/blocks_done is damaged ({type(exc).__name__}: "
                             f"{str(exc)[:120]}); `vad store verify` says where") from None

    def chunk_keys(self) -> set[str]:
        """Every key (metadata and chunks) under this video's group."""
        prefix = "/".join(p for p in (self.store.root.path, self.key) if p) + "/"
        return set(list_keys(self.store.root.store, prefix))

    def expected_arrays(self) -> list[str]:
        """The arrays this video must have: those recorded at its creation (attribute `arrays`), or for a store
        made before videos recorded them, the contract's required ones and the optional ones present."""
        recorded = self.group.attrs.get("arrays")
        if isinstance(recorded, list):
            return [name for name in ARRAYS if name in recorded]
        return [name for name, spec in ARRAYS.items() if self.split in spec.splits
                and (not spec.optional or name in self.group)]

    def absent_chunks(self, keys: set[str] | None = None) -> dict[str, list[int]]:
        """array -> blocks marked done whose chunk of that array is not in the store (`keys`: the video's keys,
        `chunk_keys()`, listed when not given). Arrays that are absent altogether are `gaps()`'s."""
        keys = self.chunk_keys() if keys is None else keys
        done = np.flatnonzero(self.blocks_done() == 1).tolist()
        out = {}
        for name in (*BLOCK_ARRAYS, "checksums"):
            if name not in self.group:
                continue
            arr = self.group[name]
            lost = [b for b in done if f"{arr.path}/{arr.metadata.encode_chunk_key((b,) + (0,) * (arr.ndim - 1))}"
                    not in keys]
            if lost:
                out[name] = lost
        return out

    def gaps(self, keys: set[str] | None = None, *, arrays: bool = True) -> list[Gap]:
        """What should be in this video and is not: every array recorded at its creation (unless not `arrays`),
        the chunk of every array (and of `checksums`) of each block marked done, and the label chunk once its
        crc32 is recorded."""
        keys = self.chunk_keys() if keys is None else keys
        out = [Gap(self.key, name, None, "array missing (deleted?)") for name in self.expected_arrays()
               if arrays and name not in self.group]
        if "blocks_done" not in self.group:
            return out
        for name, blocks in self.absent_chunks(keys).items():
            out += [Gap(self.key, name, block_range(b, self.n_frames, self.store.chunk_frames),
                        "chunk file missing (deleted?)") for b in blocks]
        if self.has_labels:
            arr = self.group["label"]
            if "crc32" in arr.attrs and f"{arr.path}/{arr.metadata.encode_chunk_key((0,))}" not in keys:
                out.append(Gap(self.key, "label", (0, self.n_frames), "chunk file missing (deleted?)"))
        return out

    def reset_blocks(self, blocks: Iterable[int]) -> None:
        """Mark blocks not computed (before recomputing data of theirs that went missing)."""
        arr = self.array("blocks_done")
        for b in blocks:
            arr[b] = 0

    # writing (mtvad.precompute)
    def write_labels(self, labels: np.ndarray) -> None:
        """Write the frame labels and record their crc32 in the array's attribute `crc32` (first: a kill between
        the two leaves stored labels that differ from the dataset's, which the next run rewrites)."""
        encoded = ARRAYS["label"].encode(labels)
        self.array("label").attrs["crc32"] = digest(encoded)
        self._writable("label")[:] = encoded  # all-normal labels are a chunk too

    def write_block(self, block: int, values: dict[str, np.ndarray]) -> None:
        """Write whole chunks of one block of frames, then mark the block done (last, so a kill never
        leaves a block marked done with missing data)."""
        start, stop = block_range(block, self.n_frames, self.store.chunk_frames)
        lacking = [name for name in BLOCK_ARRAYS if name in self.group and name not in values]
        if lacking:
            raise ValueError(f"{self.key} block {block}: no values for {lacking} (a block is written whole)")
        encoded = {}
        for name, data in values.items():
            if name not in BLOCK_ARRAYS:
                raise ValueError(f"{name!r} is not a per-block array ({BLOCK_ARRAYS})")
            if data.shape[0] != stop - start:
                raise ValueError(f"{self.key} block {block}: {name} has {data.shape[0]} frames, expected {stop - start}")
            if data.shape[1:] != self.expected_shape(name)[1:]:
                raise ValueError(f"{self.key} block {block}: {name} frames are {data.shape[1:]}, the contract says "
                                 f"{self.expected_shape(name)[1:]}")
            encoded[name] = ARRAYS[name].encode(data)
        if "flow_ang" in encoded and "flow_mag" in encoded:
            still = ARRAYS["flow_mag"].decode(encoded["flow_mag"]) < ANGLE_MIN_MAGNITUDE
            encoded["flow_ang"][still] = 0  # no motion, no direction
        # the crc32 of every array's block as stored (0 for an array the video lacks)
        row = np.zeros(len(CHECKSUMMED), np.uint32)
        for i, name in enumerate(CHECKSUMMED):
            if name in encoded:
                row[i] = digest(encoded[name])
        for name, data in encoded.items():
            self._writable(name)[start:stop] = data
        self._writable("checksums")[block] = row  # after the data, before the block is marked done
        self._writable("blocks_done")[block] = 1

    def _writable(self, name: str) -> zarr.Array:
        """An array that writes every chunk, even one equal to the fill value (an absent chunk means lost data; and
        zarr's check for those costs 4x the write)."""
        key = f"{name}:write"
        if key not in self._arrays:
            self._arrays[key] = self.array(name).with_config({"write_empty_chunks": True})
        return self._arrays[key]

    def contract_problems(self) -> list[tuple[str, str, str]]:
        """(array, kind, what) for each array that is not as the contract says: a recorded one deleted ("missing"),
        or one of another type, shape, meaning or checksum columns ("inconsistent"). Metadata only: no chunk is
        read (`vad store verify` reports these, and `validate` refuses the first)."""
        out = [(name, "missing", "array deleted") for name in self.expected_arrays() if name not in self.group]
        for spec in ARRAYS.values():
            if spec.name not in self.group:
                continue
            arr = self.group[spec.name]
            shape = self.expected_shape(spec.name)
            if not isinstance(arr, zarr.Array):
                out.append((spec.name, "inconsistent", f"is a group, the contract says {spec.dtype}{shape}"))
            elif str(arr.dtype) != spec.dtype or tuple(arr.shape) != shape:
                out.append((spec.name, "inconsistent",
                            f"is {arr.dtype}{tuple(arr.shape)}, the contract says {spec.dtype}{shape}"))
            elif arr.attrs.get("meaning") != spec.meaning:
                out.append((spec.name, "inconsistent", f"holds the metadata of another array "
                                                       f"({arr.attrs.get('meaning')!r}), not {spec.meaning!r}"))
            elif spec.name == "checksums" and arr.attrs.get("columns") != list(CHECKSUMMED):
                out.append((spec.name, "inconsistent", f"columns {arr.attrs.get('columns')}, the contract says "
                                                       f"{list(CHECKSUMMED)}"))
        return out

    def validate(self) -> None:
        """The video's arrays are as the contract says (`contract_problems`), else a StoreError naming the first."""
        for name, kind, what in self.contract_problems():
            if kind == "missing":
                raise StoreError(f"{self.store.url}: video {self.key} lacks array '{name}' (schema v{SCHEMA_VERSION})")
            raise StoreError(f"{self.store.url}: {self.key}/{name} {what}: the store is damaged; rebuild it with "
                             "`vad precompute --overwrite`")
