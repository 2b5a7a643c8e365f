"""Checkpoints: `OUT/<branch>/last.pt` (to resume) and `best.pt` (lowest validation loss), written atomically,
read with weights_only.

A checkpoint holds only tensors, dicts, lists, strings and numbers (so `torch.load(weights_only=True)` reads
it and no pickled code ever runs):

    format, format_version        'vad-checkpoint', 1
    branch                        a registered branch's name ('appearance' | 'motion', mtvad.students.branches)
    config                        the full TrainConfig as a dict (mtvad.students.config.TrainConfig.from_dict reads it)
    store                         which store trained it (mtvad.store.access.Store.identity): url, fingerprint,
                                  schema_version, dataset, resolution, classes (str class ids)
    model, optimizer, scheduler   state dicts (Adam, StepLR); grad_scaler when fp16 AMP ran
    epoch, step_in_epoch, step    where training stands: epoch (0-based) in progress, batches done in it,
                                  optimizer steps done in all
    rng                           torch CPU, CUDA (if any), numpy, python random states
    encoder_init                  {'init': 'scratch'} or {'init': 'file', 'path', 'sha256'}
    n_classes, input_size         what the model was built for: outputs (one per class id up to the largest,
                                  mtvad.students.data.n_outputs), [H, W] input
    loss                          last step's loss; vad_version, torch_version, created (UTC)
    train_videos                  the training videos in the gradient (ids)
    validation_videos             the held-out training videos (ids; [] when validation is off)
    controls                      {name: validation loss} of the branch's trivial controls
    validation                    [{step, epoch, loss, train_loss, controls}] of every validation so far
    best                          {step, epoch, loss} of the lowest validation loss so far, or None
    converged                     best loss < CONVERGED_RATIO x the best control (mtvad.students.validation);
                                  None without validation

`best.pt` is the checkpoint of the step with the lowest validation loss, written when it improves (after
`last.pt`), without the optimizer state (`optimizer` is {}; a resume reads last.pt); at the end of a run its
validation fields are brought up to date.

Writing goes to a temporary file in the same folder, flushed and fsynced, then `os.replace`d over the old one:
a kill at any moment leaves either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtvad import __version__
from mtvad.errors import CheckpointError, ConfigError
from mtvad.store.access import Store, class_ids
from mtvad.store.schema import SCHEMA_VERSION
from mtvad.students.config import TrainConfig
from mtvad.students.data import n_outputs

FORMAT = "vad-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "last.pt"
BEST_NAME = "best.pt"
REQUIRED = ("format", "format_version", "branch", "config", "store", "model", "optimizer", "scheduler", "epoch",
            "step_in_epoch", "step", "rng", "encoder_init", "n_classes")


def checkpoint_path(out_dir: str | Path, branch: str) -> Path:
    return Path(out_dir) / branch / CHECKPOINT_NAME


def best_path(out_dir: str | Path, branch: str) -> Path:
    return Path(out_dir) / branch / BEST_NAME


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------- RNG


def capture_rng() -> dict[str, Any]:
    """Every RNG state training touches, as tensors / lists / numbers only (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ write / read


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write atomically: temp file in the same folder, fsync, os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, *, branch: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint; refuse a torn/foreign file, another branch or another store schema.
    Whether it fits a given store is `check_fits_store`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint at this path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, refused pickled objects
        lines = [l.strip() for l in str(exc).splitlines() if l.strip()] or [type(exc).__name__]
        first = next((l for l in lines if "WeightsUnpickler error" in l), lines[0])[:200]
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or not a vad checkpoint: {first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vad checkpoint")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {ckpt.get('format_version')}, this vad {__version__} "
                              f"reads format {FORMAT_VERSION}")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint (no {', '.join(missing)})")
    if branch is not None and ckpt["branch"] != branch:
        raise CheckpointError(f"{path}: a {ckpt['branch']} checkpoint, expected {branch}")
    store = ckpt["store"]
    if store.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(f"{path}: trained on a schema v{store.get('schema_version')} store, this vad reads "
                              f"schema v{SCHEMA_VERSION}: retrain")
    try:
        ckpt["config_obj"] = TrainConfig.from_dict(ckpt["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its config cannot be read by this vad ({exc})") from None
    return ckpt


def check_fits_store(path: str | Path, ckpt: dict[str, Any], store: Store, *, remedy: str) -> None:
    """The one rule for using a checkpoint with a store (training on with --resume, scoring): it was trained on
    a store of the same fingerprint (teachers, their settings, resolution, schema) and the same class
    vocabulary. `remedy` ends the message: what to do instead."""
    info = ckpt["store"]
    if info.get("fingerprint") != store.fingerprint:
        raise CheckpointError(
            f"{path}: trained on store {info.get('url')} with fingerprint {str(info.get('fingerprint'))[:12]}, "
            f"but this store's fingerprint is {store.fingerprint[:12]} ({store.url}: other teachers, settings or "
            f"resolution): {remedy}")
    ours, theirs = store.classes, class_ids(info.get("classes") or {})
    if ours != theirs or int(ckpt["n_classes"]) != n_outputs(ours):
        raise CheckpointError(f"{path}: trained with classes {theirs} ({ckpt['n_classes']} outputs), the store "
                              f"{store.url} has {ours}: {remedy}")


def load_student(path: str | Path, map_location: str | torch.device = "cpu"):
    """(model in eval mode, TrainConfig, checkpoint dict) from a checkpoint: for scoring."""
    from mtvad.students.models import build_model

    ckpt = load_checkpoint(path, map_location=map_location)
    config = ckpt["config_obj"]
    model = build_model(ckpt["branch"], config, int(ckpt["n_classes"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{Path(path)}: model weights do not fit its own config ({str(exc)[:200]})") from None
    return model.to(map_location).eval(), config, ckpt
