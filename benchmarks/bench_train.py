"""Training-side benchmark on a real store: `python benchmarks/bench_train.py [--store stores/ped2.zarr]`.

Measures, on this machine:
1. samples/s of the training loader alone (raw uint8/uint16 batches, store resolution), per branch, in memory
   and streaming (0, 1, 2 worker processes), plus the one-time load of the in-memory arrays; and loader +
   decoding on the CPU (what a CPU run pays per sample; on a GPU the decoding runs there);
2. the naive way of the field, in the same run: per sample, decode the JPEGs of frames t-1 and t from
   `../shared/data/ped2/training/frames`, resize them to the store resolution and compute Farneback flow with
   OpenCV (the motion sample's input and target; no segmentation or depth teacher, so it is a lower bound of
   the naive cost), as a ratio to the loader;
3. training samples/s per branch on the CPU at 128 and 256 (a warm-up step, then timed steps);
4. parameter counts per branch, with and without the attention mechanisms.

Timings on a shared 2-core machine are noisy: compare the ratios within one run. `--json PATH` writes them all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtvad.store.access import open_store  # noqa: E402
from mtvad.students.config import DataConfig, OptimConfig, RunConfig, TrainConfig  # noqa: E402
from mtvad.students.branches import get_branch  # noqa: E402
from mtvad.students.data import make_train_data, n_outputs  # noqa: E402
from mtvad.students.loss import patch_loss  # noqa: E402
from mtvad.students.models import build_model, count_parameters  # noqa: E402

SHARED = ROOT.parent / "shared"
CPU = torch.device("cpu")


def config(store: str, branch: str, batch: int, in_memory: bool, workers: int = 0, size=None) -> TrainConfig:
    return TrainConfig(branch=branch, data=DataConfig(store=store, in_memory=in_memory, workers=workers, size=size),
                       optim=OptimConfig(batch_size=batch), run=RunConfig(out="/tmp/unused"))


def loader_rate(data, n_batches: int, decode=None, repeats: int = 3) -> float:
    """samples/s over n_batches of an epoch's order (after a first batch that warms caches and workers); the
    best of `repeats` runs (epochs 0, 1, 2), since other people's jobs share these cores."""
    best = 0.0
    for epoch in range(repeats):
        data.sampler.set_epoch(epoch)
        it = iter(data.loader)
        first = next(it)
        if decode:
            decode(first)
        n, t0 = 0, time.perf_counter()
        for _, raw in zip(range(n_batches), it):
            if decode:
                decode(raw)
            n += len(next(iter(raw.values())))
        best = max(best, n / (time.perf_counter() - t0))
        del it
    return best


