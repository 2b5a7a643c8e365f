"""Model files and the runtime of the TFLite teachers (optional extra: `pip install 'mtvad[tflite]'`).

Model files are never shipped with the project: a teacher resolves its file from an explicit path, then
`$MTVAD_MODELS`, then `~/.cache/mtvad/models`, and says where to download it when none exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.teachers.weights import Located
from vad.errors import TeacherError


def models_dir() -> Path:
    return Path(os.environ.get("MTVAD_MODELS", Path.home() / ".cache" / "mtvad" / "models"))


def locate_model(explicit: str, filename: str) -> Located:
    """Where the model file is (or is expected), without reading it: for `pipeline teachers`."""
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
