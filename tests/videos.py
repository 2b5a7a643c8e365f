"""Real video files for the tests: written with OpenCV (MJPG, mp4v) or PyAV (H.264), read back without the
project's readers."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")


def write_video(path: Path, frames: np.ndarray, fps: float, fourcc: str = "MJPG") -> Path:
    """RGB frames (n, H, W, 3) as a video file of `fourcc` at `fps` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (frames.shape[2], frames.shape[1]))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_h264(path: Path, frames: np.ndarray, fps: float) -> Path:
    """An H.264 video (x264's defaults) in the container the suffix names, written with PyAV."""
    av = pytest.importorskip("av")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return path


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame of a video file decoded in order (RGB)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def video_info(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(frames counted with grab(), the container's fps, (H, W)) of a video file."""
    cap = cv2.VideoCapture(str(path))
    fps, size = cap.get(cv2.CAP_PROP_FPS), (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(3)))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n, fps, size
