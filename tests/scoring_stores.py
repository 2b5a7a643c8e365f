"""Shared set-up of the scoring, evaluation and report tests: tiny stores (with or without labels and pixel masks)
and students trained for one step, made once per test session (memoised under pytest's session temp folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtvad.store.access import Store, create_store
from mtvad.store.schema import SCHEMA_VERSION
from tests.stores import DEFAULT_TEACHERS, random_video_values

_CACHE: dict[str, object] = {}


def make_store(path: str | Path, n_train: int = 2, n_test: int = 2, n_frames: int = 10,
               resolution: tuple[int, int] = (32, 32), n_classes: int = 3, seed: int = 0, chunk_frames: int = 4,
               labels: bool = True, masks: bool = True, teachers: dict | None = None) -> Store:
    """A random store whose test videos may have labels and pixel masks: test video k is anomalous from frame
    k + 2 to the end (masks: a square there), the last test video entirely anomalous when n_test >= 3."""
    rng = np.random.default_rng(seed)
    build = {"schema_version": SCHEMA_VERSION, "resolution": list(resolution), "chunk_frames": chunk_frames,
             "teachers": teachers or DEFAULT_TEACHERS}
    classes = {0: "background", **{k: f"class{k}" for k in range(1, n_classes)}}
    store = create_store(path, dataset="random", build=build, classes=classes)
    h, w = resolution
    for split, n_videos in (("train", n_train), ("test", n_test)):
        for k in range(n_videos):
            test = split == "test"
            video = store.create_video(split, f"{k + 1:02d}", n_frames=n_frames, has_labels=test and labels,
                                       has_masks=test and masks)
            values = random_video_values(rng, n_frames, resolution, n_classes, first_frame=True)
            lab = (np.arange(n_frames) >= k + 2).astype(np.uint8)
            if test and n_videos >= 3 and k == n_videos - 1:
                lab[:] = 1
            if test and masks:
                mask = np.zeros((n_frames, h, w), bool)
                mask[lab.astype(bool), h // 4 : h // 2, w // 4 : w // 2] = True
                values["mask"] = mask
            for block in range(-(-n_frames // chunk_frames)):
                lo, hi = block * chunk_frames, min((block + 1) * chunk_frames, n_frames)
                video.write_block(block, {name: v[lo:hi] for name, v in values.items()})
            if test and labels:
                video.write_labels(lab)
    return store


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


def setup(tmp_path_factory) -> dict[str, Path]:
    """Once per session: store 'main' (labels, masks; 3 test videos, the last one all anomalous), its checkpoints,
    a scores file with maps; store 'nolabels' (same teachers, no labels); store 'other' (other teachers)."""
    if "paths" in _CACHE:
        return _CACHE["paths"]  # type: ignore[return-value]
    from mtvad.scoring.score import score

    root = tmp_path_factory.mktemp("scoring")
    p = {"store": root / "main.zarr", "run": root / "run", "scores": root / "scores.zarr",
         "nolabels": root / "nolabels.zarr", "other": root / "other.zarr"}
    make_store(p["store"], n_test=3)
    make_store(p["nolabels"], n_test=2, labels=False, masks=False, seed=1)
    other = {**DEFAULT_TEACHERS, "seg": {"name": "other", "version": "1", "params": {}, "weights_sha256": None}}
    make_store(p["other"], n_test=1, teachers=other, seed=2)
    train_one_step(p["store"], p["run"])
    p["appearance"] = p["run"] / "appearance" / "last.pt"
    p["motion"] = p["run"] / "motion" / "last.pt"
    score(str(p["store"]), [p["appearance"], p["motion"]], p["scores"], maps=True, progress=False)
    _CACHE["paths"] = p
    return p


def one_torch_thread():
    """Generator for an autouse fixture: torch on one thread during a module's tests, restored after. On the
    small shared machines these tests run on, two OpenMP threads competing with other jobs made the tiny
    forward passes 4x slower than one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The fixtures the scoring, evaluation and report tests share (imported by those modules).
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def paths(tmp_path_factory, _one_thread):
    return setup(tmp_path_factory)
