"""Evaluation of a scores file (paper 4.2): frame-level AUC, micro and macro, EER, pixel-level AUC, per branch,
fused and for the teacher-only baseline. Metrics are scikit-learn's (`roc_auc_score`, `roc_curve`).

- Rows: `fused` (the calibrated branches fused, `mtvad.scoring.postprocess`), each scored branch, and the three
  teacher-only controls (`raw_flow`, `masked_flow`, `foreground_area`: `mtvad.scoring.reductions`, smoothed and
  calibrated like the others, never fused), so a user sees what the students add to their teachers alone.
  Every row is reduced to a frame score with the same reduction (`PostConfig.reduction`: `sum`, Eq. 4 as
  written; `foreground`; `patch-max`; `object-mean`; `object-sum`), read from the scores file.
- Frames counted: the test frames with labels that EVERY row can score (frames marked invalid in the scores
  file are never counted: with both branches, frame 0 and the last frame of each video are left out). All rows
  are evaluated on the same frames, so they compare.
- **micro AUC**: all counted test frames of all videos concatenated into one ROC (the field's usual number).
  **macro AUC**: the mean of per-video AUCs. A video whose counted frames are all of one class (all anomalous,
  or all normal) has no ROC: it is skipped in the macro mean and listed under `macro_skipped`; it still counts
  in the micro AUC.
- **EER**: the equal error rate of the micro ROC (false positive rate = miss rate), linearly interpolated
  between the two ROC points where they cross.
- **pixel AUC** (where the store has pixel masks and the scores file has maps, `vad score --maps`): one ROC over
  every pixel of the counted frames of videos with masks, maps and masks brought to a common resolution
  (`--pixel-size`, default 64x64: maps area-averaged, a mask pixel anomalous when at least half of its area is).
  This is the pixel-wise ROC, not the older UCSD "40 % of the anomalous pixels" criterion. Each map is compared
  with the mask of the frame it is about: the appearance map of sample t (seg-future target) with the mask of
  frame t + target_offset = t + 1, the motion map and the controls with that of frame t; the pixels counted are
  those of the frames u whose every map is counted (u - target_offset a counted frame of every branch, u itself
  counted), the same pixels for every row. The fused map is the per-pixel max of each branch's map divided by
  that branch's mean per-pixel TRAINING activation; the controls' maps are the raw teacher flow magnitude, the
  flow masked by seg > 0 and the map seg > 0.
- **per kind** (where the test videos' anomaly kind of every frame is known: the synthetic set's store carries
  it in each test video's `meta["anomaly_kinds"]`, or `--kinds FILE` gives the `anomaly_kinds.json` that
  `vad synth` writes): per row, the micro AUC of each kind's anomalous counted frames against all normal
  counted frames.
- **at threshold**: the fused decision threshold (fitted on training scores only) gives a TPR and FPR on the
  test frames; only for reading the figures, the AUCs do not depend on it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from mtvad.errors import VadError
from mtvad.scoring.metrics import eer, macro_auc, micro_auc, rates_at, two_classes
from mtvad.scoring.postprocess import PostConfig, Processed, process
from mtvad.scoring.reductions import CONTROL_TITLES, CONTROLS, control_maps
from mtvad.scoring.scores_file import ScoresFile
from mtvad.store.access import Store

DEFAULT_PIXEL_SIZE = 64
ROW_TITLES = {"fused": "fused (max of branches)", **CONTROL_TITLES}
FUSED_TITLES = {"max": "fused (max of branches)", "sum": "fused (sum of branches)"}


def row_title(row: str, fusion: str = "max") -> str:
    """A result row's title: fused, a control, or a branch (its own title)."""
    if row == "fused":
        return FUSED_TITLES.get(fusion, ROW_TITLES["fused"])
    if row in ROW_TITLES:
        return ROW_TITLES[row]
    from mtvad.students.branches import BRANCHES

    return BRANCHES[row].title if row in BRANCHES else row


class EvaluationError(VadError):
    """Evaluation is impossible as asked: no test labels, no frames to count."""


class PixelSizeError(EvaluationError):
    """A pixel size below 1: a bad option, refused by every command (not a reason to skip evaluation)."""


def check_pixel_size(pixel_size: int) -> None:
    if pixel_size < 1:
        raise PixelSizeError(f"pixel size must be >= 1; got {pixel_size}")


