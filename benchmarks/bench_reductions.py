"""Frame reductions x calibrations x fusions on one scores file: which default wins, with the controls beside.

    python benchmarks/bench_reductions.py --scores outputs/demo/scores.zarr --store stores/synth.zarr
    python benchmarks/bench_reductions.py --scores runs/ped2/scores.zarr --store stores/ped2.zarr --json r.json

Prints, for every reduction of the scores file (`sum`, `foreground`, `patch-max`):

1. every row (branches and teacher-only controls): micro and macro AUC on the test frames (a single row's AUC
   does not depend on the calibration: every training-fitted calibration is one affine map per row), and a
   TRAINING-ONLY number, the held-out false-alarm rate `train LOO FA`: each training video calibrated with
   the median and 99th percentile of the OTHER training videos, the share of its frames above 1 (above the
   others' 99th percentile). 0.01 when the normal level does not move between videos; larger when it does
   (crowd size, background noise), which is what costs a frame score its micro AUC;
2. the fused row for every calibration x fusion: micro and macro AUC, and the training-only `train LOO FA` of
   the fused score (each training video calibrated and thresholded, at the 0.99 quantile of the fused
   training scores, with statistics of the other training videos only);
3. with kinds (the store's, or --kinds FILE), the AUC per anomaly kind of every row under the chosen setting.

`--combine A.json B.json ...` prints one markdown table over several runs' `--json` files (e.g. the demo on
several synthetic seeds) with the mean of each setting.

Test labels are used only to print the AUCs: the training-only columns are what a default may be picked from
without looking at a benchmark's test set (the synthetic set's labels may be looked at: it is ours).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mtvad.scoring.evaluate import evaluate, fmt  # noqa: E402
from mtvad.scoring.postprocess import (  # noqa: E402
    CALIBRATION_QUANTILE,
    CALIBRATIONS,
    DEFAULT_QUANTILE,
    FUSIONS,
    PostConfig,
    fit_calibration,
    fuse,
    loc_scale,
)
from mtvad.scoring.scores_file import open_scores  # noqa: E402
from mtvad.store.access import open_store  # noqa: E402

TRAIN_CALIBRATIONS = [c for c in CALIBRATIONS if c != "per-video-minmax"]  # no test statistics here


def held_out_false_alarms(train: dict[str, dict[str, np.ndarray]], row: str) -> float:
    """Share of training frames above the 99th percentile of the other training videos (median-centred)."""
    over, total = 0, 0
    for vid, rows in train.items():
        others = np.concatenate([train[v][row] for v in train if v != vid])
        others = others[np.isfinite(others)]
        own = rows[row][np.isfinite(rows[row])]
        if not others.size or not own.size:
            continue
        loc, scale = loc_scale(others, "train-percentile", CALIBRATION_QUANTILE)
        over += int(((own - loc) / scale > 1).sum())
        total += own.size
    return over / total if total else float("nan")


def fused_held_out_false_alarms(train: dict[str, dict[str, np.ndarray]], branches: list[str], calibration: str,
                                fusion: str) -> float:
    """Each training video fused with a calibration fitted on the OTHER training videos and flagged above the
    DEFAULT_QUANTILE of those videos' fused scores: the share of its frames flagged (ideal 1 - quantile)."""
    over, total = 0, 0
    for vid in train:
        others = {v: r for v, r in train.items() if v != vid}
        if not others:
            continue
        cal = fit_calibration({b: {v: others[v][b] for v in others} for b in branches}, calibration)
        fused_others = np.concatenate([fuse({b: cal.apply(b, others[v][b], v) for b in branches}, fusion)
                                       for v in others])
        fused_others = fused_others[np.isfinite(fused_others)]
        threshold = np.quantile(fused_others, DEFAULT_QUANTILE)
        own = fuse({b: cal.apply(b, train[vid][b]) for b in branches}, fusion)
        own = own[np.isfinite(own)]
        over += int((own > threshold).sum())
        total += own.size
    return over / total if total else float("nan")


