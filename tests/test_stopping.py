"""How long the students train and in what precision: bf16 where the CPU has it (float32 where not, said in the
first log line), the stop when the validation loss no longer improves (patience), and a resume that continues
the recipe its checkpoint was started with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mtvad.cli.main import app
from mtvad.hashing import file_sha256
from mtvad.scoring.score import score
from mtvad.scoring.scores_file import open_scores
from mtvad.students.branches import MOTION
from mtvad.students.checkpoint import best_path, checkpoint_path, load_checkpoint
from mtvad.students.config import DataConfig, MotionConfig, OptimConfig, RunConfig, TrainConfig
from mtvad.students.train import train
from tests.stores import make_store, scripted_validation_losses

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """3 training videos of 8 frames (03 held out for validation), one test video."""
    path = tmp_path_factory.mktemp("stop") / "s.zarr"
    make_store(path, n_train=3, n_test=1, n_frames=8, n_classes=3)
    return path


def config(store, out, **kw) -> TrainConfig:
    """A tiny motion run (the cpu recipe's other settings); kw sets 'section__field' values."""
    cfg = TrainConfig(branch="motion", data=DataConfig(store=str(store)), optim=OptimConfig(batch_size=2, epochs=5),
                      run=RunConfig(out=str(out), checkpoint_every=1))
    for key, value in kw.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


# ------------------------------------------------------------------------------------------------- patience


def test_training_stops_after_patience_validations_without_a_lower_loss(store_path, tmp_path, monkeypatch):
    # best at step 3 (2.0); steps 4, 5, 6 do not go below it (2.0 again is no improvement): stop at step 6
    calls = scripted_validation_losses(monkeypatch, [5.0, 4.0, 2.0, 2.5, 2.0, 3.0, 1.0, 0.5])
    result = train(config(store_path, tmp_path / "run", run__patience=3, run__max_steps=20), progress=False)["motion"]
    assert (result.stopped, result.step, len(calls)) == ("patience", 6, 6)
    assert result.best["step"] == 3 and load_checkpoint(best_path(tmp_path / "run", "motion"))["step"] == 3
    history = json.loads((tmp_path / "run" / "motion" / "history.json").read_text())
    assert [e["step"] for e in history["history"]] == [1, 2, 3, 4, 5, 6] and history["patience"] == 3
    # a resume of a run that stopped on its patience has nothing to do (best.pt not even rewritten); a larger
    # patience goes on
    before = file_sha256(best_path(tmp_path / "run", "motion"))
    again = train(config(store_path, tmp_path / "run", run__patience=3, run__max_steps=20), resume=True,
                  progress=False)["motion"]
    assert (again.stopped, again.step, len(calls)) == ("patience", 6, 6)
    assert file_sha256(best_path(tmp_path / "run", "motion")) == before
    more = train(config(store_path, tmp_path / "run", run__patience=4, run__max_steps=8), resume=True,
                 progress=False)["motion"]
    assert (more.stopped, more.step, more.best["step"]) == ("max_steps", 8, 8)  # 1.0 at 7, 0.5 at 8: better


def test_patience_zero_never_stops_and_the_ceiling_still_holds(store_path, tmp_path, monkeypatch):
    calls = scripted_validation_losses(monkeypatch, [1.0] + [2.0] * 9)
    result = train(config(store_path, tmp_path, run__patience=0, run__max_steps=7), progress=False)["motion"]
    assert (result.stopped, result.step, len(calls)) == ("max_steps", 7, 7)


# ----------------------------------------------------------------------------------------------- the recipe


def test_a_resume_continues_the_settings_its_recipe_chose_when_it_started(store_path, tmp_path):
    # as if the recipe had chosen vgg13 and a patience of 7 when this run started (settings in the checkpoint)
    out = tmp_path / "run"
    started = config(store_path, out, run__max_steps=2, run__patience=7)
    started.motion = MotionConfig(encoder="vgg13")
    train(started, progress=False)
    # resumed with those settings left unset: today's recipe would say vgg11 and 4; the checkpoint's win
    resumed = config(store_path, out, run__max_steps=4)
    assert resumed.motion.encoder is None and resumed.run.patience is None
    result = train(resumed, resume=True, progress=False)["motion"]
    ckpt = load_checkpoint(checkpoint_path(out, "motion"))
    assert result.step == 4 and ckpt["config"]["motion"]["encoder"] == "vgg13"
    assert ckpt["config"]["run"]["patience"] == 7 and ckpt["config"]["run"]["recipe"] == "cpu"
    assert json.loads((out / "motion" / "config.json").read_text())["motion"]["encoder"] == "vgg13"


# ----------------------------------------------------------------------------------------------- precision


@pytest.mark.parametrize("native", [True, False], ids=["bf16-cpu", "cpu-without-bf16"])
def test_bf16_where_the_cpu_has_it_float32_where_not_said_first_and_scored_alike(store_path, tmp_path, monkeypatch,
                                                                                 native):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    seen = []  # the dtype of every forward pass's output, before the branch casts it to float32
    real = MOTION.prediction
    monkeypatch.setattr(MOTION, "prediction", lambda output: seen.append(output.dtype) or real(output))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--store", str(store_path), "--branch", "motion", "--out", str(out),
                                      "--batch-size", "2", "--max-steps", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    expected = torch.bfloat16 if native else torch.float32
    if native:
        assert "bf16 autocast (the CPU has avx512_bf16)" in first
    else:
        assert "float32 (the CPU has no native bf16: neither avx512_bf16 nor AMX)" in first
    ckpt = load_checkpoint(best_path(out, "motion"))
    assert ckpt["precision"] == str(expected).removeprefix("torch.") and set(seen) == {expected}
    assert all(np.isfinite(e["loss"]) for e in ckpt["validation"])
    seen.clear()
    scored = score(str(store_path), [best_path(out, "motion")], tmp_path / "scores.zarr", progress=False)
    assert scored.precision == ckpt["precision"] and set(seen) == {expected}
    sf = open_scores(tmp_path / "scores.zarr")
    assert sf.attrs["precision"] == ckpt["precision"]
    values, valid = sf.row("test", sf.video_ids("test")[0], "motion", "sum")
    assert valid[1:].all() and np.isfinite(values[1:]).all()  # frame 0 has no flow
