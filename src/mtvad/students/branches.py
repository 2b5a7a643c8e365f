"""The branches of the method (paper 3): one object per branch says everything train, score and evaluate need.

A branch says
- what it reads from the store per sample (`spec`: a `mtvad.students.data.BranchSpec`) and which frame its
  target is about (`target_offset`);
- how its student is built from the config (`build_model`) and which encoder it has (`encoder_name`,
  `encoder_weights`: its section of the config, `config.<name>`);
- how a raw batch of stored integers becomes the network inputs and the target (`batch`, on the device);
- the prediction the target is compared with (`predict` / `prediction`: the appearance softmax lives here);
- its per-pixel anomaly map, |prediction - target| summed over channels (`anomaly_map`; paper Eq. 4);
- its trivial control (`control`): a predictor of the same target that learns nothing, to measure what the
  student adds (motion: zero flow; appearance: the segmentation of frame t copied as that of t + 1); `controls`
  gives every control by name, with the per-pixel training-mean target ('mean') where the branch says
  `mean_control` (motion). Validation compares the student with them (`mtvad.students.validation`).

| branch | reads (store arrays at frames) | inputs | target | prediction |
|---|---|---|---|---|
| appearance | frames t-1, t; seg t + offset | frames (B, 6, h, w) | one-hot seg (B, C, h, w) | softmax of the logits |
| motion | frame t; flow_mag, seg, flow_ang, depth t | frame, context | masked flow magnitude (B, 1, h, w) | the output |

A new branch is one subclass of `Branch` and one entry in `BRANCHES` (`register`); nothing else tests a
branch's name.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from mtvad.students.config import PAPER_APPEARANCE_ENCODER, PAPER_MOTION_ENCODER, TrainConfig
from mtvad.students.data import (
    ANGLE_SCALE,
    DEPTH_SCALE,
    FLOW_SCALE,
    BranchSpec,
    normalise_frames,
    resize,
    to_device,
)
from mtvad.students.models.appearance import AppearanceStudent
from mtvad.students.models.motion import MotionStudent

Inputs = tuple[torch.Tensor | None, ...]  # the student's positional arguments


class Branch:
    """One branch of the method. Subclasses set `name` and implement spec, build_model, batch and control."""

    name: str = ""
    title: str = ""  # its row in result tables and figures
    score_units: str = ""  # what its frame score (Eq. 4) sums, recorded in the scores file
    map_units: str = ""  # what one pixel of its anomaly map is
    control_name: str = "control"  # the name of `control` in `controls` (validation logs, checkpoints)
    mean_control: bool = False  # whether the per-pixel training-mean target is one of its controls
    paper_encoder: str = ""  # the encoder of an unresolved config (encoder None: see resolve_recipe)

    def __repr__(self) -> str:
        return f"<branch {self.name}>"

    # ------------------------------------------------------------------------------------ configuration

    def settings(self, config: TrainConfig) -> Any:
        """This branch's section of the config (`config.<name>`)."""
        return getattr(config, self.name)

    def encoder_name(self, config: TrainConfig) -> str:
        return self.settings(config).encoder or self.paper_encoder

    def encoder_weights(self, config: TrainConfig) -> str | None:
        """A local ImageNet weights file for the encoder, or None (from scratch)."""
        return self.settings(config).encoder_weights

    def target_offset(self, config: TrainConfig) -> int:
        """The target (and the anomaly map) of sample t is about frame t + target_offset."""
        return 0

    def mean_loss_weight(self, config: TrainConfig) -> float:
        """Weight of the whole-map MSE added to the patch loss in training (0: Eq. 6 alone)."""
        return 0.0

    # ----------------------------------------------------------------------------------- what it reads

    def spec(self, config: TrainConfig, resolution: tuple[int, int], flow_valid_from: int = 1, *,
             control: bool = False) -> BranchSpec:
        """What one sample reads from the store; `control=True` adds what `control` needs."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ model

    def build_model(self, config: TrainConfig, n_classes: int) -> nn.Module:
        """The student with random weights (encoder weights, if any, are loaded separately)."""
        raise NotImplementedError

    # ---------------------------------------------------------------------- batches and predictions

    def batch(self, raw: dict[str, torch.Tensor], config: TrainConfig, n_classes: int,
              size: Sequence[int] | None, device: torch.device) -> tuple[Inputs, torch.Tensor]:
        """(student inputs, target) of a raw batch (stored integers), decoded on `device`, resized to `size`."""
        raise NotImplementedError

    def prediction(self, output: torch.Tensor) -> torch.Tensor:
        """What the target is compared with, from the student's raw output (float32)."""
        return output.float()

    def predict(self, model: nn.Module, inputs: Inputs,
                autocast: AbstractContextManager | None = None) -> torch.Tensor:
        """The student's prediction; the forward pass runs inside `autocast` (if given), the rest in float32.
        Image inputs go in channels_last, the layout the students are kept in (`channels_last`)."""
        inputs = tuple(i.contiguous(memory_format=torch.channels_last) if i is not None and i.dim() == 4 else i
                       for i in inputs)
        with autocast if autocast is not None else contextlib.nullcontext():
            output = model(*inputs)
        return self.prediction(output)

    def anomaly_map(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel anomaly map (B, h, w): |prediction - target| summed over channels (paper Eq. 4)."""
        return (prediction - target).abs().sum(dim=1)

    def predicted_foreground(self, prediction: torch.Tensor, flow_px: float) -> torch.Tensor | None:
        """(B, h, w) bool: where the student predicts an object, added to the teacher's foreground by the
        `foreground` frame reduction (`mtvad.scoring.reductions`); None: no student part. `flow_px` is one store
        pixel per frame in input pixels per frame."""
        return None

    def control(self, raw: dict[str, torch.Tensor], config: TrainConfig, n_classes: int,
                size: Sequence[int] | None, device: torch.device) -> torch.Tensor:
        """The trivial control's prediction of this batch's target (same shape), learning nothing. `raw` is a
        batch read with `spec(..., control=True)`."""
        raise NotImplementedError

    def controls(self, raw: dict[str, torch.Tensor], config: TrainConfig, n_classes: int,
                 size: Sequence[int] | None, device: torch.device,
                 mean: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{name: prediction} of every trivial control of this batch's target: `control` under `control_name`,
        and, where `mean_control`, 'mean': `mean` (the per-pixel mean target over the training samples, (1, C,
        h, w)) for every sample."""
        out = {self.control_name: self.control(raw, config, n_classes, size, device)}
        if self.mean_control and mean is not None:
            out["mean"] = mean.to(device).expand_as(out[self.control_name])
        return out


def channels_last(model: nn.Module) -> nn.Module:
    """The student with its 4-d weights in channels_last: oneDNN's faster layout on CPUs (1.1-1.2x in training
    here, more under bf16) and the tensor cores' on CUDA. Same values to float rounding."""
    return model.to(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------- appearance


def one_hot_seg(seg: torch.Tensor, n_classes: int, size: Sequence[int] | None, device: torch.device) -> torch.Tensor:
    """uint8 class ids (B, k, H, W) (the first of k frames is used) -> one-hot float (B, n_classes, h, w),
    resized by nearest neighbour."""
    ids = resize(seg[:, :1], size, "nearest").long()  # (B, 1, h, w)
    return torch.zeros((ids.shape[0], n_classes, *ids.shape[-2:]), device=device).scatter_(1, ids, 1.0)


def appearance_batch(raw: dict[str, torch.Tensor], n_classes: int, size: Sequence[int] | None,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (B, 6, h, w) and the one-hot target (B, n_classes, h, w) of an appearance batch."""
    raw = to_device(raw, device)
    return normalise_frames(raw["frames"], size), one_hot_seg(raw["seg"], n_classes, size, device)


class AppearanceBranch(Branch):
    """Appearance-motion branch (paper 3.2): frames (t-1, t) -> the teacher segmentation of frame t+1 (or of t,
    `--appearance-target seg`)."""

    name = "appearance"
    title = "appearance branch"
    score_units = "sum over pixels and classes of |softmax - one-hot teacher seg| at the input size"
    map_units = "per pixel: sum over classes of |softmax - one-hot teacher seg|, in [0, 2]"
    control_name = "copy"  # the seg of frame t copied
    paper_encoder = PAPER_APPEARANCE_ENCODER

    def target_offset(self, config: TrainConfig) -> int:
        return config.appearance.target_offset

    def spec(self, config: TrainConfig, resolution: tuple[int, int], flow_valid_from: int = 1, *,
             control: bool = False) -> BranchSpec:
        off = self.target_offset(config)
        reads = {"frames": ("frames", (-1, 0)), "seg": ("seg", (off,))}
        why = {"frames": "the input frames", "seg": "the segmentation target"}
        if control:
            reads["seg_now"] = ("seg", (0,))
        return BranchSpec(self.name, reads, first=1, after=off, why=why)

    def build_model(self, config: TrainConfig, n_classes: int) -> nn.Module:
        return AppearanceStudent(n_classes, encoder=self.encoder_name(config))

    def batch(self, raw, config, n_classes, size, device):
        x, target = appearance_batch(raw, n_classes, size, device)
        return (x,), target

    def prediction(self, output: torch.Tensor) -> torch.Tensor:
        return output.float().softmax(dim=1)  # class probabilities, compared with the one-hot teacher map

    def predicted_foreground(self, prediction, flow_px):
        """Where the most probable predicted class is not background (class 0)."""
        # argmax(dim=1) > 0 exactly (a tie with background is background), 100x faster than torch's argmax here
        return prediction[:, 1:].amax(dim=1) > prediction[:, 0]

    def control(self, raw, config, n_classes, size, device):
        """The segmentation of frame t, one-hot, as the prediction (of frame t+1's: a static scene)."""
        return one_hot_seg(raw["seg_now"].to(device, non_blocking=True), n_classes, size, device)


# ----------------------------------------------------------------------------------------------- motion


def _anisotropic(resolution: tuple[int, int], size: Sequence[int] | None) -> bool:
    if size is None:
        return False
    return size[0] * resolution[1] != size[1] * resolution[0]


def motion_batch(raw: dict[str, torch.Tensor], config: TrainConfig, size: Sequence[int] | None,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Input frame (B, 3, h, w), context (B, 3, h, w) or None, target magnitude (B, 1, h, w) of a motion batch.

    The magnitude is in input pixels per frame: resizing the store's maps by (sy, sx) scales a flow vector
    (dx, dy) to (sx dx, sy dy), so its magnitude by sqrt((sx cos)^2 + (sy sin)^2) (= s when isotropic) and its
    direction accordingly; masking (seg > 0) is done at store resolution, before resizing."""
    raw = to_device(raw, device)
    x = normalise_frames(raw["frames"], size)
    h, w = raw["flow_mag"].shape[-2:]
    mag = raw["flow_mag"].float() * FLOW_SCALE  # (B, 1, H, W)
    if config.motion.flow_target == "masked":
        mag = mag * (raw["seg"] > 0)
    sy, sx = (1.0, 1.0) if size is None else (size[0] / h, size[1] / w)
    cos = sin = None
    if "flow_ang" in raw:
        ang = raw["flow_ang"].float() * ANGLE_SCALE
        cos, sin = torch.cos(ang) * sx, torch.sin(ang) * sy
        norm = torch.sqrt(cos.square() + sin.square())
        if not math.isclose(sx, sy):
            mag = mag * norm
        cos, sin = cos / norm, sin / norm
    if math.isclose(sx, sy):
        mag = mag * sx
    target = resize(mag, size)
    context = None
    if config.motion.attention != "off":
        depth = raw["depth"].float() * DEPTH_SCALE
        context = resize(torch.cat([cos.abs(), sin.abs(), depth], dim=1), size)
    return x, context, target


class MotionBranch(Branch):
    """Motion branch (paper 3.3-3.5): frame t -> its flow magnitude (masked by the segmentation), with SCSE and
    the depth/direction context attention."""

    name = "motion"
    title = "motion branch"
    score_units = "sum over pixels of |predicted - teacher flow magnitude| at the input size, input px/frame"
    map_units = "per pixel: |predicted - teacher flow magnitude|, input px/frame"
    control_name = "zero"  # zero flow everywhere
    paper_encoder = PAPER_MOTION_ENCODER
    mean_control = True  # and the per-pixel mean masked magnitude of the training samples

    def mean_loss_weight(self, config: TrainConfig) -> float:
        return float(config.motion.mean_loss_weight or 0.0)  # None (unresolved recipe): Eq. 6 alone

    def spec(self, config: TrainConfig, resolution: tuple[int, int], flow_valid_from: int = 1, *,
             control: bool = False) -> BranchSpec:
        m = config.motion
        reads = {"frames": ("frames", (0,)), "flow_mag": ("flow_mag", (0,))}
        why = {"frames": "the input frame", "flow_mag": "the flow magnitude target"}
        if m.flow_target == "masked":
            reads["seg"] = ("seg", (0,))
            why["seg"] = "masking the flow target (paper 4.3; --flow-target raw does without)"
        if m.attention != "off" or _anisotropic(resolution, config.data.size):
            reads["flow_ang"] = ("flow_ang", (0,))
            why["flow_ang"] = ("the direction input of the context attention (--attention off does without)"
                               if m.attention != "off" else "rescaling the flow to a --size of another aspect ratio")
        if m.attention != "off":
            reads["depth"] = ("depth", (0,))
            why["depth"] = "the depth input of the context attention (--attention off does without)"
        return BranchSpec(self.name, reads, first=max(1, flow_valid_from), after=0, why=why)

    def build_model(self, config: TrainConfig, n_classes: int) -> nn.Module:
        m = config.motion
        return MotionStudent(encoder=self.encoder_name(config), scse_placement=m.scse,
                             scse_stages=tuple(m.scse_stages), scse_reduction=m.scse_reduction, attention=m.attention,
                             attention_form=m.attention_form, attention_hidden=m.attention_hidden)

    def batch(self, raw, config, n_classes, size, device):
        x, context, target = motion_batch(raw, config, size, device)
        return (x, context), target

    def predicted_foreground(self, prediction, flow_px):
        """Where the predicted flow magnitude exceeds 1 store pixel per frame (the teacher's moving-foreground
        threshold, `flow_px` in input pixels)."""
        return prediction[:, 0] > flow_px

    def control(self, raw, config, n_classes, size, device):
        """Zero flow everywhere: the control's error is the target itself."""
        return torch.zeros_like(self.batch(raw, config, n_classes, size, device)[1])


# --------------------------------------------------------------------------------------------- registry

BRANCHES: dict[str, Branch] = {}


def register(branch: Branch) -> Branch:
    """Add a branch to the registry (by its name); returns it."""
    if not branch.name:
        raise ValueError(f"{type(branch).__name__} has no name")
    BRANCHES[branch.name] = branch
    return branch


APPEARANCE = register(AppearanceBranch())
MOTION = register(MotionBranch())


def get_branch(branch: str | Branch) -> Branch:
    """The registered branch of this name (a Branch is returned as it is)."""
    if isinstance(branch, Branch):
        return branch
    try:
        return BRANCHES[branch]
    except KeyError:
        raise ValueError(f"unknown branch {branch!r}") from None


def branch_spec(branch: str | Branch, config: TrainConfig, resolution: tuple[int, int],
                flow_valid_from: int = 1) -> BranchSpec:
    """What the named branch reads per sample (`Branch.spec`)."""
    return get_branch(branch).spec(config, resolution, flow_valid_from)
