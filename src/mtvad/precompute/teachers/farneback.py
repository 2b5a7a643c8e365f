"""Farneback dense optical flow (OpenCV): the paper's flow teacher (section 4.3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtvad.precompute.teachers.base import Teacher, to_gray


@dataclass(frozen=True)
class FarnebackParams:
    """cv2.calcOpticalFlowFarneback's arguments; the defaults are OpenCV's documented example values."""

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2


class Farneback(Teacher):
    role = "flow"
    name = "farneback"
    version = "1"
    Params = FarnebackParams
    summary = "Farneback dense flow from frame t-1 to t (OpenCV), magnitude in store pixels/frame and angle"
    context = 1

    def __call__(self, frames: np.ndarray, n_context: int, state=None) -> dict[str, np.ndarray]:
        import cv2

        gray = to_gray(frames)
        n = len(frames) - n_context
        mag = np.zeros((n,) + gray.shape[1:], np.float32)
        ang = np.zeros_like(mag)
        p = self.params
        for i in range(n):
            t = n_context + i
            if t == 0:
                continue  # first frame of the video: no previous frame, flow stays zero
            flow = cv2.calcOpticalFlowFarneback(gray[t - 1], gray[t], None, p.pyr_scale, p.levels,
                                                p.winsize, p.iterations, p.poly_n, p.poly_sigma, 0)
            mag[i], ang[i] = cv2.cartToPolar(flow[..., 0], flow[..., 1])
        return {"flow_mag": mag, "flow_ang": ang}
