"""Typed training configuration with the paper's defaults; written into every checkpoint.

Paper, section 4.3: inputs 256x256, encoders initialised from ImageNet, Adam, learning rate 1e-3 halved every
10 epochs, patch-based MSE over 16 patches. Section 3: appearance-motion branch = resnet34-UNet predicting the
segmentation of frame t+1 from frames (t-1, t); motion branch = vgg16-UNet mapping frame t to its flow
magnitude (masked by the segmentation), with SCSE on the encoder's mid layers and the depth/direction
attention network; Table 4 puts that attention best in the decoder.

Where the paper is silent the defaults are ours and say so (`batch_size`, `epochs`, `seed`, the attention
network's width, the attention form).

`TrainConfig.to_dict()` gives plain JSON-able dicts (lists, not tuples); `TrainConfig.from_dict()` reads them
back and refuses unknown keys, so a checkpoint's config is exactly what trained it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from mtvad.errors import ConfigError

BRANCHES = ("appearance", "motion")
BRANCH_CHOICES = BRANCHES + ("both",)
APPEARANCE_TARGETS = ("seg-future", "seg")  # seg-future: the paper's t+1 (Seg+Pred); seg: frame t (Seg)
SCSE_PLACEMENTS = ("encoder-mid", "decoder", "off")
ATTENTION_POSITIONS = ("off", "encoder", "decoder", "skip", "final")
ATTENTION_FORMS = ("residual", "gate")  # x * (1 + a) or x * a
FLOW_TARGETS = ("masked", "raw")  # masked by seg > 0 (paper 4.3) or the raw teacher flow (ablation)
DEVICES = ("auto", "cpu", "cuda")
AMP_CHOICES = ("auto", "off")
UNET_STRIDE = 32  # 5 downsampling stages: inputs must be multiples of 32


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


@dataclass
class AppearanceConfig:
    """Appearance-motion branch (paper 3.2): frames (t-1, t) -> teacher segmentation of frame t+1."""

    encoder: str = "resnet34"  # paper: resnet34-UNet
    target: str = "seg-future"  # 'seg-future' = frame t+1 (paper); 'seg' = frame t (Table 2's Seg row)
    encoder_weights: str | None = None  # local ImageNet state dict; None = from scratch (no download here)

    def validate(self) -> None:
        _choice("appearance target", self.target, APPEARANCE_TARGETS)
        if not self.encoder.startswith("resnet"):
            raise ConfigError(f"appearance encoder must be a resnet (paper: resnet34); got {self.encoder!r}")

    @property
    def target_offset(self) -> int:
        return 1 if self.target == "seg-future" else 0


@dataclass
class MotionConfig:
    """Motion branch (paper 3.3-3.5): frame t -> its flow magnitude, with SCSE and context attention."""

    encoder: str = "vgg16"  # paper: vgg16-UNet
    scse: str = "encoder-mid"  # paper 3.4: SCSE on the encoder's mid-layer feature maps
    scse_stages: list[int] = field(default_factory=lambda: [2, 3, 4])  # VGG conv blocks (1-based of 5)
    scse_reduction: int = 16  # SCSE channel-squeeze ratio (smp's and [2]'s default)
    attention: str = "decoder"  # paper Table 4: the decoder is the best position
    attention_form: str = "residual"  # x * (1 + a): ours (paper silent), see vad/models/attention.py
    attention_hidden: int = 16  # width of the context attention network (paper silent)
    flow_target: str = "masked"  # paper 4.3: the flow map masked with the segmentation map
    encoder_weights: str | None = None

    def validate(self) -> None:
        _choice("scse", self.scse, SCSE_PLACEMENTS)
        _choice("attention", self.attention, ATTENTION_POSITIONS)
        _choice("attention form", self.attention_form, ATTENTION_FORMS)
        _choice("flow target", self.flow_target, FLOW_TARGETS)
        if not self.encoder.startswith("vgg"):
            raise ConfigError(f"motion encoder must be a vgg (paper: vgg16); got {self.encoder!r}")
        if not self.scse_stages or any(s not in (1, 2, 3, 4, 5) for s in self.scse_stages):
            raise ConfigError(f"scse stages must be VGG conv blocks 1..5; got {self.scse_stages}")
        if self.attention_hidden < 1 or self.scse_reduction < 1:
            raise ConfigError("attention hidden width and scse reduction must be >= 1")


@dataclass
class OptimConfig:
    """Paper 4.3: Adam, lr 1e-3 halved every 10 epochs, patch loss over 16 (4x4) patches."""

    lr: float = 1e-3
    lr_step_epochs: int = 10
    lr_gamma: float = 0.5
    epochs: int = 30  # ours: the paper does not say (30 epochs = lr 1e-3 -> 1.25e-4)
    batch_size: int = 8  # ours: the paper does not say
    patch_grid: int = 4  # 4 x 4 = 16 patches (Eq. 6)

    def validate(self) -> None:
        if not self.lr > 0 or not 0 < self.lr_gamma <= 1 or self.lr_step_epochs < 1:
            raise ConfigError(f"need lr > 0, 0 < lr gamma <= 1, lr step >= 1 epoch; got {self.lr}, "
                              f"{self.lr_gamma}, {self.lr_step_epochs}")
        if self.epochs < 1 or self.batch_size < 1 or self.patch_grid < 1:
            raise ConfigError("epochs, batch size and patch grid must be >= 1")


@dataclass
class DataConfig:
    store: str = ""
    size: list[int] | None = None  # [H, W] network input; None = the store resolution (paper: 256x256)
    limit_videos: int | None = None  # first N training videos (smoke runs)
    in_memory: bool | None = None  # None = auto: in memory when the needed arrays fit in the RAM budget
    ram_budget_gb: float | None = None  # None = half of the available memory
    workers: int | None = None  # streaming mode loader processes; None = min(4, cpus - 1)

    def validate(self) -> None:
        if not self.store:
            raise ConfigError("no store given (--store PATH)")
        if self.size is not None:
            if len(self.size) != 2 or any(int(s) < UNET_STRIDE or int(s) % UNET_STRIDE for s in self.size):
                raise ConfigError(f"size must be H and W, multiples of {UNET_STRIDE} (a UNet of depth 5); "
                                  f"got {self.size}")
        if self.limit_videos is not None and self.limit_videos < 1:
            raise ConfigError(f"limit videos must be >= 1; got {self.limit_videos}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0; got {self.workers}")


@dataclass
class RunConfig:
    out: str = "outputs/train"
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present (with AMP), else CPU
    amp: str = "auto"  # auto: bf16 autocast on CUDA where supported, else fp16 with a grad scaler; off on CPU
    max_steps: int | None = None  # stop after this many optimizer steps in all (smoke runs)
    checkpoint_every: int = 500  # steps; a checkpoint is also written at every epoch end and at the stop

    def validate(self) -> None:
        _choice("device", self.device, DEVICES)
        _choice("amp", self.amp, AMP_CHOICES)
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max steps must be >= 1; got {self.max_steps}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint every must be >= 1 step; got {self.checkpoint_every}")


# Settings that may change when a run is resumed: where things are and how long to go on. Everything else
# (model, targets, optimiser, batch size, input size, seed) must equal the checkpoint's.
RESUMABLE_CHANGES = {
    "data.store", "data.in_memory", "data.ram_budget_gb", "data.workers",
    "run.out", "run.device", "run.amp", "run.max_steps", "run.checkpoint_every", "optim.epochs",
    "appearance.encoder_weights", "motion.encoder_weights",  # only the initial weights: the checkpoint wins
}


@dataclass
class TrainConfig:
    branch: str = "both"
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> "TrainConfig":
        _choice("branch", self.branch, BRANCH_CHOICES)
        for part in (self.appearance, self.motion, self.optim, self.data, self.run):
            part.validate()
        return self

    @property
    def branches(self) -> tuple[str, ...]:
        return BRANCHES if self.branch == "both" else (self.branch,)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, d, "config")

    def differences(self, other: "TrainConfig") -> dict[str, tuple[Any, Any]]:
        """Dotted keys whose values differ: {key: (self's, other's)}."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _from_dict(cls, d: Any, where: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown settings {sorted(unknown)}")
    kwargs = {}
    for name, value in d.items():
        sub = _NESTED.get((cls, name))
        kwargs[name] = _from_dict(sub, value, f"{where}.{name}") if sub else (
            list(value) if isinstance(value, tuple) else value)
    return cls(**kwargs)


_NESTED = {(TrainConfig, "appearance"): AppearanceConfig, (TrainConfig, "motion"): MotionConfig,
           (TrainConfig, "optim"): OptimConfig, (TrainConfig, "data"): DataConfig, (TrainConfig, "run"): RunConfig}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
