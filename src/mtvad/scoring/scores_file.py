"""The scores file that `vad score` writes and `vad eval` / `vad report` read (a Zarr v3 group; format in
`mtvad.scoring.score`): its format name and version, row names, units, and the reader `open_scores`.

A scores file is data, never code, like a store: `open_scores` checks every array's raw zarr.json against the
store's allow-list of data types and codecs (`mtvad.store.safety`) before anything is decoded, then the root
attributes' types and every video's arrays (names, shapes); a chunk that cannot be decoded, or a frame marked
valid without a score, is a `ScoresError` naming the array when it is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from mtvad import __version__
from mtvad.errors import VadError
from mtvad.errors import StoreError
from mtvad.store.access import Store
from mtvad.store.safety import check_array_metadata
from mtvad.store.schema import SPLITS

FORMAT = "vad-scores"
FORMAT_VERSION = 2  # 2: one array per row and reduction (<row>@<reduction>), the three teacher-only controls

BASELINE = "raw_flow"  # the raw teacher flow control (format 1's `teacher_flow`)
INVALID_POLICY = ("a frame a row cannot score is NaN in <row>@<reduction> and False in <row>_valid (appearance: "
                  "frame 0 and the last frame with the seg-future target, frame 0 with the seg target; motion, "
                  "raw_flow and masked_flow: frames before flow_valid_from; foreground_area: none); smoothing "
                  "fills them from the nearest valid frame and sets them back to NaN; evaluation counts only "
                  "frames every row can score")


class ScoresError(VadError):
    """A scores file is missing, malformed, of another format, or does not belong to the given store."""


def is_scores_file(path: str | Path) -> bool:
    meta = Path(path) / "zarr.json"
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get("format") == FORMAT
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ reading


@dataclass
class ScoresFile:
    """A scores file, read: its attributes and, per split and video, rows (scores, valid), labels, maps."""

    path: str
    attrs: dict[str, Any]
    root: zarr.Group

    @property
    def branches(self) -> list[str]:
        return list(self.attrs["branches"])

    @property
    def rows(self) -> list[str]:
        return list(self.attrs["rows"])

    @property
    def controls(self) -> list[str]:
        return list(self.attrs.get("controls", []))

    @property
    def reductions(self) -> list[str]:
        return list(self.attrs.get("reductions", []))

    def target_offset(self, branch: str) -> int:
        """The map (and score) of frame t of `branch` is about frame t + target_offset."""
        return int(self.attrs["checkpoints"].get(branch, {}).get("target_offset", 0))

    @property
    def fingerprint(self) -> str:
        return self.attrs["store"]["fingerprint"]

    @property
    def has_maps(self) -> bool:
        return bool(self.attrs.get("maps"))

    def video_ids(self, split: str) -> list[str]:
        if split not in self.root:
            return []
        return sorted(name for name, _ in self.root[split].groups())

    def check_reduction(self, reduction: str) -> None:
        if reduction not in self.reductions:
            raise ScoresError(f"{self.path}: no {reduction!r} scores (it has {', '.join(self.reductions)})")

    def _read(self, split: str, video: str, key: str, frames=slice(None)) -> np.ndarray:
        """An array's values; a chunk that cannot be decoded is a ScoresError naming the array."""
        try:
            return self.root[f"{split}/{video}/{key}"][frames]
        except Exception as exc:  # zarr and the codecs raise many types for damaged chunks
            raise ScoresError(f"{self.path}: {split}/{video}/{key} cannot be read ({type(exc).__name__}: {exc}): "
                              "the scores file is damaged, score again") from None

    def row(self, split: str, video: str, name: str, reduction: str = "sum") -> tuple[np.ndarray, np.ndarray]:
        """(scores float64 (T,), valid bool (T,)) of a row under a reduction."""
        self.check_reduction(reduction)
        key = f"{name}@{reduction}"
        scores = self._read(split, video, key)
        valid = self._read(split, video, f"{name}_valid").astype(bool)
        unscored = valid & ~np.isfinite(scores)
        if unscored.any():  # e.g. a deleted chunk, read as the fill value NaN
            raise ScoresError(f"{self.path}: {split}/{video}/{key}: {int(unscored.sum())} frame(s) marked valid hold "
                              "no score: the scores file is damaged, score again")
        return scores, valid

    def label(self, split: str, video: str) -> np.ndarray | None:
        return self._read(split, video, "label") if "label" in self.root[f"{split}/{video}"] else None

    def map(self, split: str, video: str, branch: str, frames=slice(None)) -> np.ndarray | None:
        key = f"{branch}_map"
        return self._read(split, video, key, frames) if key in self.root[f"{split}/{video}"] else None

    def raw(self, reduction: str = "sum") -> dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
        """{split: {video: {row: (scores, valid)}}} of every row under one reduction."""
        return {split: {vid: {row: self.row(split, vid, row, reduction) for row in self.rows}
                        for vid in self.video_ids(split)}
                for split in SPLITS if self.video_ids(split)}

    def check_store(self, store: Store) -> None:
        """Refuse a store this file was not scored on (fingerprint, dataset), or whose videos or their frame
        counts differ."""
        scored_on = self.attrs["store"]
        if store.fingerprint != self.fingerprint:
            raise ScoresError(
                f"{self.path}: scored on store {scored_on.get('url')} (fingerprint {self.fingerprint[:12]}), "
                f"but {store.url} has fingerprint {store.fingerprint[:12]}: give the store it was scored on")
        if scored_on.get("dataset") not in (None, store.dataset):
            raise ScoresError(f"{self.path}: scored on a store of dataset {scored_on['dataset']!r}, but {store.url} "
                              f"is of dataset {store.dataset!r}: give the store it was scored on")
        recorded = scored_on.get("videos") or {}  # {split: {id: frames}} (files scored since stores record it)
        for split in SPLITS:
            ours, theirs = self.video_ids(split), store.video_ids(split)
            if ours and ours != theirs:
                raise ScoresError(f"{self.path}: its {split} videos {ours[:5]}... differ from {store.url}'s "
                                  f"{theirs[:5]}...: score this store again")
            for vid, frames in recorded.get(split, {}).items():
                if vid in theirs and store.video(split, vid).n_frames != int(frames):
                    raise ScoresError(f"{self.path}: scored {split}/{vid} with {frames} frames, but {store.url} "
                                      f"has {store.video(split, vid).n_frames}: score this store again")


