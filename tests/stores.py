"""Tiny random stores for the students', scoring, evaluation and report tests, written through the real contract
(`mtvad.store`), and the students trained on one of them for a step (the session fixture `paths`, conftest.py).

`make_store` fills every array with seeded random values: frames uint8 noise, seg random class ids in
square blobs (so masking and nearest resizing have something to keep), flow magnitude in [0, 4) px with a
real direction, depth in [0, 1]; frame 0 of each video has no flow (zeros), as the contract says. Test video k
(0-based) is anomalous from frame k + 2 on (the last one entirely when there are 3 or more); with `masks` the
anomaly is a known square whose flow is faster by `ANOMALY_FLOW` px, so the teacher flow alone finds it.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np

from mtvad.store.access import Store, create_store, open_store
from mtvad.store.schema import ARRAYS, SCHEMA_VERSION

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


ANOMALY_FLOW = 4.0  # px per frame added to the flow in the anomalous square (random flow is in [0, 4))


def anomaly_square(resolution: tuple[int, int]) -> tuple[slice, slice]:
    """Where the masks of `make_store(masks=True)` are (rows, columns)."""
    h, w = resolution
    return slice(h // 4, h // 2), slice(w // 4, w // 2)


def make_store(path: str | Path, n_train: int = 2, n_test: int = 1, n_frames: int | Sequence[int] = 10,
               resolution: tuple[int, int] = (32, 32), n_classes: int = 2, seed: int = 0,
               chunk_frames: int = 4, teachers: dict | None = None, labels: bool = True, masks: bool = False,
               complete: bool = True, drop_arrays: Sequence[str] = (),
               fill: dict[str, float] | None = None, grey: Sequence[str] = ()) -> Store:
    """A store with `n_train` training and `n_test` test videos of random teacher outputs.

    `n_frames`: one count for all videos or one per training video (test videos use the first).
    `labels`, `masks`: frame labels and pixel masks for the test videos (see the module docstring).
    `complete=False` leaves the last block of every video uncomputed; `drop_arrays` deletes those arrays
    from every video after writing (a store that lacks what a branch needs). `fill` sets arrays to one value
    everywhere (e.g. `{"flow_mag": 2.0, "flow_ang": 0.0}`; frame 0 keeps no flow). `grey`: keys ('train/01') of
    videos whose frames are stored with one channel."""
    rng = np.random.default_rng(seed)
    build = {"schema_version": SCHEMA_VERSION, "resolution": list(resolution), "chunk_frames": chunk_frames,
             "teachers": teachers or DEFAULT_TEACHERS}
    classes = {0: "background", **{k: f"class{k}" for k in range(1, n_classes)}}
    store = create_store(path, dataset="random", build=build, classes=classes)
    counts = list(n_frames) if isinstance(n_frames, Sequence) else [n_frames] * max(n_train, 1)
    rows, cols = anomaly_square(resolution)
    for split, n_videos in (("train", n_train), ("test", n_test)):
        for k in range(n_videos):
            test = split == "test"
            n = counts[k] if not test else counts[0]
            key = f"{split}/{k + 1:02d}"
            video = store.create_video(split, f"{k + 1:02d}", n_frames=n, has_labels=test and labels,
                                       has_masks=test and masks, channels=1 if key in grey else 3)
            values = random_video_values(rng, n, resolution, n_classes, first_frame=True)
            if key in grey:
                values["frames"] = values["frames"][..., :1]
            for name, value in (fill or {}).items():
                values[name][:] = value
                if name in ("flow_mag", "flow_ang"):
                    values[name][0] = 0
            lab = (np.arange(n) >= k + 2).astype(np.uint8)
            if test and n_videos >= 3 and k == n_videos - 1:
                lab[:] = 1
            if test and masks:
                mask = np.zeros((n, *resolution), bool)
                mask[lab.astype(bool), rows, cols] = True
                values["mask"] = mask
                values["flow_mag"][1:][mask[1:]] += ANOMALY_FLOW  # frame 0 has no flow
            n_blocks = -(-n // chunk_frames)
            for block in range(n_blocks if complete else n_blocks - 1):
                lo, hi = block * chunk_frames, min((block + 1) * chunk_frames, n)
                video.write_block(block, {name: v[lo:hi] for name, v in values.items()})
            if test and labels:
                video.write_labels(lab)
            for name in drop_arrays:
                del video.group[name]
    return store


def store_arrays(url) -> dict[str, np.ndarray]:
    """Every array of every video of a store, as stored, keyed 'split/video/array'."""
    store = open_store(url)
    return {f"{v.key}/{name}": v.group[name][:] for v in store.videos() for name in ARRAYS if name in v.group}


@contextmanager
def one_torch_thread():
    """Torch on one thread, restored after. On the small shared machines these tests run on, two OpenMP threads
    competing with other jobs made the tiny forward passes 4x slower than one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_one_step(store_path: str | Path, out: str | Path, branch: str = "both", target: str = "seg-future") -> Path:
    """Both students (or one) trained for one step of batch 2: real checkpoints, fast. The encoders are the
    smallest of the paper's families (resnet18, vgg11: the same code paths at half the cost)."""
    from mtvad.students.config import AppearanceConfig, DataConfig, MotionConfig, OptimConfig, RunConfig, TrainConfig
    from mtvad.students.train import train

    cfg = TrainConfig(branch=branch, appearance=AppearanceConfig(encoder="resnet18", target=target),
                      motion=MotionConfig(encoder="vgg11"), data=DataConfig(store=str(store_path)),
                      optim=OptimConfig(batch_size=2, epochs=1),
                      run=RunConfig(out=str(out), max_steps=1, checkpoint_every=1000))
    train(cfg, progress=False)
    return Path(out)


