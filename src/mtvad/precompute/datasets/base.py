"""What every dataset reader yields: videos that read their frames, labels and masks lazily.

A `Video` holds paths, never pixels: a dataset of any size is listed without reading a frame, and a
precompute task reads only the block of frames it computes (`Video.read(start, stop)`). Videos are small,
picklable values so that Dask can ship them to workers.

Every error caused by the data names the file and what is wrong (`mtvad.errors.DatasetError`).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np

from mtvad.errors import DatasetError

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".m4v", ".webm")


def sorted_images(folder: Path) -> list[Path]:
    """Image files of a frame folder in frame order (numeric order of the digits in their names).

    Hidden files are skipped: macOS archives carry `._001.tif` metadata files beside every frame.
    """
    files = [p for p in visible_entries(folder) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_frame_sort_key)


def visible_entries(folder: Path) -> list[Path]:
    """Entries of a folder, without hidden ones (`.DS_Store`, macOS `._*` metadata), in natural order."""
    return sorted((p for p in Path(folder).iterdir() if not p.name.startswith(".")), key=_natural_key)


def _natural_key(path: Path) -> list:
    """"cam2" before "cam10"; text and number chunks alternate, so keys always compare."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)] + [path.name]


def subfolders(folder: Path) -> list[Path]:
    """Visible subfolders of a folder in natural order; none if the folder does not exist."""
    folder = Path(folder)
    return [p for p in visible_entries(folder) if p.is_dir()] if folder.is_dir() else []


def _frame_sort_key(path: Path) -> tuple:
    digits = "".join(ch for ch in path.stem if ch.isdigit())
    return (int(digits) if digits else -1, path.name)


class FrameSource(Protocol):
    """The frames of one video, read in blocks."""

    path: str

    @property
    def n_frames(self) -> int: ...

    def frame_size(self) -> tuple[int, int]:
        """(height, width) shared by every frame; raises DatasetError if frames differ in size."""
        ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as uint8 RGB, shape (n, H, W, 3)."""
        ...


@dataclass(frozen=True)
class FrameFolder:
    """A video stored as one image file per frame (any of IMAGE_SUFFIXES, grayscale or colour)."""

    path: str
    files: tuple[str, ...]

    @classmethod
    def from_folder(cls, folder: Path) -> "FrameFolder":
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(f"{folder}: frame folder does not exist")
        files = tuple(str(p) for p in sorted_images(folder))
        return cls(str(folder), files)

    @property
    def n_frames(self) -> int:
        return len(self.files)

    def frame_size(self) -> tuple[int, int]:
        from PIL import Image

        size = None
        for f in self.files:
            try:
                with Image.open(f) as im:  # reads the header only
                    wh = im.size
            except Exception as exc:  # PIL raises several types for unreadable files
                raise DatasetError(f"{f}: unreadable frame ({exc})") from exc
            if size is None:
                size, first = wh, f
            elif wh != size:
                raise DatasetError(
                    f"{f}: frame is {wh[0]}x{wh[1]} (WxH) but {first} is {size[0]}x{size[1]}; "
                    "all frames of a video must have one size"
                )
        if size is None:
            raise DatasetError(f"{self.path}: no frames")
        return (size[1], size[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        _check_range(self.path, start, stop, self.n_frames)
        return np.stack([read_image(f) for f in self.files[start:stop]])

    @property
    def channels(self) -> int:
        """1 when the footage is grey: GREY_SAMPLE evenly spaced frames are greyscale images, or colour images
        with three equal channels (grey JPEGs saved as RGB); else 3."""
        step = max(1, -(-len(self.files) // GREY_SAMPLE))
        for f in self.files[::step]:
            try:
                frame = read_image(f)
            except DatasetError:
                continue  # the block that reads it names it
            if np.any(frame[..., 1:] != frame[..., :1]):
                return 3
        return 1


GREY_SAMPLE = 8  # frames of a frame folder looked at to tell grey footage from colour


def source_channels(source: "FrameSource") -> int:
    """Channels of a source's footage: 1 for greyscale images, 3 otherwise (decoded video files are RGB)."""
    return int(getattr(source, "channels", 3))


