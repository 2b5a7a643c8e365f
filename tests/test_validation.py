"""Validation on held-out training videos (mtvad.students.validation, train.py): the split rule, that the held-out
videos never reach the gradient, the trivial controls by hand, best.pt, "not converged", and class ids that are
COCO ids (outputs up to the largest id)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import mtvad.students.run
import mtvad.students.train
import mtvad.students.validation
from mtvad.cli.main import app
from mtvad.errors import CheckpointError, ConfigError, StoreError
from mtvad.store.access import create_store, open_store
from mtvad.store.schema import ARRAYS, SCHEMA_VERSION
from mtvad.students.branches import APPEARANCE, MOTION
from mtvad.students.checkpoint import best_path, check_fits_store, checkpoint_path, load_checkpoint, load_student
from mtvad.students.config import AppearanceConfig, DataConfig, MotionConfig, OptimConfig, RunConfig, TrainConfig
from mtvad.students.data import InMemoryDataset, n_outputs
from mtvad.students.device import precision_for
from mtvad.students.loss import patch_loss
from mtvad.students.validation import (
    CONVERGED_RATIO,
    control_losses,
    converged,
    mean_target,
    split_videos,
    validation_loss,
)
from tests.stores import DEFAULT_TEACHERS, make_store, random_video_values, scripted_validation_losses

CPU = torch.device("cpu")
GRID = 4
pytestmark = pytest.mark.usefixtures("one_thread")


def config(store, out, branch="motion", **kw) -> TrainConfig:
    """A tiny run with the smallest encoders of the paper's families; kw sets 'section__field' values."""
    cfg = TrainConfig(branch=branch, appearance=AppearanceConfig(encoder="resnet18"),
                      motion=MotionConfig(encoder="vgg11"), data=DataConfig(store=str(store)),
                      optim=OptimConfig(batch_size=2, epochs=1), run=RunConfig(out=str(out), checkpoint_every=1000))
    for key, value in kw.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """3 training videos of 6 frames: the auto rule holds out 03."""
    path = tmp_path_factory.mktemp("val") / "s.zarr"
    make_store(path, n_train=3, n_test=1, n_frames=6, n_classes=3)
    return path


def weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


# ------------------------------------------------------------------------------------------------- split


def test_the_split_rule_holds_out_every_7th_training_video_at_least_one():
    ids = [f"{k:02d}" for k in range(1, 17)]  # Ped2, Avenue, the synthetic set: 16 training videos
    assert split_videos(ids, "auto") == ([v for v in ids if v not in ("07", "14")], ["07", "14"])
    assert split_videos(ids[::-1], "auto")[1] == ["07", "14"]  # by sorted id, not listing order
    assert split_videos(ids[:7], "auto") == (ids[:6], ["07"])
    assert split_videos(ids[:3], "auto") == (["01", "02"], ["03"])  # fewer than 7: the last one
    assert split_videos(["01"], "auto") == (["01"], [])  # one video: nothing to hold out
    assert split_videos(ids[:3], "none") == (ids[:3], [])
    assert split_videos(ids[:3], ["01", "03"]) == (["02"], ["01", "03"])
    with pytest.raises(ConfigError, match="--val-videos: 09 is not training video"):
        split_videos(ids[:3], ["09"])
    with pytest.raises(ConfigError, match="names every training video"):
        split_videos(ids[:2], ["01", "02"])
    assert DataConfig(val_videos="01, 03").val_videos == ["01", "03"] and DataConfig().val_videos == "auto"


# ------------------------------------------------------------------------------- never in the gradient


def test_the_training_samples_exclude_the_validation_videos(store_path, tmp_path, monkeypatch):
    built = []
    real = mtvad.students.run.make_train_data

    def spy(*args, **kw):
        built.append(real(*args, **kw))
        return built[-1]

    monkeypatch.setattr(mtvad.students.run, "make_train_data", spy)
    result = mtvad.students.train.train(config(store_path, tmp_path, run__max_steps=1), progress=False)["motion"]
    [data] = built
    assert data.dataset.video_ids == ["01", "02"] and result.validation_videos == ["03"]
    seen = {data.dataset.sample(i)[0] for batch in data.sampler for i in batch}
    assert seen == {"01", "02"}  # what the sampler can draw
    ckpt = load_checkpoint(checkpoint_path(tmp_path, "motion"))
    assert ckpt["train_videos"] == ["01", "02"] and ckpt["validation_videos"] == ["03"]
    # --limit-videos takes the first N of the videos left after the split: still never 03
    built.clear()
    mtvad.students.train.train(config(store_path, tmp_path / "lim", run__max_steps=1, data__limit_videos=3,
                                      data__val_videos=["01"]), progress=False)
    assert built[0].dataset.video_ids == ["02", "03"]


