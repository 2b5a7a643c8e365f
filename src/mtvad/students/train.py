"""Training of the two students (paper 4.3), each branch independently: `train(config)`.

Per branch (`mtvad.students.branches`: what it reads, its student, its batches and prediction): check the store
has what the branch needs, build the data (in memory or streaming, `mtvad.students.data`), build the student,
optionally load ImageNet encoder weights from a local file, then Adam (lr 1e-3) with StepLR (halved every 10
epochs, stepped at each epoch end) on the patch loss (Eq. 6) between the branch's prediction and its target.
Everything that decides the result is seeded (torch, numpy, python; sample order depends only on seed and
epoch), so `--resume` from `OUT/<branch>/last.pt` gives the same parameters as an uninterrupted run (on the
same device and software).

Validation (`mtvad.students.validation`): a few training videos, named by a fixed rule (every 7th id) or by
`--val-videos`, are held out of the training data; at every checkpoint (every `checkpoint_every` steps, each
epoch end, the stop) the student's patch loss on them is computed beside that of the branch's trivial controls,
`best.pt` is written when it is the lowest so far, and a branch whose best loss is not below 0.9 x its best
control's is reported as not converged.

Outputs per branch, under `OUT/<branch>/`: `last.pt` (to resume) and `best.pt` (the lowest validation loss; see
mtvad.students.checkpoint), `log.jsonl` (one line per step: step, epoch, loss, lr, samples/s, train_seconds),
`history.json` (the validation split, controls, every validation, the best, converged) and `config.json` (the
config, for people).

A NaN or infinite loss stops training before that step changes anything; the last checkpoint written (with
finite weights: they are checked before every save) stays as it is, and `TrainingDivergedError` says where.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mtvad import __version__
from mtvad.console import console, warn
from mtvad.errors import CheckpointError, ConfigError, TrainingDivergedError
from mtvad.store.access import Store, open_store
from mtvad.students.branches import BRANCHES, Branch, get_branch
from mtvad.students.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    best_path,
    capture_rng,
    check_fits_store,
    checkpoint_path,
    load_checkpoint,
    now_utc,
    restore_rng,
    save_checkpoint,
)
from mtvad.students.config import RESUMABLE_CHANGES, TrainConfig, resolve_recipe
from mtvad.students.data import (
    InMemoryDataset,
    StoreSamples,
    StreamingDataset,
    background,
    check_store,
    make_train_data,
    n_outputs,
)
from mtvad.students.device import amp_settings, pick_device
from mtvad.students.loss import training_loss
from mtvad.students.validation import (
    CONVERGED_RATIO,
    CRITERION,
    RULE,
    best_control,
    best_entry,
    control_losses,
    converged,
    mean_target,
    split_videos,
    validation_loss,
)
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
    train_videos: list[str] = field(default_factory=list)
    validation_videos: list[str] = field(default_factory=list)  # [] when validation is off
    controls: dict[str, float] = field(default_factory=dict)  # validation loss of each trivial control
    validation: list[dict[str, Any]] = field(default_factory=list)  # every validation of the run (resumes too)
    best: dict[str, Any] | None = None  # the validation entry of the lowest loss
    best_checkpoint: Path | None = None  # OUT/<branch>/best.pt, when validation ran
    converged: bool | None = None  # None without validation


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CUDA generators too


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


def _checkpoint_recipe(ckpt: dict[str, Any]) -> str:
    """The recipe a checkpoint was trained with: its config's, or 'paper' for one from before recipes (its unset
    settings meant the paper's: the store resolution, all epochs, Eq. 6 alone)."""
    recipe = ckpt["config"].get("run", {}).get("recipe")
    return recipe if recipe in ("paper", "cpu") else "paper"


def _with_recipe(config: TrainConfig, recipe: str) -> TrainConfig:
    d = config.to_dict()
    d["run"]["recipe"] = recipe
    return TrainConfig.from_dict(d)


def _finite_parameters(model: torch.nn.Module) -> bool:
    norms = [p.detach().float().norm() for p in model.parameters()]
    return bool(torch.isfinite(torch.stack(norms)).all())