def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """One image file as a uint8 array (RGB: (H, W, 3); L: (H, W)); DatasetError naming the file if broken."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert(mode))
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable or truncated image ({exc})") from exc


@dataclass(frozen=True)
class VideoFile:
    """A video stored as one file that OpenCV decodes (AVI, MP4, ...).

    Its frames are counted by decoding them all (`count_video_frames`), which also refuses a truncated or
    damaged file: a decoded count that differs from the container header's, or a last frame that does not
    decode cleanly."""

    path: str
    frames: int = -1  # counted (and checked) by decoding when not given

    @classmethod
    def open(cls, path: Path) -> "VideoFile":
        return cls(str(path), count_video_frames(Path(path)))

    @property
    def n_frames(self) -> int:
        return self.frames if self.frames >= 0 else count_video_frames(Path(self.path))

    def frame_size(self) -> tuple[int, int]:
        import cv2

        with decoder_messages() as messages:
            cap = _open_capture(self.path, messages)
            try:
                h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
                w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            finally:
                cap.release()
        return (h, w)

    def read(self, start: int, stop: int) -> np.ndarray:
        _check_range(self.path, start, stop, self.n_frames)
        with self.reader(start) as frames:
            return frames.read(stop - start)

    @contextmanager
    def reader(self, start: int = 0) -> Iterator["CaptureReader"]:
        """Frames from `start` on, decoded in order: the file is opened once and seeks once."""
        n = self.n_frames
        _check_range(self.path, start, start + 1, n)
        with decoder_messages() as messages:
            cap = _open_capture(self.path, messages)
        try:
            frames = CaptureReader(self.path, cap, n)
            frames.seek(start)
            yield frames
        finally:
            cap.release()

    def read_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at increasing indices in one pass: the decoder grabs forward over gaps of up to
        MAX_GRAB_FORWARD frames and seeks over longer ones."""
        indices = [int(i) for i in indices]
        if any(b <= a for a, b in zip(indices, indices[1:])):
            raise ValueError(f"{self.path}: frame indices must increase, got {indices}")
        out = []
        with self.reader(indices[0]) as frames:
            for i in indices:
                if i - frames.position > MAX_GRAB_FORWARD:
                    frames.seek(i)
                frames.skip(i - frames.position)
                out.append(frames.read(1)[0])
        return np.stack(out)


# A seek decodes from the keyframe before its target, so grabbing forward (decoding without converting) costs no
# more than a seek over gaps up to a keyframe interval; x264's default interval is 250 frames.
MAX_GRAB_FORWARD = 250


class CaptureReader:
    """An open video file read forward: `read(n)` converts the next n frames to RGB, `skip(n)` only decodes them."""

    def __init__(self, path: str, cap, n_frames: int):
        self.path, self._cap, self.n_frames, self.position = path, cap, n_frames, 0

    def seek(self, index: int) -> None:
        import cv2

        if index != self.position:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            self.position = index

    def skip(self, n: int) -> None:
        with decoder_messages():  # decoder complaints stay off the terminal, as in read()
            for _ in range(n):
                self._next(grab_only=True)

    def read(self, n: int) -> np.ndarray:
        with decoder_messages():
            return np.stack([self._next() for _ in range(n)])

    def _next(self, grab_only: bool = False) -> np.ndarray | None:
        import cv2

        i = self.position
        if i >= self.n_frames:
            raise IndexError(f"{self.path}: frame {i} outside [0, {self.n_frames})")
        ok, bgr = self._cap.grab(), None
        if ok and not grab_only:
            ok, bgr = self._cap.retrieve()
        if not ok:
            raise DatasetError(f"{self.path}: cannot decode frame {i} of {self.n_frames} (truncated file?)")
        self.position += 1
        return None if grab_only else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class RangeReader:
    """Frames from `start` on of a source whose frames are cheap to reach in any order (image files): `read(n)`
    reads the next n by range."""

    def __init__(self, source: "FrameSource", start: int):
        self.source, self.position = source, start

    def read(self, n: int) -> np.ndarray:
        out = self.source.read(self.position, self.position + n)
        self.position += n
        return out


@contextmanager
def frame_reader(source: "FrameSource", start: int = 0) -> Iterator["CaptureReader | RangeReader"]:
    """A reader of consecutive frames from `start` on: the source's own (`reader`) when it has one (a stream that
    is decoded in order), else reads by range."""
    if hasattr(source, "reader"):
        with source.reader(start) as frames:
            yield frames
    else:
        yield RangeReader(source, start)


def read_frames(source: "FrameSource", indices: Sequence[int]) -> np.ndarray:
    """Frames at increasing indices (a sample of a video), in one pass where the source has one."""
    if hasattr(source, "read_frames"):
        return source.read_frames(indices)
    return np.stack([source.read(int(i), int(i) + 1)[0] for i in indices])


_STDERR = threading.Lock()


class DecoderMessages:
    """What the decoder wrote so far while a `decoder_messages` window is open."""

    def __init__(self, fd: int | None):
        self._fd = fd

    def size(self) -> int:
        return os.fstat(self._fd).st_size if self._fd is not None else 0

    def text(self, start: int = 0) -> bytes:
        """The bytes written from offset `start` on (pread: the writers' file offset stays where it is)."""
        return os.pread(self._fd, max(self.size() - start, 0), start) if self._fd is not None else b""


