"""A report of a scores file: PNG figures (matplotlib, Agg) and one `index.html` page that shows them.

    OUT/index.html                the page: the AUC table, settings, and every figure below, embedded
    OUT/results.json              what `vad eval --out FILE` writes
    OUT/roc.png                   frame-level ROC (micro) of each branch, fused and the teacher-only controls
    OUT/per_video_auc.png         per-video AUC of each row (videos with one class only are marked skipped)
    OUT/training.png              each branch's validation loss during training (held-out training videos)
                                  against its trivial controls and the convergence bar, best.pt marked
    OUT/timelines/<video>.png     calibrated, smoothed scores per test video over time: each branch, fused,
                                  the controls; ground-truth anomalous frames shaded; the decision threshold
    OUT/maps_<branch>.png         the test frames the branch scores highest (the top frame of as many videos as
                                  possible, then others at least a smoothing window apart),
                                  input frame with the ground-truth mask outlined (top) and the anomaly map over
                                  it (bottom), as the paper's Figs. 7-8 (needs `vad score --maps`)

The page lists exactly the figures written (`Report.figures`); without ground truth there is no ROC and no AUC
(the page says so), and without maps no overlays (it says so too). OUT may hold other files: they are left
alone, and a file of the names above that vad did not write there is refused before anything is written
(`mtvad.written`).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtvad.scoring.evaluate import EvaluationError, check_pixel_size, evaluate, fmt, result_rows, row_title
from mtvad.scoring.postprocess import PostConfig, process
from mtvad.scoring.scores_file import ScoresFile
from mtvad.store.access import Store
from mtvad.written import check_replaceable, replacing, write_text

BRANCH_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")  # in the scores file's order


CONTROL_STYLES = {"raw_flow": ("--", "tab:gray"), "masked_flow": (":", "dimgray"), "foreground_area": ("-.", "silver")}


def _styles(branches: list[str]) -> dict[str, tuple[str, str]]:
    """(line style, colour) of each row of the figures: the teacher-only controls in greys, dashed."""
    styles = {"fused": ("-", "black"), **CONTROL_STYLES}
    for i, b in enumerate(branches):
        styles[b] = ("-", BRANCH_COLOURS[i % len(BRANCH_COLOURS)])
    return styles


@dataclass
class Report:
    out: Path
    page: Path
    figures: list[Path] = field(default_factory=list)  # every figure the page shows, all written
    notes: list[str] = field(default_factory=list)
    results: dict[str, Any] | None = None


# The report's files in its folder (`report_files` lists them all, for the check before writing)
INDEX, RESULTS, TRAINING = "index.html", "results.json", "training.png"
ROC, PER_VIDEO_AUC = "roc.png", "per_video_auc.png"
MAPS_PREFIX, TIMELINES = "maps_", "timelines"  # maps_<branch>.png; timelines/<video>.png


def maps_name(branch: str) -> str:
    return f"{MAPS_PREFIX}{branch}.png"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, report: Report, dpi: int = 90) -> None:
    with replacing(path, report.out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    _plt().close(fig)
    report.figures.append(path)


def _spans(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of 1s."""
    padded = np.concatenate([[0], np.asarray(labels).astype(int), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))


