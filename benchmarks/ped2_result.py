"""The whole method on real UCSD Ped2, from the frames to the AUC table: store, training, scores, evaluation, report.

    python benchmarks/ped2_result.py                          # ../shared/data/ped2 -> /tmp/stores/ped2v2.zarr
    python benchmarks/ped2_result.py --size 128 --max-steps 250 --out runs/ped2

Stages (each a `pipeline` / `vad` command, timed; a finished stage is reused, so a rerun only redoes what is
missing):
  1. `vad precompute ped2` into --store (skipped when the store exists; it resumes otherwise)
  2. `vad train --branch both --size S --max-steps N` into OUT (with --resume when checkpoints exist: a no-op
     once they reached N steps)
  3. `vad score --maps` into OUT/scores.zarr
  4. `vad eval --out OUT/results.json`, and `vad report` into OUT/report

Nothing here looks at test labels before step 4: the size and the number of steps are fixed in advance from the
CPU time budget (about 30 minutes of training on a 2-core machine), the smoothing window and threshold are the
a-priori defaults of `mtvad.scoring.postprocess`. The stage times and the results go to OUT/ped2_result.json and a
Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(stage: str, cmd: list[str], times: dict) -> None:
    print(f"\n== {stage}: {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    times[stage] = round(time.perf_counter() - t, 1)
    print(f"== {stage}: {times[stage]} s", flush=True)


def tool(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ped2"))
    ap.add_argument("--store", default="/tmp/stores/ped2v2.zarr")
    ap.add_argument("--out", default="/tmp/runs/ped2")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--max-steps", type=int, default=250)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    if not (Path(args.store) / "zarr.json").exists():
        run("precompute", [tool("vad"), "precompute", "ped2", "--data", args.data, "--store", args.store,
                           "--workers", str(args.workers), "--no-progress"], times)
    resume = all((out / b / "last.pt").exists() for b in ("appearance", "motion"))
    run("train", [tool("vad"), "train", "--store", args.store, "--branch", "both", "--size", str(args.size),
                  "--max-steps", str(args.max_steps), "--out", str(out), "--no-progress"]
        + (["--resume"] if resume else []), times)
    scores = out / "scores.zarr"
    run("score", [tool("vad"), "score", "--store", args.store, "--checkpoint", str(out / "appearance" / "best.pt"),
                  "--checkpoint", str(out / "motion" / "best.pt"), "--out", str(scores), "--maps", "--overwrite",
                  "--no-progress"], times)
    run("eval", [tool("vad"), "eval", "--scores", str(scores), "--store", args.store, "--out",
                 str(out / "results.json")], times)
    run("report", [tool("vad"), "report", "--scores", str(scores), "--store", args.store, "--out",
                   str(out / "report")], times)
    results = json.loads((out / "results.json").read_text())
    record = {"config": vars(args), "stage_seconds": times, "results": results}
    (out / "ped2_result.json").write_text(json.dumps(record, indent=2) + "\n")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"\n| Ped2 test videos {', '.join(results['rows']['fused']['per_video_auc'])} | micro AUC | macro AUC "
          "| EER | pixel AUC |\n|---|---|---|---|---|")
    for row, m in results["rows"].items():
        print(f"| {m['title']} | {fmt(m['micro_auc'])} | {fmt(m['macro_auc'])} | {fmt(m['eer'])} "
              f"| {fmt(m.get('pixel_auc'))} |")
    print(f"\nmacro skipped: {results['macro_skipped'] or 'none'}; stage times (s): {times}; "
          f"wrote {out / 'ped2_result.json'} and {out / 'report' / 'index.html'}")


if __name__ == "__main__":
    main()
