"""Frame-level ground-truth files, shared by the readers.

Formats:
- UCSD `.m` (`UCSDped2.m`): one `TestVideoFile{end+1}.gt_frame = [61:180];` line per test video,
  1-based inclusive ranges (`[5:90, 140:200]`, single frames `[7]`, or `[]`).
- FFP `.mat` (`ped2.mat`, `avenue.mat`): variable `gt`, one 2xK matrix per test video whose columns are
  1-based inclusive [first; last] ranges.
- A 0/1 array per video (`.npy` or `.txt`, one value per frame), or one array concatenated over all test
  videos (`frame_labels_ped2.npy`) that `split_concatenated` cuts by video lengths.

Every error names the file and what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mtvad.errors import DatasetError

from .base import FrameFolder, FrameSource, labels_from_ranges

Ranges = list[tuple[int, int]]

_M_ENTRY = re.compile(r"TestVideoFile\s*\{\s*(end\s*\+\s*1|\d+)\s*\}\s*\.\s*gt_frame\s*=\s*\[([^\]]*)\]")


def parse_ucsd_m(path: Path) -> list[Ranges]:
    """The ranges of every test video, in order, from a UCSD ground-truth `.m` file."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ground-truth file ({exc})") from exc
    table: list[Ranges] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        code = line.split("%", 1)[0]
        if "gt_frame" not in code:
            continue
        match = _M_ENTRY.search(code)
        if match is None:
            raise DatasetError(f"{path}:{lineno}: cannot parse {line.strip()!r}")
        ranges = _parse_m_ranges(match.group(2), path, lineno)
        index = len(table) if match.group(1).startswith("end") else int(match.group(1)) - 1
        table.extend([] for _ in range(index + 1 - len(table)))
        table[index] = ranges
    if not table:
        raise DatasetError(f"{path}: no 'TestVideoFile{{...}}.gt_frame = [...]' lines (not a UCSD ground-truth file?)")
    return table


def _parse_m_ranges(body: str, path: Path, lineno: int) -> Ranges:
    body = re.sub(r"\s*:\s*", ":", body.strip())
    ranges = []
    for token in filter(None, re.split(r"[\s,;]+", body)):
        parts = token.split(":")
        if len(parts) > 2 or not all(p.isdigit() for p in parts):
            raise DatasetError(f"{path}:{lineno}: cannot parse frame range {token!r}")
        ranges.append((int(parts[0]), int(parts[-1])))
    return ranges


def load_ffp_mat(path: Path, key: str = "gt") -> list[Ranges]:
    """The ranges of every test video, in order, from an FFP-style `.mat` file (`ped2.mat`, `avenue.mat`)."""
    gt = load_mat_variable(path, key)
    if gt.dtype == object:
        cells = [gt.item()] if gt.ndim == 0 else list(gt.ravel())
    else:
        cells = list(gt) if gt.ndim == 3 else [gt]
    return [_ffp_ranges(cell, path, k) for k, cell in enumerate(cells, 1)]


def _ffp_ranges(cell, path: Path, video: int) -> Ranges:
    arr = np.asarray(cell)
    if arr.size == 0:
        return []
    if arr.shape[0] != 2 or arr.ndim > 2 or not np.issubdtype(arr.dtype, np.number):
        raise DatasetError(f"{path}: test video {video} ground truth must be a 2xK matrix of ranges, got {arr.shape}")
    arr = arr.reshape(2, -1).astype(np.int64)
    return [(int(first), int(last)) for first, last in arr.T]


def load_mat_variable(path: Path, key: str) -> np.ndarray:
    """One variable of a MATLAB (v5) `.mat` file, squeezed; DatasetError naming the file if absent or unreadable."""
    from scipy.io import loadmat

    try:
        data = loadmat(str(path), squeeze_me=True)
    except Exception as exc:  # scipy raises several types for malformed files
        raise DatasetError(f"{path}: unreadable .mat file ({exc})") from exc
    if key not in data:
        found = ", ".join(k for k in data if not k.startswith("__")) or "none"
        raise DatasetError(f"{path}: no variable {key!r} in this .mat file (variables: {found})")
    return np.asarray(data[key])


def labels_for_video(table: Sequence[Ranges], number: int, n_frames: int, source: Path, video: str) -> np.ndarray:
    """0-based frame labels of test video `number` (1-based, as in the label file) from its ranges."""
    if not 1 <= number <= len(table):
        raise DatasetError(
            f"{source}: has ground truth for {len(table)} test videos, none for video {number} ({video})"
        )
    ranges = table[number - 1]
    for first, last in ranges:
        if not 1 <= first <= last <= n_frames:
            raise DatasetError(
                f"{source}: range {first}:{last} of test video {number} is outside its {n_frames} frames ({video})"
            )
    return labels_from_ranges(n_frames, ranges)


def load_frame_labels(path: Path) -> np.ndarray:
    """A 0/1 array of frame labels from a `.npy` or `.txt` file (one value per frame), as uint8."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            arr = np.loadtxt(path, ndmin=1)
    except Exception as exc:  # numpy raises several types for malformed files
        raise DatasetError(f"{path}: unreadable frame-label file ({exc})") from exc
    arr = np.asarray(arr)
    if arr.ndim != 1:
        arr = arr.squeeze()
    if arr.ndim != 1:
        raise DatasetError(f"{path}: frame labels must be one value per frame, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise DatasetError(f"{path}: frame labels must be 0 or 1, found "
                           + ", ".join(f"{v:g}" for v in sorted(set(np.unique(arr).tolist()) - {0, 1})[:5]))
    return arr.astype(np.uint8)


def split_concatenated(labels: np.ndarray, lengths: Sequence[int], source: Path) -> list[np.ndarray]:
    """Cut labels concatenated over all test videos (in order) into one array per video."""
    if len(labels) != sum(lengths):
        raise DatasetError(
            f"{source}: {len(labels)} frame labels but the {len(lengths)} test videos found have "
            f"{sum(lengths)} frames in all"
        )
    return np.split(labels, np.cumsum(lengths)[:-1]) if lengths else []


def check_length(labels: np.ndarray, source: FrameSource, labels_path: Path) -> np.ndarray:
    """Labels, after checking their count against the video when that needs no decoding (frame folders).

    Video files are not decoded while listing: `Video.validate` checks them.
    """
    if isinstance(source, FrameFolder) and len(labels) != source.n_frames:
        raise DatasetError(
            f"{labels_path}: {len(labels)} frame labels for a video of {source.n_frames} frames ({source.path})"
        )
    return labels


def find_label_file(folders: Iterable[Path], patterns: Sequence[str]) -> Path | None:
    """The file matching the first of `patterns` (globs, in order of preference) found in `folders` (in order).

    Several files matching one pattern in one folder are ambiguous: DatasetError listing them.
    """
    folders = [f for f in folders if f.is_dir()]
    for pattern in patterns:
        for folder in folders:
            hits = sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
            if len(hits) > 1:
                names = ", ".join(p.name for p in hits)
                raise DatasetError(f"{folder}: several ground-truth files ({names}); keep one")
            if hits:
                return hits[0]
    return None
