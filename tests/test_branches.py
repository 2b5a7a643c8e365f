"""Branch objects (mtvad.students.branches): the registry, each branch's trivial control on hand-made batches,
and a third branch that train and score pick up from the registry alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mtvad.scoring.score import score_branch_video
from mtvad.store.access import open_store
from mtvad.store.schema import ARRAYS
from mtvad.students.branches import (
    APPEARANCE,
    BRANCHES,
    MOTION,
    AppearanceBranch,
    Branch,
    MotionBranch,
    get_branch,
    one_hot_seg,
)
from mtvad.students.checkpoint import load_student
from mtvad.students.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from mtvad.students.data import InMemoryDataset, make_train_data, normalise_frames
from mtvad.students.models import build_model
from mtvad.students.train import train_branch
from tests.stores import make_store

CPU = torch.device("cpu")
H = W = 4


def test_the_registry_holds_both_branches_of_the_paper():
    assert list(BRANCHES) == ["appearance", "motion"]
    assert isinstance(get_branch("appearance"), AppearanceBranch) and get_branch("motion") is MOTION
    assert get_branch(APPEARANCE) is APPEARANCE
    with pytest.raises(ValueError, match="unknown branch 'colour'"):
        get_branch("colour")
    cfg = TrainConfig()
    assert (APPEARANCE.target_offset(cfg), MOTION.target_offset(cfg)) == (1, 0)
    assert (APPEARANCE.encoder_name(cfg), MOTION.encoder_name(cfg)) == ("resnet34", "vgg16")
    cfg.appearance.target = "seg"
    assert APPEARANCE.target_offset(cfg) == 0 and APPEARANCE.spec(cfg, (32, 32)).after == 0


# -------------------------------------------------------------------------------------- trivial controls


def _motion_raw(seed: int = 0) -> dict[str, torch.Tensor]:
    """A hand-made raw motion batch (B=2, one frame each), stored integers as the datasets return them."""
    g = torch.Generator().manual_seed(seed)
    return {
        "frames": torch.randint(0, 256, (2, 1, H, W, 3), generator=g, dtype=torch.uint8),
        "flow_mag": torch.randint(1, 600, (2, 1, H, W), generator=g).to(torch.uint16),
        "seg": torch.tensor([[[[0, 1, 1, 0]] * H]] * 2, dtype=torch.uint8),
        "flow_ang": torch.randint(0, 60000, (2, 1, H, W), generator=g).to(torch.uint16),
        "depth": torch.randint(0, 60000, (2, 1, H, W), generator=g).to(torch.uint16),
    }


def test_motion_control_predicts_zero_flow_so_its_error_is_the_target_itself():
    cfg = TrainConfig()
    raw = _motion_raw()
    control = MOTION.control(raw, cfg, 3, None, CPU)
    _, target = MOTION.batch(raw, cfg, 3, None, CPU)
    # the target by hand: the stored magnitude, scaled, masked by seg > 0
    mag = raw["flow_mag"].numpy().astype(np.float64) * ARRAYS["flow_mag"].scale * (raw["seg"].numpy() > 0)
    assert control.shape == target.shape == (2, 1, H, W)
    mse = float(nn.functional.mse_loss(control, target))
    assert mse > 0 and mse == pytest.approx(float(np.mean(mag**2)), rel=1e-6)
    assert torch.allclose(MOTION.anomaly_map(control, target).double(), torch.from_numpy(mag[:, 0]), atol=1e-6)


def _appearance_raw(seg_now: list[list[int]], seg_next: list[list[int]]) -> dict[str, torch.Tensor]:
    """A hand-made raw appearance batch (B=1) read with spec(control=True): frames t-1, t; seg t+1 and seg t."""
    frames = torch.zeros((1, 2, H, W, 3), dtype=torch.uint8)
    return {"frames": frames, "seg": torch.tensor(seg_next, dtype=torch.uint8)[None, None],
            "seg_now": torch.tensor(seg_now, dtype=torch.uint8)[None, None]}


SEG = [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]]


def test_appearance_control_copies_the_segmentation_of_frame_t():
    cfg = TrainConfig()
    spec = APPEARANCE.spec(cfg, (H, W), control=True)
    assert spec.reads["seg_now"] == ("seg", (0,)) and spec.reads["seg"] == ("seg", (1,))
    assert "seg_now" not in APPEARANCE.spec(cfg, (H, W)).reads  # training reads only what it needs
    # a static scene: seg t == seg t+1, the copy is exact
    raw = _appearance_raw(SEG, SEG)
    control = APPEARANCE.control(raw, cfg, 3, None, CPU)
    _, target = APPEARANCE.batch(raw, cfg, 3, None, CPU)
    assert control.shape == target.shape == (1, 3, H, W)
    assert torch.equal(APPEARANCE.anomaly_map(control, target), torch.zeros(1, H, W))
    # two pixels change class between t and t+1: each costs |1 - 0| + |0 - 1| = 2, the others 0
    moved = [row[:] for row in SEG]
    moved[0][0], moved[3][3] = 1, 2
    raw = _appearance_raw(SEG, moved)
    control = APPEARANCE.control(raw, cfg, 3, None, CPU)
    _, target = APPEARANCE.batch(raw, cfg, 3, None, CPU)
    expected = torch.zeros(1, H, W)
    expected[0, 0, 0] = expected[0, 3, 3] = 2
    assert torch.equal(APPEARANCE.anomaly_map(control, target), expected)
    # at another input size the copy is resized the way the target is (nearest)
    control = APPEARANCE.control(raw, cfg, 3, (2, 2), CPU)
    assert torch.equal(control, one_hot_seg(raw["seg_now"], 3, (2, 2), CPU)) and control.shape == (1, 3, 2, 2)


def test_the_appearance_control_reads_frame_t_from_a_store(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_train=1, n_test=0, n_frames=6, n_classes=3)
    spec = APPEARANCE.spec(TrainConfig(), store.resolution, control=True)
    data = InMemoryDataset(store, "train", ["01"], spec, 3)
    vid, t = data.sample(2)
    assert torch.equal(data[2]["seg_now"][0], torch.from_numpy(store.video("train", vid).seg(t)))
    assert torch.equal(data[2]["seg"][0], torch.from_numpy(store.video("train", vid).seg(t + 1)))


def test_the_appearance_prediction_is_the_softmax_of_the_logits():
    logits = torch.tensor([[[[0.0]], [[1.0]], [[2.0]]]])
    p = APPEARANCE.prediction(logits)
    assert torch.allclose(p[0, :, 0, 0], torch.tensor([1.0, np.e, np.e**2]) / (1 + np.e + np.e**2))
    assert torch.equal(MOTION.prediction(logits), logits)


# ------------------------------------------------------------------------------------------ a new branch


class Brightness(nn.Module):
    """A toy student: one 1x1 convolution from frame t to a 1-channel map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class BrightnessBranch(Branch):
    """A toy third branch: frame t -> the segmentation's foreground of frame t (no config section)."""

    name = "brightness"

    def encoder_weights(self, config):
        return None

    def spec(self, config, resolution, flow_valid_from=1, *, control=False):
        from mtvad.students.data import BranchSpec

        return BranchSpec(self.name, {"frames": ("frames", (0,)), "seg": ("seg", (0,))}, first=0, after=0)

    def build_model(self, config, n_classes):
        return Brightness()

    def batch(self, raw, config, n_classes, size, device):
        return (normalise_frames(raw["frames"].to(device), size),), (raw["seg"].to(device) > 0).float()

    def control(self, raw, config, n_classes, size, device):
        return torch.zeros_like(self.batch(raw, config, n_classes, size, device)[1])