def _garbage(path, video: str, seed: int) -> None:
    """Overwrite every array of train/<video> with other random values (same shapes and dtypes, valid ids)."""
    store = open_store(path, mode="r+")
    v = store.video("train", video)
    rng = np.random.default_rng(seed)
    for name in ("frames", "seg", "flow_mag", "flow_ang", "depth"):
        arr = v.group[name]
        if name == "seg":
            values = rng.integers(0, 3, arr.shape).astype(arr.dtype)
        else:
            values = rng.integers(0, np.iinfo(arr.dtype).max, arr.shape, dtype=arr.dtype)
        if name in ("flow_mag", "flow_ang"):
            values[0] = 0
        arr[:] = values


@pytest.mark.parametrize("branch", ["motion", "appearance"])
def test_a_run_whose_validation_video_is_garbage_trains_the_same_weights(tmp_path, branch):
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    make_store(a, n_train=3, n_test=0, n_frames=6, n_classes=3)
    make_store(b, n_train=3, n_test=0, n_frames=6, n_classes=3)
    _garbage(b, "03", seed=7)
    runs = {}
    for name, path in (("a", a), ("b", b)):
        runs[name] = mtvad.students.train.train(config(path, tmp_path / name, branch, run__max_steps=3,
                                                       run__checkpoint_every=1), progress=False)[branch]
    wa, wb = weights(checkpoint_path(tmp_path / "a", branch)), weights(checkpoint_path(tmp_path / "b", branch))
    for key, value in wa.items():
        assert torch.equal(value, wb[key]), key
    # ... while validation did read the garbage: other losses, other controls
    assert [e["loss"] for e in runs["a"].validation] != [e["loss"] for e in runs["b"].validation]
    assert runs["a"].controls != runs["b"].controls
    assert runs["a"].losses == runs["b"].losses


@pytest.mark.slow
def test_a_resumed_run_with_validation_is_bit_exact(store_path, tmp_path):
    # 2 training videos of 6 frames: 5 steps per epoch; 6 steps in one go against 4 + a resume to 6 (crossing
    # the epoch end), validating every 2 steps, at the epoch end and at the stop (the same steps in both)
    def run(out, steps, resume=False):
        cfg = config(store_path, out, run__max_steps=steps, run__checkpoint_every=2, optim__epochs=2)
        return mtvad.students.train.train(cfg, resume=resume, progress=False)["motion"]

    one = run(tmp_path / "one", 6)
    run(tmp_path / "two", 4)
    two = run(tmp_path / "two", 6, resume=True)
    for key, value in weights(checkpoint_path(tmp_path / "one", "motion")).items():
        assert torch.equal(value, weights(checkpoint_path(tmp_path / "two", "motion"))[key]), key
    assert [e["step"] for e in one.validation] == [2, 4, 5, 6] and one.validation == two.validation
    assert one.best == two.best
    for key, value in weights(best_path(tmp_path / "one", "motion")).items():
        assert torch.equal(value, weights(best_path(tmp_path / "two", "motion"))[key]), key
    # a resume that changes the validation split is refused
    with pytest.raises(CheckpointError, match=r"data.val_videos: 'auto' -> \['01'\]"):
        mtvad.students.train.train(config(store_path, tmp_path / "two", run__max_steps=5, data__val_videos=["01"]),
                                   resume=True, progress=False)


# ------------------------------------------------------------------------------------- controls by hand


def _patch_max(err: np.ndarray) -> float:
    """Eq. 6 of one sample by hand: err (C, H, W) squared errors -> the worst of the 4x4 patches' means."""
    c, h, w = err.shape
    ph, pw = h // GRID, w // GRID
    return max(err[:, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw].mean() for i in range(GRID) for j in range(GRID))


def _masked_flow(store, vid: str) -> np.ndarray:
    """(T, H, W) float64 masked flow magnitudes of a training video, decoded from the stored integers."""
    v = store.video("train", vid)
    mag = v.group["flow_mag"][:].astype(np.float64) * ARRAYS["flow_mag"].scale
    return mag * (v.group["seg"][:] > 0)


