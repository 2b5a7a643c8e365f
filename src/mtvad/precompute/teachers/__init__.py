"""Teacher registry and presets.

A preset names one teacher per role. `cpu` needs no download and runs anywhere; `cpu-motion` (the default,
no download either) finds moving objects with a background model and flow and gives them shape pseudo-classes
fitted on the training videos (`motion_seg.py`); `cpu-classes` gives the same movers real classes from a small
TFLite DeepLab model run on a crop around each (`motion_classes.py`); `paper` is the paper's teachers (Mask
R-CNN on COCO, Farneback, MiDaS DPT-Hybrid), which need their weights (resolved in
`mtvad.precompute.teachers.weights`; where to get them: docs/teachers.md, "Getting the weights") and run on a
GPU where there is one.
"""

from __future__ import annotations

import json
from typing import Any

from mtvad.errors import TeacherError
from mtvad.presets import DEFAULT_PRESET
from mtvad.precompute.teachers.background import BackgroundSegmentation
from mtvad.precompute.teachers.base import ROLES, Teacher
from mtvad.precompute.teachers.deeplab import DeepLabSegmentation
from mtvad.precompute.teachers.farneback import Farneback
from mtvad.precompute.teachers.ground_plane import GroundPlaneDepth
from mtvad.precompute.teachers.maskrcnn import MaskRCNN
from mtvad.precompute.teachers.midas import Midas
from mtvad.precompute.teachers.motion_classes import MotionClassSegmentation
from mtvad.precompute.teachers.motion_seg import MotionShapeSegmentation
from mtvad.precompute.teachers.pydnet import PyDNetDepth

TEACHERS: dict[str, type[Teacher]] = {}


def register(cls: type[Teacher]) -> type[Teacher]:
    TEACHERS[cls.name] = cls
    return cls


for _cls in (Farneback, BackgroundSegmentation, GroundPlaneDepth, MaskRCNN, Midas, DeepLabSegmentation, PyDNetDepth,
             MotionShapeSegmentation, MotionClassSegmentation):
    register(_cls)

# role -> (teacher name, parameters)
PRESETS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "cpu": {"seg": ("background", {}), "flow": ("farneback", {}), "depth": ("ground-plane", {})},
    "paper": {"seg": ("maskrcnn", {}), "flow": ("farneback", {}), "depth": ("midas", {})},
    # no download: movers found by background model + flow, K shape pseudo-classes fitted on the training videos
    "cpu-motion": {"seg": ("motion-shapes", {}), "flow": ("farneback", {}), "depth": ("ground-plane", {})},
    # class-aware on a CPU: the movers of cpu-motion, each classed by DeepLab on a crop around it (needs the
    # TFLite file and runtime); recommended where the file is
    "cpu-classes": {"seg": ("motion-classes", {}), "flow": ("farneback", {}), "depth": ("ground-plane", {})},
}
# the preset to use where its weights are found, best first (`vad teachers` says which applies)
RECOMMENDED = {
    "paper": "the paper's teachers; a GPU for speed",
    "cpu-classes": "the movers of cpu-motion with real classes from DeepLab: the appearance branch sees what moves",
    "cpu-motion": "needs no download; shape pseudo-classes only: get deeplabv3_257_mv_gpu.tflite for cpu-classes",
}


def resolve_preset(preset: str) -> dict[str, tuple[str, dict[str, Any]]]:
    if preset not in PRESETS:
        raise TeacherError(f"unknown preset {preset!r}; known presets: {', '.join(sorted(PRESETS))}")
    return dict(PRESETS[preset])


def build_teacher(name: str, params: dict[str, Any] | None = None, role: str | None = None) -> Teacher:
    if name not in TEACHERS:
        raise TeacherError(f"unknown teacher {name!r}; known teachers: {', '.join(sorted(TEACHERS))}")
    teacher = TEACHERS[name](**(params or {}))
    if role is not None and teacher.role != role:
        raise TeacherError(f"teacher {name!r} produces {teacher.role!r}, not {role!r}")
    return teacher


_LOADED: dict[str, Teacher] = {}


def loaded_teacher(name: str, params: dict[str, Any] | None = None) -> Teacher:
    """The teacher built and loaded once per process (a Dask worker keeps its models across tasks)."""
    key = json.dumps([name, params or {}], sort_keys=True)
    if key not in _LOADED:
        teacher = build_teacher(name, params)
        teacher.load()
        _LOADED[key] = teacher
    return _LOADED[key]


__all__ = ["DEFAULT_PRESET", "RECOMMENDED", "ROLES", "PRESETS", "TEACHERS", "Teacher", "build_teacher",
           "loaded_teacher", "register", "resolve_preset"]
