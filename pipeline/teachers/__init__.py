"""Teacher registry and presets.

A preset names one teacher per role. `cpu` needs no download and runs anywhere; the paper's GPU teachers
(Mask R-CNN, MiDaS) plug into the same registry.
"""

from __future__ import annotations

import json
from typing import Any

from vad.errors import TeacherError

from pipeline.teachers.background import BackgroundSegmentation
from pipeline.teachers.base import ROLES, Teacher
from pipeline.teachers.farneback import Farneback
from pipeline.teachers.ground_plane import GroundPlaneDepth

TEACHERS: dict[str, type[Teacher]] = {}


def register(cls: type[Teacher]) -> type[Teacher]:
    TEACHERS[cls.name] = cls
    return cls


for _cls in (Farneback, BackgroundSegmentation, GroundPlaneDepth):
    register(_cls)

# role -> (teacher name, parameters)
PRESETS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "cpu": {"seg": ("background", {}), "flow": ("farneback", {}), "depth": ("ground-plane", {})},
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


__all__ = ["ROLES", "PRESETS", "TEACHERS", "Teacher", "build_teacher", "loaded_teacher", "register", "resolve_preset"]
