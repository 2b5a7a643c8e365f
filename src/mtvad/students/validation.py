"""Validation on held-out training videos: the split rule, the trivial controls, the convergence criterion.

The paper picks no checkpoint and reports no validation; training data has no anomalies, so the only held-out
measure that never looks at test labels is the students' own loss (Eq. 6) on normal videos they did not train
on, beside the loss of predictors that learn nothing (the branch's trivial controls, `Branch.controls`).

**Split** (`split_videos`): the store's training video ids, sorted, and every `VAL_EVERY`-th of them (the 7th,
14th, ...: about 14%) is a validation video; with fewer than `VAL_EVERY` videos (but at least 2) the last one
is; with a single training video there is no validation. `--val-videos ID,ID` names them instead, `--val-videos
none` turns validation off. The validation videos are removed from the training videos *before* the training
data is built (and before `--limit-videos` takes the first N of the rest), so no sample of theirs reaches the
gradient; the mean-map control is computed from the training videos only.

**Controls** (constant during a run, computed once at its start on the validation samples):
- appearance `copy`: the segmentation of frame t, one-hot, as the prediction of t+1's (a static scene);
- motion `zero`: zero flow (its loss is the patch loss of the target itself);
- motion `mean`: the per-pixel mean target over the training samples (at most `MEAN_MAP_SAMPLES` of them,
  evenly spaced), the same map for every sample.

**Validation loss**: the patch loss of Eq. 6 per validation sample (worst of the 16 patch MSEs), averaged over
the validation samples (at most `VALIDATION_SAMPLES`, evenly spaced, the same ones for the controls and every
validation of a run: `validation_indices`), with the student in eval mode (BatchNorm running statistics, as
scoring uses it) and no gradient, under the run's precision; it consumes no random numbers, so a resumed run
stays bit-exact.

**Converged** (`converged`): the best validation loss is below `CONVERGED_RATIO` (0.9) times the lowest
control loss. A student that is not at least 10% better than copying, predicting zero or the mean map has not
learned the motion or appearance of the scene beyond what those give for free: its scores would mostly
measure the control. The 10% margin is ours (the paper has no such test): the validation loss comes from a
handful of videos and from the worst patch of each sample, so a few percent either way is within the noise
of which videos were held out (on the synthetic store a ratio of two fixed predictors moves by -2% .. +3% with
the held-out pair: docs/training.md, Validation); 10% is about three times that.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtvad.console import console, warn
from mtvad.errors import ConfigError
from mtvad.students.data import InMemoryDataset, StoreSamples, StreamingDataset, check_store
from mtvad.students.loss import patch_errors
from mtvad.written import write_json

if TYPE_CHECKING:
    from mtvad.students.run import BranchRun

VAL_EVERY = 7  # every 7th training video id is held out: about 14%, at least one
CONVERGED_RATIO = 0.9  # converged: best validation loss < 0.9 x the best control's
MEAN_MAP_SAMPLES = 4096  # the mean-map control averages at most this many training samples (evenly spaced)
VALIDATION_SAMPLES = 128  # a validation reads at most this many samples (16 batches of 8), evenly spaced
RULE = (f"every {VAL_EVERY}th training video id in sorted order (the last one when there are 2 to "
        f"{VAL_EVERY - 1}; none with 1)")
CRITERION = f"converged when the best validation loss < {CONVERGED_RATIO} x the lowest control loss"


def split_videos(video_ids: Sequence[str], setting: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """(training ids, validation ids) of a store's training video ids, by `config.data.val_videos`: 'auto'
    (the rule above), 'none', or a list of ids (each must be a training video; at least one must be left)."""
    ids = sorted(video_ids)
    if setting == "none":
        val: list[str] = []
    elif setting == "auto":
        val = ids[VAL_EVERY - 1 :: VAL_EVERY] or (ids[-1:] if len(ids) >= 2 else [])
    else:
        val = list(setting)
        unknown = [v for v in val if v not in ids]
        if unknown:
            raise ConfigError(f"--val-videos: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not "
                              f"training video(s) of the store (it has {', '.join(ids[:8])}"
                              f"{', ...' if len(ids) > 8 else ''})")
        if len(val) >= len(ids):
            raise ConfigError("--val-videos names every training video: none would be left to train on")
    held = set(val)
    return [v for v in ids if v not in held], sorted(val)


def batches(dataset: StoreSamples, batch_size: int,
            indices: Sequence[int] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Raw batches of `dataset` in order (all samples, or `indices`), the last one possibly smaller."""
    order = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        if isinstance(dataset, InMemoryDataset):
            yield dataset.__getitems__(idx)
        else:
            items = [dataset[i] for i in idx]
            yield {k: torch.stack([item[k] for item in items]) for k in items[0]}


