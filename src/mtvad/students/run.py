"""A branch's training run as set up (`setup_branch` -> `BranchRun`): the recipe's settings (`resolve_recipe`; a
resumed run continues with its checkpoint's), the checks of the store and the input size, the training/validation
split, the data (`mtvad.students.data`), the student (in channels_last; optionally its encoder from a local ImageNet
weights file), Adam (lr 1e-3) with StepLR (halved every 10 epochs, stepped at each epoch end), the precision
(`mtvad.students.device`), and the state of a resumed checkpoint. `mtvad.students.train` runs the loop."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtvad.console import warn
from mtvad.errors import CheckpointError, ConfigError
from mtvad.store.access import Store
from mtvad.students.branches import BRANCHES, Branch, channels_last, get_branch
from mtvad.students.checkpoint import (
    RUN_FILES,
    best_path,
    check_fits_store,
    checkpoint_path,
    load_checkpoint,
    restore_rng,
)
from mtvad.students.config import RECIPE_SETTINGS, RESUMABLE_CHANGES, UNET_STRIDE, TrainConfig, resolve_recipe
from mtvad.students.data import TrainData, make_train_data, n_outputs
from mtvad.students.device import Precision, pick_device, precision_for
from mtvad.students.models import load_encoder_weights
from mtvad.students.validation import split_videos
from mtvad.written import remove_leftovers, write_json


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CUDA generators too


@dataclass
class BranchRun:
    """One branch's run as set up: its resolved config, data, student, optimizer and where it starts."""

    branch: Branch
    config: TrainConfig  # resolved: the recipe's values filled in
    chosen: list[str]  # what the recipe set, for the log
    store: Store
    device: torch.device
    precision: Precision
    size: list[int]  # the network input [H, W]
    n_classes: int
    train_ids: list[str]
    val_ids: list[str]
    data: TrainData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    encoder_init: dict[str, Any]
    ckpt: dict[str, Any] | None  # the checkpoint resumed from
    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0
    step: int = 0  # optimizer steps in all
    last_loss: float = float("nan")
    seconds_before: float = 0.0  # training seconds of the runs before a resume
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def name(self) -> str:
        return self.branch.name

    @property
    def out_dir(self) -> Path:
        return Path(self.config.run.out) / self.name

    @property
    def ckpt_file(self) -> Path:
        return checkpoint_path(self.config.run.out, self.name)

    @property
    def best_file(self) -> Path:
        return best_path(self.config.run.out, self.name)

    @property
    def resize_to(self) -> list[int] | None:
        return None if self.size == list(self.store.resolution) else self.size

    def train_seconds(self) -> float:
        """Wall seconds of training so far, the runs before a resume included (validation included)."""
        return self.seconds_before + time.perf_counter() - self.t_start


def setup_branch(config: TrainConfig, branch: str | Branch, store: Store, *, resume: bool = False) -> BranchRun:
    """Everything a branch's training loop starts from, checked; a resumed run's state restored."""
    branch = get_branch(branch)
    name = branch.name
    device = pick_device(config.run.device)
    ckpt_file, best_file = checkpoint_path(config.run.out, name), best_path(config.run.out, name)
    ckpt = None
    if resume:
        if not ckpt_file.exists():
            raise CheckpointError(f"{ckpt_file}: no checkpoint to resume (train without --resume first)")
        ckpt = load_checkpoint(ckpt_file, branch=name)
        check_fits_store(ckpt_file, ckpt, store, remedy="start a new --out instead of --resume")
        old_recipe = _checkpoint_recipe(ckpt)
        if config.run.recipe == "auto":  # a resume continues the recipe it was started with
            config = _with_recipe(config, old_recipe)
        ckpt["config_obj"] = resolve_recipe(_with_recipe(ckpt["config_obj"], old_recipe), device.type,
                                            store.resolution)[0]
        config = _unset_from(config, ckpt["config_obj"])  # ... with the values its recipe chose then
    config, chosen = resolve_recipe(config, device.type, store.resolution)
    if ckpt is not None:
        _resume_checks(ckpt_file, ckpt, config)
    else:
        for existing in (ckpt_file, best_file):
            if existing.exists():
                raise CheckpointError(f"{existing}: a checkpoint is already there: pass --resume to continue that "
                                      "run, or choose another --out")

    size = list(config.data.size) if config.data.size else list(store.resolution)
    if any(s % UNET_STRIDE for s in size):
        raise ConfigError(f"{store.url}: the store resolution {size[0]}x{size[1]} is not a multiple of "
                          f"{UNET_STRIDE} (a 5-stage UNet): give --size, e.g. --size 256")
    if any(s % config.optim.patch_grid for s in size):
        raise ConfigError(f"input {size[0]}x{size[1]} does not split into a {config.optim.patch_grid}x"
                          f"{config.optim.patch_grid} grid of equal patches: change --patch-grid or --size")
    train_ids, val_ids = _split(store, config, ckpt, ckpt_file, name)
    precision = precision_for(device, config.run.amp)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(config.run.seed)
    n_classes = n_outputs(store.classes)  # one output per class id up to the largest (COCO ids are sparse)
    model = branch.build_model(config, n_classes)
    encoder_init: dict[str, Any] = {"init": "scratch"}
    weights = branch.encoder_weights(config)
    if weights and ckpt is None:  # before the data: a bad file is reported at once
        encoder_init = load_encoder_weights(model.encoder, weights, branch.encoder_name(config))
    data = make_train_data(store, branch, config, device, video_ids=train_ids)
    store.validate()  # and every other video's metadata: a store trained on is trusted as complete
    model = channels_last(model.to(device)).train()
    # fused Adam: one kernel over all parameters (2-3x faster than the default on CPU, same algorithm)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr, fused=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.optim.lr_step_epochs,
                                                gamma=config.optim.lr_gamma)
    scaler = torch.amp.GradScaler("cuda") if precision.scaler else None
    run = BranchRun(branch, config, chosen, store, device, precision, size, n_classes, train_ids, val_ids, data,
                    model, optimizer, scheduler, scaler, encoder_init, ckpt)
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{ckpt_file}: its weights do not fit this model ({str(exc)[:200]})") from None
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("grad_scaler"):
            scaler.load_state_dict(ckpt["grad_scaler"])
        run.epoch, run.step_in_epoch, run.step = int(ckpt["epoch"]), int(ckpt["step_in_epoch"]), int(ckpt["step"])
        run.encoder_init = ckpt["encoder_init"]
        run.last_loss = float(ckpt.get("loss", float("nan")))
        run.seconds_before = float(ckpt.get("train_seconds", 0.0))
        restore_rng(ckpt["rng"])

    run.out_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(run.out_dir, RUN_FILES)  # what a killed run left (again when this run ends)
    write_json(run.out_dir / "config.json", config.to_dict())
    _trim_log(run.out_dir / "log.jsonl", run.step if ckpt is not None else 0)
    if ckpt is None and (run.out_dir / "history.json").exists():
        (run.out_dir / "history.json").unlink()  # a fresh run's history starts empty (like its log)
    return run