def train_branch(config: TrainConfig, branch: str | Branch, store: Store, *, resume: bool = False,
                 progress: bool = True) -> BranchResult:
    branch = get_branch(branch)
    name = branch.name
    device = pick_device(config.run.device)
    out_dir = Path(config.run.out) / name
    ckpt_file = checkpoint_path(config.run.out, name)
    best_file = best_path(config.run.out, name)
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
    config, chosen = resolve_recipe(config, device.type, store.resolution)
    if ckpt is not None:
        _resume_checks(ckpt_file, ckpt, config)
    else:
        for existing in (ckpt_file, best_file):
            if existing.exists():
                raise CheckpointError(f"{existing}: a checkpoint is already there: pass --resume to continue that "
                                      "run, or choose another --out")

    size = list(config.data.size) if config.data.size else list(store.resolution)
    if any(s % 32 for s in size):
        raise ConfigError(f"{store.url}: the store resolution {size[0]}x{size[1]} is not a multiple of 32 (a "
                          "5-stage UNet): give --size, e.g. --size 256")
    if any(s % config.optim.patch_grid for s in size):
        raise ConfigError(f"input {size[0]}x{size[1]} does not split into a {config.optim.patch_grid}x"
                          f"{config.optim.patch_grid} grid of equal patches: change --patch-grid or --size")
    train_ids, val_ids = _split(store, config, ckpt, ckpt_file, name)
    amp_dtype, needs_scaler = amp_settings(device, config.run.amp)
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
    history_path = out_dir / "history.json"
    _trim_log(log_path, step if ckpt is not None else 0)
    if ckpt is None and history_path.exists():
        history_path.unlink()  # a fresh run's history starts empty (like its log)

    steps_per_epoch = len(data.sampler)
    epochs, max_steps = config.optim.epochs, config.run.max_steps
    total = epochs * steps_per_epoch if max_steps is None else min(epochs * steps_per_epoch, max_steps)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    last_saved = step if ckpt is not None else None
    last_loss = float(ckpt.get("loss", float("nan"))) if ckpt is not None else float("nan")
    batch_size = config.optim.batch_size

    # validation: the held-out videos (read with what the controls need), the controls' losses (fixed for the run)
    val_data: StoreSamples | None = None
    controls: dict[str, float] = {}
    if val_ids:
        vspec = branch.spec(config, store.resolution, int(store.attrs.get("flow_valid_from", 1)), control=True)
        check_store(store, vspec, val_ids)
        kind = InMemoryDataset if data.in_memory else StreamingDataset
        val_data = kind(store, "train", val_ids, vspec, n_classes)
        if len(val_data) == 0:
            warn(f"{name}: the validation videos {', '.join(val_ids)} hold no "
                          "samples of this branch: no validation", highlight=False)
            val_data = None
    if val_data is not None:
        mean = (mean_target(branch, data.dataset, config, n_classes, resize_to, device, batch_size)
                if branch.mean_control else None)
        controls = control_losses(branch, val_data, config, n_classes, resize_to, device, batch_size, mean)
    history: list[dict[str, Any]] = [dict(e) for e in ckpt.get("validation", [])] if ckpt is not None else []
    best = best_entry(history)
    if ckpt is not None and best is not None and best["step"] == step:
        _recover_best(ckpt_file, best_file, step)  # killed between writing last.pt and best.pt

    def validation_state() -> dict[str, Any]:
        return {"train_videos": list(train_ids), "validation_videos": list(val_ids), "controls": dict(controls),
                "validation": [dict(e) for e in history], "best": _summary(best),
                "converged": converged(best["loss"] if best else None, controls)}

    def write_history() -> None:
        if val_data is None:
            return
        state = validation_state()
        doc = {"branch": name, "rule": RULE if config.data.val_videos == "auto" else "named by --val-videos",
               "validation_videos": state["validation_videos"], "train_videos": state["train_videos"],
               "controls": state["controls"], "criterion": CRITERION,
               "history": state["validation"],
               "best": {**state["best"], "checkpoint": str(best_file)} if state["best"] else None,
               "converged": state["converged"]}
        _write_json(history_path, doc)

    def validate() -> bool:
        """Validate the current weights (once per step); whether they are the best so far."""
        nonlocal best
        if val_data is None or (history and history[-1]["step"] == step):
            return False
        loss = validation_loss(branch, model, val_data, config, n_classes, resize_to, device, batch_size, autocast)
        entry = {"step": step, "epoch": epoch + (1 if step_in_epoch else 0), "loss": loss, "train_loss": last_loss,
                 "controls": dict(controls)}
        history.append(entry)
        improved = math.isfinite(loss) and (best is None or loss < best["loss"])
        if improved:
            best = entry
        shown = ", ".join(f"{k} {v:.5g}" for k, v in controls.items())
        console.print(f"{name} validation at step {step} (epoch {entry['epoch']}): loss {loss:.5g} (controls: "
                      f"{shown})" + (f", best so far: {best_file.name}" if improved else
                                     f", best {best['loss']:.5g} at step {best['step']}" if best else ""),
                      highlight=False)
        return improved

    def save() -> None:
        nonlocal last_saved
        if not _finite_parameters(model):
            raise TrainingDivergedError(
                f"{name}: non-finite weights at step {step}; not saved. Last good checkpoint: "
                + (f"{ckpt_file} (step {last_saved})" if last_saved is not None else "none was written"))
        improved = validate()
        payload = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "branch": name, "config": config.to_dict(),
            "store": store_info, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "step_in_epoch": step_in_epoch, "step": step,
            "rng": capture_rng(), "encoder_init": encoder_init, "n_classes": n_classes, "input_size": size,
            "loss": last_loss, "train_seconds": train_seconds(), "vad_version": __version__,
            "torch_version": str(torch.__version__), "created": now_utc(),
            **validation_state(),
        }
        if scaler is not None:
            payload["grad_scaler"] = scaler.state_dict()
        save_checkpoint(ckpt_file, payload)
        if improved:  # after last.pt: a kill in between is mended by the resume (_recover_best)
            save_checkpoint(best_file, _weights_only(payload))
        last_saved = step
        write_history()

    mean_weight = branch.mean_loss_weight(config)

    def compute_loss(raw) -> torch.Tensor:
        inputs, target = branch.batch(raw, config, n_classes, resize_to, device)
        return training_loss(branch.predict(model, inputs, autocast), target, config.optim.patch_grid, mean_weight)

    n_params = count_parameters(model)
    recipe = config.run.recipe
    console.print(f"{name}: recipe {recipe}" + (" (no CUDA device)" if recipe == "cpu" and device.type != "cuda"
                                                 else "") + (f": {', '.join(chosen)}" if chosen else "")
                  + ("; --recipe paper for the paper's (the store resolution, all epochs)" if recipe == "cpu" else ""),
                  highlight=False)
    console.print(f"{name}: {len(data.dataset)} samples from {len(data.dataset.video_ids)} videos "
                  f"({'in memory' if data.in_memory else 'streaming'}, {data.needed_bytes / 2**20:.0f} MiB), "
                  f"input {size[0]}x{size[1]}, batch {config.optim.batch_size}, {steps_per_epoch} steps/epoch, "
                  f"{n_params / 1e6:.2f} M parameters, device {device}"
                  + (f" ({str(amp_dtype).removeprefix('torch.')} autocast)" if amp_dtype else "")
                  + f", encoder {encoder_init['init']}" + (f", resuming at step {step}" if ckpt else ""),
                  highlight=False)
    if val_data is not None:
        shown = ", ".join(f"{k} {v:.5g}" for k, v in controls.items())
        console.print(f"{name}: validation on {len(val_data)} samples of {len(val_ids)} held-out training "
                      f"video(s) ({', '.join(val_ids)}); control losses: {shown}", highlight=False)

    losses: list[float] = []
    samples = 0
    t_start = time.perf_counter()
    seconds_before = float(ckpt.get("train_seconds", 0.0)) if ckpt is not None else 0.0

    def train_seconds() -> float:
        """Wall seconds of training so far, the runs before a resume included (validation included)."""
        return seconds_before + time.perf_counter() - t_start
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
                                      "samples_per_s": round(rate, 2),
                                      "train_seconds": round(train_seconds(), 2)}) + "\n")
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
    state = validation_state()
    if val_data is not None and best is not None and best["step"] != step:
        _update_best(best_file, state)  # best.pt's validation fields: the whole run's
    write_history()
    result = BranchResult(name, ckpt_file, step, epoch, losses, samples / elapsed if samples else 0.0,
                          data.in_memory, n_params, stopped, list(train_ids), list(val_ids), dict(controls),
                          state["validation"], best, best_file if best is not None else None, state["converged"])
    console.print(f"{name}: stopped ({stopped}) at step {step}, epoch {epoch}/{epochs}; "
                  f"{result.samples_per_s:.2f} samples/s; checkpoint {ckpt_file}"
                  + (f"; best validation loss {best['loss']:.5g} at step {best['step']}: {best_file}" if best else ""),
                  highlight=False)
    if result.converged is False:
        cname, cvalue = best_control(controls)
        said = (f"its best validation loss {best['loss']:.5g} (step {best['step']})" if best
                else "it has no finite validation loss")
        warn(f"{name} has not converged: {said} is not below {CONVERGED_RATIO} x "
                      f"that of its best trivial control ({cname} {cvalue:.5g}), so its scores would mostly "
                      "measure what the control gives for free: train longer (--epochs, --max-steps) or check "
                      "the store", highlight=False)
    return result


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


def _summary(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if entry is None else {"step": entry["step"], "epoch": entry["epoch"], "loss": entry["loss"]}


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
        warn(f"{best_file} is missing (removed during the run?): not rewritten",
                      highlight=False)
        return
    payload = torch.load(best_file, map_location="cpu", weights_only=True)
    payload.update(state)
    save_checkpoint(best_file, payload)


def _plain_floats(obj: Any) -> Any:
    """JSON-safe: non-finite floats as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _plain_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain_floats(v) for v in obj]
    return obj


def _write_json(path: Path, doc: Any) -> None:
    """Write JSON atomically (temporary file in the same folder, then os.replace)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_plain_floats(doc), indent=2) + "\n")
    os.replace(tmp, path)


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