def evenly_spaced(n: int, at_most: int) -> list[int] | None:
    """`at_most` sample indices evenly spaced over n samples, or None (all of them) when n <= at_most."""
    return None if n <= at_most else np.linspace(0, n - 1, at_most).round().astype(int).tolist()


def validation_indices(dataset: StoreSamples) -> list[int] | None:
    """The validation samples of a run (None: all of them)."""
    return evenly_spaced(len(dataset), VALIDATION_SAMPLES)


def per_sample_loss(pred: torch.Tensor, target: torch.Tensor, grid: int) -> torch.Tensor:
    """Eq. 6 per sample: (B,) the worst of the grid's patch MSEs (`patch_loss` is their batch mean)."""
    return patch_errors(pred, target, grid).flatten(1).amax(dim=1)


def mean_target(branch, dataset: StoreSamples, config, n_classes: int, size, device: torch.device,
                batch_size: int, max_samples: int = MEAN_MAP_SAMPLES) -> torch.Tensor:
    """(1, C, h, w) per-pixel mean of the branch's target over the samples of `dataset` (the training videos):
    all of them, or `max_samples` evenly spaced."""
    indices = evenly_spaced(len(dataset), max_samples)
    total, count = None, 0
    with torch.inference_mode():
        for raw in batches(dataset, batch_size, indices):
            target = branch.batch(raw, config, n_classes, size, device)[1].double()
            total = target.sum(dim=0, keepdim=True) if total is None else total + target.sum(dim=0, keepdim=True)
            count += len(target)
    if total is None:
        raise ConfigError("no training samples to average for the mean-map control")
    return (total / count).float()


def control_losses(branch, dataset: StoreSamples, config, n_classes: int, size, device: torch.device,
                   batch_size: int, mean: torch.Tensor | None = None,
                   indices: Sequence[int] | None = None) -> dict[str, float]:
    """{control name: mean per-sample patch loss} of the branch's controls over the validation samples
    (`dataset` read with `spec(..., control=True)`; all of them, or `indices`)."""
    sums: dict[str, float] = {}
    n = 0
    grid = config.optim.patch_grid
    with torch.inference_mode():
        for raw in batches(dataset, batch_size, indices):
            target = branch.batch(raw, config, n_classes, size, device)[1]
            for name, pred in branch.controls(raw, config, n_classes, size, device, mean=mean).items():
                sums[name] = sums.get(name, 0.0) + float(per_sample_loss(pred, target, grid).double().sum())
            n += len(target)
    return {name: total / n for name, total in sums.items()} if n else {}


def validation_loss(branch, model: torch.nn.Module, dataset: StoreSamples, config, n_classes: int, size,
                    device: torch.device, batch_size: int,
                    autocast: AbstractContextManager | None = None, indices: Sequence[int] | None = None) -> float:
    """Mean per-sample patch loss (Eq. 6) of the student over the validation samples (all, or `indices`), in eval
    mode, no gradient. The model's train/eval mode is restored after."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    grid = config.optim.patch_grid
    try:
        with torch.inference_mode():
            for raw in batches(dataset, batch_size, indices):
                inputs, target = branch.batch(raw, config, n_classes, size, device)
                pred = branch.predict(model, inputs, autocast or contextlib.nullcontext())
                total += float(per_sample_loss(pred, target, grid).double().sum())
                n += len(target)
    finally:
        model.train(was_training)
    return total / n if n else float("nan")


def best_entry(history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The validation entry of the lowest finite loss (the earliest of equal ones), or None."""
    best = None
    for entry in history:
        loss = entry.get("loss")
        if loss is not None and math.isfinite(loss) and (best is None or loss < best["loss"]):
            best = entry
    return best


def patience_spent(history: Sequence[dict[str, Any]], step: int, config) -> bool:
    """Whether a run at `step` with this validation history should stop: its best validation is
    `config.run.patience` validation intervals (of `checkpoint_every` steps) old or older. Counted in steps, so
    the extra validations at epoch ends do not shorten the wait; never with patience 0 or no validation."""
    patience, every = config.run.patience, config.run.checkpoint_every
    if not patience or not history:
        return False
    best = best_entry(history)
    return step - (best["step"] if best is not None else 0) >= patience * every


def converged(best_loss: float | None, controls: dict[str, float]) -> bool | None:
    """Whether the best validation loss is below CONVERGED_RATIO x the lowest control loss (None: nothing to
    compare, e.g. validation off)."""
    if not controls:
        return None
    if best_loss is None or not math.isfinite(best_loss):
        return False
    return best_loss < CONVERGED_RATIO * min(controls.values())