def test_a_third_branch_is_one_class_and_one_registry_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(BRANCHES, "brightness", BrightnessBranch())
    store = make_store(tmp_path / "s.zarr", n_train=2, n_test=1, n_frames=6, n_classes=3)
    # (the config's `branch` choices are the CLI's; train_branch takes the branch itself)
    cfg = TrainConfig(data=DataConfig(store=store.url), optim=OptimConfig(batch_size=2, epochs=1),
                      run=RunConfig(out=str(tmp_path / "run"), max_steps=2, checkpoint_every=1000))
    assert isinstance(build_model("brightness", cfg, 3), Brightness)
    data = make_train_data(store, "brightness", cfg, CPU)
    assert len(data.dataset) == 12 and set(data.dataset.spec.arrays) == {"frames", "seg"}
    result = train_branch(cfg, "brightness", store, progress=False)
    assert result.step == 2 and result.checkpoint == tmp_path / "run" / "brightness" / "last.pt"
    model, config, ckpt = load_student(result.checkpoint)
    assert ckpt["branch"] == "brightness" and isinstance(model, Brightness)
    store = open_store(store.url)
    scores, valid, amap = score_branch_video(store, "test", "01", "brightness", model, config, ckpt, CPU, maps=True)
    assert valid.all() and np.isfinite(scores["sum"]).all() and amap.shape == (6, 32, 32)
    assert np.allclose(amap.astype(np.float64).sum(axis=(1, 2)), scores["sum"], rtol=2e-3)