def test_motion_controls_by_hand_zero_and_the_training_mean_map(store_path, tmp_path):
    store = open_store(store_path)
    # the targets of every motion sample (t = 1 .. T-1) by hand
    train_t = np.concatenate([_masked_flow(store, v)[1:] for v in ("01", "02")])
    val_t = _masked_flow(store, "03")[1:]
    mean = train_t.mean(axis=0)  # per pixel, over the training samples only
    zero = np.mean([_patch_max(t[None] ** 2) for t in val_t])
    mean_loss = np.mean([_patch_max((t - mean)[None] ** 2) for t in val_t])
    assert 0 < mean_loss < zero  # the mean map is the stronger control on random flow
    # the functions
    cfg = config(store_path, tmp_path)
    spec = MOTION.spec(cfg, store.resolution, control=True)
    train_data = InMemoryDataset(store, "train", ["01", "02"], spec, 3)
    val_data = InMemoryDataset(store, "train", ["03"], spec, 3)
    m = mean_target(MOTION, train_data, cfg, 3, None, CPU, batch_size=3)
    assert m.shape == (1, 1, 32, 32) and np.allclose(m[0, 0].numpy(), mean, atol=1e-5)
    got = control_losses(MOTION, val_data, cfg, 3, None, CPU, batch_size=4, mean=m)
    assert got.keys() == {"zero", "mean"}
    assert got["zero"] == pytest.approx(zero, rel=1e-5) and got["mean"] == pytest.approx(mean_loss, rel=1e-5)
    # the training run records the same numbers: its mean map is the training videos', not 03's
    result = mtvad.students.train.train(config(store_path, tmp_path, run__max_steps=1), progress=False)["motion"]
    assert result.controls["zero"] == pytest.approx(zero, rel=1e-5)
    assert result.controls["mean"] == pytest.approx(mean_loss, rel=1e-5)
    # and its validation loss is the student's patch loss over 03's samples, in eval mode (as scoring runs it),
    # in the run's precision
    model, _, ckpt = load_student(result.checkpoint)
    raw = val_data.__getitems__(list(range(len(val_data))))
    inputs, target = MOTION.batch(raw, cfg, 3, None, CPU)
    with torch.no_grad():
        by_hand = float(patch_loss(MOTION.predict(model, inputs, precision_for(CPU, "auto").autocast()), target))
    assert ckpt["validation"][-1]["loss"] == pytest.approx(by_hand, rel=1e-4)


def test_the_appearance_copy_control_by_hand(store_path, tmp_path):
    store = open_store(store_path)
    seg = store.video("train", "03").group["seg"][:]
    losses = []
    for t in range(1, len(seg) - 1):  # samples t = 1 .. T-2; prediction seg t, target seg t+1
        now, nxt = np.eye(3)[seg[t]].transpose(2, 0, 1), np.eye(3)[seg[t + 1]].transpose(2, 0, 1)
        losses.append(_patch_max((now - nxt) ** 2))
    cfg = config(store_path, tmp_path, "appearance")
    val_data = InMemoryDataset(store, "train", ["03"], APPEARANCE.spec(cfg, store.resolution, control=True), 3)
    got = control_losses(APPEARANCE, val_data, cfg, 3, None, CPU, batch_size=3)
    assert got.keys() == {"copy"} and got["copy"] == pytest.approx(np.mean(losses), rel=1e-6)
    assert np.mean(losses) > 0  # random blobs move: the copy is wrong somewhere


