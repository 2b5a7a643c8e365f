"""What one precompute task does: a run of consecutive chunk-aligned blocks of one video, end to end.

read the run's frames once, in order (plus the frames before it that a teacher needs) -> per block: resize to
the store resolution -> run every teacher -> write whole chunks of every array -> mark the block done.

Functions here run on Dask workers: they take small picklable arguments (a `Video` holds paths only) and
open the store themselves.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mtvad.errors import DatasetError
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


def grey_frames(frames: np.ndarray, video: Video, start: int) -> np.ndarray:
    """RGB frames of grey footage (three equal channels) -> (n, H, W, 1); a DatasetError if one is in colour."""
    for i, frame in enumerate(frames):  # frame by frame: 8x faster than one comparison of the whole block
        if not (np.array_equal(frame[..., 0], frame[..., 1]) and np.array_equal(frame[..., 0], frame[..., 2])):
            raise DatasetError(f"{video.source.path}: frame {start + i} is in colour, but the video was judged grey "
                               "from a sample of its frames: a video's frames must all be grey or all be colour")
    return frames[..., :1]


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
            sample = resize_frames(video.read_frames(idx), resolution)  # one pass over the video
        states[role] = teacher.fit_video(sample)
    return states


def needs_fit(specs: TeacherSpecs) -> bool:
    return any(build_teacher(name, params).fit_frames for name, params in specs.values())


def teacher_values(frames: np.ndarray, n_context: int, teachers: dict[str, Any],
                   states: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every teacher's arrays for frames[n_context:], the frames before them given as context."""
    out = {"frames": frames[n_context:]}
    for role, teacher in teachers.items():
        skip = n_context - min(n_context, teacher.context)  # give each teacher only the context it asked for
        out.update(teacher(frames[skip:], n_context - skip, states.get(role)))
    return out


def run_blocks(store_url: str, video: Video, blocks: Sequence[int], specs: TeacherSpecs, states: dict[str, Any],
               storage_options: dict | None = None) -> list[tuple[str, int, int]]:
    """Compute and write a run of consecutive blocks of one video, reading its frames once, in order; each block
    is written whole and marked done before the next is computed. Returns (video key, block, frames) per block."""
    blocks = list(blocks)
    if any(b != a + 1 for a, b in zip(blocks, blocks[1:])):
        raise ValueError(f"{video.split}/{video.id}: blocks of a run must be consecutive, got {blocks}")
    store = open_store(store_url, mode="r+", storage_options=storage_options, validate=False)
    target = store.video(video.split, video.id)
    teachers = {role: loaded_teacher(name, params) for role, (name, params) in specs.items()}
    first, _ = block_range(blocks[0], target.n_frames, store.chunk_frames)
    max_context = max(t.context for t in teachers.values())
    n_context = min(first, max_context)
    done = []
    with video.reader(first - n_context) as source:
        context = resize_frames(source.read(n_context), store.resolution) if n_context else None
        for block in blocks:
            start, stop = block_range(block, target.n_frames, store.chunk_frames)
            frames = resize_frames(source.read(stop - start), store.resolution)
            if context is not None:
                frames = np.concatenate([context, frames])
            values = teacher_values(frames, len(frames) - (stop - start), teachers, states)
            if target.channels == 1:
                values["frames"] = grey_frames(values["frames"], video, start)
            masks = video.read_masks(start, stop)
            if masks is not None and target.has_masks:
                values["mask"] = resize_masks(masks, store.resolution)
            target.write_block(block, values)
            done.append((target.key, block, stop - start))
            context = frames[-max_context:] if max_context else None
    return done
