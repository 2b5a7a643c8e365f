"""Tiny random stores for the students' tests, written through the real contract (`mtvad.store`).

`make_random_store` fills every array with seeded random values: frames uint8 noise, seg random class ids in
square blobs (so masking and nearest resizing have something to keep), flow magnitude in [0, 4) px with a
real direction, depth in [0, 1]; frame 0 of each video has no flow (zeros), as the contract says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mtvad.store.access import Store, create_store
from mtvad.store.schema import SCHEMA_VERSION

DEFAULT_TEACHERS = {
    "seg": {"name": "random", "version": "1", "params": {}, "weights_sha256": None},
    "flow": {"name": "random", "version": "1", "params": {}, "weights_sha256": None},
    "depth": {"name": "random", "version": "1", "params": {}, "weights_sha256": None},
}


def random_video_values(rng: np.random.Generator, n: int, resolution: tuple[int, int], n_classes: int,
                        first_frame: bool) -> dict[str, np.ndarray]:
    h, w = resolution
    seg = np.zeros((n, h, w), np.uint8)
    for i in range(n):  # a few random class blobs per frame
        for _ in range(3):
            y, x = rng.integers(0, h - h // 4), rng.integers(0, w - w // 4)
            seg[i, y : y + h // 4, x : x + w // 4] = rng.integers(1, n_classes)
    mag = rng.uniform(0, 4, (n, h, w)).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi, (n, h, w)).astype(np.float32)
    if first_frame:
        mag[0] = 0
        ang[0] = 0
    return {
        "frames": rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        "seg": seg,
        "flow_mag": mag,
        "flow_ang": ang,
        "depth": rng.uniform(0, 1, (n, h, w)).astype(np.float32),
    }


def make_random_store(path: str | Path, n_train: int = 2, n_test: int = 1, n_frames: int | Sequence[int] = 10,
                      resolution: tuple[int, int] = (32, 32), n_classes: int = 2, seed: int = 0,
                      chunk_frames: int = 4, teachers: dict | None = None, complete: bool = True,
                      drop_arrays: Sequence[str] = ()) -> Store:
    """A store with `n_train` training and `n_test` test videos of random teacher outputs.

    `n_frames`: one count for all videos or one per training video (test videos use the first).
    `complete=False` leaves the last block of every video uncomputed; `drop_arrays` deletes those arrays
    from every video after writing (a store that lacks what a branch needs)."""
    rng = np.random.default_rng(seed)
    build = {"schema_version": SCHEMA_VERSION, "resolution": list(resolution), "chunk_frames": chunk_frames,
             "teachers": teachers or DEFAULT_TEACHERS}
    classes = {0: "background", **{k: f"class{k}" for k in range(1, n_classes)}}
    store = create_store(path, dataset="random", build=build, classes=classes)
    counts = list(n_frames) if isinstance(n_frames, Sequence) else [n_frames] * n_train
    for split, n_videos in (("train", n_train), ("test", n_test)):
        for k in range(n_videos):
            n = counts[k] if split == "train" else counts[0]
            video = store.create_video(split, f"{k + 1:02d}", n_frames=n, has_labels=split == "test",
                                       has_masks=False)
            values = random_video_values(rng, n, resolution, n_classes, first_frame=True)
            n_blocks = -(-n // chunk_frames)
            for block in range(n_blocks if complete else n_blocks - 1):
                lo, hi = block * chunk_frames, min((block + 1) * chunk_frames, n)
                video.write_block(block, {name: v[lo:hi] for name, v in values.items()})
            if split == "test":
                video.write_labels((np.arange(n) >= n // 2).astype(np.uint8))
            for name in drop_arrays:
                del video.group[name]
    return store
