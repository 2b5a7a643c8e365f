"""Training of the two students (paper 4.3), each branch independently: `train(config)`.

Per branch (`mtvad.students.branches`: what it reads, its student, its batches and prediction), in four parts:

- **setup** (`setup_branch`): the recipe's settings (`resolve_recipe`; a resumed run continues its checkpoint's),
  the checks of the store and the input size, the training/validation split, the data (in memory or streaming,
  `mtvad.students.data`), the student (optionally its encoder from a local ImageNet weights file), Adam (lr 1e-3)
  with StepLR (halved every 10 epochs, stepped at each epoch end), and the state of a resumed checkpoint.
- **the validator** (`Validator`): the held-out videos' patch loss beside that of the branch's trivial controls
  (`mtvad.students.validation`), the history of validations, the best one, whether the patience is spent.
- **the checkpoint writer** (`CheckpointWriter`): `last.pt` (to resume), `best.pt` (the lowest validation loss),
  `history.json`; it validates the weights before it writes them.
- **the loop** (`_train_loop`): batches, the patch loss (Eq. 6) between the branch's prediction and its target,
  a checkpoint every `checkpoint_every` steps, at each epoch end and at the stop.

The student runs in channels_last and, where the hardware has it, under bf16 autocast (`mtvad.students.device`:
the first log line says which); the loss and the optimizer stay float32. Training stops at the first of: all
epochs done, `max_steps`, or `patience` validation intervals after the best validation loss. Everything that
decides the result is seeded (torch, numpy, python; sample order depends only on seed and epoch), so `--resume`
from `OUT/<branch>/last.pt` gives the same parameters as an uninterrupted run (on the same device and software).

Validation: a few training videos, named by a fixed rule (every 7th id) or by `--val-videos`, are held out of
the training data; at every checkpoint the student's patch loss on (at most 128 of) their samples is computed,
`best.pt` is written when it is the lowest so far, and a branch whose best loss is not below 0.9 x its best
control's is reported as not converged.

Outputs per branch, under `OUT/<branch>/`: `last.pt` and `best.pt` (see mtvad.students.checkpoint), `log.jsonl`
(one line per step: step, epoch, loss, lr, samples/s, train_seconds), `history.json` (the validation split,
controls, every validation, the best, converged) and `config.json` (the resolved config, for people).

A NaN or infinite loss stops training before that step changes anything; the last checkpoint written (with
finite weights: they are checked before every save) stays as it is, and `TrainingDivergedError` says where.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mtvad import __version__
from mtvad.console import console, warn
from mtvad.errors import ConfigError, TrainingDivergedError
from mtvad.store.access import Store, open_store
from mtvad.students.branches import Branch
from mtvad.students.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    RUN_FILES,
    capture_rng,
    now_utc,
    save_checkpoint,
)
from mtvad.students.config import TrainConfig
from mtvad.students.data import (
    background,
)
from mtvad.students.loss import training_loss
from mtvad.students.models import count_parameters
from mtvad.students.run import BranchRun, setup_branch
from mtvad.students.validation import (
    CONVERGED_RATIO,
    Validator,
    best_control,
)
from mtvad.written import remove_leftovers

STOP_REASONS = {"epochs": "all epochs done", "max_steps": "the step limit", "patience": "no better validation loss"}


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
    stopped: str = "epochs"  # why it stopped: a key of STOP_REASONS
    train_videos: list[str] = field(default_factory=list)
    validation_videos: list[str] = field(default_factory=list)  # [] when validation is off
    controls: dict[str, float] = field(default_factory=dict)  # validation loss of each trivial control
    validation: list[dict[str, Any]] = field(default_factory=list)  # every validation of the run (resumes too)
    best: dict[str, Any] | None = None  # the validation entry of the lowest loss
    best_checkpoint: Path | None = None  # OUT/<branch>/best.pt, when validation ran
    converged: bool | None = None  # None without validation
    precision: str = "float32"  # the forward pass's: 'bfloat16', 'float16' or 'float32'


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict[str, BranchResult]:
    """Train the configured branch(es) one after the other; returns each branch's result."""
    config.validate()
    store = open_store(config.data.store, validate=False)  # check_store checks what each branch needs
    if len(store.classes) < 2:
        raise ConfigError(f"{store.url}: the store's class vocabulary {store.classes} has fewer than 2 classes")
    return {branch: train_branch(config, branch, store, resume=resume, progress=progress)
            for branch in config.branches}