def _resume_checks(path: Path, ckpt: dict[str, Any], config: TrainConfig) -> None:
    """The resumed run's settings equal the checkpoint's, except the resumable ones and other branches' sections."""
    old: TrainConfig = ckpt["config_obj"]
    others = set(BRANCHES) - {ckpt["branch"]}
    diffs = {k: v for k, v in old.differences(config).items()
             if k not in RESUMABLE_CHANGES and k != "branch" and k.split(".")[0] not in others}
    if diffs:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diffs.items())[:6])
        raise CheckpointError(f"{path}: --resume continues that run with its own settings, but these differ: "
                              f"{listed}. Drop those flags, or start a new --out")


def _checkpoint_recipe(ckpt: dict[str, Any]) -> str:
    """The recipe a checkpoint was trained with: its config's, or 'paper' for one from before recipes (its unset
    settings meant the paper's: the store resolution, all epochs, Eq. 6 alone)."""
    recipe = ckpt["config"].get("run", {}).get("recipe")
    return recipe if recipe in ("paper", "cpu") else "paper"


def _with_recipe(config: TrainConfig, recipe: str) -> TrainConfig:
    d = config.to_dict()
    d["run"]["recipe"] = recipe
    return TrainConfig.from_dict(d)


def _unset_from(config: TrainConfig, resolved: TrainConfig) -> TrainConfig:
    """`config` with the recipe's settings it leaves unset taken from `resolved` (a checkpoint's config), so a
    resumed run keeps what its recipe chose when it started, whatever the recipe's values are today."""
    d, old = config.to_dict(), resolved.to_dict()
    for key in RECIPE_SETTINGS:
        section, name = key.split(".")
        if d[section][name] is None:
            d[section][name] = old[section][name]
    return TrainConfig.from_dict(d)


def _split(store: Store, config: TrainConfig, ckpt: dict[str, Any] | None, ckpt_file: Path,
           name: str) -> tuple[list[str], list[str]]:
    """(training video ids, validation video ids) of this run; a resumed run must have the checkpoint's."""
    all_ids = store.video_ids("train")
    if ckpt is not None and "validation_videos" not in ckpt:  # trained before validation existed: on all
        warn(f"{ckpt_file} was trained on all training videos (a checkpoint "
             "from before validation): it resumes without validation", highlight=False)
        return all_ids[: config.data.limit_videos], []
    train_ids, val_ids = split_videos(all_ids, config.data.val_videos)
    train_ids = train_ids[: config.data.limit_videos]
    if ckpt is not None and (list(ckpt["validation_videos"]) != val_ids
                             or list(ckpt.get("train_videos", train_ids)) != train_ids):
        raise CheckpointError(f"{ckpt_file}: trained on videos {ckpt.get('train_videos')} with validation "
                              f"videos {ckpt['validation_videos']}, but this run would train on {train_ids} and "
                              f"validate on {val_ids}: start a new --out instead of --resume")
    if not val_ids and config.data.val_videos == "auto":
        warn(f"{store.url}: {len(all_ids)} training video(s): none can be held out, "
             f"{name} is trained without validation (and no best.pt)", highlight=False)
    return train_ids, val_ids


def _trim_log(path: Path, keep_until_step: int) -> None:
    """A resumed run rewrites the steps after its checkpoint: drop them from the log (all of it when fresh)."""
    if not path.exists():
        return
    if keep_until_step <= 0:
        path.unlink()
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= keep_until_step and "event" not in json.loads(line):
                kept.append(line)
        except (ValueError, TypeError):
            continue
    path.write_text("".join(k + "\n" for k in kept))
