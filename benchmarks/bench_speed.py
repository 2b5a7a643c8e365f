"""Training and scoring speed of the students, before and after the CPU recipe, in one run (`make bench-train`).

    python benchmarks/bench_speed.py --store stores/ped2-cpu-motion.zarr

before: the paper's networks (resnet34-UNet, vgg16-UNet with SCSE and attention) in float32, contiguous
        tensors; scoring reads each branch's arrays itself, float32 (the project before the CPU recipe's change);
after:  the CPU recipe's networks (CPU_APPEARANCE_ENCODER, CPU_MOTION_ENCODER) in channels_last, under bf16
        autocast where the CPU has it (`mtvad.students.device`: float32 otherwise, as the first line says);
        scoring reads each array once for both branches.

Training: samples/s of full steps (the branch's batch from the store's training videos, forward, the training
loss, backward, fused Adam) at the CPU recipe's input size, batch 8, after a warm-up step; the median of
`--repeats` timed blocks, before and after interleaved, so that other jobs slow both alike. Scoring: frames/s of
`score_branch_video` over test videos (reads, forward, maps and reductions), both branches of a video timed
together and each alone. Timings on a shared 2-core machine are noisy: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mtvad.scoring.reductions import object_keys  # noqa: E402
from mtvad.scoring.score import score_branch_video, teacher_video  # noqa: E402
from mtvad.store.access import open_store  # noqa: E402
from mtvad.students.branches import channels_last, get_branch  # noqa: E402
from mtvad.students.config import DataConfig, OptimConfig, RunConfig, TrainConfig, resolve_recipe  # noqa: E402
from mtvad.students.data import make_train_data, n_outputs  # noqa: E402
from mtvad.students.device import Precision, precision_for  # noqa: E402
from mtvad.students.loss import training_loss  # noqa: E402

CPU = torch.device("cpu")
BRANCHES = ("appearance", "motion")


def recipe_config(store, recipe: str) -> TrainConfig:
    """The cpu recipe's settings; `before` keeps the paper's networks (the recipe before this change)."""
    cfg = TrainConfig(data=DataConfig(store=store.url, in_memory=True), optim=OptimConfig(batch_size=8),
                      run=RunConfig(out="/tmp/unused", recipe="cpu"))
    if recipe == "before":
        cfg.appearance.encoder, cfg.motion.encoder = "resnet34", "vgg16"
    return resolve_recipe(cfg, "cpu", store.resolution)[0]


class Trainer:
    """One branch's training step in one setting, ready to time."""

    def __init__(self, store, branch: str, recipe: str, precision: Precision):
        self.cfg, self.recipe = recipe_config(store, recipe), recipe
        self.branch, self.precision, self.n_classes = get_branch(branch), precision, n_outputs(store.classes)
        self.size = self.cfg.data.size
        self.data = make_train_data(store, branch, self.cfg, CPU)
        torch.manual_seed(0)
        model = self.branch.build_model(self.cfg, self.n_classes).train()
        self.model = channels_last(model) if recipe == "after" else model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
        self.data.sampler.set_epoch(0)
        self.batches = iter(self.data.loader)
        self.step()  # warm-up

    def step(self) -> int:
        raw = next(self.batches)
        inputs, target = self.branch.batch(raw, self.cfg, self.n_classes, self.size, CPU)
        if self.recipe == "before":  # contiguous tensors, float32: as before the change
            prediction = self.branch.prediction(self.model(*inputs))
        else:
            prediction = self.branch.predict(self.model, inputs, self.precision.autocast())
        loss = training_loss(prediction, target, self.cfg.optim.patch_grid, self.branch.mean_loss_weight(self.cfg))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return len(target)

    def rate(self, steps: int) -> float:
        t0, n = time.perf_counter(), 0
        for _ in range(steps):
            n += self.step()
        return n / (time.perf_counter() - t0)