def best_control(controls: dict[str, float]) -> tuple[str, float] | None:
    """(name, loss) of the lowest control loss."""
    return min(controls.items(), key=lambda kv: kv[1]) if controls else None


class Validator:
    """The held-out videos' loss at each checkpoint, beside the trivial controls' (fixed for the run); the
    history (a resumed run's included), the best entry, and whether the patience is spent."""

    def __init__(self, run: BranchRun):
        self.run = run
        branch, config, store = run.branch, run.config, run.store
        batch_size = config.optim.batch_size
        self.data: StoreSamples | None = None
        self.indices: list[int] | None = None
        self.controls: dict[str, float] = {}
        if run.val_ids:
            vspec = branch.spec(config, store.resolution, int(store.attrs.get("flow_valid_from", 1)), control=True)
            check_store(store, vspec, run.val_ids)
            kind = InMemoryDataset if run.data.in_memory else StreamingDataset
            self.data = kind(store, "train", run.val_ids, vspec, run.n_classes)
            if len(self.data) == 0:
                warn(f"{run.name}: the validation videos {', '.join(run.val_ids)} hold no samples of this branch: "
                     "no validation", highlight=False)
                self.data = None
        if self.data is not None:
            self.indices = validation_indices(self.data)
            mean = (mean_target(branch, run.data.dataset, config, run.n_classes, run.resize_to, run.device,
                                batch_size) if branch.mean_control else None)
            self.controls = control_losses(branch, self.data, config, run.n_classes, run.resize_to, run.device,
                                           batch_size, mean, self.indices)
        ckpt = run.ckpt
        self.history: list[dict[str, Any]] = [dict(e) for e in ckpt.get("validation", [])] if ckpt else []
        self.best = best_entry(self.history)
        self.added = 0  # validations run by this call

    @property
    def active(self) -> bool:
        return self.data is not None

    @property
    def n_samples(self) -> int:
        return 0 if self.data is None else len(self.indices) if self.indices is not None else len(self.data)

    def validate(self) -> bool:
        """Validate the current weights (once per step); whether they are the best so far."""
        run = self.run
        if self.data is None or (self.history and self.history[-1]["step"] == run.step):
            return False
        loss = validation_loss(run.branch, run.model, self.data, run.config, run.n_classes, run.resize_to,
                               run.device, run.config.optim.batch_size, run.precision.autocast(), self.indices)
        entry = {"step": run.step, "epoch": run.epoch + (1 if run.step_in_epoch else 0), "loss": loss,
                 "train_loss": run.last_loss, "controls": dict(self.controls)}
        self.history.append(entry)
        self.added += 1
        improved = math.isfinite(loss) and (self.best is None or loss < self.best["loss"])
        if improved:
            self.best = entry
        shown = ", ".join(f"{k} {v:.5g}" for k, v in self.controls.items())
        best = self.best
        console.print(f"{run.name} validation at step {run.step} (epoch {entry['epoch']}): loss {loss:.5g} "
                      f"(controls: {shown})" + (f", best so far: {run.best_file.name}" if improved else
                                                f", best {best['loss']:.5g} at step {best['step']}" if best else ""),
                      highlight=False)
        return improved

    def patience_spent(self) -> bool:
        return patience_spent(self.history, self.run.step, self.run.config)

    def state(self) -> dict[str, Any]:
        """The validation fields of checkpoints and results."""
        return {"train_videos": list(self.run.train_ids), "validation_videos": list(self.run.val_ids),
                "controls": dict(self.controls), "validation": [dict(e) for e in self.history],
                "best": _summary(self.best), "converged": converged(self.best["loss"] if self.best else None,
                                                                     self.controls)}

    def write_history(self) -> None:
        """OUT/<branch>/history.json (nothing without validation)."""
        if self.data is None:
            return
        run, state = self.run, self.state()
        doc = {"branch": run.name, "rule": RULE if run.config.data.val_videos == "auto" else "named by --val-videos",
               "validation_videos": state["validation_videos"], "train_videos": state["train_videos"],
               "controls": state["controls"], "criterion": CRITERION, "patience": run.config.run.patience,
               "history": state["validation"],
               "best": {**state["best"], "checkpoint": str(run.best_file)} if state["best"] else None,
               "converged": state["converged"]}
        write_json(run.out_dir / "history.json", _plain_floats(doc))


def _summary(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if entry is None else {"step": entry["step"], "epoch": entry["epoch"], "loss": entry["loss"]}


def _plain_floats(obj: Any) -> Any:
    """JSON-safe: non-finite floats as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _plain_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain_floats(v) for v in obj]
    return obj


