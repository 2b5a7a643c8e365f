"""The scores file that `vad score` writes and `vad eval` / `vad report` read (a Zarr v3 group; format in
`mtvad.scoring.score`): its format name and version, row names, units, and the reader `open_scores`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from mtvad import __version__
from mtvad.errors import VadError
from mtvad.store.access import Store
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

    def row(self, split: str, video: str, name: str, reduction: str = "sum") -> tuple[np.ndarray, np.ndarray]:
        """(scores float64 (T,), valid bool (T,)) of a row under a reduction."""
        self.check_reduction(reduction)
        g = self.root[f"{split}/{video}"]
        return g[f"{name}@{reduction}"][:], g[f"{name}_valid"][:].astype(bool)

    def label(self, split: str, video: str) -> np.ndarray | None:
        g = self.root[f"{split}/{video}"]
        return g["label"][:] if "label" in g else None

    def map(self, split: str, video: str, branch: str, frames=slice(None)) -> np.ndarray | None:
        g = self.root[f"{split}/{video}"]
        key = f"{branch}_map"
        return g[key][frames] if key in g else None

    def raw(self, reduction: str = "sum") -> dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
        """{split: {video: {row: (scores, valid)}}} of every row under one reduction."""
        return {split: {vid: {row: self.row(split, vid, row, reduction) for row in self.rows}
                        for vid in self.video_ids(split)}
                for split in SPLITS if self.video_ids(split)}

    def check_store(self, store: Store) -> None:
        """Refuse a store this file was not scored on (fingerprint), or whose videos differ."""
        if store.fingerprint != self.fingerprint:
            raise ScoresError(
                f"{self.path}: scored on store {self.attrs['store'].get('url')} (fingerprint {self.fingerprint[:12]}), "
                f"but {store.url} has fingerprint {store.fingerprint[:12]}: give the store it was scored on")
        for split in SPLITS:
            ours, theirs = self.video_ids(split), store.video_ids(split)
            if ours and ours != theirs:
                raise ScoresError(f"{self.path}: its {split} videos {ours[:5]}... differ from {store.url}'s "
                                  f"{theirs[:5]}...: score this store again")


def open_scores(path: str | Path) -> ScoresFile:
    path = Path(path)
    if not path.exists():
        raise ScoresError(f"{path}: no scores file at this path (write one with `vad score`)")
    if not is_scores_file(path):
        raise ScoresError(f"{path}: not a vad scores file (no zarr.json with format '{FORMAT}')")
    root = zarr.open_group(zarr.storage.LocalStore(str(path), read_only=True), mode="r", zarr_format=3)
    attrs = dict(root.attrs)
    if attrs.get("format_version") != FORMAT_VERSION:
        raise ScoresError(f"{path}: scores format {attrs.get('format_version')}, this vad {__version__} reads "
                          f"format {FORMAT_VERSION}: score again")
    missing = [k for k in ("store", "branches", "controls", "rows", "reductions", "checkpoints") if k not in attrs]
    if missing:
        raise ScoresError(f"{path}: incomplete scores file (no {', '.join(missing)})")
    return ScoresFile(str(path), attrs, root)