def make_report(scores: ScoresFile, store: Store, out: str | Path, post: PostConfig | None = None,
                top_k: int = 6, pixel_size: int = 64, kinds_file: str | Path | None = None) -> Report:
    post = (post or PostConfig()).validate()
    check_pixel_size(pixel_size)  # a bad option is refused, not reported as "no evaluation"
    scores.check_store(store)
    out = Path(out)
    check_replaceable(out, report_files(scores, out), "--out")  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, out / INDEX)
    try:
        ev = evaluate(scores, store, post, pixel_size, kinds_file)
        processed, labels, results = ev.processed, ev.labels, ev.results
        report.results = results
        write_text(out / RESULTS, json.dumps(results, indent=2) + "\n", out)
    except EvaluationError as exc:
        ev, results, labels = None, None, {}
        processed = process(scores.raw(post.reduction), scores.branches, post)
        report.notes.append(f"No evaluation: {exc}")
    rows = result_rows(scores)
    title = {row: row_title(row, post.fusion) for row in rows}
    styles = _styles(list(scores.branches))
    plt = _plt()

    if ev is not None and ev.curves:
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for row in rows:
            if row in ev.curves:
                fpr, tpr = ev.curves[row]
                ax.plot(fpr, tpr, styles[row][0], color=styles[row][1], lw=2 if row == "fused" else 1.3,
                        label=f"{title[row]}: AUC {fmt(results['rows'][row]['micro_auc'], 3)}")
        ax.plot([0, 1], [0, 1], ":", color="lightgray")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
               title=f"frame-level ROC (micro), {results['frames']['counted']} frames, {post.reduction}")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        _save(fig, out / ROC, report)

        vids = list(labels)
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(vids) * len(rows) / 2 + 2), 3.6))
        width = 0.8 / len(rows)
        for i, row in enumerate(rows):
            per = results["rows"][row]["per_video_auc"]
            vals = [per[v] if per[v] is not None else 0 for v in vids]
            ax.bar(np.arange(len(vids)) + i * width - 0.4 + width / 2, vals, width, color=styles[row][1],
                   label=title[row], alpha=0.85, hatch="//" if row in scores.controls else None)
        for j, v in enumerate(vids):
            if results["rows"]["fused"]["per_video_auc"][v] is None:
                ax.text(j, 0.02, "skipped:\none class", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_xticks(np.arange(len(vids)), vids, rotation=90 if len(vids) > 20 else 0, fontsize=8)
        ax.set(ylim=(0, 1), ylabel="AUC", title="per-video frame AUC (their mean is the macro AUC)")
        ax.axhline(0.5, color="lightgray", lw=0.8)
        ax.legend(fontsize=7, ncol=len(rows), loc="lower left")
        fig.tight_layout()
        _save(fig, out / PER_VIDEO_AUC, report)

    test = processed.calibrated["test"]
    for vid in scores.video_ids("test"):
        series = test[vid]
        n = len(series["fused"])
        fig, ax = plt.subplots(figsize=(9, 3.2))
        lab = labels.get(vid)
        if lab is not None:
            for a, b in _spans(lab):
                ax.axvspan(a - 0.5, b - 0.5, color="red", alpha=0.15, lw=0)
        for row in rows:  # fused first, wide and light: the branches stay visible
            ax.plot(np.arange(n), series[row], styles[row][0], color=styles[row][1], lw=4 if row == "fused" else 1.1,
                    alpha=0.3 if row == "fused" else 1.0, label=title[row])
        ax.axhline(processed.threshold, color="crimson", lw=1, ls="-.", label="decision threshold (training)")
        unit = ("per-video min-max (test statistics)" if post.uses_test_statistics
                else f"calibrated ({post.normalisation}, training statistics)")
        ax.set(xlim=(0, max(n - 1, 1)), xlabel="frame", ylabel=unit,
               title=f"test/{vid}" + ("" if lab is not None else " (no ground truth)")
               + ("  - red: ground-truth anomalous frames" if lab is not None else ""))
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
        fig.tight_layout()
        _save(fig, out / TIMELINES / f"{vid}.png", report, dpi=80)

    _training_figure(scores, out / TRAINING, report, plt)
    if not scores.has_maps:
        report.notes.append("No anomaly-map overlays: the scores file has no maps (run `vad score --maps`).")
    else:
        for branch in scores.branches:
            _maps_figure(scores, store, processed, branch, labels, top_k, post.window, out / maps_name(branch),
                         report)
    _write_page(scores, processed, post, report)
    return report


def report_files(scores: ScoresFile, out: Path) -> list[Path]:
    """Every file a report of `scores` may write into `out`."""
    return ([out / name for name in (INDEX, RESULTS, ROC, PER_VIDEO_AUC, TRAINING)]
            + [out / maps_name(branch) for branch in scores.branches]
            + [out / TIMELINES / f"{vid}.png" for vid in scores.video_ids("test")])


def _training_figure(scores: ScoresFile, path: Path, report: Report, plt) -> None:
    """Validation loss per checkpoint of each branch's run (held-out training videos) against its trivial
    controls and the convergence bar; a branch that did not converge gets a note on the page."""
    runs = {b: c["validation"] for b, c in scores.attrs["checkpoints"].items() if c.get("validation")}
    if not runs:
        return
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False)
    for ax, (branch, v) in zip(axes[0], runs.items()):
        steps = [e["step"] for e in v["history"]]
        ax.plot(steps, [e["loss"] for e in v["history"]], "o-", ms=3, color="black", label="validation loss")
        ax.plot(steps, [e["train_loss"] for e in v["history"]], "-", lw=0.8, color="gray", alpha=0.7,
                label="training loss (last step)")
        controls = {k: c for k, c in v["controls"].items() if c is not None}
        for (name, loss), color in zip(controls.items(), ("tab:blue", "tab:orange", "tab:green")):
            ax.axhline(loss, ls="--", lw=1, color=color, label=f"control: {name}")
        ratio = v["converged_ratio"]
        if controls:
            ax.axhline(ratio * min(controls.values()), ls=":", lw=1, color="crimson",
                       label=f"converged below ({ratio} x best control)")
        if v["best"] and v["best"]["loss"] is not None:
            ax.plot([v["best"]["step"]], [v["best"]["loss"]], "*", ms=12, color="gold", mec="black",
                    label=f"best.pt (step {v['best']['step']})")
        scored = scores.attrs["checkpoints"][branch]["step"]
        ax.set(xlabel="step", ylabel="patch loss (Eq. 6)", yscale="log",
               title=f"{branch}: {'converged' if v['converged'] else 'NOT converged'} (scored: step {scored})")
        ax.legend(fontsize=7)
        if v["converged"] is False:
            report.notes.append(f"The {branch} student has not converged: its validation loss is not below "
                                f"{ratio} x that of its best trivial control, so its scores mostly "
                                "measure what the control gives for free (train longer).")
    fig.tight_layout()
    _save(fig, path, report)