def run(scores_path: str, store_path: str, kinds: str | None, window: int, polyorder: int,
        choose: tuple[str, str, str] | None) -> dict:
    sf, store = open_scores(scores_path), open_store(store_path)
    out: dict = {"scores": scores_path, "store": store_path, "window": window, "reductions": {}}
    t0 = time.perf_counter()
    for reduction in sf.reductions:
        entry: dict = {"rows": {}, "fused": {}}
        for calibration in TRAIN_CALIBRATIONS:
            for fusion in FUSIONS:
                post = PostConfig(window=window, polyorder=polyorder, normalisation=calibration, fusion=fusion,
                                  reduction=reduction)
                ev = evaluate(sf, store, post, pixel=False, kinds_file=kinds)
                train = ev.processed.smoothed["train"]
                rows = ev.results["rows"]
                if not entry["rows"]:
                    for row in rows:
                        if row == "fused":
                            continue
                        entry["rows"][row] = {"micro_auc": rows[row]["micro_auc"], "macro_auc": rows[row]["macro_auc"],
                                              "train_loo_false_alarms": held_out_false_alarms(train, row)}
                    entry["frames"] = ev.results["frames"]
                entry["fused"][f"{calibration}/{fusion}"] = {
                    "micro_auc": rows["fused"]["micro_auc"], "macro_auc": rows["fused"]["macro_auc"],
                    "train_loo_false_alarms": fused_held_out_false_alarms(train, sf.branches, calibration, fusion)}
                if choose == (reduction, calibration, fusion):
                    out["per_kind"] = ev.results["per_kind"]
        out["reductions"][reduction] = entry
    out["seconds"] = time.perf_counter() - t0
    return out


def print_tables(r: dict) -> None:
    for reduction, entry in r["reductions"].items():
        f = entry["frames"]
        print(f"\n== reduction {reduction} ({f['counted']} test frames, {f['anomalous']} anomalous)")
        print(f"{'row':<34}{'micro':>8}{'macro':>8}{'train LOO FA':>14}")
        for row, m in entry["rows"].items():
            print(f"{row:<34}{fmt(m['micro_auc'], 3):>8}{fmt(m['macro_auc'], 3):>8}"
                  f"{fmt(m['train_loo_false_alarms'], 3):>14}")
        for name, m in entry["fused"].items():
            print(f"{'fused ' + name:<34}{fmt(m['micro_auc'], 3):>8}{fmt(m['macro_auc'], 3):>8}"
                  f"{fmt(m['train_loo_false_alarms'], 3):>14}")
    pk = r.get("per_kind", {})
    if pk.get("auc"):
        print(f"\n== AUC per anomaly kind ({r['chosen']}; kinds from {pk['source']}, vs {pk['normal_frames']} normal "
              "frames)")
        rows = list(pk["auc"])
        print(f"{'kind (frames)':<18}" + "".join(f"{row[:12]:>13}" for row in rows))
        for kind, n in pk["frames"].items():
            print(f"{kind + f' ({n})':<18}" + "".join(f"{fmt(pk['auc'][row][kind], 3):>13}" for row in rows))
    print(f"\n({r['seconds']:.1f} s)")


def combine(paths: list[str]) -> None:
    """One markdown table over several runs' --json files: fused micro / macro AUC and train LOO FA per
    reduction x calibration x fusion, one column per run and the mean."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    print("| fused: reduction / calibration / fusion | " + " | ".join(f"run {i + 1}" for i in range(len(runs)))
          + " | mean micro | mean macro | mean train LOO FA |")
    print("|---" * (len(runs) + 4) + "|")
    for reduction, entry in runs[0]["reductions"].items():
        for name in entry["fused"]:
            ms = [r["reductions"][reduction]["fused"][name] for r in runs]
            cells = [f"{m['micro_auc']:.3f} / {m['macro_auc']:.3f} / {m['train_loo_false_alarms']:.3f}" for m in ms]
            mean = [np.mean([m[k] for m in ms]) for k in ("micro_auc", "macro_auc", "train_loo_false_alarms")]
            print(f"| {reduction} / {name.replace('/', ' / ')} | " + " | ".join(cells)
                  + f" | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} |")
    print("\n| row (micro AUC) | reduction | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | mean |")
    print("|---" * (len(runs) + 3) + "|")
    for row in runs[0]["reductions"]["sum"]["rows"]:
        for reduction in runs[0]["reductions"]:
            vals = [r["reductions"][reduction]["rows"][row]["micro_auc"] for r in runs]
            print(f"| {row} | {reduction} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {np.mean(vals):.3f} |")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--combine":
        return combine(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="bench_reductions.py --combine A.json B.json ...: one table over runs")
    parser.add_argument("--scores", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--kinds", default=None, help="anomaly_kinds.json (default: the store's kinds, if any)")
    parser.add_argument("--window", type=int, default=15)
    parser.add_argument("--polyorder", type=int, default=2)
    parser.add_argument("--per-kind", default=None, metavar="REDUCTION/CALIBRATION/FUSION",
                        help="the setting of the per-kind table (default: the defaults of vad eval)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    post = PostConfig()
    choose = tuple(args.per_kind.split("/")) if args.per_kind else (post.reduction, post.normalisation, post.fusion)
    r = run(args.scores, args.store, args.kinds, args.window, args.polyorder, choose)
    r["chosen"] = "/".join(choose)
    print_tables(r)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
