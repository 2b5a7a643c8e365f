"""ShanghaiTech Campus: training videos `training/videos/01_001.avi` (or frame folders `training/frames/01_001/`),
test frames `testing/frames/01_0014/000.jpg`, frame labels `testing/test_frame_mask/01_0014.npy`, pixel masks
`testing/test_pixel_mask/01_0014.npy` (T, H, W). The scene is the id's prefix ("01"); option `scene` keeps one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mtvad.errors import DatasetError

from .base import DatasetReader, NpyMasks, Video, video_sources
from .labels import check_length, load_frame_labels

SHANGHAITECH_URL = "https://svip-lab.github.io/dataset/campus_dataset.html"


class ShanghaiTech(DatasetReader):
    name = "shanghaitech"
    HELP = (
        f"Download the ShanghaiTech Campus dataset from {SHANGHAITECH_URL} and extract it. Expected: "
        "training/videos/01_001.avi (or training/frames/01_001/000.jpg), testing/frames/01_0014/000.jpg, "
        "testing/test_frame_mask/01_0014.npy, testing/test_pixel_mask/01_0014.npy."
    )

    def __init__(self, root: str | Path, scene: str | int | None = None) -> None:
        super().__init__(root)
        if not any((self.root / d).is_dir() for d in ("training", "testing")):
            raise DatasetError(f"{self.root}: no training/ or testing/ folder for shanghaitech. {self.HELP}")
        self.scene = None if scene is None else _scene_id(scene)

    def _videos(self, split: str) -> Iterator[Video]:
        for vid, source in video_sources(self._split_folder(split)):
            scene = vid.split("_", 1)[0]
            if self.scene is not None and scene != self.scene:
                continue
            labels = masks = None
            if split == "test":
                labels_file = self.root / "testing" / "test_frame_mask" / f"{vid}.npy"
                mask_file = self.root / "testing" / "test_pixel_mask" / f"{vid}.npy"
                if labels_file.is_file():
                    labels = check_length(load_frame_labels(labels_file), source, labels_file)
                masks = NpyMasks(str(mask_file)) if mask_file.is_file() else None
            yield Video(vid, split, source, labels, masks, meta={"scene": scene})

    def _split_folder(self, split: str) -> Path:
        if split == "test":
            return self.root / "testing" / "frames"
        frames = self.root / "training" / "frames"
        return frames if frames.is_dir() else self.root / "training" / "videos"


def _scene_id(scene: str | int) -> str:
    """"1", 1 or "01" -> "01" (ids are `01_0014`); other names are kept as given."""
    text = str(scene).strip()
    return f"{int(text):02d}" if text.isdigit() else text