def top_frames(series: dict[str, np.ndarray], k: int, spacing: int) -> list[tuple[str, int, float]]:
    """The k highest (video, frame, score): first the top frame of as many videos as possible (variety, as the
    paper's figures), then the next highest at least `spacing` frames from those chosen in the same video;
    sorted by score."""
    cands = [(float(s[t]), vid, int(t)) for vid, s in series.items() for t in np.flatnonzero(np.isfinite(s))]
    cands.sort(key=lambda c: (-c[0], c[1], c[2]))
    chosen: list[tuple[str, int, float]] = []
    for value, vid, t in cands:  # pass 1: one per video
        if len(chosen) < k and all(v != vid for v, _, _ in chosen):
            chosen.append((vid, t, value))
    for value, vid, t in cands:  # pass 2: fill up, spaced within a video
        if len(chosen) < k and all(v != vid or abs(t - u) >= spacing for v, u, _ in chosen):
            chosen.append((vid, t, value))
    return sorted(chosen, key=lambda c: (-c[2], c[0], c[1]))


def _maps_figure(scores: ScoresFile, store: Store, processed, branch: str, labels: dict, k: int, spacing: int,
                 path: Path, report: Report) -> None:
    plt = _plt()
    series = {vid: processed.calibrated["test"][vid][branch] for vid in scores.video_ids("test")}
    chosen = top_frames(series, k, max(1, spacing))
    if not chosen:
        report.notes.append(f"No {branch} overlays: no valid test frame.")
        return
    offset = int(scores.attrs["checkpoints"][branch].get("target_offset", 0))
    fig, axes = plt.subplots(2, len(chosen), figsize=(2.6 * len(chosen), 5.6), squeeze=False)
    vmax = max(float(np.nanmax(scores.map("test", vid, branch, t).astype(np.float32))) for vid, t, _ in chosen) or 1
    for col, (vid, t, value) in enumerate(chosen):
        video = store.video("test", vid)
        shown = min(t + offset, video.n_frames - 1)  # the frame whose teacher output the map compares
        frame = video.frames(shown)
        h, w = frame.shape[:2]
        amap = scores.map("test", vid, branch, t).astype(np.float32)
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(frame)
        if video.has_masks:
            mask = video.mask(shown)
            if mask.any():
                top.contour(mask, levels=[0.5], colors="red", linewidths=1)
        lab = labels.get(vid)
        tag = "" if lab is None else (" anomalous" if lab[t] else " normal")
        top.set_title(f"test/{vid} frame {shown}{tag}", fontsize=8)
        bottom.imshow(frame.mean(axis=2), cmap="gray", extent=(0, w, h, 0))
        bottom.imshow(amap, cmap="inferno", alpha=0.65, vmin=0, vmax=vmax, extent=(0, w, h, 0),
                      interpolation="bilinear")
        bottom.set_xlabel(f"calibrated score {value:.2f}", fontsize=8)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{branch} branch: the {len(chosen)} highest-scoring test frames (top: input, ground truth in "
                 f"red; bottom: anomaly map, shared scale 0-{vmax:.2f})", fontsize=9)
    fig.tight_layout()
    _save(fig, path, report, dpi=80)


