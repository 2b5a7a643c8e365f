"""CUHK Avenue: `training_videos/01.avi`, `testing_videos/01.avi` (or the frames layout
`training/frames/01/0000.jpg`, `testing/frames/01/0000.jpg`).

Ground truth, in order of preference: `ground_truth_demo/testing_label_mask/1_label.mat` (variable `volLabel`, one
HxW mask per frame; a frame is anomalous if its mask has a non-zero pixel), else FFP-style `avenue.mat` (frame
ranges only). Test videos have no labels when neither is found.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from mtvad.errors import DatasetError

from .base import DatasetReader, FrameSource, Video, _check_range, video_sources
from .labels import Ranges, check_length, find_label_file, labels_for_video, load_ffp_mat, load_mat_variable

AVENUE_URL = "http://www.cse.cuhk.edu.hk/leojia/projects/detectabnormal/dataset.html"
LAYOUTS = {
    "videos": ("training_videos", "testing_videos"),
    "frames": ("training/frames", "testing/frames"),
}


@dataclass(frozen=True)
class MatMasks:
    """Pixel masks stored as a cell array of HxW matrices in one .mat file (Avenue `1_label.mat`, `volLabel`)."""

    path: str
    variable: str = "volLabel"

    @property
    def n_frames(self) -> int:
        return _packed_masks(self.path, self.variable)[0].shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        packed, width = _packed_masks(self.path, self.variable)
        _check_range(self.path, start, stop, packed.shape[0])
        return np.unpackbits(packed[start:stop], axis=-1, count=width).astype(bool)

    def frame_labels(self) -> np.ndarray:
        """1 for every frame whose mask has a non-zero pixel."""
        packed, _ = _packed_masks(self.path, self.variable)
        return packed.reshape(packed.shape[0], -1).any(axis=1).astype(np.uint8)


@lru_cache(maxsize=2)
def _packed_masks(path: str, variable: str) -> tuple[np.ndarray, int]:
    """All masks of the file as bits (T, H, ceil(W/8)) and the width W: 8 times smaller than bool in the cache."""
    cells = load_mat_variable(Path(path), variable)
    if cells.dtype == object:
        masks = [np.asarray(c) for c in cells.ravel()]
    elif cells.ndim == 2:
        masks = [cells]  # a single frame, squeezed out of its cell by loadmat
    else:
        raise DatasetError(f"{path}: {variable!r} must be a cell array of HxW masks, got a {cells.shape} array")
    shapes = {m.shape for m in masks}
    if not masks or len(shapes) != 1 or len(masks[0].shape) != 2:
        raise DatasetError(
            f"{path}: {variable!r} must hold one or more HxW masks of one size, got shapes {sorted(shapes)[:3]}"
        )
    return np.packbits(np.stack(masks) != 0, axis=-1), masks[0].shape[1]


class Avenue(DatasetReader):
    name = "avenue"
    HELP = (
        f"Download Avenue_Dataset.zip from {AVENUE_URL} and extract it. Expected: training_videos/01.avi, "
        "testing_videos/01.avi, ground_truth_demo/testing_label_mask/1_label.mat (or FFP avenue.mat); "
        "or training/frames/01/0000.jpg, testing/frames/01/0000.jpg."
    )

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.layout = next((k for k, dirs in LAYOUTS.items() if any((self.root / d).is_dir() for d in dirs)), None)
        if self.layout is None:
            raise DatasetError(f"{self.root}: no training_videos/ or testing_videos/ folder for avenue. {self.HELP}")

    def _videos(self, split: str) -> Iterator[Video]:
        folder = self.root / LAYOUTS[self.layout][split == "test"]
        for vid, source in video_sources(folder):
            labels, masks = self._ground_truth(vid, source) if split == "test" else (None, None)
            yield Video(vid, split, source, labels, masks, meta={"layout": self.layout})

    def _ground_truth(self, vid: str, source: FrameSource) -> tuple[np.ndarray | None, MatMasks | None]:
        if not vid.isdigit():
            return None, None
        number = int(vid)
        for folder in (self.root / "ground_truth_demo" / "testing_label_mask", self.root / "testing_label_mask"):
            mask_file = folder / f"{number}_label.mat"
            if mask_file.is_file():
                masks = MatMasks(str(mask_file))
                return check_length(masks.frame_labels(), source, mask_file), masks
        if self._ffp is None:
            return None, None
        path, table = self._ffp
        return labels_for_video(table, number, source.n_frames, path, source.path), None

    @cached_property
    def _ffp(self) -> tuple[Path, list[Ranges]] | None:
        path = find_label_file([self.root, self.root / "gt", self.root.parent], ["avenue.mat"])
        return None if path is None else (path, load_ffp_mat(path))
