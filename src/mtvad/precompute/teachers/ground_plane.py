"""A model-free depth prior for fixed cameras looking down at a ground plane.

On a flat ground seen in perspective, inverse depth grows linearly with the image row below the horizon,
so after the store's per-frame min-max normalisation the prior is a ramp: 0 at the top row (farthest),
1 at the bottom row (nearest). It is the same map for every frame; it tells the motion student that
lower objects are nearer, which is the distance cue the paper's attention uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtvad.precompute.teachers.base import Teacher


@dataclass(frozen=True)
class GroundPlaneParams:
    pass


class GroundPlaneDepth(Teacher):
    role = "depth"
    name = "ground-plane"
    version = "1"
    Params = GroundPlaneParams
    summary = "relative inverse depth of a ground plane: a vertical ramp, 0 at the top row, 1 at the bottom"

    def __call__(self, frames: np.ndarray, n_context: int, state=None) -> dict[str, np.ndarray]:
        n, h, w = len(frames) - n_context, frames.shape[1], frames.shape[2]
        ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        return {"depth": np.broadcast_to(ramp, (n, h, w)).copy()}