def train_branch(config: TrainConfig, branch: str | Branch, store: Store, *, resume: bool = False,
                 progress: bool = True) -> BranchResult:
    run = setup_branch(config, branch, store, resume=resume)
    validator = Validator(run)
    writer = CheckpointWriter(run, validator)
    _announce(run, validator)
    result = _train_loop(run, validator, writer, progress)
    remove_leftovers(run.out_dir, RUN_FILES)  # a killed run's, now old enough (setup_branch removed the older)
    return result


def _announce(run: BranchRun, validator: Validator) -> None:
    """The run's first log lines: device and precision, recipe, data, validation."""
    config, name = run.config, run.name
    recipe = config.run.recipe
    console.print(f"{name}: device {run.device}, {run.precision.reason}; recipe {recipe}"
                  + (" (no CUDA device)" if recipe == "cpu" and run.device.type != "cuda" else "")
                  + (f": {', '.join(run.chosen)}" if run.chosen else "")
                  + ("; --recipe paper for the paper's (its networks, the store resolution, all epochs)"
                     if recipe == "cpu" else ""), highlight=False)
    data = run.data
    console.print(f"{name}: {len(data.dataset)} samples from {len(data.dataset.video_ids)} videos "
                  f"({'in memory' if data.in_memory else 'streaming'}, {data.needed_bytes / 2**20:.0f} MiB), "
                  f"input {run.size[0]}x{run.size[1]}, batch {config.optim.batch_size}, {len(data.sampler)} "
                  f"steps/epoch, {count_parameters(run.model) / 1e6:.2f} M parameters, "
                  f"{getattr(run.model, 'encoder_name', 'the')} encoder from {run.encoder_init['init']}"
                  + (f", resuming at step {run.step}" if run.ckpt else ""), highlight=False)
    if validator.active:
        shown = ", ".join(f"{k} {v:.5g}" for k, v in validator.controls.items())
        console.print(f"{name}: validation on {validator.n_samples} samples of {len(run.val_ids)} held-out training "
                      f"video(s) ({', '.join(run.val_ids)}); control losses: {shown}", highlight=False)


# ------------------------------------------------------------------------------------------- checkpoint writer


class CheckpointWriter:
    """Validates and writes `last.pt`, then `best.pt` when the validation is the best so far, then history.json."""

    def __init__(self, run: BranchRun, validator: Validator):
        self.run, self.validator = run, validator
        self.last_saved: int | None = run.step if run.ckpt is not None else None
        best = validator.best
        if run.ckpt is not None and best is not None and best["step"] == run.step:
            _recover_best(run.ckpt_file, run.best_file, run.step)  # killed between writing last.pt and best.pt

    def last_good(self) -> str:
        """Where the last checkpoint with finite weights is, for the divergence errors."""
        return (f"{self.run.ckpt_file} (step {self.last_saved})" if self.last_saved is not None
                else "none was written")

    def save(self) -> None:
        run = self.run
        if not _finite_parameters(run.model):
            raise TrainingDivergedError(f"{run.name}: non-finite weights at step {run.step}; not saved. Last good "
                                        f"checkpoint: {self.last_good()}")
        improved = self.validator.validate()
        payload = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "branch": run.name, "config": run.config.to_dict(),
            "store": run.store.identity(), "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "epoch": run.epoch, "step_in_epoch": run.step_in_epoch,
            "step": run.step, "rng": capture_rng(), "encoder_init": run.encoder_init, "n_classes": run.n_classes,
            "input_size": run.size, "loss": run.last_loss, "train_seconds": run.train_seconds(),
            "precision": run.precision.name, "vad_version": __version__, "torch_version": str(torch.__version__),
            "created": now_utc(), **self.validator.state(),
        }
        if run.scaler is not None:
            payload["grad_scaler"] = run.scaler.state_dict()
        save_checkpoint(run.ckpt_file, payload)
        if improved:  # after last.pt: a kill in between is mended by the resume (_recover_best)
            save_checkpoint(run.best_file, _weights_only(payload))
        self.last_saved = run.step
        self.validator.write_history()

    def finish(self) -> None:
        """At the stop: the last state saved, best.pt's validation fields brought up to the whole run's."""
        run, validator = self.run, self.validator
        if self.last_saved != run.step:
            self.save()
        if validator.added and validator.best is not None and validator.best["step"] != run.step:
            _update_best(run.best_file, validator.state())  # not on a resume with nothing to do: same bytes
        validator.write_history()


