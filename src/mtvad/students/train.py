"""Training of the two students (paper 4.3), each branch independently: `train(config)`.

Per branch (`mtvad.students.branches`: what it reads, its student, its batches and prediction): check the store
has what the branch needs, build the data (in memory or streaming, `mtvad.students.data`), build the student,
optionally load ImageNet encoder weights from a local file, then Adam (lr 1e-3) with StepLR (halved every 10
epochs, stepped at each epoch end) on the patch loss (Eq. 6) between the branch's prediction and its target.
Everything that decides the result is seeded (torch, numpy, python; sample order depends only on seed and
epoch), so `--resume` from `OUT/<branch>/last.pt` gives the same parameters as an uninterrupted run (on the
same device and software).

Outputs per branch, under `OUT/<branch>/`: `last.pt` (see mtvad.students.checkpoint), `log.jsonl` (one line per step:
step, epoch, loss, lr, samples/s) and `config.json` (the config, for people).

A NaN or infinite loss stops training before that step changes anything; the last checkpoint written (with
finite weights: they are checked before every save) stays as it is, and `TrainingDivergedError` says where.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mtvad import __version__
from mtvad.console import console
from mtvad.errors import CheckpointError, ConfigError, TrainingDivergedError
from mtvad.store.access import Store, open_store
from mtvad.students.branches import BRANCHES, Branch, get_branch
from mtvad.students.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    capture_rng,
    check_fits_store,
    checkpoint_path,
    load_checkpoint,
    now_utc,
    restore_rng,
    save_checkpoint,
)
from mtvad.students.config import RESUMABLE_CHANGES, TrainConfig
from mtvad.students.data import background, make_train_data
from mtvad.students.loss import patch_loss
from mtvad.students.models import count_parameters, load_encoder_weights


@dataclass
class BranchResult:
    branch: str
    checkpoint: Path
    step: int  # optimizer steps done in all (resumed runs included)
    epoch: int  # completed epochs
    losses: list[float] = field(default_factory=list)  # loss of every step run by this call
    samples_per_s: float = 0.0  # over this call's steps, data loading included
    in_memory: bool = True
    parameters: int = 0
    stopped: str = "epochs"  # 'epochs' (all done) or 'max_steps'


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is available")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CUDA generators too


def amp_settings(device: torch.device, amp: str) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a grad scaler is needed): bf16 where supported, else fp16 + scaler."""
    if device.type != "cuda" or amp == "off":
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict[str, BranchResult]:
    """Train the configured branch(es) one after the other; returns each branch's result."""
    config.validate()
    store = open_store(config.data.store, validate=False)  # check_store checks what each branch needs
    if len(store.classes) < 2:
        raise ConfigError(f"{store.url}: the store's class vocabulary {store.classes} has fewer than 2 classes")
    return {branch: train_branch(config, branch, store, resume=resume, progress=progress)
            for branch in config.branches}


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


def _finite_parameters(model: torch.nn.Module) -> bool:
    norms = [p.detach().float().norm() for p in model.parameters()]
    return bool(torch.isfinite(torch.stack(norms)).all())


