"""PyDNet v2 monocular relative depth (TFLite). Optional and never a default: its licence is research-only.

The model takes 448x640 RGB in [0, 1] and returns inverse depth (larger = nearer) at the same size; the
map is resized to the store resolution and min-max normalised per frame, as the store's `depth` asks.
The file `optimized_pydnet++.tflite` comes from the GitHub repository FilippoAleotti/mobilePydnet and is
resolved like every TFLite model (parameter `model`, `$MTVAD_MODELS`, `~/.cache/mtvad/models`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.teachers.base import Teacher
from pipeline.teachers.tflite import locate_model, resolve_model, tflite_interpreter
from pipeline.teachers.weights import Located

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


class PyDNetDepth(Teacher):
    role = "depth"
    name = "pydnet"
    version = "1"
    Params = PyDNetParams
    path_params = ("model",)
    summary = "PyDNet v2 monocular inverse depth (TFLite; research licence, optional)"

    def locate_weights(self) -> Located:
        return locate_model(self.params.model, MODEL_FILE)

    def weights_path(self) -> Path:
        return resolve_model(self.params.model, MODEL_FILE, MODEL_URL)

    def load(self) -> None:
        self._interpreter = tflite_interpreter(self.weights_path())
        detail = self._interpreter.get_input_details()[0]
        self._input, (_, self._h, self._w, _) = detail["index"], detail["shape"]
        self._output = self._interpreter.get_output_details()[0]["index"]

    def __call__(self, frames: np.ndarray, n_context: int, state=None) -> dict[str, np.ndarray]:
        import cv2

        if not hasattr(self, "_interpreter"):
            self.load()
        frames = frames[n_context:]
        h, w = frames.shape[1:3]
        out = np.empty((len(frames), h, w), np.float32)
        for i, frame in enumerate(frames):
            x = cv2.resize(frame, (int(self._w), int(self._h)), interpolation=cv2.INTER_LINEAR)
            self._interpreter.set_tensor(self._input, (x.astype(np.float32) / 255)[None])
            self._interpreter.invoke()
            out[i] = cv2.resize(self._interpreter.get_tensor(self._output)[0, ..., 0], (w, h),
                                interpolation=cv2.INTER_LINEAR)
        return {"depth": normalise_per_frame(out)}