def _finite_parameters(model: torch.nn.Module) -> bool:
    norms = [p.detach().float().norm() for p in model.parameters()]
    return bool(torch.isfinite(torch.stack(norms)).all())


def _checkpoint_step(path: Path) -> int | None:
    """The step of the checkpoint at `path`, or None if there is none (or it is unreadable)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
    except Exception:  # missing, torn, foreign: a new best.pt is written
        return None


def _weights_only(payload: dict[str, Any]) -> dict[str, Any]:
    """best.pt's payload: last.pt's without the optimizer and grad scaler states (2/3 of its size with Adam), which
    only a resume needs, and a resume reads last.pt."""
    out = {k: v for k, v in payload.items() if k != "grad_scaler"}
    out["optimizer"] = {}
    return out


def _recover_best(ckpt_file: Path, best_file: Path, step: int) -> None:
    """last.pt is the best checkpoint (its history says so) but best.pt is not it (a kill between the two writes):
    write best.pt from last.pt."""
    if _checkpoint_step(best_file) != step:
        save_checkpoint(best_file, _weights_only(torch.load(ckpt_file, map_location="cpu", weights_only=True)))


def _update_best(best_file: Path, state: dict[str, Any]) -> None:
    """Bring best.pt's validation fields up to the end of the run (its weights and step stay)."""
    if not best_file.exists():
        warn(f"{best_file} is missing (removed during the run?): not rewritten", highlight=False)
        return
    payload = torch.load(best_file, map_location="cpu", weights_only=True)
    payload.update(state)
    save_checkpoint(best_file, payload)


# -------------------------------------------------------------------------------------------------------- loop


