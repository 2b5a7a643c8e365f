"""A model-free segmentation teacher for fixed cameras: per-video background model, foreground blobs.

The background of a video is the per-pixel median of `fit_frames` evenly spaced frames; a pixel is
foreground where it differs from the background by more than `k_noise` times the video's noise level (a
robust estimate from the same frames) and at least `min_threshold` grey levels. Small blobs are removed.
Every foreground pixel gets class 1 ("object"): this teacher knows where things are, not what they are.
Its known limit: an object that stays still for most of a video becomes background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtvad.precompute.teachers.base import Teacher, to_gray


@dataclass(frozen=True)
class BackgroundParams:
    fit_frames: int = 48
    k_noise: float = 4.0
    min_threshold: float = 12.0  # grey levels
    min_area: float = 4e-4  # smallest blob, as a fraction of the frame area
    open_px: int = 3  # morphological opening then closing, square kernel side


@dataclass(frozen=True)
class BackgroundState:
    background: np.ndarray  # float32 (H, W) grey levels
    threshold: float


class BackgroundSegmentation(Teacher):
    role = "seg"
    name = "background"
    version = "1"
    Params = BackgroundParams
    summary = "median background per video, foreground blobs above the video's noise level (class 1 = object)"
    classes = {0: "background", 1: "object"}

    @property
    def fit_frames(self) -> int:  # type: ignore[override]
        return self.params.fit_frames

    def fit_video(self, sample: np.ndarray) -> BackgroundState:
        gray = to_gray(sample).astype(np.float32)
        background = np.median(gray, axis=0)
        # 1.4826 * MAD = the standard deviation of Gaussian noise; robust to the moving objects
        noise = 1.4826 * float(np.median(np.abs(gray - background)))
        return BackgroundState(background, max(self.params.min_threshold, self.params.k_noise * noise))

    def __call__(self, frames: np.ndarray, n_context: int, state: BackgroundState | None = None) -> dict[str, np.ndarray]:
        import cv2

        if state is None:
            raise ValueError("the background teacher needs its per-video state (fit_video)")
        p = self.params
        gray = to_gray(frames[n_context:]).astype(np.float32)
        kernel = np.ones((p.open_px, p.open_px), np.uint8)
        min_area = p.min_area * gray.shape[1] * gray.shape[2]
        seg = np.zeros(gray.shape, np.uint8)
        for i, g in enumerate(gray):
            fg = (np.abs(g - state.background) > state.threshold).astype(np.uint8)
            fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)
            fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, kernel)
            n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
            keep = np.zeros(n, np.uint8)
            keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
            seg[i] = keep[labels]
        return {"seg": seg}
