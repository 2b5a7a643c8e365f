"""Reading a packed store (.zip) against the folder it was packed from: `python benchmarks/bench_sharing.py STORE`.

Measures, on one complete schema-2 store (e.g. stores/ped2.zarr):
1. `vad store pack` time and size;
2. seconds to read every video's frames, flow_mag and seg through `mtvad.store` (decoded, whole videos), from
   the folder and from the zip, interleaved repetitions (median and best);
3. `vad store verify` time on both;
4. training-loader samples/s (`mtvad.students.data`, streaming mode: chunks decoded in the loader, the path that reads
   the store while training) from both, per branch.

Timings on a shared 2-core machine are noisy: compare the ratios within one run, and the best of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from mtvad.store.access import open_store
from mtvad.store.pack import pack_store
from mtvad.store.verify import verify_store


def read_all(url: str) -> int:
    store = open_store(url)
    n = 0
    for video in store.videos():
        n += video.frames().nbytes + video.group["flow_mag"][:].nbytes + video.seg().nbytes
    return n


def loader_rate(url: str, branch: str, workers: int, n_batches: int, batch_size: int) -> float:
    import torch

    from mtvad.students.config import DataConfig, OptimConfig, RunConfig, TrainConfig
    from mtvad.students.data import make_train_data

    cfg = TrainConfig(branch=branch, data=DataConfig(store=url, in_memory=False, workers=workers),
                      optim=OptimConfig(batch_size=batch_size), run=RunConfig(seed=0, device="cpu"))
    data = make_train_data(open_store(url, validate=False), branch, cfg, torch.device("cpu"))
    it = iter(data.loader)
    next(it)  # workers started, first chunks decoded
    t0 = time.perf_counter()
    n = 0
    for _ in range(n_batches):
        batch = next(it)
        n += next(iter(batch.values())).shape[0]
    rate = n / (time.perf_counter() - t0)
    del it, data
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store", help="a complete schema-2 store folder")
    parser.add_argument("--zip", help="where to pack it (default: a temporary folder)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="loader processes in streaming mode")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    packed = Path(args.zip) if args.zip else Path(tmp.name) / "store.zip"
    result = pack_store(args.store, packed, overwrite=True)
    out = {"pack_s": round(result.seconds, 2), "zip_bytes": packed.stat().st_size, "entries": result.entries}
    print(f"pack: {result.entries} entries, {packed.stat().st_size / 2**20:.1f} MiB in {result.seconds:.2f} s")

    times: dict[str, list[float]] = {"dir": [], "zip": []}
    nbytes = 0
    for _ in range(args.reps):
        for label, url in (("dir", args.store), ("zip", str(packed))):
            t0 = time.perf_counter()
            nbytes = read_all(url)
            times[label].append(time.perf_counter() - t0)
    for label, ts in times.items():
        out[f"read_{label}_s"] = {"median": round(statistics.median(ts), 3), "best": round(min(ts), 3),
                                  "all": [round(t, 3) for t in ts]}
        print(f"read frames+flow_mag+seg from {label}: median {statistics.median(ts):.2f} s, best {min(ts):.2f} s "
              f"({nbytes / min(ts) / 2**20:.0f} MiB/s decoded)")
    ratio = statistics.median(times["zip"]) / statistics.median(times["dir"])
    out["read_zip_over_dir"] = {"median": round(ratio, 3), "best": round(min(times["zip"]) / min(times["dir"]), 3)}
    print(f"zip / dir: {ratio:.2f} (median), {min(times['zip']) / min(times['dir']):.2f} (best)")

    for label, url in (("dir", args.store), ("zip", str(packed))):
        report = verify_store(url)
        out[f"verify_{label}_s"] = round(report.seconds, 2)
        print(f"verify {label}: {'ok' if report.ok else 'PROBLEMS'}, {report.blocks} blocks, "
              f"{report.bytes / 2**30:.2f} GiB decoded in {report.seconds:.2f} s")

    for branch in ("appearance", "motion"):
        rates: dict[str, list[float]] = {"dir": [], "zip": []}
        for _ in range(2):
            for label, url in (("dir", args.store), ("zip", str(packed))):
                rates[label].append(loader_rate(url, branch, args.workers, args.batches, args.batch_size))
        for label, rs in rates.items():
            out[f"loader_{branch}_{label}_samples_per_s"] = round(max(rs), 1)
        print(f"loader {branch} (streaming, {args.workers} worker(s), batch {args.batch_size}): "
              f"dir {max(rates['dir']):.1f}, zip {max(rates['zip']):.1f} samples/s (best of 2)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
