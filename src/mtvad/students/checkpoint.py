"""Checkpoints: `OUT/<branch>/last.pt` (to resume) and `best.pt` (lowest validation loss), written atomically,
read with weights_only.

A checkpoint holds only tensors, dicts, lists, strings and numbers (so `torch.load(weights_only=True)` reads
it and no pickled code ever runs):

    format, format_version        'vad-checkpoint', 1
    branch                        a registered branch's name ('appearance' | 'motion', mtvad.students.branches)
    config                        the full TrainConfig as a dict (mtvad.students.config.TrainConfig.from_dict reads it)
    store                         which store trained it (mtvad.store.access.Store.identity): url, fingerprint,
                                  schema_version, dataset, resolution, classes (str class ids), created, videos
                                  ({split: {id: frames}}; checkpoints of older vads lack created and videos)
    model, optimizer, scheduler   state dicts (Adam, StepLR); grad_scaler when fp16 AMP ran
    epoch, step_in_epoch, step    where training stands: epoch (0-based) in progress, batches done in it,
                                  optimizer steps done in all
    rng                           torch CPU, CUDA (if any), numpy, python random states
    encoder_init                  {'init': 'scratch'} or {'init': 'file', 'path', 'sha256'}
    n_classes, input_size         what the model was built for: outputs (one per class id up to the largest,
                                  mtvad.students.data.n_outputs), [H, W] input
    loss                          last step's loss; vad_version, torch_version, created (UTC)
    train_seconds                 wall seconds of training so far, the runs before a resume included
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

Writing goes to a temporary file in the same folder (`.last.pt.tmp-PID`), flushed and fsynced, then
`os.replace`d over the old one: a kill at any moment leaves either the old or the new checkpoint, never a torn
one. A failed write removes its temporary file; those left by killed processes are removed when a run starts
and ends and at each save in that folder (`mtvad.written.remove_leftovers`: process gone, untouched for
STALE_AFTER_S, owned by this user).

Which store a checkpoint may be used with is `check_fits_store`; a checkpoint that holds pickled objects (code a
load would run) is refused, never loaded.
"""

from __future__ import annotations

import os
import pickle
import random
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtvad import __version__
from mtvad.console import console
from mtvad.errors import CheckpointError, ConfigError
from mtvad.store.access import Store, class_ids
from mtvad.store.schema import SCHEMA_VERSION
from mtvad.students.config import TrainConfig
from mtvad.students.data import n_outputs
from mtvad.students.models import refused_pickle
from mtvad.written import remove_leftovers, temp_path

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


RUN_FILES = (CHECKPOINT_NAME, BEST_NAME, "history.json", "config.json")  # a branch folder's files written atomically


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write atomically: temp file in the same folder, fsync, os.replace. The temp file is removed on any
    failure (a CheckpointError naming the file for an OSError: disk full, read-only folder); temp files of
    killed processes in the folder are removed first."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path.parent, RUN_FILES)
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write the checkpoint ({exc.strerror or exc})") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def load_checkpoint(path: str | Path, *, branch: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint; refuse a torn/foreign file, another branch or another store schema.
    Whether it fits a given store is `check_fits_store`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint at this path")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_unpickling_error(path, exc)) from None
    except Exception as exc:  # truncated zip, not a torch file
        lines = [l.strip() for l in str(exc).splitlines() if l.strip()] or [type(exc).__name__]
        raise CheckpointError(f"{path}: unreadable checkpoint (truncated or not a vad checkpoint: "
                              f"{lines[0][:200]})") from None
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


def _unpickling_error(path: Path, exc: pickle.UnpicklingError) -> str:
    """The one line for a file torch's weights-only reader refused (`refused_pickle`)."""
    refused = refused_pickle(exc)
    if refused is None:
        return f"{path}: unreadable checkpoint (truncated or not a vad checkpoint: {str(exc).splitlines()[0][:200]})"
    return (f"{path}: {refused}: a vad checkpoint holds only tensors, numbers, strings, lists and dicts (not a vad "
            "checkpoint, or a crafted one)")