def open_scores(path: str | Path) -> ScoresFile:
    """Open a scores file after checking it is one: the allow-list of every array, the root attributes, every
    video's arrays. Anything malformed is a ScoresError naming the file and what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ScoresError(f"{path}: no scores file at this path (write one with `vad score`)")
    if not is_scores_file(path):
        raise ScoresError(f"{path}: not a vad scores file (no zarr.json with format '{FORMAT}')")
    _check_metadata(path)
    try:
        root = zarr.open_group(zarr.storage.LocalStore(str(path), read_only=True), mode="r", zarr_format=3)
        attrs = dict(root.attrs)
    except Exception as exc:  # metadata zarr cannot read
        raise ScoresError(f"{path}: cannot be opened as a Zarr v3 group ({type(exc).__name__}: {exc})") from None
    if attrs.get("format_version") != FORMAT_VERSION:
        raise ScoresError(f"{path}: scores format {attrs.get('format_version')!r}, this vad {__version__} reads "
                          f"format {FORMAT_VERSION}: score again")
    missing = [k for k in ("store", "branches", "controls", "rows", "reductions", "checkpoints") if k not in attrs]
    if missing:
        raise ScoresError(f"{path}: incomplete scores file (no {', '.join(missing)})")
    _check_attrs(path, attrs)
    sf = ScoresFile(str(path), attrs, root)
    _check_videos(sf)
    return sf


def _check_metadata(path: Path) -> None:
    """Every zarr.json under the file: JSON of Zarr v3, and an array's data type and codecs on the allow-list
    (checked on the raw JSON, before zarr resolves anything of it)."""
    for meta in sorted(path.rglob("zarr.json")):
        where = f"{path}: {meta.parent.relative_to(path).as_posix() or '(root)'}"
        try:
            check_array_metadata(meta.read_bytes(), where)
        except StoreError as exc:
            raise ScoresError(str(exc).replace("a store is data", "a scores file is data")) from None


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_attrs(path: Path, attrs: dict[str, Any]) -> None:
    """The root attributes the readers use, with the types they expect."""
    def bad(key: str, expected: str) -> ScoresError:
        return ScoresError(f"{path}: attribute {key!r} is {json.dumps(attrs.get(key))[:60]}, expected {expected}: "
                           "the scores file is damaged, score again")

    store = attrs["store"]
    if not isinstance(store, dict) or not isinstance(store.get("fingerprint"), str):
        raise bad("store", "an object with a 'fingerprint' string")
    for key in ("branches", "controls", "rows", "reductions"):
        if not _is_str_list(attrs[key]) or (not attrs[key] and key != "controls"):
            raise bad(key, "a list of names")
    checkpoints = attrs["checkpoints"]
    if not isinstance(checkpoints, dict) or not all(isinstance(checkpoints.get(b), dict) for b in attrs["branches"]):
        raise bad("checkpoints", "an object with one object per branch")
    if not all(isinstance(c.get("target_offset", 0), int) for c in checkpoints.values()):
        raise bad("checkpoints", "integer target offsets")
    if attrs.get("maps"):
        sizes = attrs.get("map_sizes")
        if not isinstance(sizes, dict) or not all(
                isinstance(sizes.get(b), list) and len(sizes[b]) == 2 and all(isinstance(n, int) for n in sizes[b])
                for b in attrs["branches"]):
            raise bad("map_sizes", "[height, width] per branch")


def _check_videos(sf: ScoresFile) -> None:
    """Every video holds each row under each reduction and its validity, one value per frame (labels too), and
    each branch's map when the file has maps (test videos), with one map per frame."""
    for split in SPLITS:
        if split not in sf.root:
            continue
        group = sf.root[split]
        if not isinstance(group, zarr.Group):
            raise ScoresError(f"{sf.path}: {split} is an array, not a group of videos: the scores file is damaged")
        for vid, video in group.members():
            where = f"{sf.path}: {split}/{vid}"
            if not isinstance(video, zarr.Group):
                raise ScoresError(f"{where} is an array, not a video group: the scores file is damaged")
            arrays = dict(video.arrays())
            keys = [f"{row}@{r}" for row in sf.rows for r in sf.reductions] + [f"{row}_valid" for row in sf.rows]
            lacking = [k for k in keys if k not in arrays]
            if not lacking and video.attrs.get("has_labels") and "label" not in arrays:
                lacking = ["label"]
            if lacking:
                raise ScoresError(f"{where}: no array {', '.join(lacking[:3])}"
                                  + (f" (and {len(lacking) - 3} more)" if len(lacking) > 3 else "")
                                  + ": the scores file is damaged or incomplete, score again")
            n = arrays[keys[0]].shape[:1]
            for key in [*keys, "label"]:
                if key in arrays and (arrays[key].ndim != 1 or arrays[key].shape[:1] != n):
                    raise ScoresError(f"{where}/{key}: shape {list(arrays[key].shape)}, expected [{n[0]}] like "
                                      f"{keys[0]}: the scores file is damaged")
            if sf.has_maps and split == "test":
                for b in sf.branches:
                    m = arrays.get(f"{b}_map")
                    if m is not None and m.shape != (*n, *sf.attrs["map_sizes"][b]):
                        raise ScoresError(f"{where}/{b}_map: shape {list(m.shape)}, expected "
                                          f"{[*n, *sf.attrs['map_sizes'][b]]}: the scores file is damaged")