def bench_loader(store_url: str, batch: int, n_batches: int) -> dict:
    store = open_store(store_url)
    out: dict = {}
    for branch in ("appearance", "motion"):
        cfg = config(store_url, branch, batch, in_memory=True)
        t0 = time.perf_counter()
        data = make_train_data(store, branch, cfg, CPU)
        load_s = time.perf_counter() - t0
        n_classes = n_outputs(store.classes)
        decode = lambda raw: get_branch(branch).batch(raw, cfg, n_classes, None, CPU)  # noqa: E731
        row = {
            "samples": len(data.dataset),
            "in_memory_MiB": round(data.dataset.nbytes / 2**20),
            "in_memory_load_s": round(load_s, 1),
            "in_memory": round(loader_rate(data, n_batches), 1),
            "in_memory+cpu_decode": round(loader_rate(data, max(5, n_batches // 4), decode), 1),
        }
        del data
        for workers in (0, 1, 2):
            data = make_train_data(store, branch, config(store_url, branch, batch, False, workers), CPU)
            row[f"streaming_{workers}w"] = round(loader_rate(data, max(5, n_batches // 4)), 1)
            del data
        out[branch] = row
        print(f"loader {branch}: {row}", flush=True)
    return out


def bench_naive(frames_root: Path, resolution: tuple[int, int], n_samples: int, params: dict) -> float:
    """samples/s of decode 2 JPEGs + resize + Farneback per (randomly chosen) sample, as the field does it."""
    import cv2

    videos = sorted(p for p in frames_root.iterdir() if p.is_dir())
    files = [sorted(v.glob("*.jpg")) for v in videos]
    rng = np.random.default_rng(0)
    h, w = resolution
    t0 = time.perf_counter()
    for _ in range(n_samples):
        v = int(rng.integers(len(files)))
        t = int(rng.integers(1, len(files[v])))
        grays = []
        for path in (files[v][t - 1], files[v][t]):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            rgb = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (w, h), interpolation=cv2.INTER_AREA)
            grays.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        flow = cv2.calcOpticalFlowFarneback(grays[0], grays[1], None, params.get("pyr_scale", 0.5),
                                            params.get("levels", 3), params.get("winsize", 15),
                                            params.get("iterations", 3), params.get("poly_n", 5),
                                            params.get("poly_sigma", 1.2), 0)
        cv2.cartToPolar(flow[..., 0], flow[..., 1])
    return n_samples / (time.perf_counter() - t0)


def bench_training(store_url: str, sizes: list[int], batch: int, steps: int) -> dict:
    store = open_store(store_url)
    out: dict = {}
    for branch in ("appearance", "motion"):
        for size in sizes:
            cfg = config(store_url, branch, batch, in_memory=True, size=[size, size])
            data = make_train_data(store, branch, cfg, CPU)
            torch.manual_seed(0)
            model = build_model(branch, cfg, n_outputs(store.classes)).train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
            resize_to = None if [size, size] == list(store.resolution) else [size, size]
            data.sampler.set_epoch(0)
            it = iter(data.loader)
            times = []
            for i in range(steps + 1):
                raw = next(it)
                t0 = time.perf_counter()
                inputs, target = get_branch(branch).batch(raw, cfg, n_outputs(store.classes), resize_to, CPU)
                loss = patch_loss(get_branch(branch).predict(model, inputs), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t0)
            rate = batch * steps / sum(times[1:])
            out[f"{branch}@{size}"] = round(rate, 2)
            print(f"train {branch} {size}x{size} batch {batch}: {rate:.2f} samples/s "
                  f"(warm-up step {times[0]:.1f} s)", flush=True)
            del data, model, opt
    return out


def parameter_counts() -> dict:
    counts = {}
    cfg = TrainConfig()
    counts["appearance (resnet34-UNet, 2 classes)"] = count_parameters(build_model("appearance", cfg, 2))
    for scse, attention, name in (("encoder-mid", "decoder", "motion: SCSE encoder-mid + attention decoder (paper)"),
                                  ("off", "decoder", "motion: attention only (Table 4 runs)"),
                                  ("encoder-mid", "off", "motion: SCSE only"),
                                  ("off", "off", "motion: plain vgg16-UNet (Table 3 'UNet')")):
        cfg.motion.scse, cfg.motion.attention = scse, attention
        counts[name] = count_parameters(build_model("motion", cfg, 2))
    for name, n in counts.items():
        print(f"parameters {name}: {n:,}", flush=True)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="/tmp/stores/ped2.zarr")
    parser.add_argument("--frames", default=str(SHARED / "data/ped2/training/frames"))
    parser.add_argument("--batch", type=int, default=8, help="loader batch size")
    parser.add_argument("--batches", type=int, default=100, help="in-memory loader batches timed")
    parser.add_argument("--naive-samples", type=int, default=60)
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--sizes", default="128,256")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: loader,naive,train,params")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    store = open_store(args.store)
    print(f"store {args.store}: {store.dataset}, {store.resolution[0]}x{store.resolution[1]}, "
          f"{sum(v.n_frames for v in store.videos('train'))} training frames; torch threads "
          f"{torch.get_num_threads()}", flush=True)
    results: dict = {"store": args.store, "resolution": list(store.resolution)}
    if "loader" not in skip:
        results["loader_samples_per_s"] = bench_loader(args.store, args.batch, args.batches)
    if "naive" not in skip:
        frames = Path(args.frames)
        if frames.is_dir():
            rate = bench_naive(frames, store.resolution, args.naive_samples, store.teachers["flow"]["params"])
            results["naive_jpeg+farneback_samples_per_s"] = round(rate, 1)
            print(f"naive (2 JPEG decodes + resize + Farneback per sample): {rate:.1f} samples/s", flush=True)
            if "loader_samples_per_s" in results:
                m = results["loader_samples_per_s"]["motion"]
                results["speedup_vs_naive"] = {k: round(v / rate, 1) for k, v in m.items()
                                               if k.startswith(("in_memory", "streaming")) and k != "in_memory_MiB"
                                               and k != "in_memory_load_s"}
                print(f"motion loader / naive: {results['speedup_vs_naive']}", flush=True)
        else:
            print(f"{frames} absent: naive comparison skipped", flush=True)
    if "params" not in skip:
        results["parameters"] = parameter_counts()
    if "train" not in skip:
        sizes = [int(s) for s in args.sizes.split(",")]
        results["train_samples_per_s_cpu"] = bench_training(args.store, sizes, args.train_batch, args.train_steps)
        results["train_batch"] = args.train_batch
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