def _train_loop(run: BranchRun, validator: Validator, writer: CheckpointWriter, progress: bool) -> BranchResult:
    config, name, data = run.config, run.name, run.data
    branch, model, optimizer, scaler = run.branch, run.model, run.optimizer, run.scaler
    epochs, max_steps = config.optim.epochs, config.run.max_steps
    steps_per_epoch = len(data.sampler)
    total = epochs * steps_per_epoch if max_steps is None else min(epochs * steps_per_epoch, max_steps)
    mean_weight = branch.mean_loss_weight(config)
    autocast = run.precision.autocast()
    losses: list[float] = []
    samples = 0
    run.t_start = time.perf_counter()
    stopped = "epochs"
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} samples/s"),
               TextColumn("epoch {task.fields[epoch]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not progress, transient=False) as bar, \
            open(run.out_dir / "log.jsonl", "a") as log:
        task = bar.add_task(name, total=total, completed=min(run.step, total), loss="-", rate="-",
                            epoch=f"{run.epoch + 1}/{epochs}")
        ema_rate = None
        while run.epoch < epochs:
            if validator.patience_spent():
                stopped = "patience"
                break
            if max_steps is not None and run.step >= max_steps:
                stopped = "max_steps"
                break
            data.sampler.set_epoch(run.epoch)
            data.sampler.skip(run.step_in_epoch)
            epoch_losses = []
            t_step = time.perf_counter()
            for raw in background(data.loader):
                if max_steps is not None and run.step >= max_steps:
                    break
                inputs, target = branch.batch(raw, config, run.n_classes, run.resize_to, run.device)
                loss = training_loss(branch.predict(model, inputs, autocast), target, config.optim.patch_grid,
                                     mean_weight)
                value = float(loss.detach())
                if not math.isfinite(value):
                    log.write(json.dumps({"step": run.step + 1, "epoch": run.epoch + 1, "loss": str(value),
                                          "event": "diverged"}) + "\n")
                    log.flush()
                    raise TrainingDivergedError(
                        f"{name}: loss is {value} at step {run.step + 1} (epoch {run.epoch + 1}); training stopped "
                        f"without saving. Last good checkpoint: {writer.last_good()}. Try a lower --lr")
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                run.step += 1
                run.step_in_epoch += 1
                run.last_loss = value
                losses.append(value)
                epoch_losses.append(value)
                n = len(next(iter(raw.values())))
                samples += n
                now = time.perf_counter()
                rate = n / max(now - t_step, 1e-9)
                t_step = now
                ema_rate = rate if ema_rate is None else 0.9 * ema_rate + 0.1 * rate
                log.write(json.dumps({"step": run.step, "epoch": run.epoch + 1, "loss": value,
                                      "lr": optimizer.param_groups[0]["lr"], "samples_per_s": round(rate, 2),
                                      "train_seconds": round(run.train_seconds(), 2)}) + "\n")
                bar.update(task, completed=min(run.step, total), loss=f"{value:.4g}", rate=f"{ema_rate:.1f}")
                if run.step % config.run.checkpoint_every == 0:
                    log.flush()
                    writer.save()
                    if validator.patience_spent():
                        break
            if run.step_in_epoch < steps_per_epoch:  # stopped inside the epoch: by --max-steps or the patience
                stopped = "patience" if validator.patience_spent() else "max_steps"
                break
            run.epoch += 1
            run.step_in_epoch = 0
            run.scheduler.step()
            writer.save()
            bar.update(task, epoch=f"{min(run.epoch + 1, epochs)}/{epochs}")
            if epoch_losses:
                console.print(f"{name} epoch {run.epoch}/{epochs}: mean loss {np.mean(epoch_losses):.5g}, "
                              f"last {epoch_losses[-1]:.5g}, lr now {optimizer.param_groups[0]['lr']:.3g}, "
                              f"checkpoint {run.ckpt_file}", highlight=False)
        writer.finish()
    elapsed = time.perf_counter() - run.t_start
    state = validator.state()
    best = validator.best
    result = BranchResult(name, run.ckpt_file, run.step, run.epoch, losses, samples / elapsed if samples else 0.0,
                          data.in_memory, count_parameters(model), stopped, list(run.train_ids), list(run.val_ids),
                          dict(validator.controls), state["validation"], best,
                          run.best_file if best is not None else None, state["converged"], run.precision.name)
    patience = (f" for {config.run.patience * config.run.checkpoint_every} steps" if stopped == "patience" else "")
    console.print(f"{name}: stopped ({STOP_REASONS[stopped]}{patience}) at step {run.step}, epoch "
                  f"{run.epoch}/{epochs}; {result.samples_per_s:.2f} samples/s; checkpoint {run.ckpt_file}"
                  + (f"; best validation loss {best['loss']:.5g} at step {best['step']}: {run.best_file}"
                     if best else ""), highlight=False)
    if result.converged is False:
        cname, cvalue = best_control(validator.controls)
        said = (f"its best validation loss {best['loss']:.5g} (step {best['step']})" if best
                else "it has no finite validation loss")
        warn(f"{name} has not converged: {said} is not below {CONVERGED_RATIO} x that of its best trivial control "
             f"({cname} {cvalue:.5g}), so its scores would mostly measure what the control gives for free: train "
             "longer (--max-steps, --patience, --epochs) or check the store", highlight=False)
    return result
