"""Typed training configuration with the paper's defaults (pydantic models); written into every checkpoint.

Paper, section 4.3: inputs 256x256, encoders initialised from ImageNet, Adam, learning rate 1e-3 halved every
10 epochs, patch-based MSE over 16 patches. Section 3: appearance-motion branch = resnet34-UNet predicting the
segmentation of frame t+1 from frames (t-1, t); motion branch = vgg16-UNet mapping frame t to its flow
magnitude (masked by the segmentation), with SCSE on the encoder's mid layers and the depth/direction
attention network; Table 4 puts that attention best in the decoder.

Where the paper is silent the defaults are ours and say so (`batch_size`, `epochs`, `seed`, the attention
network's width, the attention form).

Every model refuses unknown keys (`extra="forbid"`), takes values only of their own type (`strict`: `true` is
not an int, `"8"` not a number) and checks them when it is built; whatever is wrong
becomes one `ConfigError` line naming the setting by its dotted key (`config.motion.scse must be one of
encoder-mid, decoder, off; got 'everywhere'`), never a pydantic traceback. The models are not frozen (code and
tests adjust a field or two); `validate()` checks the whole config again after such changes and that a store
is given. `TrainConfig.to_dict()` gives plain JSON-able dicts (lists, strings); `TrainConfig.from_dict()` reads
them back (a checkpoint's, or a `vad train --config` file), so a checkpoint's config is exactly what trained it.

The choices are `Literal` types (`AttentionPosition`, `ScsePlacement`, ...): their values are plain strings, and
the tuples of values (`ATTENTION_POSITIONS`, ...) come from the same types.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mtvad.errors import ConfigError

Branch = Literal["appearance", "motion"]
BranchChoice = Literal["appearance", "motion", "both"]
AppearanceTarget = Literal["seg-future", "seg"]  # seg-future: the paper's t+1 (Seg+Pred); seg: frame t (Seg)
ScsePlacement = Literal["encoder-mid", "decoder", "off"]
AttentionPosition = Literal["off", "encoder", "decoder", "skip", "final"]
AttentionForm = Literal["residual", "gate"]  # x * (1 + a) or x * a
FlowTarget = Literal["masked", "raw"]  # masked by seg > 0 (paper 4.3) or the raw teacher flow (ablation)
Device = Literal["auto", "cpu", "cuda"]
Amp = Literal["auto", "off"]
Recipe = Literal["auto", "paper", "cpu"]

BRANCHES: tuple[str, ...] = get_args(Branch)
BRANCH_CHOICES: tuple[str, ...] = get_args(BranchChoice)
APPEARANCE_TARGETS: tuple[str, ...] = get_args(AppearanceTarget)
SCSE_PLACEMENTS: tuple[str, ...] = get_args(ScsePlacement)
ATTENTION_POSITIONS: tuple[str, ...] = get_args(AttentionPosition)
ATTENTION_FORMS: tuple[str, ...] = get_args(AttentionForm)
FLOW_TARGETS: tuple[str, ...] = get_args(FlowTarget)
DEVICES: tuple[str, ...] = get_args(Device)
AMP_CHOICES: tuple[str, ...] = get_args(Amp)
RECIPES: tuple[str, ...] = get_args(Recipe)
UNET_STRIDE = 32  # 5 downsampling stages: inputs must be multiples of 32


class _Section(BaseModel):
    """One part of the config: unknown keys refused; a bad value is a `ConfigError` naming its dotted key."""

    model_config = ConfigDict(extra="forbid", frozen=False, strict=True)  # a bool is not an int, "8" not a number
    _where: ClassVar[str] = "config"  # where this model sits in TrainConfig, for the error messages

    def __init__(self, **data: Any) -> None:
        # pydantic calls this for nested models too (from dicts as well), so every way in reports the same way
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc, self._where)) from None

    def _revalidate(self) -> None:
        """Check the values again (fields may have been assigned since the model was built)."""
        type(self)(**self.model_dump())


class AppearanceConfig(_Section):
    """Appearance-motion branch (paper 3.2): frames (t-1, t) -> teacher segmentation of frame t+1."""

    _where: ClassVar[str] = "config.appearance"
    encoder: str | None = Field(None, description="a resnet; None = the recipe's (paper: resnet34-UNet; cpu: "
                                                  "CPU_APPEARANCE_ENCODER)")
    target: AppearanceTarget = Field("seg-future", description="'seg-future' = seg of frame t+1 (paper); "
                                                               "'seg' = frame t (Table 2's Seg row)")
    encoder_weights: str | None = Field(None, description="local ImageNet state dict; None = from scratch")

    @field_validator("encoder")
    @classmethod
    def _a_resnet(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("resnet"):
            raise ValueError(f"must be a resnet (paper: resnet34); got {v!r}")
        return v

    def validate(self) -> AppearanceConfig:
        self._revalidate()
        return self

    @property
    def target_offset(self) -> int:
        return 1 if self.target == "seg-future" else 0


class MotionConfig(_Section):
    """Motion branch (paper 3.3-3.5): frame t -> its flow magnitude, with SCSE and context attention."""

    _where: ClassVar[str] = "config.motion"
    encoder: str | None = Field(None, description="a vgg; None = the recipe's (paper: vgg16-UNet; cpu: "
                                                  "CPU_MOTION_ENCODER)")
    scse: ScsePlacement = Field("encoder-mid", description="paper 3.4: SCSE on the encoder's mid-layer maps")
    scse_stages: list[int] = Field(default_factory=lambda: [2, 3, 4], description="VGG conv blocks (1-based of 5)")
    scse_reduction: int = Field(16, ge=1, description="SCSE channel-squeeze ratio (smp's and [2]'s default)")
    attention: AttentionPosition = Field("decoder", description="paper Table 4: the decoder is the best position")
    attention_form: AttentionForm = Field("residual", description="x * (1 + a): ours (paper silent), see "
                                                                  "mtvad/students/models/attention.py")
    attention_hidden: int = Field(16, ge=1, description="width of the context attention network (paper silent)")
    flow_target: FlowTarget = Field("masked", description="paper 4.3: the flow map masked with the segmentation")
    mean_loss_weight: float | None = Field(None, ge=0, description="ours: adds this x the MSE over the whole map to "
                                                                   "the patch loss; None = the recipe's (paper 0: Eq. "
                                                                   "6 alone; cpu CPU_MEAN_LOSS_WEIGHT)")
    encoder_weights: str | None = None

    @field_validator("encoder")
    @classmethod
    def _a_vgg(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("vgg"):
            raise ValueError(f"must be a vgg (paper: vgg16); got {v!r}")
        return v

    @field_validator("scse_stages")
    @classmethod
    def _vgg_blocks(cls, v: list[int]) -> list[int]:
        if not v or any(s not in (1, 2, 3, 4, 5) for s in v):
            raise ValueError(f"must be VGG conv blocks 1..5 (at least one); got {v}")
        return v

    def validate(self) -> MotionConfig:
        self._revalidate()
        return self


class OptimConfig(_Section):
    """Paper 4.3: Adam, lr 1e-3 halved every 10 epochs, patch loss over 16 (4x4) patches."""

    _where: ClassVar[str] = "config.optim"
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (paper 1e-3)")
    lr_step_epochs: int = Field(10, ge=1, description="the lr is multiplied by lr_gamma every N epochs (paper 10)")
    lr_gamma: float = Field(0.5, gt=0, le=1, description="paper 0.5")
    epochs: int = Field(30, ge=1, description="ours: the paper does not say (30 epochs = lr 1e-3 -> 1.25e-4)")
    batch_size: int = Field(8, ge=1, description="ours: the paper does not say")
    patch_grid: int = Field(4, ge=1, description="4 x 4 = 16 patches (Eq. 6)")

    def validate(self) -> OptimConfig:
        self._revalidate()
        return self


class DataConfig(_Section):
    _where: ClassVar[str] = "config.data"
    store: str = Field("", description="teacher store path or fsspec URL (required before training)")
    size: list[int] | None = Field(None, description="[H, W] network input; None = the recipe's: the store "
                                                        "resolution (paper: 256x256), or CPU_SIZE on the cpu recipe")
    limit_videos: int | None = Field(None, ge=1, description="first N training videos (smoke runs)")
    in_memory: bool | None = Field(None, description="None = auto: in memory when the needed arrays fit the "
                                                        "RAM budget")
    ram_budget_gb: float | None = Field(None, description="None = half of the available memory")
    workers: int | None = Field(None, ge=0, description="streaming loader processes; None = min(4, cpus - 1)")
    val_videos: Literal["auto", "none"] | list[str] = Field(
        "auto", description="training videos held out of the gradient for validation (ours: the paper has none): "
                            "'auto' = every 7th training video id, at least one (mtvad.students.validation); "
                            "'none' = no validation; or the ids (a list, or one 'ID,ID' string)")

    @field_validator("val_videos", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in ("auto", "none"):
            v = [part.strip() for part in v.split(",")]
        ids = isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)
        if not (ids or v in ("auto", "none")):
            raise ValueError(f"must be 'auto', 'none' or video ids; got {v!r}")
        if ids and len(set(v)) != len(v):
            raise ValueError(f"names a video twice: {v!r}")
        return v

    @field_validator("size")
    @classmethod
    def _unet_multiples(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) != 2 or any(s < UNET_STRIDE or s % UNET_STRIDE for s in v)):
            raise ValueError(f"must be [H, W], multiples of {UNET_STRIDE} (a UNet of depth 5); got {v}")
        return v

    def validate(self) -> DataConfig:
        self._revalidate()
        if not self.store:
            raise ConfigError("no store given (--store PATH)")
        return self


class RunConfig(_Section):
    _where: ClassVar[str] = "config.run"
    out: str = Field("outputs/train", description="OUT/<branch>/last.pt, log.jsonl, config.json")
    seed: int = 0
    device: Device = Field("auto", description="auto: CUDA when present (with AMP), else CPU")
    amp: Amp = Field("auto", description="auto: bf16 autocast where the hardware has it (CUDA, or a CPU with "
                                         "avx512_bf16 or AMX), fp16 with a grad scaler on older CUDA devices, "
                                         "float32 otherwise; off: float32 (mtvad.students.device)")
    recipe: Recipe = Field("auto", description="auto: paper on CUDA, cpu on a CPU (see resolve_recipe); the "
                                               "settings left unset take the recipe's values")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps in all; None = "
                                                          "the recipe's (paper: none, all epochs; cpu: "
                                                          "CPU_MAX_STEPS)")
    patience: int | None = Field(None, ge=0, description="stop when the best validation loss is this many "
                                                         "validation intervals (x checkpoint_every steps) old; 0 = "
                                                         "never; None = the recipe's (paper: 0; cpu: CPU_PATIENCE)")
    checkpoint_every: int | None = Field(None, ge=1, description="steps; a checkpoint is also written at every "
                                                                 "epoch end and at the stop; None = the recipe's "
                                                                 "(paper 500, cpu CPU_CHECKPOINT_EVERY)")

    def validate(self) -> RunConfig:
        self._revalidate()
        return self


# Settings that may change when a run is resumed: where things are and how long to go on. Everything else
# (model, targets, optimiser, batch size, input size, seed) must equal the checkpoint's.
RESUMABLE_CHANGES = {
    "data.store", "data.in_memory", "data.ram_budget_gb", "data.workers",
    "run.out", "run.device", "run.amp", "run.max_steps", "run.checkpoint_every", "run.patience", "run.recipe",
    "optim.epochs",
    "appearance.encoder_weights", "motion.encoder_weights",  # only the initial weights: the checkpoint wins
}


class TrainConfig(_Section):
    branch: BranchChoice = Field("both", description="appearance | motion | both (one after the other)")
    appearance: AppearanceConfig = Field(default_factory=AppearanceConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    def validate(self) -> TrainConfig:
        """Check everything again (fields may have been assigned since) and that a store is given."""
        self._revalidate()
        self.data.validate()
        return self

    @property
    def branches(self) -> tuple[str, ...]:
        return BRANCHES if self.branch == "both" else (self.branch,)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: Any) -> TrainConfig:
        """A config from its dict (a checkpoint's, a JSON file's); missing keys take the defaults."""
        if not isinstance(d, dict):
            raise ConfigError(f"config: expected a mapping, got {type(d).__name__}")
        return cls(**d)

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Dotted keys whose values differ: {key: (self's, other's)}."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


# The paper's networks (section 3), which the paper recipe trains.
PAPER_APPEARANCE_ENCODER = "resnet34"
PAPER_MOTION_ENCODER = "vgg16"
PAPER_CHECKPOINT_EVERY = 500

# The CPU recipe (ours; the paper trained on a GPU): both branches beat their controls on Ped2's training videos
# in minutes on 2 cores (docs/training.md, CPU recipe; docs/benchmarks.md, training speed). Everything else is
# the paper's.
CPU_SIZE = 128  # input: the store resolution scaled so its longer side is at most this, in multiples of 32, never up
# the paper's resnet34: resnet18 trains 1.5x faster but lowered the synthetic set's pixel AUC (docs/training.md)
CPU_APPEARANCE_ENCODER = "resnet34"
CPU_MOTION_ENCODER = "vgg11"  # the same SCSE stages (VGG blocks 2-4 have vgg16's widths) and attention
CPU_CHECKPOINT_EVERY = 50  # validate (and checkpoint) every N steps
CPU_PATIENCE = 4  # stop when the best validation loss is 4 validation intervals (200 steps) old
CPU_MAX_STEPS = 1000  # the ceiling: optimizer steps per branch (batch 8: about 3 epochs of Ped2)
CPU_MEAN_LOSS_WEIGHT = 1.0  # motion: + 1 x the whole-map MSE (converges in fewer steps: docs/training.md)

# The settings a recipe fills when they are left unset (None). A resumed run takes them from its checkpoint.
RECIPE_SETTINGS = ("data.size", "run.max_steps", "run.checkpoint_every", "run.patience", "motion.mean_loss_weight",
                   "appearance.encoder", "motion.encoder")


def resolve_recipe(config: TrainConfig, device_type: str,
                   store_resolution: tuple[int, int]) -> tuple[TrainConfig, list[str]]:
    """The config with the recipe's values in the settings left unset (None) and `run.recipe` named ('paper' or
    'cpu'; 'auto' = 'paper' on CUDA, 'cpu' otherwise), and the list of what the recipe set (for the log line).
    Settings the user gave are never changed. A resolved config resolves to itself."""
    recipe = config.run.recipe if config.run.recipe != "auto" else ("paper" if device_type == "cuda" else "cpu")
    d = config.to_dict()
    d["run"]["recipe"] = recipe
    chosen: list[str] = []
    if recipe == "cpu":
        for branch, encoder in (("appearance", CPU_APPEARANCE_ENCODER), ("motion", CPU_MOTION_ENCODER)):
            if d[branch]["encoder"] is None:
                d[branch]["encoder"] = encoder
                chosen.append(f"{branch} encoder {encoder}")
        if d["data"]["size"] is None:
            h, w = store_resolution
            scale = min(1.0, CPU_SIZE / max(h, w))
            side = lambda s: max(UNET_STRIDE, int(s * scale) // UNET_STRIDE * UNET_STRIDE)  # noqa: E731
            d["data"]["size"] = [side(h), side(w)]
            chosen.append(f"input {d['data']['size'][0]}x{d['data']['size'][1]}")
        if d["run"]["checkpoint_every"] is None:
            d["run"]["checkpoint_every"] = CPU_CHECKPOINT_EVERY
            chosen.append(f"validation every {CPU_CHECKPOINT_EVERY} steps")
        if d["run"]["patience"] is None:
            d["run"]["patience"] = CPU_PATIENCE
            chosen.append(f"stop {CPU_PATIENCE} validations after the best")
        if d["run"]["max_steps"] is None:
            d["run"]["max_steps"] = CPU_MAX_STEPS
            chosen.append(f"at most {CPU_MAX_STEPS} steps")
        if d["motion"]["mean_loss_weight"] is None:
            d["motion"]["mean_loss_weight"] = CPU_MEAN_LOSS_WEIGHT
            chosen.append(f"motion loss + {CPU_MEAN_LOSS_WEIGHT:g} x the whole-map MSE")
    else:
        for branch, encoder in (("appearance", PAPER_APPEARANCE_ENCODER), ("motion", PAPER_MOTION_ENCODER)):
            if d[branch]["encoder"] is None:
                d[branch]["encoder"] = encoder
        if d["run"]["checkpoint_every"] is None:
            d["run"]["checkpoint_every"] = PAPER_CHECKPOINT_EVERY
        if d["run"]["patience"] is None:
            d["run"]["patience"] = 0
        if d["motion"]["mean_loss_weight"] is None:
            d["motion"]["mean_loss_weight"] = 0.0
    return TrainConfig.from_dict(d), chosen


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _one_line(exc: ValidationError, root: str) -> str:
    """pydantic's errors as one line: unknown keys per section first, then each bad value by its dotted key."""
    unknown: dict[str, list[str]] = {}
    problems: list[str] = []
    for e in exc.errors(include_url=False):
        loc = [str(part) for part in e["loc"]]
        if e["type"] == "extra_forbidden":
            unknown.setdefault(".".join([root, *loc[:-1]]), []).append(loc[-1])
            continue
        key = ".".join([root, *loc])
        got = e.get("input")
        if e["type"] == "literal_error":
            choices = re.findall(r"'([^']*)'", e["ctx"]["expected"])
            problems.append(f"{key} must be one of {', '.join(choices)}; got {got!r}")
        elif e["type"] in ("model_type", "model_attributes_type", "dict_type"):
            problems.append(f"{key}: expected a mapping, got {type(got).__name__}")
        elif e["type"] == "value_error":
            problems.append(f"{key} {e['ctx']['error']}")
        else:
            msg = e["msg"]
            problems.append(f"{key}: {msg[:1].lower()}{msg[1:]}; got {got!r}")
    return "; ".join([f"{where}: unknown settings {sorted(keys)}" for where, keys in unknown.items()] + problems)