@dataclass
class Evaluation:
    results: dict[str, Any]  # the JSON
    processed: Processed
    labels: dict[str, np.ndarray]  # test video -> labels (None-free: videos with labels only)
    counted: dict[str, np.ndarray]  # test video -> bool mask of the counted frames
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # row -> (fpr, tpr), micro


def frame_labels(scores: ScoresFile, store: Store | None) -> dict[str, np.ndarray]:
    """Frame labels of the test videos that have them: from the store when given, else the scores file's copy."""
    out = {}
    for vid in scores.video_ids("test"):
        if store is not None:
            video = store.video("test", vid)
            label = video.label() if video.has_labels else None
        else:
            label = scores.label("test", vid)
        if label is not None:
            out[vid] = np.asarray(label).astype(np.uint8)
    return out


def result_rows(scores: ScoresFile) -> list[str]:
    """The rows of every result table, in order: fused, the branches, the teacher-only controls."""
    return ["fused", *scores.branches, *scores.controls]


def _video_number(name: str) -> int | None:
    digits = "".join(ch for ch in str(name) if ch.isdigit())
    return int(digits) if digits else None


def frame_kinds(scores: ScoresFile, store: Store | None, kinds_file: str | Path | None = None
                ) -> tuple[dict[str, list], str | None]:
    """({test video: anomaly kind of every frame (None where normal)}, where they came from), from `kinds_file`
    (`anomaly_kinds.json` of `vad synth`: videos by folder name, 'Test001', matched to the store's video by its
    `meta["folder"]`, else by number) or else from the store's `meta["anomaly_kinds"]`; ({}, None) if neither."""
    out: dict[str, list] = {}
    if kinds_file is not None:
        path = Path(kinds_file)
        try:
            data = json.loads(path.read_text())["videos"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EvaluationError(f"{path}: not an anomaly kinds file of `vad synth` ({exc})") from None
        by_number = {_video_number(k): v for k, v in data.items()}
        for vid in scores.video_ids("test"):
            folder = store.video("test", vid).meta.get("folder") if store is not None else None
            entry = data.get(folder) or data.get(vid) or by_number.get(_video_number(vid))
            if entry is not None:
                out[vid] = list(entry["frames"])
        return out, str(path)
    if store is None:
        return {}, None
    for vid in scores.video_ids("test"):
        kinds = store.video("test", vid).meta.get("anomaly_kinds")
        if kinds is not None:
            out[vid] = list(kinds)
    return out, ("store meta anomaly_kinds" if out else None)


def evaluate(scores: ScoresFile, store: Store | None = None, post: PostConfig | None = None,
             pixel_size: int = DEFAULT_PIXEL_SIZE, kinds_file: str | Path | None = None,
             pixel: bool = True) -> Evaluation:
    """All metrics of a scores file (see the module docstring). `store` (checked to be the one scored) gives the
    labels and the pixel masks; without it the labels copied into the scores file are used and no pixel AUC.
    `kinds_file`: the anomaly kind of every test frame (else the store's, when it carries them). `pixel=False`
    skips the pixel AUC (the benchmarks' many frame-level evaluations)."""
    post = (post or PostConfig()).validate()
    check_pixel_size(pixel_size)
    if store is not None:
        scores.check_store(store)
    labels = frame_labels(scores, store)
    where = f"store {store.url}" if store is not None else f"scores file {scores.path}"
    if not labels:
        raise EvaluationError(f"{where}: the test videos have no frame labels (ground truth), so there is nothing "
                              "to evaluate against; the scores themselves are in " + scores.path)
    try:
        scores.check_reduction(post.reduction)
    except VadError as exc:
        raise EvaluationError(str(exc)) from None
    processed = process(scores.raw(post.reduction), scores.branches, post)
    rows = result_rows(scores)
    test = processed.calibrated["test"]
    counted: dict[str, np.ndarray] = {}
    excluded = 0
    for vid, lab in labels.items():
        ok = np.ones(len(lab), bool)
        for row in scores.rows:
            ok &= scores.row("test", vid, row, post.reduction)[1]
        for row in rows:
            ok &= np.isfinite(test[vid][row])
        counted[vid] = ok
        excluded += int((~ok).sum())
    n_counted = sum(int(c.sum()) for c in counted.values())
    if n_counted == 0:
        raise EvaluationError(f"{scores.path}: no test frame can be scored by every row (videos too short?)")
    all_labels = [labels[v][counted[v]] for v in labels]
    results_rows: dict[str, Any] = {}
    curves = {}
    skipped_union: set[str] = set()
    for row in rows:
        per_video_scores = {v: test[v][row][counted[v]] for v in labels}
        per_video_labels = {v: labels[v][counted[v]] for v in labels}
        concat_l, concat_s = np.concatenate(all_labels), np.concatenate(list(per_video_scores.values()))
        macro, per_video, skipped = macro_auc(per_video_labels, per_video_scores)
        skipped_union.update(skipped)
        results_rows[row] = {"title": row_title(row, post.fusion), "micro_auc": micro_auc(all_labels, list(per_video_scores.values())),
                             "macro_auc": macro, "eer": eer(concat_l, concat_s), "per_video_auc": per_video}
        if two_classes(concat_l):
            fpr, tpr, _ = roc_curve(concat_l.astype(int), concat_s)
            curves[row] = (fpr, tpr)
    concat_labels = np.concatenate(all_labels)
    fused_concat = np.concatenate([test[v]["fused"][counted[v]] for v in labels])
    results: dict[str, Any] = {
        "scores": scores.path,
        "store": {**scores.attrs["store"], "given": store.url if store is not None else None},
        "labels_from": "store" if store is not None else "scores file (copied from the store at scoring)",
        "checkpoints": {b: {k: c[k] for k in ("path", "sha256", "step", "epoch", "input_size")}
                        for b, c in scores.attrs["checkpoints"].items()},
        "reduction": post.reduction,
        "controls": list(scores.controls),
        "postprocess": post.to_json(),
        "calibration": processed.calibration.to_json(),
        "threshold": {"value": processed.threshold, "quantile_of_fused_training_scores": post.threshold_quantile,
                      "at_threshold_test": rates_at(concat_labels, fused_concat, processed.threshold)},
        "frames": {"test_videos": len(scores.video_ids("test")), "videos_with_labels": len(labels),
                   "videos_without_labels": [v for v in scores.video_ids("test") if v not in labels],
                   "counted": n_counted, "anomalous": int(concat_labels.sum()),
                   "excluded_invalid": excluded,
                   "rule": "frames every row can score (invalid frames of any row are not counted)"},
        "macro_skipped": sorted(skipped_union),
        "macro_note": "videos whose counted frames are all of one class have no ROC: skipped in the macro mean, "
                      "counted in the micro AUC",
        "rows": results_rows,
    }
    results["pixel"] = (pixel_metrics(scores, store, processed, counted, pixel_size) if pixel
                        else {"note": "no pixel AUC: not asked for"})
    for row, value in results["pixel"].get("auc", {}).items():
        results_rows[row]["pixel_auc"] = value
    kinds, source = frame_kinds(scores, store, kinds_file)
    results["per_kind"] = per_kind_auc(labels, counted, test, rows, kinds, source)
    return Evaluation(results, processed, labels, counted, curves)


def per_kind_auc(labels: Mapping[str, np.ndarray], counted: Mapping[str, np.ndarray],
                 test: Mapping[str, Mapping[str, np.ndarray]], rows: list[str], kinds: Mapping[str, list],
                 source: str | None) -> dict[str, Any]:
    """Per row and anomaly kind: the micro AUC of that kind's anomalous counted frames against ALL normal counted
    frames (of every video with labels). Anomalous frames whose kind is unknown are left out of every kind."""
    if not kinds:
        return {"note": "no AUC per anomaly kind: the store carries no anomaly kinds (give --kinds FILE, e.g. "
                        "data/synth/Test/anomaly_kinds.json)"}
    normal = {v: counted[v] & (labels[v] == 0) for v in labels}
    names = sorted({k for v, ks in kinds.items() if v in labels for k in ks if k})
    frames = {}
    aucs: dict[str, dict[str, float | None]] = {row: {} for row in rows}
    for kind in names:
        own = {v: counted[v] & (labels[v] == 1) & np.array([k == kind for k in kinds[v]], bool)
               if v in kinds and len(kinds[v]) == len(labels[v]) else np.zeros(len(labels[v]), bool)
               for v in labels}
        frames[kind] = int(sum(o.sum() for o in own.values()))
        lab = np.concatenate([np.r_[np.zeros(normal[v].sum()), np.ones(own[v].sum())] for v in labels])
        for row in rows:
            sc = np.concatenate([np.r_[test[v][row][normal[v]], test[v][row][own[v]]] for v in labels])
            aucs[row][kind] = float(roc_auc_score(lab, sc)) if two_classes(lab) else None
    return {"source": source, "normal_frames": int(sum(n.sum() for n in normal.values())), "frames": frames,
            "auc": aucs, "rule": "each kind's anomalous counted frames vs all normal counted frames (micro AUC)"}


def pixel_frames(counted: np.ndarray, offsets: Mapping[str, int]) -> np.ndarray:
    """The frames u whose every map is counted: u itself counted (the controls) and, for every branch, its
    sample u - target_offset counted (its map is about frame u)."""
    n = len(counted)
    ok = np.asarray(counted, bool).copy()
    for off in offsets.values():
        shifted = np.zeros(n, bool)
        if off >= 0:
            shifted[off:] = counted[: n - off]
        else:
            shifted[: n + off] = counted[-off:]
        ok &= shifted
    return np.flatnonzero(ok)


def pixel_metrics(scores: ScoresFile, store: Store | None, processed: Processed, counted: Mapping[str, np.ndarray],
                  pixel_size: int = DEFAULT_PIXEL_SIZE) -> dict[str, Any]:
    """Pixel-wise ROC AUC per branch, fused and control at pixel_size x pixel_size, each map against the mask of
    the frame it is about; a note instead when impossible."""
    if store is None:
        return {"note": "no pixel AUC: give --store (the pixel masks are read from it)"}
    if not scores.has_maps:
        return {"note": "no pixel AUC: the scores file has no anomaly maps (score with --maps)"}
    branches = scores.branches
    offsets = {b: scores.target_offset(b) for b in branches}
    frames_of = {v: pixel_frames(counted[v], offsets) for v in counted}
    videos = [v for v in counted if store.video("test", v).has_masks and len(frames_of[v])]
    if not videos:
        return {"note": "no pixel AUC: the store has no pixel masks for the test videos"}
    check_pixel_size(pixel_size)
    import torch
    import torch.nn.functional as F

    size = (pixel_size, pixel_size)
    per_pixel_mean = {}
    for b in branches:  # mean per-pixel training activation of the branch (raw Eq. 4 sums / pixels of its map)
        h, w = scores.attrs["map_sizes"][b]
        train = [scores.row("train", v, b, "sum")[0] for v in scores.video_ids("train")]
        values = np.concatenate(train)
        values = values[np.isfinite(values)]
        per_pixel_mean[b] = max(float(values.mean()) / (h * w), 1e-12) if values.size else 1.0
    controls = list(scores.controls)
    pix_scores: dict[str, list[np.ndarray]] = {b: [] for b in branches + ["fused"] + controls}
    pix_labels: list[np.ndarray] = []

    def pool(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None]
        return F.adaptive_avg_pool2d(t, size)[:, 0] if tuple(t.shape[-2:]) != size else t[:, 0]

    for vid in videos:
        frames = frames_of[vid]  # the frames the maps are about
        video = store.video("test", vid)
        mask = video.mask()[frames]
        pix_labels.append((pool(mask.astype(np.float32)) >= 0.5).numpy().ravel())
        scaled = []
        for b in branches:
            m = pool(scores.map("test", vid, b)[frames - offsets[b]].astype(np.float32))
            pix_scores[b].append(m.numpy().ravel())
            scaled.append(m / per_pixel_mean[b])
        pix_scores["fused"].append(torch.stack(scaled).amax(0).numpy().ravel())
        from mtvad.scoring.score import teacher_video

        seg, flow = teacher_video(store, "test", vid)
        for name, m in control_maps(seg[frames], flow[frames]).items():
            if name in pix_scores:
                pix_scores[name].append(pool(m.numpy()).numpy().ravel())
    labels = np.concatenate(pix_labels).astype(int)
    out: dict[str, Any] = {"size": list(size), "videos": videos,
                           "frames": int(sum(len(frames_of[v]) for v in videos)),
                           "pixels": int(labels.size), "anomalous_pixels": int(labels.sum()),
                           "frame_rule": "each map against the mask of the frame it is about (sample t + "
                                         "target_offset); frames whose every map is counted",
                           "target_offsets": offsets,
                           "fused_map": "per-pixel max of each branch's map / its mean per-pixel training activation",
                           "control_maps": {"raw_flow": "the raw teacher flow magnitude (store px/frame)",
                                            "masked_flow": "the teacher flow magnitude where teacher seg > 0",
                                            "foreground_area": "1 where teacher seg > 0"},
                           "per_pixel_training_mean": per_pixel_mean}
    if not two_classes(labels):
        out["note"] = "no pixel AUC: the masks of the counted frames hold one class only"
        return out
    out["auc"] = {row: float(roc_auc_score(labels, np.concatenate(v))) for row, v in pix_scores.items() if v}
    return out


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def results_tables(results: dict[str, Any], per_video: bool = True) -> list:
    """Rich tables of a results dict: micro and macro side by side (as AI-VAD prints them), then per video."""
    from rich.table import Table

    post = results["postprocess"]
    title = (f"frame-level AUC on {results['frames']['counted']} test frames "
             f"({results['frames']['anomalous']} anomalous); frame score: {post['reduction']} "
             f"({post['reduction_label']}); calibration {post['normalisation']}: {post['normalisation_label']}; "
             f"fusion {post['fusion']}")
    main = Table(title=title, title_justify="left")
    for col in ("", "micro AUC", "macro AUC", "EER", "pixel AUC"):
        main.add_column(col, justify="left" if not col else "right")
    controls = set(results.get("controls", CONTROLS))
    for row, m in results["rows"].items():
        style = "bold" if row == "fused" else ("dim" if row in controls else None)
        main.add_row(m["title"], fmt(m["micro_auc"]), fmt(m["macro_auc"]), fmt(m["eer"]), fmt(m.get("pixel_auc")),
                     style=style)
    tables = [main]
    if per_video:
        rows = list(results["rows"])
        pv = Table(title="AUC per test video (macro AUC = their mean; '-' = one class only, skipped)",
                   title_justify="left")
        pv.add_column("video", justify="left")
        for row in rows:
            pv.add_column(row, justify="right")
        for vid in results["rows"]["fused"]["per_video_auc"]:
            pv.add_row(vid, *(fmt(results["rows"][r]["per_video_auc"][vid]) for r in rows))
        tables.append(pv)
    kinds = results.get("per_kind", {})
    if kinds.get("auc"):
        pk = Table(title=f"AUC per anomaly kind (its anomalous frames vs all {kinds['normal_frames']} normal frames; "
                         f"kinds from {kinds['source']})", title_justify="left")
        pk.add_column("kind (frames)", justify="left")
        rows = list(results["rows"])
        for row in rows:
            pk.add_column(row, justify="right")
        for kind, n in kinds["frames"].items():
            pk.add_row(f"{kind} ({n})", *(fmt(kinds["auc"][r][kind]) for r in rows))
        tables.append(pk)
    return tables


def results_notes(results: dict[str, Any]) -> list[str]:
    """One-line notes under the tables: skipped videos, excluded frames, pixel AUC, threshold."""
    notes = []
    f = results["frames"]
    if results["macro_skipped"]:
        notes.append(f"macro AUC skips {len(results['macro_skipped'])} video(s) with one class only: "
                     + ", ".join(results["macro_skipped"]) + " (they count in the micro AUC)")
    notes.append(f"{f['excluded_invalid']} invalid test frames not counted ({f['rule']})")
    if f["videos_without_labels"]:
        notes.append(f"test videos without labels, not evaluated: {', '.join(f['videos_without_labels'])}")
    if "note" in results["pixel"]:
        notes.append(results["pixel"]["note"])
    if "note" in results.get("per_kind", {}):
        notes.append(results["per_kind"]["note"])
    t = results["threshold"]
    at = t["at_threshold_test"]
    notes.append(f"decision threshold {t['value']:.3f} (quantile {t['quantile_of_fused_training_scores']} of the "
                 f"fused training scores): test TPR {fmt(at['tpr'], 3)}, FPR {fmt(at['fpr'], 3)}")
    if results["postprocess"]["uses_test_statistics"]:
        notes.append("WARNING: per-video min-max normalisation uses test statistics")
    return notes