def scored_stores(root: Path) -> dict[str, Path]:
    """The scoring, evaluation and report tests' set-up (the session fixture `paths`): store 'main' (3 classes,
    labels, masks; 3 test videos, the last one all anomalous), students trained on it for a step, their scores
    file with maps; store 'nolabels' (same teachers, no labels); store 'other' (other teachers)."""
    from mtvad.scoring.score import score

    p = {"store": root / "main.zarr", "run": root / "run", "scores": root / "scores.zarr",
         "nolabels": root / "nolabels.zarr", "other": root / "other.zarr"}
    make_store(p["store"], n_test=3, n_classes=3, masks=True)
    make_store(p["nolabels"], n_test=2, n_classes=3, labels=False, seed=1)
    other = {**DEFAULT_TEACHERS, "seg": {"name": "other", "version": "1", "params": {}, "weights_sha256": None}}
    make_store(p["other"], n_test=1, n_classes=3, masks=True, teachers=other, seed=2)
    with one_torch_thread():
        train_one_step(p["store"], p["run"])
        p["appearance"] = p["run"] / "appearance" / "last.pt"
        p["motion"] = p["run"] / "motion" / "last.pt"
        # float32 (amp off), so that the tests' hand computations in float32 match it to rounding; the bf16 path
        # has its own test (test_stopping.py)
        score(str(p["store"]), [p["appearance"], p["motion"]], p["scores"], maps=True, progress=False, amp="off")
    return p


def scores_with_maps(paths, out: Path, **maps):
    """A copy (at out/scores.zarr) of the shared scores file whose test maps of each named branch are
    `maps[branch](mask)` (mask: the video's pixel mask, bool per frame), opened."""
    import shutil

    import zarr

    from mtvad.scoring.scores_file import open_scores

    copy = Path(out) / "scores.zarr"
    shutil.copytree(paths["scores"], copy)
    store = open_store(paths["store"])
    group = zarr.open_group(str(copy), mode="r+")
    for vid in ("01", "02", "03"):
        mask = store.video("test", vid).mask()
        for branch, of_mask in maps.items():
            group[f"test/{vid}/{branch}_map"][:] = of_mask(mask).astype(np.float16)
    return open_scores(copy)


def scripted_validation_losses(monkeypatch, values):
    """The k-th validation of a training run returns values[k]; returns the list of calls made."""
    import mtvad.students.validation

    calls = []

    def fake(*args, **kw):
        calls.append(1)
        return values[len(calls) - 1]

    monkeypatch.setattr(mtvad.students.validation, "validation_loss", fake)
    return calls
