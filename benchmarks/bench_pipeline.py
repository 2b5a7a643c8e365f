"""Pipeline benchmark on real footage (needs ../shared): `make bench` or `python benchmarks/bench_pipeline.py`.

Measures, at the store resolution (256x256 by default):
1. frames/s of each teacher alone in a bare loop (frames already decoded and resized, one thread);
2. frames/s of the whole precompute job (decode, resize, teachers, compress, write) on Ped2 with 1 and with
   2 Dask workers: the job's own overhead against the bare teachers, and the speed-up of the second worker;
3. bytes per frame in the store against the source JPEGs;
4. the peak memory of a worker over vtest.avi (795 frames of 768x576): it must not grow with video length.

Timings on a shared 2-core machine are noisy: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mtvad.precompute.blocks import resize_frames
from mtvad.precompute.datasets import open_dataset
from mtvad.precompute.jobs import precompute
from mtvad.precompute.teachers import build_teacher, resolve_preset
from mtvad.precompute.teachers.base import fit_indices
from mtvad.store.access import open_store
from mtvad.store.summary import store_summary

SHARED = Path(__file__).resolve().parents[2] / "shared"


def bare_teachers(data: Path, resolution: tuple[int, int], n_videos: int) -> dict[str, float]:
    """frames/s of decoding+resizing and of each teacher of the cpu preset, one thread, frames in memory."""
    import cv2

    cv2.setNumThreads(1)
    videos = list(open_dataset("ped2", data).videos("train"))[:n_videos]
    t0 = time.perf_counter()
    clips = [resize_frames(v.read(0, v.n_frames), resolution) for v in videos]
    n = sum(len(c) for c in clips)
    rates = {"decode+resize": n / (time.perf_counter() - t0)}
    for role, (name, params) in resolve_preset("cpu").items():
        teacher = build_teacher(name, params)
        teacher.load()
        t0 = time.perf_counter()
        for clip in clips:
            state = teacher.fit_video(clip[fit_indices(len(clip), teacher.fit_frames)]) if teacher.fit_frames else None
            teacher(clip, 0, state)
        rates[f"{role}:{name}"] = n / (time.perf_counter() - t0)
    rates["all teachers"] = 1 / sum(1 / r for k, r in rates.items() if ":" in k)
    return rates


class PeakMemory:
    """Samples the resident memory of this process's worker children (Dask workers) while running."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.samples, self._stop = interval, [], threading.Event()

    def __enter__(self):
        self.t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            rss = []
            for child in me.children(recursive=True):
                try:
                    if "nanny" not in " ".join(child.cmdline()):
                        rss.append(child.memory_info().rss)
                except psutil.Error:
                    pass
            if rss:
                self.samples.append((time.perf_counter() - self.t0, max(rss)))
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_pipeline(dataset: str, data: Path, store: Path, workers: int, resolution, **options):
    ds = open_dataset(dataset, data, **options)
    return precompute(ds, str(store), resolve_preset("cpu"), resolution=resolution, workers=workers,
                      overwrite=True, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ped2", type=Path, default=SHARED / "data" / "ped2")
    parser.add_argument("--vtest", type=Path, default=SHARED / "data" / "vtest")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--bare-videos", type=int, default=4, help="training videos for the bare loops")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    for path in (args.ped2, args.vtest):
        if not path.exists():
            raise SystemExit(f"{path} is absent: this benchmark needs the real data (../shared/data)")
    res = (args.resolution, args.resolution)
    results: dict = {"resolution": list(res)}

    results["bare_fps"] = bare_teachers(args.ped2, res, args.bare_videos)
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            r = run_pipeline("ped2", args.ped2, Path(tmp) / f"w{workers}.zarr", workers, res)
            results[f"pipeline_{workers}w_fps"] = r.frames_run / r.seconds
            results[f"pipeline_{workers}w_seconds"] = r.seconds
        summary = store_summary(open_store(Path(tmp) / "w2.zarr"))
        frames = sum(summary["frames"].values())
        jpeg = sum(p.stat().st_size for p in args.ped2.glob("*/frames/*/*.jpg"))
        results["store_bytes_per_frame"] = sum(a["stored"] for a in summary["arrays"].values()) / frames
        results["store_bytes_per_frame_by_array"] = {k: a["stored"] / frames for k, a in summary["arrays"].items()}
        results["jpeg_bytes_per_frame"] = jpeg / frames

        with PeakMemory() as mem:
            r = run_pipeline("folder", args.vtest, Path(tmp) / "vtest.zarr", 1, res, split="train")
        results["vtest_fps"] = r.frames_run / r.seconds
        samples = np.array(mem.samples)
        quarter = len(samples) // 4
        results["vtest_worker_peak_rss_mib_first_quarter"] = samples[:quarter, 1].max() / 2**20
        results["vtest_worker_peak_rss_mib_last_quarter"] = samples[-quarter:, 1].max() / 2**20

    bare_all = results["bare_fps"]["all teachers"]
    results["overhead_1w"] = 1 - results["pipeline_1w_fps"] / bare_all
    results["speedup_2w"] = results["pipeline_2w_fps"] / results["pipeline_1w_fps"]
    print("| measure | value |\n|---|---|")
    for name, fps in results["bare_fps"].items():
        print(f"| bare {name} | {fps:.1f} frames/s |")
    print(f"| pipeline, 1 worker | {results['pipeline_1w_fps']:.1f} frames/s ({results['pipeline_1w_seconds']:.0f} s) |")
    print(f"| pipeline, 2 workers | {results['pipeline_2w_fps']:.1f} frames/s ({results['pipeline_2w_seconds']:.0f} s) |")
    print(f"| pipeline overhead vs bare teachers (1 worker) | {100 * results['overhead_1w']:.0f}% |")
    print(f"| speed-up of 2 workers | {results['speedup_2w']:.2f}x |")
    print(f"| store bytes per frame | {results['store_bytes_per_frame'] / 1024:.1f} KiB "
          f"(source JPEG {results['jpeg_bytes_per_frame'] / 1024:.1f} KiB) |")
    for name, b in results["store_bytes_per_frame_by_array"].items():
        print(f"| - {name} | {b / 1024:.2f} KiB |")
    print(f"| vtest.avi: pipeline, 1 worker | {results['vtest_fps']:.1f} frames/s |")
    print(f"| vtest.avi: worker peak RSS, first / last quarter of the run | "
          f"{results['vtest_worker_peak_rss_mib_first_quarter']:.0f} / "
          f"{results['vtest_worker_peak_rss_mib_last_quarter']:.0f} MiB |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
