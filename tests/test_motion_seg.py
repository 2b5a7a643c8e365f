"""The `motion-shapes` segmentation teacher and the job's dataset-level fit stage, on tiny synthetic scenes:
textured rectangles moving over a static textured background (with a static bright block in it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mtvad.errors import StoreError, TeacherError
from mtvad.precompute.datasets import open_dataset
from mtvad.precompute.jobs import precompute
from mtvad.precompute.teachers import build_teacher, resolve_preset
from mtvad.precompute.teachers.base import fit_indices
from mtvad.precompute.teachers.motion_seg import MotionShapeSegmentation, fit_flow_threshold
from mtvad.store.access import open_store
from tests.conftest import ROOT
from tests.fakes import write_m_file
from tests.stores import store_arrays

SIZE = (64, 96)  # (H, W)
SMALL, LARGE = (8, 6), (20, 14)  # (h, w) of the two kinds of movers
# (h, w), bottom row, x range, speed in px/frame: the two sizes share rows (the perspective fit sees no trend)
TWO_SIZES = [(SMALL, 42, (2, 40), 2), (LARGE, 44, (48, 94), 2)]


def scene(n_frames: int, objects=TWO_SIZES, seed: int = 0, contrast=(170, 255)):
    """RGB frames (n, H, W, 3) and object ids (n, H, W) (k = the k-th object, 0 = background) of textured
    rectangles bouncing left and right in their x range over a static textured background, Gaussian noise
    (sigma 2) on every frame; a static bright block at the top left belongs to the background."""
    import cv2

    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.uniform(40, 140, SIZE).astype(np.float32), (0, 0), 1.5)
    background[4:14, 4:20] = 230  # a static object: part of the background, never foreground
    textures = [cv2.GaussianBlur(rng.uniform(*contrast, hw).astype(np.float32), (0, 0), 0.7)
                for hw, *_ in objects]
    start = rng.integers(0, 1000, len(objects))
    frames, ids = [], []
    for t in range(n_frames):
        frame = background + rng.normal(0, 2, SIZE)
        label = np.zeros(SIZE, np.uint8)
        for k, (((h, w), bottom, (lo, hi), speed), texture) in enumerate(zip(objects, textures)):
            span = hi - w - lo
            p = (start[k] + speed * t) % (2 * span)
            x = lo + int(p if p <= span else 2 * span - p)
            frame[bottom - h:bottom, x:x + w] = texture
            label[bottom - h:bottom, x:x + w] = k + 1
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
        ids.append(label)
    return np.repeat(np.stack(frames)[..., None], 3, axis=-1), np.stack(ids)


@dataclass(frozen=True)
class MemoryVideo:
    """What `fit_dataset` reads of a `datasets.base.Video`: split, id, n_frames, read."""

    split: str
    id: str
    frames: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.frames[start:stop]


def fitted(n_classes: int = 2, seeds=(1, 2), n_frames: int = 30, **params) -> MotionShapeSegmentation:
    videos = [MemoryVideo("train", f"{s:02d}", scene(n_frames, seed=s)[0]) for s in seeds]
    fit = MotionShapeSegmentation(n_classes=n_classes, **params).fit_dataset(videos, SIZE)
    return MotionShapeSegmentation(n_classes=n_classes, fit=fit, **params)


def run(teacher, frames: np.ndarray) -> np.ndarray:
    state = teacher.fit_video(frames[fit_indices(len(frames), teacher.fit_frames)])
    return teacher(frames, 0, state)["seg"]


@pytest.mark.parametrize("contrast, background_at_most, motion_at_least", [((95, 125), 0.9, 0.98),
                                                                           ((80, 105), 0.05, 0.6)])
def test_finds_a_low_contrast_mover_that_the_background_model_misses(contrast, background_at_most, motion_at_least):
    frames, ids = scene(30, [((16, 12), 44, (10, 80), 2)], seed=5, contrast=contrast)
    moving = ids[1:] > 0  # frame 0 of a video has no flow: the background model alone there
    seg = run(fitted(), frames)[1:]
    background = run(build_teacher("background"), frames)[1:]
    assert (background[moving] > 0).mean() < background_at_most  # the scene is hard for the background model
    assert (seg[moving] > 0).mean() > motion_at_least  # where it moves, a smaller difference counts


def test_leaves_the_static_background_out():
    import cv2

    frames, ids = scene(30, seed=7)
    seg = run(fitted(), frames)
    assert not seg[:, 2:16, 2:22].any()  # the static bright block
    assert not seg[:, :10].any()  # rows well above the movers (the large one's top is row 24)
    # no foreground beyond the flow's reach (Farneback's 15 px window) from where the movers are and were
    far = np.stack([cv2.distanceTransform((i == 0).astype(np.uint8), cv2.DIST_L2, 5) > 16 for i in ids])
    far[1:] &= far[:-1]
    assert (seg[far] > 0).mean() < 0.005


def test_halo_covers_the_pixels_that_farneback_sees_moving():
    frames, _ = scene(30, seed=8)
    mag = build_teacher("farneback")(frames, 0)["flow_mag"][1:]
    moving = mag > 1
    with_halo = run(fitted(), frames)[1:]
    objects_only = run(fitted(halo=False), frames)[1:]
    assert (with_halo[moving] > 0).mean() > 0.95
    assert (objects_only[moving] > 0).mean() < (with_halo[moving] > 0).mean() - 0.1  # the halo is what does it
    assert (with_halo > 0).sum() > (objects_only > 0).sum()
    assert np.array_equal(with_halo[objects_only > 0], objects_only[objects_only > 0])  # objects keep their class


def test_dataset_fit_gives_k_classes_that_separate_the_two_sizes():
    teacher = fitted(n_classes=2)
    assert list(teacher.classes) == [0, 1, 2]
    assert teacher.classes[1].startswith("shape-1 (size ") and teacher.classes[2].startswith("shape-2 (size ")
    small, large = teacher.params.fit["class_centres"]
    assert large[0] / small[0] > 3  # relative size: 280 px against 48 px
    frames, ids = scene(30, seed=9)
    seg = run(teacher, frames)
    for k, cls in ((1, 1), (2, 2)):  # the small mover is shape-1, the large one shape-2
        assert (seg[ids == k] == cls).mean() > 0.95, k
    assert set(np.unique(seg)) <= {0, 1, 2}


def test_the_fit_is_json_deterministic_and_needed():
    a, b = fitted().params.fit, fitted().params.fit
    assert a == b and json.loads(json.dumps(a)) == a
    assert MotionShapeSegmentation().needs_dataset_fit and not fitted().needs_dataset_fit
    frames, _ = scene(4)
    with pytest.raises(TeacherError, match="not fitted"):
        run(MotionShapeSegmentation(), frames)
    with pytest.raises(TeacherError, match="fit has 2 classes, n_classes is 3"):
        MotionShapeSegmentation(n_classes=3, fit=a)


def test_flow_threshold_is_the_valley_between_noise_and_movers():
    rng = np.random.default_rng(0)
    noise = 10 ** rng.normal(-1.3, 0.3, 90_000)  # ~0.05 px/frame
    movers = 10 ** rng.normal(0.0, 0.15, 10_000)  # ~1 px/frame
    threshold = fit_flow_threshold(np.concatenate([noise, movers]), floor=0.01)
    assert 0.2 < threshold < 0.6
    assert fit_flow_threshold(noise * 0, floor=0.1) == 0.1  # nothing moves: the floor


# ---- the job: the fit stage, the store, resume ------------------------------------------------------------

def write_scenes(root: Path, train_seeds=(1, 2), test_seeds=(11,), n_frames: int = 24, objects=TWO_SIZES) -> Path:
    """UCSD official layout (Train/Train001/001.tif, Test/Test001_gt/001.bmp, Test/UCSDped2.m) of `scene`s;
    test videos are anomalous on every frame, masked where the large mover is."""
    from PIL import Image

    for split, folder, seeds in (("train", "Train", train_seeds), ("test", "Test", test_seeds)):
        for k, seed in enumerate(seeds, 1):
            frames, ids = scene(n_frames, objects, seed=seed)
            video = root / folder / f"{folder}{k:03d}"
            video.mkdir(parents=True)
            for i, frame in enumerate(frames):
                Image.fromarray(frame[..., 0]).save(video / f"{i + 1:03d}.tif")
            if split == "test":
                gt = root / folder / f"{folder}{k:03d}_gt"
                gt.mkdir()
                for i, label in enumerate(ids):
                    Image.fromarray((label == 2).astype(np.uint8) * 255).save(gt / f"{i + 1:03d}.bmp")
    write_m_file(root / "Test" / "UCSDped2.m", [[(1, n_frames)] for _ in test_seeds])
    return root


def specs(n_classes: int = 2):
    chosen = resolve_preset("cpu-motion")
    chosen["seg"] = ("motion-shapes", {"n_classes": n_classes})
    return chosen


def build(data: Path, store: Path, **kw):
    settings = {"resolution": SIZE, "chunk_frames": 4, "progress": False, "scheduler": "inprocess", **kw}
    return precompute(open_dataset("ped2", data), str(store), settings.pop("specs", specs()), **settings)


def chunk_mtimes(path: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def scenes(tmp_path) -> Path:
    return write_scenes(tmp_path / "ped2")


def test_the_job_fits_on_training_videos_and_records_the_fit_in_the_store(scenes, tmp_path, monkeypatch):
    seen = []
    real = MotionShapeSegmentation.fit_dataset
    monkeypatch.setattr(MotionShapeSegmentation, "fit_dataset",
                        lambda self, videos, res: seen.append([v.split for v in videos]) or real(self, videos, res))
    path = tmp_path / "s.zarr"
    build(scenes, path)
    assert seen == [["train", "train"]]  # once, before the blocks, on the training videos only
    store = open_store(path)
    store.require_complete()
    fit = store.teachers["seg"]["params"]["fit"]
    assert len(fit["centres"]) == 2 and fit["resolution"] == list(SIZE)
    assert store.attrs["build"]["teachers"]["seg"]["params"]["fit"] == fit  # in the fingerprint
    assert store.attrs["dataset_fit"]["seg"]["teacher"] == "motion-shapes"
    assert store.attrs["dataset_fit"]["seg"]["train_videos"] == [["01", 24], ["02", 24]]
    assert list(store.classes) == [0, 1, 2] and store.classes[2].startswith("shape-2 (size ")
    video = store.video("test", "01")
    seg, mask = video.seg(), video.mask()
    assert seg.max() <= 2 and (seg[mask] == 2).mean() > 0.9  # the large mover, in the store, is shape-2


def test_a_store_of_another_fit_is_refused_unless_overwritten(scenes, tmp_path):
    path = tmp_path / "s.zarr"
    build(scenes, path)
    first = open_store(path).teachers["seg"]["params"]["fit"]
    other = write_scenes(tmp_path / "other", train_seeds=(3, 4, 5))  # other training videos: another fit
    with pytest.raises(StoreError, match=r"seg teacher motion-shapes .*\"fit\".*--overwrite"):
        build(other, path)
    with pytest.raises(StoreError, match="--overwrite"):  # a fit given as a parameter is checked the same way
        given = {"n_classes": 2, "fit": {**first, "flow_threshold": first["flow_threshold"] * 2}}
        build(scenes, path, specs={**specs(), "seg": ("motion-shapes", given)})
    assert open_store(path).teachers["seg"]["params"]["fit"] == first  # untouched
    result = build(other, path, overwrite=True)
    assert result.blocks_run == 4 * 6  # 3 training videos and 1 test video of 6 blocks
    store = open_store(path)
    assert store.teachers["seg"]["params"]["fit"] != first
    assert store.attrs["dataset_fit"]["seg"]["train_videos"] == [["01", 24], ["02", 24], ["03", 24]]


def test_resume_is_a_no_op_that_reuses_the_recorded_fit(scenes, tmp_path, monkeypatch):
    import shutil

    path = tmp_path / "s.zarr"
    build(scenes, path)
    reference = store_arrays(path)

    def no_refit(self, videos, resolution):
        raise AssertionError("a resumed store must reuse the fit it recorded")

    monkeypatch.setattr(MotionShapeSegmentation, "fit_dataset", no_refit)
    before = chunk_mtimes(path)
    assert build(scenes, path).blocks_run == 0
    assert chunk_mtimes(path) == before
    partial = tmp_path / "partial.zarr"
    shutil.copytree(path, partial)
    for video in open_store(partial, mode="r+").videos():
        video.group["blocks_done"][1] = 0
        video.group["seg"][4:8] = 7  # garbage in a block that is not marked done
    assert build(scenes, partial).blocks_run == 3
    resumed = store_arrays(partial)
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert np.array_equal(value, resumed[key]), key


@pytest.mark.slow
def test_killed_run_resumes_to_the_arrays_of_an_uninterrupted_run(tmp_path):
    data = write_scenes(tmp_path / "ped2", train_seeds=(1, 2, 3), test_seeds=(11, 12), n_frames=32)
    reference = tmp_path / "reference.zarr"
    build(data, reference, specs=resolve_preset("cpu-motion"), chunk_frames=2)
    path = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "mtvad", "precompute", "ped2", "--data", str(data), "--store", str(path),
           "--preset", "cpu-motion", "--resolution", f"{SIZE[0]}x{SIZE[1]}", "--chunk-frames", "2",
           "--workers", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    done_at_kill = None
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list((path / "train").glob("*/blocks_done/c/*"))) >= 3:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole job: client, scheduler, workers
            done_at_kill = True
            break
        time.sleep(0.005)
    if proc.poll() is None and not done_at_kill:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"fewer than 3 blocks written in 180 s: {proc.stderr.read().decode()[-500:]}")
    proc.wait()
    stderr = proc.stderr.read().decode()
    if not done_at_kill:
        assert proc.returncode == 0, f"the run failed before it could be killed: {stderr[-500:]}"
        pytest.skip("the run finished before it could be killed (this machine was too fast to test a resume)")
    if not open_store(path).missing_blocks():
        pytest.skip("the kill came after the last block was written: nothing left to resume")
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, env=env)
    assert open_store(path).fingerprint == open_store(reference).fingerprint  # the same fit
    expected, actual = store_arrays(reference), store_arrays(path)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert np.array_equal(expected[key], actual[key]), key
