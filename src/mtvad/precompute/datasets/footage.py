"""A camera's own footage as `vad detect` takes it: normal footage (split "train") and new videos (split "test").

Each input is a video file (any of VIDEO_SUFFIXES) or a frame folder (image files directly inside); a normal
input may also be a folder of several video files and/or frame folders. Normal footage is cut into segments of
about `segment_seconds` each, so that training can hold some out for validation and calibration can leave one
out: ids `<stem>` for a single segment, else `<stem>-s01`, `<stem>-s02`, ... A remainder shorter than half a
segment joins the previous segment. Each new video is one test video (id = file stem or folder name), unlabelled.

Frame rates come from the video container (OpenCV's CAP_PROP_FPS); `fps` fills in only where there is none:
frame folders, and containers that give 0, NaN or more than 1000. It never overrides a container's own rate.

Every video's `meta` (kept in the store) holds {"fps", "source_path", "first_frame"}: the frame rate, the file or
folder it comes from and, for a segment, the index of its first frame in that file (0 for new videos).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from mtvad.errors import ConfigError, DatasetError

from .base import (
    IMAGE_SUFFIXES,
    SPLITS,
    VIDEO_SUFFIXES,
    FrameFolder,
    FrameSource,
    Video,
    VideoFile,
    _check_range,
    _open_capture,
    count_video_frames,
    decoder_messages,
    frame_reader,
    read_frames,
    source_channels,
    sorted_images,
    video_sources,
    visible_entries,
)

DEFAULT_SEGMENT_SECONDS = 10.0
MAX_FPS = 1000.0  # a container claiming more is taken to give no usable rate


@dataclass(frozen=True)
class FrameRange:
    """Frames [start, stop) of another source (a segment of a video file); errors name the file."""

    source: FrameSource
    start: int
    stop: int

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def n_frames(self) -> int:
        return self.stop - self.start

    def frame_size(self) -> tuple[int, int]:
        return self.source.frame_size()

    def read(self, start: int, stop: int) -> np.ndarray:
        _check_range(self.path, start, stop, self.n_frames)
        return self.source.read(self.start + start, self.start + stop)

    @property
    def channels(self) -> int:
        return source_channels(self.source)

    def reader(self, start: int = 0):
        _check_range(self.path, start, start + 1, self.n_frames)
        return frame_reader(self.source, self.start + start)

    def read_frames(self, indices) -> np.ndarray:
        return read_frames(self.source, [self.start + int(i) for i in indices])


@dataclass(frozen=True)
class _Input:
    """One video found among the inputs, before it is counted and cut: its split, id, where it is, its fps."""

    split: str
    id: str
    path: Path
    fps: float


def _usable(fps: float) -> bool:
    return math.isfinite(fps) and 0 < fps <= MAX_FPS


def container_fps(path: Path) -> float:
    """The frame rate the container of a video file declares (0.0 when it gives none); no frame is decoded."""
    import cv2

    with decoder_messages() as messages:
        cap = _open_capture(str(path), messages)
        try:
            return float(cap.get(cv2.CAP_PROP_FPS))
        finally:
            cap.release()


def segment_bounds(n_frames: int, segment_frames: int) -> list[tuple[int, int]]:
    """[start, stop) of each segment: as many whole segments as fit, a remainder of at least half a segment as one
    more, a shorter one joined to the last; one segment when `segment_frames` is 0 or the video is shorter."""
    if segment_frames <= 0 or n_frames < segment_frames:
        return [(0, n_frames)]
    whole, rest = divmod(n_frames, segment_frames)
    bounds = [(k * segment_frames, (k + 1) * segment_frames) for k in range(whole)]
    if rest * 2 >= segment_frames:
        bounds.append((whole * segment_frames, n_frames))
    elif rest:
        bounds[-1] = (bounds[-1][0], n_frames)
    return bounds


class Footage:
    """Normal footage (train, in segments) and new videos (test) of one camera; a `Dataset` (base.py)."""

    name = "footage"

    def __init__(self, normal: Sequence[str | Path], new: Sequence[str | Path] = (), *,
                 segment_seconds: float = DEFAULT_SEGMENT_SECONDS, fps: float | None = None) -> None:
        if isinstance(normal, (str, Path)) or isinstance(new, (str, Path)):
            raise TypeError("normal and new are sequences of paths, not one path")
        if not (math.isfinite(segment_seconds) and segment_seconds >= 0):
            raise ConfigError(f"segment length must be 0 (no cut) or a positive number of seconds, "
                              f"got {segment_seconds}")
        if fps is not None and not _usable(float(fps)):
            raise ConfigError(f"--fps must be a frame rate above 0 and at most {MAX_FPS:g}, got {fps}")
        if not normal:
            raise DatasetError("no normal footage given (--normal FILE or FOLDER): vad detect learns what is normal "
                               "for the camera from it")
        self.segment_seconds = float(segment_seconds)
        self.fps = None if fps is None else float(fps)
        paths = [Path(p).expanduser().absolute() for p in normal]
        self.root = paths[0] if paths[0].is_dir() else paths[0].parent
        self._inputs = [i for p in paths for i in self._find(p, "train")]
        self._inputs += [i for p in new for i in self._find(Path(p).expanduser().absolute(), "test")]
        for split in SPLITS:
            _check_unique([(i.id, i.path) for i in self._inputs if i.split == split])
        self._listed: dict[str, list[Video]] = {}

    def _find(self, path: Path, split: str) -> list[_Input]:
        """The videos of one input path (several for a folder of normal videos)."""
        what = "normal footage" if split == "train" else "new video"
        if not path.exists():
            raise DatasetError(f"{path}: {what} does not exist")
        if path.is_file():
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                raise DatasetError(f"{path}: not a video file vad detect reads (expected one of "
                                   f"{', '.join(VIDEO_SUFFIXES)}, or a folder of frame images)")
            return [self._input(split, path.stem, path)]
        if not path.is_dir():
            raise DatasetError(f"{path}: {what} is neither a file nor a folder")
        if sorted_images(path):
            return [self._input(split, path.name, path)]
        entries = visible_entries(path)
        if not entries:
            raise DatasetError(f"{path}: {what} folder is empty")
        if split == "test":
            raise DatasetError(f"{path}: holds no image files ({', '.join(IMAGE_SUFFIXES)}) directly inside: a new "
                               "video is a video file or a frame folder; pass --video once per video")
        found = []
        for vid, source in video_sources(path):
            if isinstance(source, FrameFolder) and not source.files:
                raise DatasetError(f"{source.path}: holds no image files ({', '.join(IMAGE_SUFFIXES)}): a folder "
                                   "inside the normal footage must be a frame folder (folders are not searched "
                                   "deeper)")
            found.append(self._input(split, vid, Path(source.path)))
        if not found:
            raise DatasetError(f"{path}: holds no video files ({', '.join(VIDEO_SUFFIXES)}) and no frame folders")
        return found

    def _input(self, split: str, vid: str, path: Path) -> _Input:
        if path.is_dir():
            if self.fps is None:
                raise DatasetError(f"{path}: a frame folder has no frame rate: pass --fps (its frames per second)")
            return _Input(split, vid, path, self.fps)
        fps = container_fps(path)
        if not _usable(fps):
            if self.fps is None:
                raise DatasetError(f"{path}: its container gives no usable frame rate ({fps:g}): pass --fps "
                                   "(its frames per second)")
            fps = self.fps
        return _Input(split, vid, path, fps)

    def videos(self, split: str | None = None) -> Iterator[Video]:
        """Videos of one split (or both, train first), in the order of the inputs; each file is decoded once (to
        count and check its frames) on the first listing, later listings reuse it."""
        if split is not None and split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        splits = SPLITS if split is None else (split,)
        return (video for s in splits for video in self._videos(s))

    def _videos(self, split: str) -> list[Video]:
        if split not in self._listed:
            videos = [v for i in self._inputs if i.split == split for v in self._cut(i)]
            # a segment's id may be another input's ("cam-s01")
            _check_unique([(v.id, Path(v.source.path)) for v in videos])
            self._listed[split] = videos
        return self._listed[split]

    def _cut(self, item: _Input) -> list[Video]:
        if item.path.is_dir():
            source: FrameSource = FrameFolder.from_folder(item.path)
        else:
            source = VideoFile(str(item.path), count_video_frames(item.path))
        meta = {"fps": item.fps, "source_path": str(item.path), "first_frame": 0}
        if item.split == "test":
            return [Video(item.id, "test", source, meta=meta)]
        segment_frames = max(2, round(self.segment_seconds * item.fps)) if self.segment_seconds else 0
        bounds = segment_bounds(source.n_frames, segment_frames)
        if len(bounds) == 1:
            return [Video(item.id, "train", source, meta=meta)]
        width = max(2, len(str(len(bounds))))
        return [Video(f"{item.id}-s{k:0{width}d}", "train", _segment(source, start, stop),
                      meta={**meta, "first_frame": start}) for k, (start, stop) in enumerate(bounds, 1)]

    def fps_of(self, video_id: str, split: str = "test") -> float:
        """The frame rate of one listed video."""
        for video in self.videos(split):
            if video.id == video_id:
                return float(video.meta["fps"])
        raise DatasetError(f"no {split} video {video_id!r} in this footage")

    def __repr__(self) -> str:
        return f"Footage(root={str(self.root)!r}, segment_seconds={self.segment_seconds:g}, fps={self.fps})"


def _segment(source: FrameSource, start: int, stop: int) -> FrameSource:
    """Frames [start, stop) of a source. A frame folder's segment is the folder with only those files, so a
    segment ships its own file names to a worker, not the whole folder's."""
    if isinstance(source, FrameFolder):
        return FrameFolder(source.path, source.files[start:stop])
    return FrameRange(source, start, stop)


def _check_unique(items: list[tuple[str, Path]]) -> None:
    seen: dict[str, Path] = {}
    for vid, path in items:
        if vid in seen and seen[vid] == path:
            raise DatasetError(f"{path}: given twice")
        if vid in seen:
            raise DatasetError(f"{path}: its video id {vid!r} is also the id of {seen[vid]}: rename one of them "
                               "(ids are file stems and folder names)")
        seen[vid] = path
