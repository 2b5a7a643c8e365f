"""Anomaly scores (paper 3.6, Eq. 4): each trained student against its teacher, per frame, into a scores file.

    S(t) = reduction over the anomaly map of |Out_student(I_t) - Out_teacher(I_t)|

- appearance branch: the map is sum over classes of |softmax(student(frames t-1, t)) - one-hot(teacher seg)|,
  the teacher segmentation being that of frame t+1 (the default target; frame t for `--appearance-target seg`);
  each pixel is in [0, 2].
- motion branch: the map is |student(frame t, context) - teacher flow magnitude of t|, the magnitude masked by
  the segmentation when the branch learned it masked (paper 4.3), in input pixels per frame.

Every frame is reduced in one pass under every reduction of `mtvad.scoring.reductions` (`sum`: Eq. 4 as
written; `foreground`: the map summed over teacher or student foreground; `patch-max`: the largest 4x4-grid
patch sum; `object-mean`, `object-sum`: the largest object's mean or sum), each its own array. Both maps are computed at the network input size the checkpoint was trained
at, on exactly the inputs, targets and predictions training used: the branch says them
(`mtvad.students.branches`: `batch`, `predict`, `anomaly_map`, `predicted_foreground`).
A score belongs to the frame t the sample is about; the appearance map of frame t is about frame t + 1.
Frames a branch cannot score are **invalid**: NaN in the score arrays and False in its `valid` mask, never
filled (appearance: frame 0, which has no t-1, and the last frame, which has no t+1; motion: frame 0, which has
no flow). `mtvad.scoring.postprocess` says how smoothing fills them and evaluation skips them.

Teacher-only controls are recorded beside the branches, reduced the same ways at store resolution
(`mtvad.scoring.reductions.CONTROLS`): `raw_flow` (the teacher flow magnitude; its `sum` is the former
`teacher_flow` baseline), `masked_flow` (the flow where teacher seg > 0) and `foreground_area` (seg > 0).
Flow controls are invalid before `flow_valid_from`; the foreground area is valid on every frame.

The scores file is a Zarr v3 group; scoring writes it into a temporary folder beside OUT and renames it into
place at the end, so an interrupted run leaves no half-written scores file. Format 2 (format 1, before the
reductions and controls, had one array per row, `teacher_flow` among them; it is refused: score again):

    OUT/                            attributes: format 'vad-scores', format_version 2, store {url, fingerprint,
                                    schema_version, dataset, resolution, classes, flow_valid_from}, branches,
                                    controls, rows (= branches + controls), reductions, reduction_labels,
                                    patch_grid, flow_foreground_px, checkpoints {branch: {path, sha256, step,
                                    epoch, input_size, n_classes, target_offset, config, validation {videos,
                                    converged_ratio, controls, history [{step, loss, train_loss}], best,
                                    converged} or None}}, maps, map_sizes, invalid_policy, units (per row: what
                                    one pixel of its map is), created, vad_version, torch_version, device,
                                    torch_threads, precision (of the students' forward pass: bfloat16 where
                                    the hardware has it, float32 with --amp off)
      train/<video>/                attributes n_frames, has_labels
        <row>@<reduction> float64 (T,)  e.g. motion@patch-max, raw_flow@sum: the row's frame score under the
                                    reduction, NaN where invalid (attributes units, reduction)
        <row>_valid bool (T,)       False where the row cannot score the frame (one per row, every reduction)
      test/<video>/
        ... the same, plus
        label uint8 (T,)            the store's frame labels (when it has them), copied for evaluation
        <branch>_map float16 (T, h, w)   with --maps: the per-pixel anomaly map at the input size (NaN where
                                    invalid); the map of frame t is about frame t + target_offset (appearance
                                    with the default target: t + 1)"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from mtvad import __version__
from mtvad.console import console, warn
from mtvad.errors import ConfigError
from mtvad.hashing import file_sha256
from mtvad.scoring.reductions import (
    CONTROL_UNITS,
    CONTROLS,
    FLOW_FOREGROUND_PX,
    PATCH_GRID,
    REDUCTION_LABELS,
    REDUCTIONS,
    UNCLASSIFIED,
    control_scores,
    keys_to_size,
    object_keys,
    reduce_maps,
    row_key,
)
from mtvad.scoring.scores_file import (
    FORMAT,
    FORMAT_VERSION,
    INVALID_POLICY,
    ScoresError,
    is_scores_file,
)
from mtvad.store.access import Store, open_store
from mtvad.store.schema import ARRAYS, SPLITS
from mtvad.written import remove_leftovers, temp_path

if TYPE_CHECKING:
    import torch

    from mtvad.students.device import Precision


def load_branches(checkpoints: Sequence[str | Path], store: Store, device) -> dict[str, tuple]:
    """{branch: (model, config, ckpt, path)} for the given checkpoints, each checked against the store, in the
    registry's order of branches."""
    from mtvad.students.branches import BRANCHES
    from mtvad.students.checkpoint import check_fits_store, load_student

    if not checkpoints:
        raise ConfigError("no --checkpoint given: pass " + " and/or ".join(f"OUT/{b}/last.pt" for b in BRANCHES))
    out: dict[str, tuple] = {}
    for path in checkpoints:
        model, config, ckpt = load_student(path, map_location=device)
        branch = ckpt["branch"]
        if branch in out:
            raise ConfigError(f"two {branch} checkpoints: {out[branch][3]} and {path}; give one per branch")
        check_fits_store(path, ckpt, store, remedy="score with a checkpoint trained on this store")
        if ckpt.get("converged") is False:
            warn(f"{path}: the {branch} student has not converged (its validation loss is not clearly below that "
                 "of its trivial controls): its scores mostly measure what a control gives for free")
        out[branch] = (model, config, ckpt, Path(path))
    return {b: out[b] for b in BRANCHES if b in out}