def train_branch(config: TrainConfig, branch: str | Branch, store: Store, *, resume: bool = False,
                 progress: bool = True) -> BranchResult:
    branch = get_branch(branch)
    name = branch.name
    out_dir = Path(config.run.out) / name
    ckpt_file = checkpoint_path(config.run.out, name)
    ckpt = None
    if resume:
        if not ckpt_file.exists():
            raise CheckpointError(f"{ckpt_file}: no checkpoint to resume (train without --resume first)")
        ckpt = load_checkpoint(ckpt_file, branch=name)
        check_fits_store(ckpt_file, ckpt, store, remedy="start a new --out instead of --resume")
        _resume_checks(ckpt_file, ckpt, config)
    elif ckpt_file.exists():
        raise CheckpointError(f"{ckpt_file}: a checkpoint is already there: pass --resume to continue that run, "
                              "or choose another --out")

    size = list(config.data.size) if config.data.size else list(store.resolution)
    if any(s % 32 for s in size):
        raise ConfigError(f"{store.url}: the store resolution {size[0]}x{size[1]} is not a multiple of 32 (a "
                          "5-stage UNet): give --size, e.g. --size 256")
    if any(s % config.optim.patch_grid for s in size):
        raise ConfigError(f"input {size[0]}x{size[1]} does not split into a {config.optim.patch_grid}x"
                          f"{config.optim.patch_grid} grid of equal patches: change --patch-grid or --size")
    device = pick_device(config.run.device)
    amp_dtype, needs_scaler = amp_settings(device, config.run.amp)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(config.run.seed)
    n_classes = len(store.classes)
    model = branch.build_model(config, n_classes)
    encoder_init: dict[str, Any] = {"init": "scratch"}
    weights = branch.encoder_weights(config)
    if weights and ckpt is None:  # before the data: a bad file is reported at once
        encoder_init = load_encoder_weights(model.encoder, weights, branch.encoder_name(config))
    data = make_train_data(store, branch, config, device)
    model.to(device).train()
    # fused Adam: one kernel over all parameters (2-3x faster than the default on CPU, same algorithm)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.lr, fused=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.optim.lr_step_epochs,
                                                gamma=config.optim.lr_gamma)
    scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
    epoch = step_in_epoch = step = 0
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{ckpt_file}: its weights do not fit this model ({str(exc)[:200]})") from None
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("grad_scaler"):
            scaler.load_state_dict(ckpt["grad_scaler"])
        epoch, step_in_epoch, step = int(ckpt["epoch"]), int(ckpt["step_in_epoch"]), int(ckpt["step"])
        encoder_init = ckpt["encoder_init"]
        restore_rng(ckpt["rng"])

    resize_to = None if size == list(store.resolution) else size
    store_info = store.identity()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    log_path = out_dir / "log.jsonl"
    _trim_log(log_path, step if ckpt is not None else 0)

    steps_per_epoch = len(data.sampler)
    epochs, max_steps = config.optim.epochs, config.run.max_steps
    total = epochs * steps_per_epoch if max_steps is None else min(epochs * steps_per_epoch, max_steps)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    last_saved = step if ckpt is not None else None
    last_loss = float(ckpt.get("loss", float("nan"))) if ckpt is not None else float("nan")

    def save() -> None:
        nonlocal last_saved
        if not _finite_parameters(model):
            raise TrainingDivergedError(
                f"{name}: non-finite weights at step {step}; not saved. Last good checkpoint: "
                + (f"{ckpt_file} (step {last_saved})" if last_saved is not None else "none was written"))
        payload = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "branch": name, "config": config.to_dict(),
            "store": store_info, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "step_in_epoch": step_in_epoch, "step": step,
            "rng": capture_rng(), "encoder_init": encoder_init, "n_classes": n_classes, "input_size": size,
            "loss": last_loss, "vad_version": __version__, "torch_version": str(torch.__version__), "created": now_utc(),
        }
        if scaler is not None:
            payload["grad_scaler"] = scaler.state_dict()
        save_checkpoint(ckpt_file, payload)
        last_saved = step

    def compute_loss(raw) -> torch.Tensor:
        inputs, target = branch.batch(raw, config, n_classes, resize_to, device)
        return patch_loss(branch.predict(model, inputs, autocast), target, config.optim.patch_grid)

    n_params = count_parameters(model)
    console.print(f"[bold]{name}[/]: {len(data.dataset)} samples from {len(data.dataset.video_ids)} videos "
                  f"({'in memory' if data.in_memory else 'streaming'}, {data.needed_bytes / 2**20:.0f} MiB), "
                  f"input {size[0]}x{size[1]}, batch {config.optim.batch_size}, {steps_per_epoch} steps/epoch, "
                  f"{n_params / 1e6:.2f} M parameters, device {device}"
                  + (f" ({str(amp_dtype).removeprefix('torch.')} autocast)" if amp_dtype else "")
                  + f", encoder {encoder_init['init']}" + (f", resuming at step {step}" if ckpt else ""),
                  highlight=False)

    losses: list[float] = []
    samples = 0
    t_start = time.perf_counter()
    stopped = "epochs"
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} samples/s"),
               TextColumn("epoch {task.fields[epoch]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar, \
            open(log_path, "a") as log:
        task = bar.add_task(name, total=total, completed=min(step, total), loss="-", rate="-",
                            epoch=f"{epoch + 1}/{epochs}")
        ema_rate = None
        while epoch < epochs:
            if max_steps is not None and step >= max_steps:
                stopped = "max_steps"
                break
            data.sampler.set_epoch(epoch)
            data.sampler.skip(step_in_epoch)
            epoch_losses = []
            t_step = time.perf_counter()
            for raw in background(data.loader):
                if max_steps is not None and step >= max_steps:
                    break
                loss = compute_loss(raw)
                value = float(loss.detach())
                if not math.isfinite(value):
                    log.write(json.dumps({"step": step + 1, "epoch": epoch + 1, "loss": str(value),
                                          "event": "diverged"}) + "\n")
                    log.flush()
                    raise TrainingDivergedError(
                        f"{name}: loss is {value} at step {step + 1} (epoch {epoch + 1}); training stopped "
                        "without saving. Last good checkpoint: "
                        + (f"{ckpt_file} (step {last_saved})" if last_saved is not None else "none was written")
                        + ". Try a lower --lr")
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                step += 1
                step_in_epoch += 1
                last_loss = value
                losses.append(value)
                epoch_losses.append(value)
                n = len(next(iter(raw.values())))
                samples += n
                now = time.perf_counter()
                rate = n / max(now - t_step, 1e-9)
                t_step = now
                ema_rate = rate if ema_rate is None else 0.9 * ema_rate + 0.1 * rate
                log.write(json.dumps({"step": step, "epoch": epoch + 1, "loss": value,
                                      "lr": optimizer.param_groups[0]["lr"],
                                      "samples_per_s": round(rate, 2)}) + "\n")
                bar.update(task, completed=min(step, total), loss=f"{value:.4g}", rate=f"{ema_rate:.1f}")
                if step % config.run.checkpoint_every == 0:
                    log.flush()
                    save()
            if step_in_epoch < steps_per_epoch:  # stopped inside the epoch by --max-steps
                stopped = "max_steps"
                break
            epoch += 1
            step_in_epoch = 0
            scheduler.step()
            save()
            bar.update(task, epoch=f"{min(epoch + 1, epochs)}/{epochs}")
            if epoch_losses:
                console.print(f"{name} epoch {epoch}/{epochs}: mean loss {np.mean(epoch_losses):.5g}, "
                              f"last {epoch_losses[-1]:.5g}, lr now {optimizer.param_groups[0]['lr']:.3g}, "
                              f"checkpoint {ckpt_file}", highlight=False)
        if last_saved != step:
            save()
    elapsed = time.perf_counter() - t_start
    result = BranchResult(name, ckpt_file, step, epoch, losses, samples / elapsed if samples else 0.0,
                          data.in_memory, n_params, stopped)
    console.print(f"{name}: stopped ({stopped}) at step {step}, epoch {epoch}/{epochs}; "
                  f"{result.samples_per_s:.2f} samples/s; checkpoint {ckpt_file}", highlight=False)
    return result


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
