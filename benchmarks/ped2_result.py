"""The whole method on real UCSD Ped2, from the frames to the AUC table: store, training, scores, evaluation, report.

    python benchmarks/ped2_result.py                 # ../shared/data/ped2 -> /tmp/stores/ped2-motion.zarr, the recipe
    python benchmarks/ped2_result.py --size 128 --max-steps 250 --out runs/ped2

Stages (each a `pipeline` / `vad` command, timed; a finished stage is reused, so a rerun only redoes what is
missing):
  1. `vad precompute ped2 --preset P` into --store (skipped when the store exists; it resumes otherwise)
  2. `vad train --branch both` into OUT: the recipe's settings (on a CPU the cpu recipe), or --size / --max-steps
     when given (with --resume when checkpoints exist: a no-op once they reached their steps)
  3. `vad score --maps` into OUT/scores.zarr
  4. `vad eval --out OUT/results.json`, and `vad report` into OUT/report

Nothing here looks at test labels before step 4: the size and the number of steps are the cpu recipe's, fixed
in advance from the CPU time budget (both branches within an hour on a 2-core machine), the checkpoints are
best.pt by validation loss on held-out training videos, the reduction, calibration and fusion are the defaults
chosen on the synthetic data. The stage times, the training figures (samples/s per branch, the time to the
first validation that beats the branch's controls by the convergence margin, from OUT/<branch>/log.jsonl and
history.json), the scoring rate and the results go to OUT/ped2_result.json and Markdown tables are printed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "src"))

from mtvad.students.validation import CONVERGED_RATIO  # noqa: E402


def run(stage: str, cmd: list[str], times: dict) -> str:
    """Run one stage (its stderr shown live), time it; its stdout is printed and returned."""
    print(f"\n== {stage}: {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    stdout = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    times[stage] = round(time.perf_counter() - t, 1)
    print(stdout, end="")
    print(f"== {stage}: {times[stage]} s", flush=True)
    return stdout


def training_figures(branch_dir: Path) -> dict:
    """A branch's training run from its log.jsonl and history.json: steps, samples/s (the median of the steps'
    rates), training wall time, and the first validation that beat the convergence margin over the best
    control (its step and the training seconds to reach it)."""
    log = [json.loads(line) for line in (branch_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    history = json.loads((branch_dir / "history.json").read_text())
    seconds = {e["step"]: e.get("train_seconds") for e in log}
    bar = CONVERGED_RATIO * min(history["controls"].values())
    first = next((e for e in history["history"] if e["loss"] is not None and e["loss"] < bar), None)
    rates = sorted(e["samples_per_s"] for e in log if "samples_per_s" in e)
    return {"steps": log[-1]["step"], "samples_per_s_median": rates[len(rates) // 2] if rates else None,
            "train_seconds": log[-1].get("train_seconds"), "controls": history["controls"],
            "best": history["best"], "converged": history["converged"],
            "first_beating_controls": None if first is None else
            {"step": first["step"], "train_seconds": seconds.get(first["step"]), "loss": first["loss"]}}


def tool(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ped2"))
    ap.add_argument("--store", default="/tmp/stores/ped2-motion.zarr")
    ap.add_argument("--preset", default="cpu-motion")
    ap.add_argument("--out", default="/tmp/runs/ped2")
    ap.add_argument("--size", type=int, help="default: the recipe's")
    ap.add_argument("--max-steps", type=int, help="default: the recipe's")
    ap.add_argument("--seed", type=int, default=0, help="training seed (two seeds give the run-to-run noise)")
    ap.add_argument("--train-amp", choices=("auto", "off"), default="auto",
                    help="vad train --amp (off: float32 training); scoring keeps its default")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    if not (Path(args.store) / "zarr.json").exists():
        run("precompute", [tool("vad"), "precompute", "ped2", "--data", args.data, "--store", args.store,
                           "--preset", args.preset, "--workers", str(args.workers), "--no-progress"], times)
    resume = all((out / b / "last.pt").exists() for b in ("appearance", "motion"))
    run("train", [tool("vad"), "train", "--store", args.store, "--branch", "both", "--out", str(out), "--no-progress",
                  "--seed", str(args.seed), "--amp", args.train_amp]
        + (["--size", str(args.size)] if args.size else []) + (["--max-steps", str(args.max_steps)] if args.max_steps
                                                               else []) + (["--resume"] if resume else []), times)
    training = {b: training_figures(out / b) for b in ("appearance", "motion")}
    scores = out / "scores.zarr"
    scored = run("score", [tool("vad"), "score", "--store", args.store, "--checkpoint", str(out / "appearance" / "best.pt"),
                  "--checkpoint", str(out / "motion" / "best.pt"), "--out", str(scores), "--maps", "--overwrite",
                  "--no-progress"], times)
    run("eval", [tool("vad"), "eval", "--scores", str(scores), "--store", args.store, "--out",
                 str(out / "results.json")], times)
    run("report", [tool("vad"), "report", "--scores", str(scores), "--store", args.store, "--out",
                   str(out / "report")], times)
    results = json.loads((out / "results.json").read_text())
    rates = dict(re.findall(r"(\w+) ([\d.]+)", re.search(r"frames/s: ([^;]*);", scored).group(1)))
    record = {"config": vars(args), "stage_seconds": times, "training": training,
              "scoring_frames_per_s": {b: float(v) for b, v in rates.items()}, "results": results}
    (out / "ped2_result.json").write_text(json.dumps(record, indent=2) + "\n")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    videos = list(results["rows"]["fused"]["per_video_auc"])
    print(f"\n| Ped2 test videos {', '.join(videos)} ({results['reduction']}) | micro AUC | macro AUC | EER | "
          f"pixel AUC | {' | '.join(videos)} |\n|---|---|---|---|---|" + "---|" * len(videos))
    for row, m in results["rows"].items():
        print(f"| {m['title']} | {fmt(m['micro_auc'])} | {fmt(m['macro_auc'])} | {fmt(m['eer'])} "
              f"| {fmt(m.get('pixel_auc'))} | " + " | ".join(fmt(m["per_video_auc"].get(v)) for v in videos) + " |")
    print("\n| training (cpu recipe unless --size/--max-steps) | steps | samples/s | training time | first "
          "validation beating its controls | best.pt |\n|---|---|---|---|---|---|")
    for b, t in training.items():
        first = t["first_beating_controls"]
        print(f"| {b} | {t['steps']} | {t['samples_per_s_median']} | {t['train_seconds'] / 60:.1f} min | "
              + (f"step {first['step']}, {first['train_seconds'] / 60:.1f} min" if first else "never")
              + f" | step {t['best']['step']}, {t['best']['loss'] / min(t['controls'].values()):.2f}x best control |")
    print(f"\nscoring frames/s: {record['scoring_frames_per_s']}")
    print(f"\nmacro skipped: {results['macro_skipped'] or 'none'}; stage times (s): {times}; "
          f"wrote {out / 'ped2_result.json'} and {out / 'report' / 'index.html'}")


if __name__ == "__main__":
    main()