def test_validation_loss_leaves_the_model_in_its_mode_and_its_weights_alone(store_path, tmp_path):
    store = open_store(store_path)
    cfg = config(store_path, tmp_path)
    from mtvad.students.models import build_model

    torch.manual_seed(0)
    model = build_model("motion", cfg, 3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    val_data = InMemoryDataset(store, "train", ["03"], MOTION.spec(cfg, store.resolution, control=True), 3)
    rng = torch.get_rng_state()
    loss = validation_loss(MOTION, model, val_data, cfg, 3, None, CPU, batch_size=2)
    assert math.isfinite(loss) and model.training and torch.equal(torch.get_rng_state(), rng)
    for key, value in model.state_dict().items():  # BatchNorm running statistics included
        assert torch.equal(value, before[key]), key
    model.eval()
    raw = val_data.__getitems__(list(range(len(val_data))))
    inputs, target = MOTION.batch(raw, cfg, 3, None, CPU)
    with torch.no_grad():
        assert loss == pytest.approx(float(patch_loss(MOTION.predict(model, inputs), target)), rel=1e-5)


# ------------------------------------------------------------------------------------------------ best.pt


def test_best_pt_is_the_checkpoint_of_the_lowest_validation_loss(store_path, tmp_path, monkeypatch):
    calls = scripted_validation_losses(monkeypatch, [3.0, 1.0, 2.0, 5.0, 4.0, 0.5, 9.0])
    cfg = config(store_path, tmp_path / "run", run__max_steps=4, run__checkpoint_every=1, optim__epochs=3)
    result = mtvad.students.train.train(cfg, progress=False)["motion"]
    assert len(calls) == 4 and [e["loss"] for e in result.validation] == [3.0, 1.0, 2.0, 5.0]
    best = load_checkpoint(best_path(tmp_path / "run", "motion"))
    assert best["step"] == 2 and result.best["step"] == 2 and result.best_checkpoint == best_path(tmp_path / "run",
                                                                                                 "motion")
    assert best["best"] == {"step": 2, "epoch": 1, "loss": 1.0} and best["optimizer"] == {}  # for scoring
    assert [e["step"] for e in best["validation"]] == [1, 2, 3, 4]  # brought up to date at the end of the run
    assert load_checkpoint(checkpoint_path(tmp_path / "run", "motion"))["step"] == 4  # last.pt: to resume
    history = json.loads((tmp_path / "run" / "motion" / "history.json").read_text())
    assert history["best"]["step"] == 2 and history["best"]["checkpoint"].endswith("best.pt")
    assert [e["loss"] for e in history["history"]] == [3.0, 1.0, 2.0, 5.0] and history["validation_videos"] == ["03"]
    # resumed: steps 5 and 6 validate at 4.0 and 0.5; step 6 becomes the best
    cfg.run.max_steps = 6
    result = mtvad.students.train.train(cfg, resume=True, progress=False)["motion"]
    assert result.best["step"] == 6 and load_checkpoint(best_path(tmp_path / "run", "motion"))["step"] == 6
    assert len(calls) == 6  # step 5 validated once, though saved twice (its checkpoint_every and its epoch end)
    # the first best.pt held the weights of step 2: a 2-step run's last.pt
    mtvad.students.train.train(config(store_path, tmp_path / "two", run__max_steps=2, optim__epochs=3),
                               progress=False)
    for key, value in weights(checkpoint_path(tmp_path / "two", "motion")).items():
        assert torch.equal(value, best["model"][key]), key


def test_a_kill_between_last_pt_and_best_pt_is_mended_on_resume(store_path, tmp_path, monkeypatch):
    scripted_validation_losses(monkeypatch, [2.0, 1.0])
    cfg = config(store_path, tmp_path, run__max_steps=2, run__checkpoint_every=1, optim__epochs=3)
    mtvad.students.train.train(cfg, progress=False)
    best, last = best_path(tmp_path, "motion"), checkpoint_path(tmp_path, "motion")
    # as if killed after last.pt of step 2 was written but before best.pt: best.pt is still step 1's
    old = torch.load(best, weights_only=True)
    old["step"] = 1
    torch.save(old, best)
    mtvad.students.train.train(cfg, resume=True, progress=False)  # nothing left to train
    mended, kept = load_checkpoint(best), load_checkpoint(last)
    assert mended["step"] == 2 and mended["optimizer"] == {} and kept["optimizer"]["state"]
    for key, value in kept["model"].items():
        assert torch.equal(value, mended["model"][key]), key


def test_without_validation_there_is_no_best_pt_and_no_verdict(store_path, tmp_path, monkeypatch):
    calls = scripted_validation_losses(monkeypatch, [1.0] * 10)
    result = mtvad.students.train.train(config(store_path, tmp_path, run__max_steps=2, data__val_videos="none"),
                                        progress=False)["motion"]
    assert calls == [] and result.converged is None and result.best_checkpoint is None
    assert not best_path(tmp_path, "motion").exists() and not (tmp_path / "motion" / "history.json").exists()
    ckpt = load_checkpoint(checkpoint_path(tmp_path, "motion"))
    assert ckpt["validation_videos"] == [] and ckpt["converged"] is None and ckpt["train_videos"] == ["01", "02", "03"]


# ----------------------------------------------------------------------------------------- not converged


def test_the_convergence_criterion():
    controls = {"zero": 2.0, "mean": 1.0}
    assert converged(0.89, controls) is True
    assert converged(CONVERGED_RATIO * 1.0, controls) is False  # not strictly below 0.9 x the best control
    assert converged(0.95, controls) is False and converged(1.5, controls) is False  # beats zero, not the mean
    assert converged(float("nan"), controls) is False and converged(None, controls) is False
    assert converged(0.1, {}) is None


def test_a_branch_that_does_not_beat_its_control_is_reported_not_converged(store_path, tmp_path, capsys):
    # one step from scratch: in eval mode (BatchNorm statistics of one step) the student is far off
    result = mtvad.students.train.train(config(store_path, tmp_path, run__max_steps=1), progress=False)["motion"]
    assert result.converged is False and result.best["loss"] >= CONVERGED_RATIO * min(result.controls.values())
    err = capsys.readouterr().err
    assert "warning: motion has not converged" in " ".join(err.split())
    for path in (checkpoint_path(tmp_path, "motion"), best_path(tmp_path, "motion")):
        assert load_checkpoint(path)["converged"] is False, path
    assert json.loads((tmp_path / "motion" / "history.json").read_text())["converged"] is False


def test_a_branch_that_beats_its_control_is_converged(store_path, tmp_path, monkeypatch, capsys):
    scripted_validation_losses(monkeypatch, [1e-3])
    result = mtvad.students.train.train(config(store_path, tmp_path, run__max_steps=1), progress=False)["motion"]
    assert result.converged is True and load_checkpoint(best_path(tmp_path, "motion"))["converged"] is True
    assert "not converged" not in capsys.readouterr().err


def test_vad_train_says_converged_or_not_and_takes_val_videos(store_path, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"appearance": {"encoder": "resnet18"}, "motion": {"encoder": "vgg11"}}))
    out = tmp_path / "run"
    runner = CliRunner()
    done = runner.invoke(app, ["train", "--config", str(cfg), "--store", str(store_path), "--branch", "motion",
                               "--batch-size", "2", "--max-steps", "1", "--out", str(out), "--no-progress",
                               "--val-videos", "01"])
    assert done.exit_code == 0, done.output
    assert "converged: NO" in done.stdout and "best control " in done.stdout
    assert load_checkpoint(checkpoint_path(out, "motion"))["validation_videos"] == ["01"]
    bad = runner.invoke(app, ["train", "--config", str(cfg), "--store", str(store_path), "--out", str(tmp_path / "x"),
                              "--val-videos", "01,09"])
    assert bad.exit_code == 1 and "--val-videos: 09 is not training video" in bad.stderr


