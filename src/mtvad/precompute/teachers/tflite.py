"""Model files and the runtime of the TFLite teachers (optional extra: `pip install 'mtvad[tflite]'`).

Model files are never shipped with the project: a teacher resolves its file from an explicit path, then
`$MTVAD_MODELS`, then `~/.cache/mtvad/models`, and says where to download it when none exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mtvad.errors import TeacherError
from mtvad.precompute.teachers.base import Teacher
from mtvad.precompute.teachers.weights import Located


def models_dir() -> Path:
    return Path(os.environ.get("MTVAD_MODELS", Path.home() / ".cache" / "mtvad" / "models"))


def locate_model(explicit: str, filename: str) -> Located:
    """Where the model file is (or is expected), without reading it: for `vad teachers`."""
    if explicit:
        path = Path(explicit).expanduser()
        return Located(path if path.is_file() else None, str(path), "parameter")
    path = models_dir() / filename
    return Located(path if path.is_file() else None, str(path), "cache")


def resolve_model(explicit: str, filename: str, url: str) -> Path:
    """An explicit model path, else `$MTVAD_MODELS/filename`, else `~/.cache/mtvad/models/filename`."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise TeacherError(f"{path}: model file does not exist (download {url})")
        return path
    path = models_dir() / filename
    if path.is_file():
        return path
    raise TeacherError(f"model file {filename} not found in {models_dir()}: download it from {url} and put it "
                       f"there (or set MTVAD_MODELS to its folder, or pass the teacher parameter model=PATH)")


def tflite_interpreter(path: Path, threads: int = 1):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise TeacherError("this teacher needs the TFLite runtime: pip install 'mtvad[tflite]' "
                           "(the ai-edge-litert package)") from None
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


class TFLiteTeacher(Teacher):
    """A teacher that runs one TFLite model, named by `model_file` and found through the `model` parameter."""

    model_file: str
    model_url: str
    path_params = ("model",)

    def locate_weights(self) -> Located:
        return locate_model(self.params.model, self.model_file)

    def weights_path(self) -> Path:
        return resolve_model(self.params.model, self.model_file, self.model_url)

    def load(self) -> None:
        self._interpreter = tflite_interpreter(self.weights_path())
        detail = self._interpreter.get_input_details()[0]
        self._input, self._input_shape = detail["index"], tuple(int(d) for d in detail["shape"])
        self._output = self._interpreter.get_output_details()[0]["index"]

    def run_model(self, x: np.ndarray) -> np.ndarray:
        """One forward pass: float32 input of the model's shape -> its first output."""
        if not hasattr(self, "_interpreter"):
            self.load()
        self._interpreter.set_tensor(self._input, x)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)
