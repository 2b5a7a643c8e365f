"""The teacher protocol: a name, a version, typed parameters, what it needs, and a batch call.

A teacher turns a block of frames (uint8 RGB at the store resolution) into the arrays of its role:

| role    | outputs                                   |
|---------|-------------------------------------------|
| `seg`   | `seg` uint8 (n, H, W), class id per pixel |
| `flow`  | `flow_mag`, `flow_ang` float32 (n, H, W)  |
| `depth` | `depth` float32 (n, H, W) in [0, 1]       |

Teachers that need frames before the block (flow: the previous frame) say so with `context`; teachers that
need a per-video model (a background model) fit it on `fit_frames` evenly spaced frames of the video with
`fit_video`. Heavy models load in `load()`, called once per worker process (`loaded_teacher`).

Teachers that need a model of the whole dataset (`dataset_fit = True`: shape classes, a flow threshold) take
it as their parameter `fit` (a JSON dict): when it is empty the job calls `fit_dataset` once, on the
training videos, before any block, and every task builds the teacher with the result. So the fit is a
parameter like any other: in the store's `teachers` and fingerprint (a store never mixes two fits), and a
resumed store reuses the fit it recorded (`jobs.fit_dataset_teachers`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mtvad.hashing import file_sha256

ROLES = ("seg", "flow", "depth")


class Teacher:
    """Base class of all teachers. Subclasses set the class attributes and implement `__call__`."""

    role: ClassVar[str]
    name: ClassVar[str]
    version: ClassVar[str]
    Params: ClassVar[type]  # a frozen dataclass with the paper's (or measured) defaults
    summary: ClassVar[str] = ""
    needs_gpu: ClassVar[bool] = False
    context: ClassVar[int] = 0
    fit_frames: ClassVar[int] = 0
    classes: ClassVar[dict[int, str]] = {}  # seg teachers: class vocabulary, 0 = background
    path_params: ClassVar[tuple[str, ...]] = ()  # where a weights file lies: not recorded (its sha256 is)
    dataset_fit: ClassVar[bool] = False  # fitted on the training videos (`fit_dataset`) into the parameter `fit`

    def __init__(self, **params: Any):
        fields = {f.name for f in dataclasses.fields(self.Params)}
        unknown = set(params) - fields
        if unknown:
            from mtvad.errors import TeacherError

            raise TeacherError(f"teacher {self.name!r} has no parameter(s) {sorted(unknown)}; it takes {sorted(fields)}")
        self.params = self.Params(**params)

    def weights_path(self) -> Path | None:
        """The weights file this teacher loads, if any (resolved without loading it)."""
        return None

    def weights_sha256(self) -> str | None:
        path = self.weights_path()
        return None if path is None else file_sha256(path)

    def describe(self) -> dict[str, Any]:
        """What goes into the store's fingerprint: identical descriptions give identical outputs."""
        params = {k: v for k, v in dataclasses.asdict(self.params).items() if k not in self.path_params}
        return {"name": self.name, "version": self.version, "params": params, "weights_sha256": self.weights_sha256()}

    def load(self) -> None:
        """Load models (called once per worker process before the first call)."""

    def fit_video(self, sample: np.ndarray) -> Any:
        """Per-video state from `fit_frames` evenly spaced frames (n, H, W, 3); None if not needed."""
        return None

    @property
    def needs_dataset_fit(self) -> bool:
        """True when the job must run `fit_dataset` before any block (a dataset-fitted teacher, not fitted yet)."""
        return self.dataset_fit and not getattr(self.params, "fit", None)

    def fit_dataset(self, videos: Sequence[Any], resolution: tuple[int, int]) -> dict[str, Any]:
        """The dataset-level fit (JSON-able dict, becomes the parameter `fit`) from the training videos
        (`datasets.base.Video`), read at the store resolution."""
        raise NotImplementedError

    def __call__(self, frames: np.ndarray, n_context: int, state: Any = None) -> dict[str, np.ndarray]:
        """Outputs for frames[n_context:]. `n_context` <= `context` (less at the start of a video)."""
        raise NotImplementedError



def to_gray(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB (n, H, W, 3) -> uint8 luma (n, H, W), ITU-R 601 weights as OpenCV's RGB2GRAY."""
    import cv2

    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])


def fit_indices(n_frames: int, k: int) -> np.ndarray:
    """k evenly spaced frame indices over a video (all frames if it is shorter)."""
    return np.unique(np.linspace(0, n_frames - 1, num=min(k, n_frames)).round().astype(int))
