"""Tiny fake datasets in the real on-disk layouts of each reader, for tests.

Every frame is a flat image whose grey level encodes its 0-based index in its video (`frame_index` reads it
back, JPEG and MJPG included), so a test can check which frame a label or a mask belongs to. Test video k
(1-based) is anomalous on the 1-based inclusive range `default_ranges(...)[k - 1]`, and its masks are non-zero
exactly on the anomalous frames. Each `write_*` function returns the dataset root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

SIZE = (24, 36)  # (H, W)
Ranges = list[tuple[int, int]]


def frame_pixels(index: int, size: tuple[int, int] = SIZE, gray: bool = False) -> np.ndarray:
    """A flat uint8 frame ((H, W) if gray, else (H, W, 3)) whose value encodes `index` (0..22)."""
    shape = size if gray else (*size, 3)
    return np.full(shape, 20 + 10 * index, dtype=np.uint8)


def frame_index(frame: np.ndarray) -> int:
    """The index that `frame_pixels` encoded in a (possibly lossy-decoded) frame."""
    return int(round((float(frame.mean()) - 20) / 10))


def default_ranges(n_videos: int, n_frames: int) -> list[Ranges]:
    """1-based inclusive anomalous ranges: video k is anomalous on frames k+1 .. n_frames-1."""
    return [[(k + 1, n_frames - 1)] for k in range(1, n_videos + 1)]


def labels_of(ranges: Ranges, n_frames: int) -> np.ndarray:
    labels = np.zeros(n_frames, dtype=np.uint8)
    for first, last in ranges:
        labels[first - 1 : last] = 1
    return labels


def mask_pixels(anomalous: bool, size: tuple[int, int] = SIZE) -> np.ndarray:
    mask = np.zeros(size, dtype=np.uint8)
    if anomalous:
        mask[2:7, 3:10] = 255
    return mask


def write_frames(folder: Path, n: int, size=SIZE, ext: str = ".jpg", first: int = 0, gray: bool = False) -> Path:
    """Frames `{first:03d}{ext}` ... of one video."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(frame_pixels(i, size, gray)).save(folder / f"{i + first:03d}{ext}")
    return folder


def write_masks(folder: Path, labels: np.ndarray, size=SIZE, first: int = 1, prefix: str = "") -> Path:
    """UCSD-style mask images `{prefix}{first:03d}.bmp` ..., non-zero on anomalous frames."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, label in enumerate(labels):
        Image.fromarray(mask_pixels(bool(label), size)).save(folder / f"{prefix}{i + first:03d}.bmp")
    return folder


def write_avi(path: Path, n: int, size=SIZE, fps: float = 10) -> Path:
    """An MJPG AVI of n frames (every frame a key frame)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for i in range(n):
        writer.write(frame_pixels(i, size))
    writer.release()
    return path


def write_m_file(path: Path, table: Sequence[Ranges]) -> Path:
    """A UCSD ground-truth .m file (`TestVideoFile{end+1}.gt_frame = [61:180];` lines)."""
    lines = ["TestVideoFile = {};"]
    for ranges in table:
        body = ", ".join(f"{a}:{b}" for a, b in ranges)
        lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{body}];")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ffp_mat(path: Path, table: Sequence[Ranges]) -> Path:
    """An FFP-style .mat (`gt`: a 1xN cell of 2xK [first; last] matrices), like ped2.mat and avenue.mat."""
    from scipy.io import savemat

    cells = np.empty((1, len(table)), dtype=object)
    for k, ranges in enumerate(table):
        cells[0, k] = np.array(ranges, dtype=np.float64).T.reshape(2, -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {"gt": cells})
    return path


def write_ucsd_official(
    root: Path, n_train: int = 2, n_test: int = 2, n_frames: int = 6, size=SIZE,
    masks_for: Sequence[int] = (1,), m_name: str = "UCSDped2.m", junk: bool = True,
) -> Path:
    """`Train/Train001/001.tif` (grey, 1-based), `Test/Test001/`, `Test/Test001_gt/001.bmp`, `Test/UCSDped2.m`.

    With `junk`, adds the macOS metadata files (`._001.tif`, `.DS_Store`) found in real archives.
    """
    ranges = default_ranges(n_test, n_frames)
    for k in range(1, n_train + 1):
        write_frames(root / "Train" / f"Train{k:03d}", n_frames, size, ".tif", first=1, gray=True)
    for k in range(1, n_test + 1):
        write_frames(root / "Test" / f"Test{k:03d}", n_frames, size, ".tif", first=1, gray=True)
        if k in masks_for:
            write_masks(root / "Test" / f"Test{k:03d}_gt", labels_of(ranges[k - 1], n_frames), size)
    write_m_file(root / "Test" / m_name, ranges)
    if junk:
        for video in (root / "Train" / "Train001", root / "Test" / "Test001"):
            if video.is_dir():
                (video / "._001.tif").write_bytes(b"\x00\x05\x16\x07junk")
                (video.parent / ".DS_Store").write_bytes(b"junk")
        (root / "Test" / f"._{m_name}").write_bytes(b"junk")
    return root