def _write_page(scores: ScoresFile, processed, post: PostConfig, report: Report) -> None:
    out, r = report.out, report.results
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>vad report: {e(scores.path)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th:first-child,td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
             ".warn{color:#a00}</style></head><body>",
             f"<h1>Anomaly detection report</h1><p>scores <code>{e(scores.path)}</code>, store "
             f"<code>{e(str(scores.attrs['store']['url']))}</code> (dataset {e(str(scores.attrs['store']['dataset']))}, "
             f"fingerprint {e(scores.fingerprint[:12])}), branches {e(', '.join(scores.branches))}.</p>"]
    if post.uses_test_statistics:
        parts.append("<p class='warn'><b>Normalisation: per-video min-max, which uses test statistics.</b></p>")
    if r is not None:
        parts.append(f"<h2>Frame-level results</h2><p>{r['frames']['counted']} test frames counted "
                     f"({r['frames']['anomalous']} anomalous), {r['frames']['excluded_invalid']} invalid frames "
                     f"left out. Frame score: {e(post.reduction)} ({e(r['postprocess']['reduction_label'])}). "
                     f"Calibration: {e(post.normalisation)}, " + e(r["postprocess"]["normalisation_label"])
                     + f". Fusion: {e(post.fusion)}. The controls use no student.</p>")
        parts.append("<table><tr><th></th><th>micro AUC</th><th>macro AUC</th><th>EER</th><th>pixel AUC</th></tr>")
        for row, m in r["rows"].items():
            parts.append(f"<tr><td>{e(m['title'])}</td><td>{fmt(m['micro_auc'])}</td><td>{fmt(m['macro_auc'])}</td>"
                         f"<td>{fmt(m['eer'])}</td><td>{fmt(m.get('pixel_auc'))}</td></tr>")
        parts.append("</table>")
        kinds = r.get("per_kind", {})
        if kinds.get("auc"):
            parts.append(f"<h3>AUC per anomaly kind</h3><p>Each kind's anomalous frames against all "
                         f"{kinds['normal_frames']} normal frames (kinds from {e(str(kinds['source']))}).</p>")
            parts.append("<table><tr><th>kind (frames)</th>"
                         + "".join(f"<th>{e(m['title'])}</th>" for m in r["rows"].values()) + "</tr>")
            for kind, n in kinds["frames"].items():
                parts.append(f"<tr><td>{e(kind)} ({n})</td>"
                             + "".join(f"<td>{fmt(kinds['auc'][row][kind])}</td>" for row in r["rows"]) + "</tr>")
            parts.append("</table>")
        if r["macro_skipped"]:
            parts.append(f"<p>Skipped in the macro AUC (one class only): {e(', '.join(r['macro_skipped']))}.</p>")
        if "note" in r["pixel"]:
            parts.append(f"<p>{e(r['pixel']['note'])}</p>")
        at = r["threshold"]["at_threshold_test"]
        parts.append(f"<p>Decision threshold {processed.threshold:.3f} (the {post.threshold_quantile} quantile of the "
                     f"fused training scores): on the test frames TPR {fmt(at['tpr'], 3)}, FPR {fmt(at['fpr'], 3)}, "
                     f"{fmt(at['flagged'], 3)} of frames flagged.</p>")
    for note in report.notes:
        parts.append(f"<p class='warn'>{e(note)}</p>")
    parts.append(f"<p>Smoothing: Savitzky-Golay, window {post.window} frames, order {post.polyorder}. Checkpoints: "
                 + "; ".join(f"{e(b)} step {c['step']} ({e(c['sha256'][:12])})"
                             for b, c in scores.attrs["checkpoints"].items()) + ".</p>")
    sections = [("Training: validation loss on held-out training videos", lambda p: p.name == TRAINING),
                ("ROC curves", lambda p: p.name == ROC),
                ("Per-video AUC", lambda p: p.name == PER_VIDEO_AUC),
                ("Anomaly maps of the highest-scoring frames", lambda p: p.name.startswith(MAPS_PREFIX)),
                ("Score timelines per test video", lambda p: p.parent.name == TIMELINES)]
    for title, pick in sections:
        figs = [p for p in report.figures if pick(p)]
        if figs:
            parts.append(f"<h2>{e(title)}</h2>")
            for p in figs:
                rel = p.relative_to(out).as_posix()
                parts.append(f"<p><a href='{e(rel)}'><img src='{e(rel)}' alt='{e(rel)}'></a></p>")
    parts.append("</body></html>")
    write_text(report.page, "\n".join(parts) + "\n", out)