def _video_changes(there: dict[str, int], here: dict[str, int], limit: int = 4) -> str:
    """How the videos {id: frames} of the store trained on ('there') and of this store ('here') differ."""
    changed = [f"{v} has {here[v]} frames here, {there[v]} there" for v in sorted(set(there) & set(here))
               if here[v] != there[v]]
    gone, new = sorted(set(there) - set(here)), sorted(set(here) - set(there))
    parts = changed[:limit]
    if gone:
        parts.append(f"{', '.join(gone[:limit])}{' ...' if len(gone) > limit else ''} only there")
    if new:
        parts.append(f"{', '.join(new[:limit])}{' ...' if len(new) > limit else ''} only here")
    return "; ".join(parts) or "the same"


def check_fits_store(path: str | Path, ckpt: dict[str, Any], store: Store, *, remedy: str) -> str | None:
    """The one rule for using a checkpoint with a store (training on with --resume, scoring).

    Refused (a CheckpointError naming the checkpoint and both stores, ending with `remedy`: what to do
    instead): another fingerprint (teachers, their settings, resolution, schema), another dataset, another
    class vocabulary, or other training videos (compared by id and frame count, not content). Allowed
    otherwise: the store trained on, a copy of it, or another store of the same dataset, teachers and
    training videos (new test footage of the same camera, a rebuild). When it is another build (`created`),
    one note says so on stderr (test videos added to the store trained on, as `vad detect` adds them, need
    none); the note is returned (None when there is none). A checkpoint of an older vad records no videos: its
    training videos are checked by name (`train_videos`, `validation_videos`), and a store at another path gets
    a note that says so."""
    path = Path(path)
    info = ckpt["store"]
    ours = store.identity()
    theirs_url = info.get("url")
    if info.get("fingerprint") != ours["fingerprint"]:
        raise CheckpointError(
            f"{path}: trained on store {theirs_url} with fingerprint {str(info.get('fingerprint'))[:12]}, "
            f"but this store's fingerprint is {ours['fingerprint'][:12]} ({store.url}: other teachers, settings or "
            f"resolution): {remedy}")
    if info.get("dataset") != ours["dataset"]:
        raise CheckpointError(f"{path}: trained on store {theirs_url} of dataset {info.get('dataset')!r}, but "
                              f"{store.url} holds dataset {ours['dataset']!r} (same teachers): {remedy}")
    classes, trained = store.classes, class_ids(info.get("classes") or {})
    if classes != trained or int(ckpt["n_classes"]) != n_outputs(classes):
        raise CheckpointError(f"{path}: trained with classes {trained} ({ckpt['n_classes']} outputs), the store "
                              f"{store.url} has {classes}: {remedy}")
    recorded = info.get("videos")
    here = ours["videos"]
    if recorded is not None:
        there = {split: dict(recorded.get(split) or {}) for split in here}
        if there["train"] != here["train"]:
            raise CheckpointError(
                f"{path}: trained on the training videos of store {theirs_url}, but {store.url} has other training "
                f"videos ({_video_changes(there['train'], here['train'])}): {remedy}")
        if info.get("created") == ours["created"]:
            return None  # the store trained on (or a copy of it: a packed one, a moved folder), new test videos or not
        if there["test"] != here["test"]:
            which = f"its test videos differ: {_video_changes(there['test'], here['test'])}"
        else:
            which = f"built {ours['created']}, the one trained on {info.get('created')}"
        note = (f"{path} was trained on store {theirs_url}; {store.url} is another store of the same dataset, "
                f"teachers and training videos ({which})")
    else:  # a checkpoint of an older vad
        used = list(ckpt.get("train_videos") or []) + list(ckpt.get("validation_videos") or [])
        lost = sorted(set(used) - set(here["train"]))
        if lost:
            raise CheckpointError(
                f"{path}: trained on the training videos of store {theirs_url}, but {store.url} has other training "
                f"videos ({', '.join(lost[:4])}{' ...' if len(lost) > 4 else ''} only there): {remedy}")
        if str(theirs_url) == str(store.url):
            return None
        note = (f"{path} (from an older vad) records no videos of the store it was trained on ({theirs_url}): "
                f"{store.url} has the same dataset, teachers and classes, its training videos were checked by name "
                "only")
    console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)  # printed literally
    return note


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
