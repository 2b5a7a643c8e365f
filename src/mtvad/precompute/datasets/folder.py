"""A user's own footage: `train/` and/or `test/`, each holding video files and/or frame folders (one video each;
id = file stem or folder name). Without either subfolder, the videos directly in the root form the split given by
option `split` (default "train"). Test videos may have labels: `labels/<id>.npy` or `labels/<id>.txt`
(one 0/1 per frame).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from mtvad.errors import DatasetError

from .base import SPLITS, DatasetReader, FrameSource, Video, video_sources
from .labels import check_length, load_frame_labels

LABELS_DIR = "labels"


class Folder(DatasetReader):
    name = "folder"
    HELP = (
        "Put your videos in train/ (normal footage) and test/ as video files (train/cam1.avi) or frame folders "
        "(train/cam1/000.jpg), optionally with labels/<id>.npy or labels/<id>.txt (one 0/1 per test frame); "
        "or put the videos directly in the folder and choose their split with the `split` option."
    )

    def __init__(self, root: str | Path, split: str = "train") -> None:
        super().__init__(root)
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r} for the folder dataset; expected one of {', '.join(SPLITS)}")
        self.folders = {s: self.root / s for s in SPLITS if (self.root / s).is_dir()} or {split: self.root}

    def _videos(self, split: str) -> Iterator[Video]:
        folder = self.folders.get(split)
        if folder is None:
            return
        for vid, source in video_sources(folder, exclude=(LABELS_DIR, *SPLITS)):
            labels = self._labels(vid, source) if split == "test" else None
            yield Video(vid, split, source, labels)

    def _labels(self, vid: str, source: FrameSource) -> np.ndarray | None:
        for suffix in (".npy", ".txt"):
            path = self.root / LABELS_DIR / f"{vid}{suffix}"
            if path.is_file():
                return check_length(load_frame_labels(path), source, path)
        return None
