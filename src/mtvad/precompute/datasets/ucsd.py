"""UCSD Pedestrian 1 and 2, and the project's synthetic data (written in the UCSD official layout).

Two layouts, detected from the folders present:
- official: `Train/Train001/001.tif`, `Test/Test001/001.tif`, pixel masks `Test/Test001_gt/001.bmp` (some test
  videos only), frame labels in the single `Test/*.m` file (`UCSDped2.m`). The root may also be the folder
  that holds `UCSDped2/` (or `UCSDped1/`).
- frames: `training/frames/01/000.jpg`, `testing/frames/01/000.jpg` (0-based names), frame labels from
  `UCSDped2.m` (in the root, `gt/` or `testing/`), FFP `ped2.mat` or `frame_labels_ped2.npy`; pixel masks
  `gt/Test001_gt/001.bmp`.

Label files are 1-based and list every test video of the dataset; videos are matched to them by number, so a
folder may hold only some test videos. Video ids are two-digit numbers ("01") in both layouts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mtvad.errors import DatasetError

from .base import DatasetReader, FrameFolder, MaskFolder, Video, subfolders
from .labels import find_label_file, labels_for_video, load_ffp_mat, load_frame_labels, parse_ucsd_m, split_concatenated

OFFICIAL, FRAMES = "official", "frames"
UCSD_URL = "http://www.svcl.ucsd.edu/projects/anomaly/UCSD_Anomaly_Dataset.tar.gz"


def _help(short: str) -> str:
    scene = f"UCSD{short}"
    return (
        f"Download {UCSD_URL}, extract it and pass UCSD_Anomaly_Dataset.v1p2/{scene} (or the folder above it). "
        f"Expected: {scene}/Train/Train001/001.tif, {scene}/Test/Test001/001.tif, {scene}/Test/Test001_gt/001.bmp, "
        f"{scene}/Test/{scene}.m; or the frames layout training/frames/01/000.jpg, testing/frames/01/000.jpg, "
        f"gt/{scene}.m (or {short}.mat, frame_labels_{short}.npy), gt/Test001_gt/001.bmp."
    )


@dataclass(frozen=True)
class _Entry:
    """A video folder found on disk, before its labels are attached."""

    number: int
    folder: Path
    source: FrameFolder
    masks: Path | None


class UCSD(DatasetReader):
    """A UCSD-layout dataset; `short` ("ped2") names its files (`UCSDped2/`, `UCSDped2.m`, `ped2.mat`)."""

    name = "ucsd"
    short = ""
    HELP = _help("ped2")

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.root, self.layout = self._detect(self.root)

    def _detect(self, root: Path) -> tuple[Path, str]:
        candidates = [root, root / f"UCSD{self.short}"] if self.short else [root]
        for folder in candidates:
            if (folder / "Train").is_dir() or (folder / "Test").is_dir():
                return folder, OFFICIAL
            if (folder / "training").is_dir() or (folder / "testing").is_dir():
                return folder, FRAMES
        raise DatasetError(
            f"{root}: no Train/ and Test/ (or training/ and testing/) folders for {self.name}. {self.HELP}"
        )

    def _videos(self, split: str) -> Iterator[Video]:
        entries = self._entries(split)
        labels = self._labels(entries) if split == "test" else [None] * len(entries)
        for entry, frame_labels in zip(entries, labels):
            yield Video(
                id=f"{entry.number:02d}",
                split=split,
                source=entry.source,
                labels=frame_labels,
                masks=MaskFolder.from_folder(entry.masks) if entry.masks else None,
                meta={"layout": self.layout, "folder": entry.folder.name},
            )

    def _entries(self, split: str) -> list[_Entry]:
        test = split == "test"
        if self.layout == OFFICIAL:
            folder = self.root / ("Test" if test else "Train")
            return _scan(folder, rf"{folder.name}(\d+)", folder if test else None)
        folder = self.root / ("testing" if test else "training") / "frames"
        return _scan(folder, r"(\d+)", self.root / "gt" if test else None)

    def _label_file(self) -> Path | None:
        m_files = [f"UCSD{self.short}.m", "*.m"] if self.short else ["*.m"]
        if self.layout == OFFICIAL:
            return find_label_file([self.root / "Test"], m_files)
        here = [self.root, self.root / "gt", self.root / "testing"]
        found = find_label_file(here, m_files)
        if found is None and self.short:
            found = find_label_file(here + [self.root.parent], [f"{self.short}.mat", f"frame_labels_{self.short}.npy"])
        return found

    def _labels(self, entries: list[_Entry]) -> list[np.ndarray | None]:
        path = self._label_file()
        if path is None:
            return [None] * len(entries)
        if path.suffix == ".npy":
            return split_concatenated(load_frame_labels(path), [e.source.n_frames for e in entries], path)
        table = parse_ucsd_m(path) if path.suffix == ".m" else load_ffp_mat(path)
        return [labels_for_video(table, e.number, e.source.n_frames, path, str(e.folder)) for e in entries]


def _scan(folder: Path, pattern: str, gt_folder: Path | None) -> list[_Entry]:
    """Video folders whose name matches `pattern` (group 1: the video number), with their mask folder if any."""
    entries = []
    for sub in subfolders(folder):
        match = re.fullmatch(pattern, sub.name)
        if match is None:
            continue
        number = int(match.group(1))
        masks = gt_folder / f"Test{number:03d}_gt" if gt_folder else None
        entries.append(_Entry(number, sub, FrameFolder.from_folder(sub), masks if masks and masks.is_dir() else None))
    return entries


class UCSDPed1(UCSD):
    name = "ped1"
    short = "ped1"
    HELP = _help("ped1")


class UCSDPed2(UCSD):
    name = "ped2"
    short = "ped2"
    HELP = _help("ped2")


class Synth(UCSD):
    """The project's synthetic videos: the UCSD official layout (`Train/`, `Test/`, `Test/*.m`, `TestNNN_gt/`)."""

    name = "synth"
    short = ""
    HELP = (
        "Generate it with `vad synth <folder>`. Expected (UCSD official layout): "
        "Train/Train001/001.tif, Test/Test001/001.tif, Test/Test001_gt/001.bmp, Test/<name>.m."
    )

    def _videos(self, split: str) -> Iterator[Video]:
        """As UCSD's, plus each test video's anomaly kind per frame (`meta["anomaly_kinds"]`: a list of T kind
        names, null where normal) from the `Test/anomaly_kinds.json` that `vad synth` writes, when it is there;
        `vad eval` reports the AUC per kind from it."""
        kinds: dict = {}
        path = self.root / "Test" / "anomaly_kinds.json"
        if split == "test" and path.is_file():
            import json

            kinds = json.loads(path.read_text()).get("videos", {})
        for video in super()._videos(split):
            frames = kinds.get(video.meta.get("folder"), {}).get("frames")
            if frames is not None and len(frames) == video.n_frames:
                video.meta["anomaly_kinds"] = list(frames)
            yield video
