"""What one precompute task does: one video x one chunk-aligned block of frames, end to end.

read the block (plus the frames before it that a teacher needs) -> resize to the store resolution ->
run every teacher -> write whole chunks of every array -> mark the block done.

Functions here run on Dask workers: they take small picklable arguments (a `Video` holds paths only) and
open the store themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtvad.precompute.datasets.base import Video
from mtvad.precompute.teachers import build_teacher, loaded_teacher
from mtvad.precompute.teachers.base import fit_indices
from mtvad.store.access import open_store
from mtvad.store.schema import block_range

TeacherSpecs = dict[str, tuple[str, dict[str, Any]]]  # role -> (teacher name, parameters)


def resize_frames(frames: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    """uint8 RGB (n, h, w, 3) -> (n, H, W, 3) with area interpolation (linear where it upsamples)."""
    import cv2

    h, w = resolution
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])


def resize_masks(masks: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    """bool (n, h, w) -> (n, H, W), nearest neighbour so that a mask stays a mask."""
    import cv2

    h, w = resolution
    if masks.shape[1:3] == (h, w):
        return masks
    return np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0 for m in masks])


def fit_video_states(video: Video, specs: TeacherSpecs, resolution: tuple[int, int]) -> dict[str, Any]:
    """Per-video teacher states (e.g. a background model), for the teachers that need one."""
    states: dict[str, Any] = {}
    sample = None
    for role, (name, params) in specs.items():
        teacher = loaded_teacher(name, params)
        if not teacher.fit_frames:
            continue
        idx = fit_indices(video.n_frames, teacher.fit_frames)
        if sample is None or len(sample) != len(idx):
            sample = resize_frames(np.stack([video.read(int(i), int(i) + 1)[0] for i in idx]), resolution)
        states[role] = teacher.fit_video(sample)
    return states


def needs_fit(specs: TeacherSpecs) -> bool:
    return any(build_teacher(name, params).fit_frames for name, params in specs.values())


def compute_block(video: Video, start: int, stop: int, specs: TeacherSpecs, states: dict[str, Any],
                  resolution: tuple[int, int]) -> dict[str, np.ndarray]:
    """Every array of frames [start, stop) of a video, as physical values (not yet quantised)."""
    teachers = {role: loaded_teacher(name, params) for role, (name, params) in specs.items()}
    n_context = min(start, max(t.context for t in teachers.values()))
    frames = resize_frames(video.read(start - n_context, stop), resolution)
    out = {"frames": frames[n_context:]}
    for role, teacher in teachers.items():
        skip = n_context - min(n_context, teacher.context)  # give each teacher only the context it asked for
        out.update(teacher(frames[skip:], n_context - skip, states.get(role)))
    masks = video.read_masks(start, stop)
    if masks is not None:
        out["mask"] = resize_masks(masks, resolution)
    return out


def run_block(store_url: str, video: Video, block: int, specs: TeacherSpecs, states: dict[str, Any],
              storage_options: dict | None = None) -> tuple[str, int, int]:
    """Compute and write one block; returns (video key, block, frames written)."""
    store = open_store(store_url, mode="r+", storage_options=storage_options, validate=False)
    target = store.video(video.split, video.id)
    start, stop = block_range(block, target.n_frames, store.chunk_frames)
    values = compute_block(video, start, stop, specs, states, store.resolution)
    if not target.has_masks:
        values.pop("mask", None)
    target.write_block(block, values)
    return target.key, block, stop - start