def bench_training(store, steps: int, repeats: int, precision: Precision) -> dict:
    fp32 = precision_for(CPU, "off")
    out = {}
    for branch in BRANCHES:
        trainers = {"before": Trainer(store, branch, "before", fp32), "after": Trainer(store, branch, "after",
                                                                                      precision)}
        rates: dict[str, list[float]] = {k: [] for k in trainers}
        for _ in range(repeats):
            for key, trainer in trainers.items():
                rates[key].append(trainer.rate(steps))
        out[branch] = {k: round(statistics.median(v), 1) for k, v in rates.items()}
        out[branch]["encoders"] = {k: t.model.encoder_name for k, t in trainers.items()}
        print(f"training {branch}: {out[branch]}", flush=True)
        del trainers
    return out


def bench_scoring(store, videos: list[str], precision: Precision, batch_size: int = 16,
                  recipes: tuple[str, ...] = ("before", "after")) -> dict:
    n_classes = n_outputs(store.classes)
    out = {}
    for recipe in recipes:
        cfg = recipe_config(store, recipe)
        models = {}
        for branch in BRANCHES:
            torch.manual_seed(0)
            models[branch] = get_branch(branch).build_model(cfg, n_classes).eval()
        ckpt = {"n_classes": n_classes, "input_size": cfg.data.size, "config_obj": cfg}
        prec = precision if recipe == "after" else None
        seconds = {b: 0.0 for b in BRANCHES}
        frames = 0
        for vid in videos:
            reads: dict | None = {} if recipe == "after" else None
            keys = object_keys(*teacher_video(store, "test", vid, reads))
            for branch in BRANCHES:
                t0 = time.perf_counter()
                score_branch_video(store, "test", vid, branch, models[branch], cfg, ckpt, CPU, batch_size,
                                   teacher_keys=keys, precision=prec, reads=reads)
                seconds[branch] += time.perf_counter() - t0
            frames += store.video("test", vid).n_frames
        out[recipe] = {**{b: round(frames / s, 1) for b, s in seconds.items()},
                       "both": round(frames / sum(seconds.values()), 1)}
        print(f"scoring {recipe}, batch {batch_size}: frames/s {out[recipe]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="stores/ped2-cpu-motion.zarr")
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed block")
    parser.add_argument("--repeats", type=int, default=3, help="timed blocks per setting (the median is kept)")
    parser.add_argument("--videos", type=int, default=2, help="test videos scored")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--scoring-batches", default="", help="also score 'after' at these batch sizes (e.g. "
                                                              "8,32,64; vad score's default is 16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = open_store(args.store)
    precision = precision_for(CPU, "auto")
    print(f"store {args.store}: {store.resolution[0]}x{store.resolution[1]}; {args.threads} torch threads; after: "
          f"{precision.reason}, channels_last", flush=True)
    training = bench_training(store, args.steps, args.repeats, precision)
    scoring = bench_scoring(store, store.video_ids("test")[: args.videos], precision)
    size = recipe_config(store, "after").data.size
    print(f"\n| {size[0]}x{size[1]}, batch 8, {args.threads} threads | before | after | after / before |\n|---|---|---|---|")
    for branch in BRANCHES:
        t = training[branch]
        print(f"| training samples/s, {branch} ({t['encoders']['before']} fp32 -> {t['encoders']['after']} "
              f"{precision.name}, channels_last) | {t['before']} | {t['after']} | {t['after'] / t['before']:.1f}x |")
    for key in (*BRANCHES, "both"):
        b, a = scoring["before"][key], scoring["after"][key]
        print(f"| scoring frames/s, {key} | {b} | {a} | {a / b:.1f}x |")
    batches = {16: scoring["after"]}
    for b in (int(x) for x in args.scoring_batches.split(",") if x):
        batches[b] = bench_scoring(store, store.video_ids("test")[: args.videos], precision, b, ("after",))["after"]
    if len(batches) > 1:
        print("\n| scoring frames/s, after | " + " | ".join(f"batch {b}" for b in sorted(batches)) + " |\n|---|"
              + "---|" * len(batches))
        for key in (*BRANCHES, "both"):
            print(f"| {key} | " + " | ".join(str(batches[b][key]) for b in sorted(batches)) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"training_samples_per_s": training, "scoring_frames_per_s": scoring,
                                               "scoring_frames_per_s_by_batch": batches,
                                               "precision": precision.reason, "threads": args.threads}, indent=2))


if __name__ == "__main__":
    main()