@contextmanager
def decoder_messages() -> Iterator[DecoderMessages]:
    """While a video file is decoded, what OpenCV and FFmpeg write to stderr (file descriptor 2: C code, out of
    Python's reach) goes to a temporary file instead of the terminal (the object yielded reads it).

    OpenCV sets FFmpeg's log level to errors, so anything written there is a decoder error ("ac-tex damaged",
    "Error at MB", "moov atom not found"). One window at a time (a lock); while it is open, stderr output of other
    threads of the process goes there too and is dropped."""
    with _STDERR, tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no stderr to redirect (closed, or replaced by None)
            yield DecoderMessages(None)
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield DecoderMessages(sink.fileno())
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _said(messages: bytes) -> str:
    """Decoder messages as one short line, without FFmpeg's `[codec @ 0x55d0...]` prefixes."""
    text = re.sub(r"\[[^\]]*@ 0x[0-9a-fA-F]+\]", " ", messages.decode(errors="replace"))
    return " ".join(text.split())[:160]


def _open_capture(path: str, messages: DecoderMessages | None = None):
    """An opened cv2.VideoCapture; `messages`: the decoder's so far (`decoder_messages`), quoted on failure."""
    import cv2

    if not os.path.isfile(path):
        raise DatasetError(f"{path}: video file does not exist")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        said = _said(messages.text()) if messages else ""
        raise DatasetError(f"{path}: OpenCV cannot open this video file" + (f" ({said})" if said else ""))
    return cap


# Decoders hold back up to this many frames (H.264/HEVC reordering): an error reported while the last
# DECODER_DELAY frames are grabbed, or at the end of the file, may be the last frame's.
DECODER_DELAY = 16


def count_video_frames(path: Path) -> int:
    """Number of decodable frames (grabbed one by one: every frame is decoded), checked against the file.

    A DatasetError naming the file and both counts when the count differs from the container header's (a
    truncated file: the header still says how many frames were written), or when the decoder reports an error
    while decoding the last frames (a file cut inside its last frame). A header without a count (0) is not
    compared. Cached per (path, modification time, size): a lazily listed `VideoFile` asks for it on every read.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: video file does not exist")
    st = os.stat(path)
    return _count_frames(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4096)
def _count_frames(path: str, mtime_ns: int, size: int) -> int:
    import cv2

    with decoder_messages() as messages:
        cap = _open_capture(path, messages)
        try:
            header = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            written = [messages.size()]  # bytes of decoder messages after opening and after each frame
            n = 0
            while cap.grab():
                n += 1
                written.append(messages.size())
        finally:
            cap.release()
        late = messages.text(written[max(n - DECODER_DELAY, 0)])  # while the last frames decoded, and at the end
    said = _said(late)
    if header > 0 and n != header:
        raise DatasetError(f"{path}: truncated or damaged video file: its header says {header} frames, but {n} "
                           f"decode" + (f" (decoder: {said})" if said else ""))
    if late:
        counts = f"its header says {header} frames, {n} decode" if header > 0 else f"{n} frames decode"
        raise DatasetError(f"{path}: its last frame does not decode cleanly ({counts}; decoder: {said}): the file "
                           "is truncated or damaged")
    return n


def _check_range(path: str, start: int, stop: int, n: int) -> None:
    if not 0 <= start < stop <= n:
        raise IndexError(f"{path}: frames [{start}, {stop}) outside [0, {n})")


class MaskSource(Protocol):
    """Pixel-level ground truth of one video, read in blocks as bool (n, h, w)."""

    path: str

    @property
    def n_frames(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray: ...


@dataclass(frozen=True)
class MaskFolder:
    """One mask image per frame (UCSD `TestNNN_gt/001.bmp`): non-zero pixels are anomalous."""

    path: str
    files: tuple[str, ...]

    @classmethod
    def from_folder(cls, folder: Path) -> "MaskFolder":
        return cls(str(folder), tuple(str(p) for p in sorted_images(Path(folder))))

    @property
    def n_frames(self) -> int:
        return len(self.files)

    def read(self, start: int, stop: int) -> np.ndarray:
        _check_range(self.path, start, stop, self.n_frames)
        return np.stack([read_image(f, "L") > 0 for f in self.files[start:stop]])


@dataclass(frozen=True)
class NpyMasks:
    """A (T, H, W) array in one .npy file (ShanghaiTech `test_pixel_mask/01_0014.npy`); non-zero = anomalous."""

    path: str

    def _array(self) -> np.ndarray:
        try:
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise DatasetError(f"{self.path}: unreadable mask file ({exc})") from exc
        if arr.ndim != 3:
            raise DatasetError(f"{self.path}: pixel masks must have shape (T, H, W), got {arr.shape}")
        return arr

    @property
    def n_frames(self) -> int:
        return int(self._array().shape[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        arr = self._array()
        _check_range(self.path, start, stop, arr.shape[0])
        return np.asarray(arr[start:stop]) != 0


@dataclass(frozen=True)
class Video:
    """One video of a dataset: where its frames are, and its ground truth when it has any.

    `labels` is the frame-level ground truth (uint8 0/1, one per frame, 0-based frame index), `masks` the
    pixel-level ground truth. `meta` holds reader-specific facts worth keeping in the store (scene id, ...).
    """

    id: str
    split: str
    source: FrameSource
    labels: np.ndarray | None = None
    masks: MaskSource | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")

    @property
    def n_frames(self) -> int:
        return self.source.n_frames

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.source.read(start, stop)

    @property
    def channels(self) -> int:
        return source_channels(self.source)

    @property
    def decodes_in_order(self) -> bool:
        """True for a stream decoded in order (a video file), where reaching a frame costs a seek."""
        return hasattr(self.source, "reader")

    def reader(self, start: int = 0):
        """Consecutive frames from `start` on (`frame_reader`): a context manager of an object with `read(n)`."""
        return frame_reader(self.source, start)

    def read_frames(self, indices: Sequence[int]) -> np.ndarray:
        return read_frames(self.source, indices)

    def read_masks(self, start: int, stop: int) -> np.ndarray | None:
        return None if self.masks is None else self.masks.read(start, stop)

    def validate(self, min_frames: int = 2) -> tuple[int, int]:
        """Check what can be checked without decoding every frame; return the frame size (H, W)."""
        n = self.n_frames
        if n < min_frames:
            raise DatasetError(f"{self.source.path}: video has {n} frame(s), at least {min_frames} are needed")
        size = self.source.frame_size()
        if self.labels is not None and len(self.labels) != n:
            raise DatasetError(
                f"{self.source.path}: {len(self.labels)} frame labels for a video of {n} frames"
            )
        if self.masks is not None and self.masks.n_frames != n:
            raise DatasetError(f"{self.masks.path}: {self.masks.n_frames} pixel masks for a video of {n} frames")
        return size


class Dataset(Protocol):
    """A dataset on disk: a name, a root folder, and its videos listed lazily."""

    name: str
    root: Path

    def videos(self, split: str | None = None) -> Iterator[Video]:
        """Videos of one split (or both, train first), in a stable order."""
        ...


def require_dir(root: Path, name: str, hint: str) -> Path:
    """The dataset root, or a DatasetError that says where to get the data and what layout is expected."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: {name} dataset folder does not exist. {hint}")
    if not any(root.iterdir()):
        raise DatasetError(f"{root}: {name} dataset folder is empty. {hint}")
    return root