def write_ucsd_frames(
    root: Path, n_train: int = 2, n_test: int = 2, n_frames: int = 6, size=SIZE,
    labels: str | None = "m", masks_for: Sequence[int] = (1,), present: Sequence[int] | None = None,
) -> Path:
    """`training/frames/01/000.jpg` (0-based), `testing/frames/01/`, `gt/Test001_gt/001.bmp`, and frame labels:
    `gt/UCSDped2.m` ("m"), `ped2.mat` ("mat"), `frame_labels_ped2.npy` ("npy") or none (None).

    The label file covers test videos 1..n_test; `present` lists those written to disk (default all).
    """
    ranges = default_ranges(n_test, n_frames)
    present = list(range(1, n_test + 1)) if present is None else list(present)
    for k in range(1, n_train + 1):
        write_frames(root / "training" / "frames" / f"{k:02d}", n_frames, size)
    for k in present:
        write_frames(root / "testing" / "frames" / f"{k:02d}", n_frames, size)
        if k in masks_for:
            write_masks(root / "gt" / f"Test{k:03d}_gt", labels_of(ranges[k - 1], n_frames), size)
    if labels == "m":
        write_m_file(root / "gt" / "UCSDped2.m", ranges)
    elif labels == "mat":
        write_ffp_mat(root / "ped2.mat", ranges)
    elif labels == "npy":
        concatenated = np.concatenate([labels_of(ranges[k - 1], n_frames) for k in present])
        np.save(root / "frame_labels_ped2.npy", concatenated)
    return root


def write_avenue(
    root: Path, n_train: int = 1, n_test: int = 2, n_frames: int = 6, size=SIZE, labels: str | None = "mask",
) -> Path:
    """`training_videos/01.avi`, `testing_videos/01.avi`, and labels: `ground_truth_demo/testing_label_mask/
    1_label.mat` (`volLabel`, a 1xT cell of HxW masks; "mask"), FFP `avenue.mat` ("mat") or none (None)."""
    from scipy.io import savemat

    ranges = default_ranges(n_test, n_frames)
    for k in range(1, n_train + 1):
        write_avi(root / "training_videos" / f"{k:02d}.avi", n_frames, size)
    for k in range(1, n_test + 1):
        write_avi(root / "testing_videos" / f"{k:02d}.avi", n_frames, size)
        if labels == "mask":
            cells = np.empty((1, n_frames), dtype=object)
            for i, label in enumerate(labels_of(ranges[k - 1], n_frames)):
                cells[0, i] = (mask_pixels(bool(label), size) > 0).astype(np.uint8)
            folder = root / "ground_truth_demo" / "testing_label_mask"
            folder.mkdir(parents=True, exist_ok=True)
            savemat(str(folder / f"{k}_label.mat"), {"volLabel": cells})
    if labels == "mat":
        write_ffp_mat(root / "avenue.mat", ranges)
    return root


def shanghaitech_labels(n_frames: int) -> np.ndarray:
    """The frame labels every fake ShanghaiTech test video gets: frames 2 .. n_frames-2 (0-based) anomalous."""
    labels = np.zeros(n_frames, dtype=np.uint8)
    labels[2 : n_frames - 1] = 1
    return labels


def write_shanghaitech(
    root: Path, train: Sequence[str] = ("01_001", "02_001"), test: Sequence[str] = ("01_0014", "02_0001"),
    n_frames: int = 6, size=SIZE, train_as: str = "videos",
) -> Path:
    """`training/videos/01_001.avi` (or `training/frames/01_001/000.jpg` with train_as="frames"),
    `testing/frames/01_0014/000.jpg`, `testing/test_frame_mask/01_0014.npy`, `testing/test_pixel_mask/01_0014.npy`."""
    for vid in train:
        if train_as == "videos":
            write_avi(root / "training" / "videos" / f"{vid}.avi", n_frames, size)
        else:
            write_frames(root / "training" / "frames" / vid, n_frames, size)
    labels = shanghaitech_labels(n_frames)
    for folder in ("test_frame_mask", "test_pixel_mask"):
        (root / "testing" / folder).mkdir(parents=True, exist_ok=True)
    for vid in test:
        write_frames(root / "testing" / "frames" / vid, n_frames, size)
        np.save(root / "testing" / "test_frame_mask" / f"{vid}.npy", labels.astype(np.int64))
        masks = np.stack([mask_pixels(bool(label), size) > 0 for label in labels]).astype(np.uint8)
        np.save(root / "testing" / "test_pixel_mask" / f"{vid}.npy", masks)
    return root


def write_folder(
    root: Path, train: Sequence[str] = ("cam1",), test: Sequence[str] = ("cam2",), n_frames: int = 6, size=SIZE,
    as_frames: Sequence[str] = (), labels: str | None = ".npy",
) -> Path:
    """A user's own footage: `train/cam1.avi`, `test/cam2.avi` (frame folders for ids in `as_frames`), and
    `labels/<id>.npy` or `.txt` for test videos (`shanghaitech_labels`)."""
    for split, ids in (("train", train), ("test", test)):
        for vid in ids:
            if vid in as_frames:
                write_frames(root / split / vid, n_frames, size)
            else:
                write_avi(root / split / f"{vid}.avi", n_frames, size)
    if labels:
        (root / "labels").mkdir(parents=True, exist_ok=True)
        for vid in test:
            values = shanghaitech_labels(n_frames)
            path = root / "labels" / f"{vid}{labels}"
            if labels == ".npy":
                np.save(path, values)
            else:
                path.write_text("\n".join(str(v) for v in values) + "\n")
    return root