# ---------------------------------------------------------------------------------------------- class ids

COCO = {0: "background", 1: "person", 2: "bicycle", 91: "object"}


def coco_store(path, n_train: int = 2, n_frames: int = 6, top: int | None = None):
    """A random store whose class ids are COCO-style: {0, 1, 2, 91} (`top` replaces one pixel's id)."""
    build = {"schema_version": SCHEMA_VERSION, "resolution": [32, 32], "chunk_frames": 4,
             "teachers": DEFAULT_TEACHERS}
    store = create_store(path, dataset="random", build=build, classes=COCO)
    rng = np.random.default_rng(0)
    ids = np.array(sorted(COCO), np.uint8)
    for k in range(n_train + 1):
        split = "train" if k < n_train else "test"
        video = store.create_video(split, f"{k + 1:02d}", n_frames=n_frames, has_labels=split == "test",
                                   has_masks=False)
        values = random_video_values(rng, n_frames, (32, 32), len(COCO), first_frame=True)
        values["seg"] = ids[values["seg"]]
        values["seg"][:, :4, :4] = 91  # every frame holds the largest id
        if top is not None and split == "train":
            values["seg"][-1, 0, 0] = top
        for block in range(-(-n_frames // 4)):
            video.write_block(block, {n: v[block * 4 : (block + 1) * 4] for n, v in values.items()})
        if split == "test":
            video.write_labels((np.arange(n_frames) >= 3).astype(np.uint8))
    return store


def test_coco_class_ids_train_and_score_with_one_output_per_id_up_to_the_largest(tmp_path):
    from mtvad.scoring.score import score

    assert n_outputs(COCO) == 92 and n_outputs({0: "bg", 1: "a", 2: "b"}) == 3
    store = coco_store(tmp_path / "coco.zarr")
    result = mtvad.students.train.train(config(store.url, tmp_path / "run", "appearance", run__max_steps=1),
                                        progress=False)["appearance"]
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["n_classes"] == 92 and ckpt["model"]["unet.segmentation_head.0.weight"].shape[0] == 92
    check_fits_store(result.checkpoint, ckpt, open_store(store.url), remedy="-")
    out = tmp_path / "scores.zarr"
    score(store.url, [result.best_checkpoint], out, progress=False)  # scoring reads ckpt["n_classes"]
    assert out.exists()
    bad = coco_store(tmp_path / "bad.zarr", top=95)  # an id above the vocabulary's largest
    with pytest.raises(StoreError, match="seg holds class id 95 but the store's class vocabulary goes up to id 91"):
        mtvad.students.train.train(config(bad.url, tmp_path / "bad", "appearance", run__max_steps=1),
                                   progress=False)