# ------------------------------------------------------------------------------------------------ scoring


def _input_size(ckpt: dict, store: Store) -> list[int]:
    size = ckpt.get("input_size") or ckpt["config_obj"].data.size or list(store.resolution)
    return [int(s) for s in size]


def teacher_video(store: Store, split: str, video_id: str,
                  reads: dict[tuple[str, str], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(seg uint8 (T, H, W), flow magnitude float32 (T, H, W), store px/frame) of a complete video. `reads`: the
    arrays as stored, shared with the branches' datasets (`InMemoryDataset`), so each is read once."""
    video = store.video(split, video_id)
    reads = {} if reads is None else reads
    decoded = []
    for name in ("seg", "flow_mag"):
        if (video_id, name) not in reads:
            reads[video_id, name] = np.ascontiguousarray(video.group[name][:])
        decoded.append(ARRAYS[name].decode(reads[video_id, name]))
    return decoded[0], decoded[1]


def score_branch_video(store: Store, split: str, video_id: str, branch: str, model, config, ckpt: dict, device,
                       batch_size: int = 16, maps: bool = False,
                       on_batch: Callable[[int], None] | None = None, teacher_keys: torch.Tensor | None = None,
                       precision: Precision | None = None, reads: dict[tuple[str, str], np.ndarray] | None = None,
                       ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """({reduction: scores float64 (T,)}, valid bool (T,), map float16 (T, h, w) or None) of one branch on one
    video. `teacher_keys`: the video's teacher object classes (T, H, W) at store resolution
    (`reductions.object_keys`; read when not given). `precision`: of the forward pass (default float32);
    `reads`: arrays already read (`teacher_video`)."""
    import torch

    from mtvad.students.branches import channels_last, get_branch
    from mtvad.students.data import InMemoryDataset, check_store

    the_branch = get_branch(branch)
    spec = the_branch.spec(config, store.resolution, int(store.attrs.get("flow_valid_from", 1)))
    check_store(store, spec, [video_id], split)
    video = store.video(split, video_id)
    n = video.n_frames
    n_classes = int(ckpt["n_classes"])
    size = _input_size(ckpt, store)
    resize_to = None if size == list(store.resolution) else size
    offset = the_branch.target_offset(config)
    if teacher_keys is None:
        teacher_keys = object_keys(*teacher_video(store, split, video_id, reads))
    flow_px = FLOW_FOREGROUND_PX * (size[0] / store.resolution[0] + size[1] / store.resolution[1]) / 2
    scores = {r: np.full(n, np.nan) for r in REDUCTIONS}
    valid = np.zeros(n, bool)
    amap = np.full((n, *size), np.nan, np.float16) if maps else None
    data = InMemoryDataset(store, split, [video_id], spec, n_classes, reads)
    ts = data.index[:, 1]
    model = channels_last(model)
    autocast = precision.autocast() if precision is not None else None
    with torch.inference_mode():
        for lo in range(0, len(data), batch_size):
            idx = list(range(lo, min(lo + batch_size, len(data))))
            inputs, target = the_branch.batch(data.__getitems__(idx), config, n_classes, resize_to, device)
            prediction = the_branch.predict(model, inputs, autocast)
            diff = the_branch.anomaly_map(prediction, target)
            t = ts[idx]
            keys = keys_to_size(teacher_keys[torch.as_tensor(t + offset)], size).to(diff.device)
            fg = keys > 0
            student_fg = the_branch.predicted_foreground(prediction, flow_px)
            if student_fg is not None:  # where the student alone sees an object: an object of no class
                keys = torch.where(student_fg & ~fg, UNCLASSIFIED, keys).to(torch.uint8)
                fg = fg | student_fg
            for r, values in reduce_maps(diff, fg, keys).items():
                scores[r][t] = values
            valid[t] = True
            if amap is not None:
                amap[t] = diff.cpu().numpy().astype(np.float16)
            if on_batch:
                on_batch(len(idx))
    return scores, valid, amap


def teacher_flow_scores(store: Store, split: str, video_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The raw-flow control's `sum`: total raw teacher flow magnitude per frame (store pixels per frame)."""
    seg, flow = teacher_video(store, split, video_id)
    reduced, valid = control_scores(seg, flow, int(store.attrs.get("flow_valid_from", 1)))["raw_flow"]
    return reduced["sum"], valid


@dataclass
class ScoreResult:
    out: Path
    branches: list[str]
    videos: dict[str, int]
    frames: dict[str, int]
    seconds: float
    frames_per_s: dict[str, float]
    threads: int = 1
    precision: str = "float32"  # of the students' forward pass


def auto_threads() -> int:
    """Torch threads for scoring on a CPU: every core this process may use (torch's own default; `--threads`
    sets fewer on a machine shared with other jobs, where OpenMP threads that lose their core slow every step)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def score(store_url: str, checkpoints: Sequence[str | Path], out: str | Path, *, maps: bool = False,
          splits: Sequence[str] = SPLITS, batch_size: int = 16, device: str = "auto", overwrite: bool = False,
          update: bool = False, progress: bool = True, threads: int | None = None, amp: str = "auto") -> ScoreResult:
    """Score every frame of the store's `splits` with each checkpoint's branch; write the scores file OUT.
    `update`: when OUT was scored with these checkpoints on this store, score only the videos the store gained
    since (nothing at all when there are none); otherwise OUT is scored anew (replacing it needs `overwrite`).
    `threads`: torch CPU threads (None: `auto_threads()`; the caller's setting is restored at the end). `amp`:
    'auto' runs the students' forward pass in bf16 where the hardware has it (`mtvad.students.device`), 'off' in
    float32."""
    import torch

    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1; got {batch_size}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1; got {threads}")
    if amp not in ("auto", "off"):
        raise ConfigError(f"--amp must be auto or off; got {amp!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads or auto_threads())
    try:
        return _score(store_url, checkpoints, out, maps=maps, splits=splits, batch_size=batch_size, device=device,
                      overwrite=overwrite, update=update, progress=progress, amp=amp)
    finally:
        torch.set_num_threads(before)


def _score(store_url: str, checkpoints: Sequence[str | Path], out: str | Path, *, maps: bool, splits: Sequence[str],
           batch_size: int, device: str, overwrite: bool, update: bool, progress: bool, amp: str) -> ScoreResult:
    import torch

    from mtvad.students.device import pick_device, precision_for

    out = Path(out)
    remove_leftovers(out.parent, [out.name], folders=True)  # what a killed scoring of OUT left
    store = open_store(store_url)
    scored = _already_scored(out, store, checkpoints, maps) if update else None
    if scored is None:
        _check_out(out, overwrite)
    store.require_complete()
    dev = pick_device(device)
    precision = precision_for(dev, amp)
    branches = load_branches(checkpoints, store, dev)
    if "train" not in splits:
        raise ConfigError("scoring must include the training videos: calibration and the threshold use them")
    videos = {s: [v for v in store.video_ids(s) if v not in (scored or {}).get(s, ())] for s in splits}
    if not store.video_ids("test"):
        raise ConfigError(f"{store.url}: no test videos to score")
    total = sum(store.video(s, v).n_frames for s in splits for v in videos[s]) * len(branches)
    counts = {b: 0 for b in branches}
    seconds = {b: 0.0 for b in branches}
    t0 = time.perf_counter()
    if total == 0:  # an update with nothing new: OUT is left untouched
        return ScoreResult(out, list(branches), {s: 0 for s in splits}, {s: 0 for s in splits}, 0.0,
                           {b: 0.0 for b in branches}, torch.get_num_threads(), precision.name)

    tmp = temp_path(out)
    root = zarr.open_group(zarr.storage.LocalStore(str(tmp)), mode="w", zarr_format=3)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("scoring {task.fields[what]}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
               TextColumn("frames x branches"), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, disable=not progress, transient=True) as bar:
            task = bar.add_task("score", total=total, what="")
            for split in splits:
                for vid in videos[split]:
                    video = store.video(split, vid)
                    group = root.require_group(f"{split}/{vid}")
                    group.attrs.update({"n_frames": video.n_frames, "has_labels": bool(video.has_labels)})
                    reads: dict[tuple[str, str], np.ndarray] = {}  # each array read once for all rows
                    seg, flow = teacher_video(store, split, vid, reads)
                    keys = object_keys(seg, flow)
                    for name, (model, config, ckpt, _) in branches.items():
                        bar.update(task, what=f"{name} {split}/{vid}")
                        tb = time.perf_counter()
                        s, v, m = score_branch_video(
                            store, split, vid, name, model, config, ckpt, dev, batch_size,
                            maps=maps and split == "test", on_batch=lambda k: bar.advance(task, k), teacher_keys=keys,
                            precision=precision, reads=reads)
                        seconds[name] += time.perf_counter() - tb
                        counts[name] += int(v.sum())
                        bar.advance(task, video.n_frames - int(v.sum()))
                        _write_row(group, name, s, v)
                        if m is not None:
                            group.create_array(f"{name}_map", data=m, chunks=(16, *m.shape[1:]),
                                               compressors=ZstdCodec(level=3), dimension_names=["T", "h", "w"],
                                               attributes={"units": _branch(name).map_units})
                    flow_from = int(store.attrs.get("flow_valid_from", 1))
                    for name, (reduced, valid) in control_scores(seg, flow, flow_from).items():
                        _write_row(group, name, reduced, valid)
                    if video.has_labels:
                        group.create_array("label", data=video.label().astype(np.uint8), chunks=(video.n_frames,))
        if scored is None:
            root.attrs.update(_root_attrs(store, branches, maps, dev, torch, precision.name))
            if out.exists():
                shutil.rmtree(out)  # checked by _check_out: a scores file we may replace
            os.replace(tmp, out)
        else:
            _move_videos_in(tmp, out, videos, store)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    remove_leftovers(out.parent, [out.name], folders=True)  # a killed run's, now old enough
    elapsed = time.perf_counter() - t0
    return ScoreResult(out, list(branches), {s: len(v) for s, v in videos.items()},
                       {s: sum(store.video(s, v).n_frames for v in videos[s]) for s in splits}, elapsed,
                       {b: counts[b] / seconds[b] if seconds[b] else 0.0 for b in branches},
                       torch.get_num_threads(), precision.name)


def _already_scored(out: Path, store: Store, checkpoints: Sequence[str | Path],
                    maps: bool) -> dict[str, list[str]] | None:
    """{split: video ids} OUT holds when it is a scores file of these checkpoints (same files: sha256) on this
    store (its fingerprint and build), with maps as asked; None when it is not (or is no scores file)."""
    from mtvad.scoring.scores_file import open_scores

    if not is_scores_file(out):
        return None
    try:
        sf = open_scores(out)
    except ScoresError:
        return None
    scored_on = sf.attrs["store"]
    hashes = sorted(file_sha256(p) for p in checkpoints)
    if (scored_on.get("fingerprint") != store.fingerprint or scored_on.get("created") != store.identity()["created"]
            or sorted(c.get("sha256") for c in sf.attrs["checkpoints"].values()) != hashes
            or bool(sf.attrs.get("maps")) != bool(maps)):
        return None
    ids = {s: sf.video_ids(s) for s in SPLITS}
    if any(v not in store.video_ids(s) for s in SPLITS for v in ids[s]):
        return None  # it holds a video the store no longer has
    return ids


def _move_videos_in(tmp: Path, out: Path, videos: dict[str, list[str]], store: Store) -> None:
    """Each newly scored video's group renamed from the temporary file into OUT (one rename per video: a kill
    leaves OUT with whole videos only), then OUT's record of the store (its videos) brought up to date."""
    for split, ids in videos.items():
        for vid in ids:
            os.replace(tmp / split / vid, out / split / vid)
    root = zarr.open_group(zarr.storage.LocalStore(str(out)), mode="r+", zarr_format=3)
    root.attrs["store"] = {**root.attrs["store"], **store.identity()}


def _branch(name: str):
    from mtvad.students.branches import get_branch

    return get_branch(name)


def _units(row: str) -> str:
    """What a row's map holds per pixel (each reduction sums or maxes it as REDUCTION_LABELS say)."""
    return CONTROL_UNITS[row] if row in CONTROL_UNITS else _branch(row).map_units


def _write_row(group: zarr.Group, name: str, scores: dict[str, np.ndarray], valid: np.ndarray) -> None:
    """One array per reduction ('motion@patch-max') and one validity mask ('motion_valid')."""
    for reduction in REDUCTIONS:
        values = np.asarray(scores[reduction], np.float64)
        group.create_array(row_key(name, reduction), data=values, chunks=(len(values),), fill_value=np.nan,
                           attributes={"units": _units(name), "reduction": reduction})
    group.create_array(f"{name}_valid", data=np.asarray(valid, bool), chunks=(len(valid),))


def _root_attrs(store: Store, branches: dict, maps: bool, device, torch, precision: str) -> dict[str, Any]:
    cks = {}
    for name, (model, config, ckpt, path) in branches.items():
        cks[name] = {"path": str(path), "sha256": file_sha256(path), "step": int(ckpt["step"]),
                     "epoch": int(ckpt["epoch"]), "input_size": _input_size(ckpt, store),
                     "n_classes": int(ckpt["n_classes"]), "target_offset": _branch(name).target_offset(config),
                     "config": ckpt["config"], "created": ckpt.get("created"), "validation": _validation(ckpt)}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "store": {**store.identity(), "flow_valid_from": int(store.attrs.get("flow_valid_from", 1))},
        "branches": list(branches), "controls": list(CONTROLS), "rows": list(branches) + list(CONTROLS),
        "reductions": list(REDUCTIONS), "reduction_labels": {r: REDUCTION_LABELS[r] for r in REDUCTIONS},
        "patch_grid": PATCH_GRID, "flow_foreground_px": FLOW_FOREGROUND_PX, "checkpoints": cks,
        "maps": bool(maps), "map_sizes": {b: cks[b]["input_size"] for b in branches} if maps else {},
        "invalid_policy": INVALID_POLICY, "units": {k: _units(k) for k in list(branches) + list(CONTROLS)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "vad_version": __version__,
        "torch_version": str(torch.__version__), "device": str(device), "torch_threads": torch.get_num_threads(),
        "precision": precision,
    }


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _validation(ckpt: dict) -> dict[str, Any] | None:
    """The checkpoint's validation record, for the report's training curves (None: trained without one)."""
    from mtvad.students.validation import CONVERGED_RATIO

    if not ckpt.get("controls"):
        return None
    return {"videos": list(ckpt.get("validation_videos", [])), "converged_ratio": CONVERGED_RATIO,
            "controls": {k: _finite(v) for k, v in ckpt["controls"].items()},
            "history": [{"step": int(e["step"]), "loss": _finite(e["loss"]), "train_loss": _finite(e.get("train_loss"))}
                        for e in ckpt.get("validation", [])],
            "best": None if not ckpt.get("best") else {"step": int(ckpt["best"]["step"]),
                                                       "loss": _finite(ckpt["best"]["loss"])},
            "converged": ckpt.get("converged")}


def _check_out(out: Path, overwrite: bool) -> None:
    if "://" in str(out):
        raise ConfigError(f"{out}: the scores file is written to a local folder")
    if not out.exists():
        return
    if not is_scores_file(out):
        raise ScoresError(f"{out}: exists and is not a vad scores file; choose another --out (nothing was "
                          "written)")
    if not overwrite:
        raise ScoresError(f"{out}: a scores file is already there; pass --overwrite to replace it")
