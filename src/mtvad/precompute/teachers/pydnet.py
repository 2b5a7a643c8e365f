"""PyDNet v2 monocular relative depth (TFLite). Optional and never a default: its licence is research-only.

The model takes 448x640 RGB in [0, 1] and returns inverse depth (larger = nearer) at the same size; the
map is resized to the store resolution and min-max normalised per frame, as the store's `depth` asks.
The file `optimized_pydnet++.tflite` comes from the GitHub repository FilippoAleotti/mobilePydnet and is
resolved like every TFLite model (parameter `model`, `$MTVAD_MODELS`, `~/.cache/mtvad/models`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtvad.precompute.teachers.tflite import TFLiteTeacher

MODEL_FILE = "optimized_pydnet++.tflite"
MODEL_URL = "https://github.com/FilippoAleotti/mobilePydnet (research use only)"


@dataclass(frozen=True)
class PyDNetParams:
    model: str = ""


def normalise_per_frame(depth: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] per frame (a constant frame becomes 0)."""
    lo = depth.min(axis=(-2, -1), keepdims=True)
    span = depth.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (depth - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)


class PyDNetDepth(TFLiteTeacher):
    role = "depth"
    name = "pydnet"
    version = "1"
    Params = PyDNetParams
    model_file, model_url = MODEL_FILE, MODEL_URL
    summary = "PyDNet v2 monocular inverse depth (TFLite; research licence, optional)"

    def __call__(self, frames: np.ndarray, n_context: int, state=None) -> dict[str, np.ndarray]:
        import cv2

        if not hasattr(self, "_interpreter"):
            self.load()
        _, model_h, model_w, _ = self._input_shape
        frames = frames[n_context:]
        h, w = frames.shape[1:3]
        out = np.empty((len(frames), h, w), np.float32)
        for i, frame in enumerate(frames):
            x = cv2.resize(frame, (model_w, model_h), interpolation=cv2.INTER_LINEAR)
            out[i] = cv2.resize(self.run_model((x.astype(np.float32) / 255)[None])[0, ..., 0], (w, h),
                                interpolation=cv2.INTER_LINEAR)
        return {"depth": normalise_per_frame(out)}