def labels_from_ranges(n_frames: int, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
    """Frame labels (0-based array) from 1-based inclusive [first, last] ranges, as in UCSD's .m files."""
    labels = np.zeros(n_frames, dtype=np.uint8)
    for first, last in ranges:
        labels[first - 1 : last] = 1
    return labels


def video_sources(folder: Path, exclude: Sequence[str] = ()) -> list[tuple[str, FrameSource]]:
    """The videos stored directly in a folder, as (id, source) in natural order of the ids.

    A video file (any of VIDEO_SUFFIXES) is one video, id = file stem; a subfolder is one video stored as
    frames, id = folder name. Video files are not decoded here: their frame count is taken on first use.
    """
    found: dict[str, tuple[Path, FrameSource]] = {}
    for path in visible_entries(folder) if Path(folder).is_dir() else []:
        if path.name in exclude:
            continue
        if path.is_dir():
            vid, source = path.name, FrameFolder.from_folder(path)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            vid, source = path.stem, VideoFile(str(path))
        else:
            continue
        if vid in found:
            raise DatasetError(f"{path}: video id {vid!r} is also used by {found[vid][0]}; rename one of them")
        found[vid] = (path, source)
    return [(vid, source) for vid, (_, source) in found.items()]


class DatasetReader:
    """What the readers of this package share: a checked root and `videos(split)` over SPLITS.

    Subclasses set `name` and `HELP` (where to download the data and the layout expected, one line)
    and implement `_videos(split)`.
    """

    name = "dataset"
    HELP = ""

    def __init__(self, root: str | Path) -> None:
        self.root = require_dir(Path(root), self.name, self.HELP)

    def videos(self, split: str | None = None) -> Iterator[Video]:
        """Videos of one split (or both, train first), listed lazily in a stable order."""
        if split is not None and split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        splits = SPLITS if split is None else (split,)
        return (video for s in splits for video in self._videos(s))

    def _videos(self, split: str) -> Iterator[Video]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, root={str(self.root)!r})"
