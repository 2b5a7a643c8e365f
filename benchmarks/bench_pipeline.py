"""Pipeline benchmark on real footage (needs ../shared): `make bench` or `python benchmarks/bench_pipeline.py`.

Measures, at the store resolution (256x256 by default):
1. frames/s of each teacher alone in a bare loop (frames already decoded and resized, one thread);
2. frames/s of the whole precompute job (decode, resize, teachers, compress, write) on Ped2 with 1 and with
   2 Dask workers: the job's own overhead against the bare teachers, and the speed-up of the second worker;
3. bytes per frame in the store against the source JPEGs;
4. the peak memory of a worker over vtest.avi (795 frames of 768x576): it must not grow with video length;
5. a user's footage: a 720p H.264 clip (x264 defaults, keyframe every 250 frames, its keyframes counted by
   demuxing) that the benchmark writes itself with PyAV from vtest.avi (upscaled, forward then backward;
   `--clip-frames`). The job on it as a `folder` dataset with 2 workers against the bare teachers on its own
   frames, and decoding+resizing it on one thread sequentially against block-wise (a capture opened and
   seeked per 16-frame block, as a task used to read), with whether both ways give the same frames.

At the end a second table gives the issue's figures against their goals.
Timings on a shared 2-core machine are noisy: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np

from mtvad.precompute.blocks import resize_frames
from mtvad.precompute.datasets import open_dataset
from mtvad.precompute.jobs import precompute
from mtvad.precompute.teachers import build_teacher, resolve_preset
from mtvad.precompute.teachers.base import fit_indices
from mtvad.store.access import open_store
from mtvad.store.schema import DEFAULT_CHUNK_FRAMES
from mtvad.store.summary import store_summary

SHARED = Path(__file__).resolve().parents[2] / "shared"
CLIP_SIZE = (1280, 720)  # (w, h) of the user's-footage clip
CLIP_KEYINT = 250  # x264's default keyframe interval, set explicitly


def ped2_clips(data: Path, resolution: tuple[int, int], n_videos: int) -> tuple[list[np.ndarray], float]:
    """The first `n_videos` Ped2 training videos decoded and resized (one thread), and the frames/s of doing so."""
    import cv2

    cv2.setNumThreads(1)
    videos = list(open_dataset("ped2", data).videos("train"))[:n_videos]
    t0 = time.perf_counter()
    clips = [resize_frames(v.read(0, v.n_frames), resolution) for v in videos]
    return clips, sum(len(c) for c in clips) / (time.perf_counter() - t0)


def bare_teachers(clips: list[np.ndarray]) -> dict[str, float]:
    """frames/s of each teacher of the cpu preset and of all of them, one thread, on clips of frames in memory."""
    import cv2

    cv2.setNumThreads(1)
    n = sum(len(c) for c in clips)
    rates = {}
    for role, (name, params) in resolve_preset("cpu").items():
        teacher = build_teacher(name, params)
        teacher.load()
        t0 = time.perf_counter()
        for clip in clips:
            state = teacher.fit_video(clip[fit_indices(len(clip), teacher.fit_frames)]) if teacher.fit_frames else None
            teacher(clip, 0, state)
        rates[f"{role}:{name}"] = n / (time.perf_counter() - t0)
    rates["all teachers"] = 1 / sum(1 / r for r in rates.values())
    return rates


def import_av():
    """PyAV (>= 14, with libx264), or exit naming the missing package."""
    try:
        import av
    except ImportError:
        raise SystemExit("this benchmark writes its H.264 clip with PyAV: install the package `av` (>= 14), "
                         "e.g. pip install -e '.[test]'") from None
    if int(av.__version__.split(".")[0]) < 14:
        raise SystemExit(f"this benchmark needs PyAV (package `av`) >= 14; this is {av.__version__}")
    if "libx264" not in av.codecs_available:
        raise SystemExit("this benchmark needs a PyAV (package `av`) built with libx264 (the PyPI wheels are)")
    return av


def write_clip(source: Path, path: Path, n_frames: int, size: tuple[int, int], keyint: int) -> float:
    """An H.264 clip (x264's defaults but the keyframe interval, set to `keyint`) of `n_frames` frames of `source`
    upscaled to `size` (w, h), forward then backward as often as it takes; returns its frames per second."""
    import cv2

    av = import_av()
    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS)
    source_frames = []  # BGR, only as many as the clip uses
    while len(source_frames) < n_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        source_frames.append(bgr)
    cap.release()
    period = 2 * len(source_frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.gop_size = keyint  # libx264's keyint
        for i in range(n_frames):
            k = i % period
            bgr = source_frames[k if k < len(source_frames) else period - 1 - k]
            frame = av.VideoFrame.from_ndarray(cv2.resize(bgr, size), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return fps


def keyframe_positions(path: Path) -> tuple[int, list[int]]:
    """(number of frames, indices of the keyframes in presentation order) of a video file's first video stream,
    from its packets (demuxed, not decoded)."""
    av = import_av()
    with av.open(str(path)) as container:
        packets = [(p.pts, p.is_keyframe) for p in container.demux(video=0) if p.pts is not None]
    packets.sort()
    return len(packets), [i for i, (_, key) in enumerate(packets) if key]


def open_one_thread(path: Path):
    """A cv2.VideoCapture on one thread: the decoder's (CAP_PROP_N_THREADS) and OpenCV's own (resize)."""
    import cv2

    cv2.setNumThreads(1)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if not cap.isOpened():
        raise SystemExit(f"OpenCV cannot open {path}")
    return cap


def read_rgb(cap, n: int, resolution: tuple[int, int]) -> list[np.ndarray]:
    """The next `n` frames of a capture as RGB resized to `resolution` (as the project's reader and a task do),
    each resized as soon as it is decoded: the full-size frames are never all held."""
    import cv2

    frames = []
    for _ in range(n):
        ok, bgr = cap.read()
        if not ok:
            raise SystemExit(f"the clip ended after {len(frames)} of {n} frames")
        frames.append(resize_frames(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[None], resolution)[0])
    return frames


def decode_sequential(path: Path, n_frames: int, resolution: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Every frame of the clip decoded in order through one capture and resized; and the frames/s of it."""
    t0 = time.perf_counter()
    cap = open_one_thread(path)
    frames = np.stack(read_rgb(cap, n_frames, resolution))
    cap.release()
    return frames, n_frames / (time.perf_counter() - t0)


def decode_blockwise(path: Path, n_frames: int, resolution: tuple[int, int],
                     block: int) -> tuple[np.ndarray, float]:
    """The clip read as block tasks used to read it: per block a new capture, seeked to the frame before the block
    (the flow's context; none for the first block), that frame and the block read and resized. Returns the blocks'
    frames and the frames/s of the video (its frames, not the frames read)."""
    import cv2

    t0 = time.perf_counter()
    frames = []
    for start in range(0, n_frames, block):
        first = max(start - 1, 0)
        cap = open_one_thread(path)
        cap.set(cv2.CAP_PROP_POS_FRAMES, first)
        frames += read_rgb(cap, min(start + block, n_frames) - first, resolution)[start - first:]
        cap.release()
    return np.stack(frames), n_frames / (time.perf_counter() - t0)


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


def clip_figures(vtest: Path, folder: Path, n_frames: int, resolution: tuple[int, int]) -> dict:
    """The user's-footage figures: a 720p H.264 clip written from vtest.avi into `folder`, decoded two ways,
    its bare teachers and the job on it (folder dataset, 2 workers)."""
    clip = folder / "footage" / "clip720p.mp4"  # the file alone in the dataset's folder
    fps = write_clip(vtest, clip, n_frames, CLIP_SIZE, CLIP_KEYINT)
    n, keyframes = keyframe_positions(clip)
    intervals = np.diff(keyframes).tolist()
    out = {"clip_frames": n, "clip_fps": fps, "clip_size": list(CLIP_SIZE), "clip_bytes": clip.stat().st_size,
           "clip_keyframes": keyframes, "clip_keyframe_intervals": intervals,
           # the most common distance between keyframes; the run after the last one is cut by the clip's end
           "clip_keyint_measured": Counter(intervals).most_common(1)[0][0] if intervals else None}
    sequential, out["clip_decode_sequential_fps"] = decode_sequential(clip, n, resolution)
    blockwise, out["clip_decode_blockwise_fps"] = decode_blockwise(clip, n, resolution, DEFAULT_CHUNK_FRAMES)
    out["clip_decode_speedup"] = out["clip_decode_sequential_fps"] / out["clip_decode_blockwise_fps"]
    differ = np.flatnonzero((sequential != blockwise).any(axis=(1, 2, 3)))
    out["clip_blockwise_frames_differing"] = differ.tolist()
    out["clip_blockwise_max_abs_difference"] = int(max(
        (np.abs(sequential[i].astype(np.int16) - blockwise[i]).max() for i in differ), default=0))
    del blockwise
    out["clip_bare_fps"] = bare_teachers([sequential])
    del sequential
    r = run_pipeline("folder", clip.parent, folder / "clip.zarr", 2, resolution, split="train")
    out["clip_pipeline_2w_fps"] = r.frames_run / r.seconds
    out["clip_pipeline_2w_seconds"] = r.seconds
    out["clip_pipeline_2w_vs_bare"] = out["clip_pipeline_2w_fps"] / out["clip_bare_fps"]["all teachers"]
    return out


def print_details(results: dict) -> None:
    """Every figure, one row each."""
    print("| measure | value |\n|---|---|")
    for name, fps in results["bare_fps"].items():
        print(f"| bare {name} | {fps:.1f} frames/s |")
    for workers in (1, 2):
        print(f"| pipeline, {workers} worker{'s' if workers > 1 else ''} | "
              f"{results[f'pipeline_{workers}w_fps']:.1f} frames/s ({results[f'pipeline_{workers}w_seconds']:.0f} s) |")
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
    w, h = results["clip_size"]
    print(f"| clip: {w}x{h} H.264, {results['clip_frames']} frames at {results['clip_fps']:g} fps | "
          f"{results['clip_bytes'] / 2**20:.1f} MiB, {len(results['clip_keyframes'])} keyframes, "
          f"measured keyframe interval {results['clip_keyint_measured'] or 'n/a'} (asked {CLIP_KEYINT}; intervals: "
          f"{', '.join(f'{k} x{c}' for k, c in Counter(results['clip_keyframe_intervals']).items()) or 'none'}) |")
    for name, fps in results["clip_bare_fps"].items():
        print(f"| clip: bare {name} | {fps:.1f} frames/s |")
    print(f"| clip: pipeline, 2 workers (folder dataset) | {results['clip_pipeline_2w_fps']:.1f} frames/s "
          f"({results['clip_pipeline_2w_seconds']:.0f} s), {results['clip_pipeline_2w_vs_bare']:.2f}x the bare "
          "teachers |")
    print(f"| clip: decode+resize, one thread, sequential | {results['clip_decode_sequential_fps']:.1f} frames/s |")
    print(f"| clip: decode+resize, one thread, block-wise (a capture and a seek per block) | "
          f"{results['clip_decode_blockwise_fps']:.1f} frames/s |")
    print(f"| clip: sequential / block-wise decoding | {results['clip_decode_speedup']:.2f}x |")
    differ = results["clip_blockwise_frames_differing"]
    same = "all" if not differ else (f"{len(differ)} differ (first {differ[:5]}, largest pixel difference "
                                     f"{results['clip_blockwise_max_abs_difference']})")
    print(f"| clip: block-wise frames equal to the sequential ones | {same} |")


def print_goals(results: dict) -> None:
    """The issue's table: each figure against its goal."""
    h, w = results["resolution"]
    area = f"{h}²" if h == w else f"{w}x{h}"
    by_array = ", ".join(f"{k} {b / 1024:.1f}" for k, b in results["store_bytes_per_frame_by_array"].items())
    rows = [
        (f"whole job vs bare teachers, 1 worker (Ped2, {area})",
         f"{100 * results['overhead_1w']:.0f}% overhead ({results['pipeline_1w_fps']:.1f} vs "
         f"{results['bare_fps']['all teachers']:.1f} frames/s)", "< 10% overhead"),
        ("2 workers vs 1", f"{results['speedup_2w']:.2f}x", ">= 1.9x"),
        (f"720p H.264 clip, keyint {CLIP_KEYINT}, folder dataset, 2 workers",
         f"{results['clip_pipeline_2w_vs_bare']:.2f}x the bare teachers ({results['clip_pipeline_2w_fps']:.1f} vs "
         f"{results['clip_bare_fps']['all teachers']:.1f} frames/s; {results['clip_frames']} frames, measured "
         f"keyint {results['clip_keyint_measured'] or 'n/a'})",
         ">= 0.9x the bare teachers"),
        ("decoding that clip + resize, one thread: sequential vs block-wise",
         f"{results['clip_decode_sequential_fps']:.0f} vs {results['clip_decode_blockwise_fps']:.0f} frames/s "
         f"({results['clip_decode_speedup']:.1f}x)", "seek cost gone"),
        (f"store bytes per frame at {area}",
         f"{results['store_bytes_per_frame'] / 1024:.1f} KiB ({by_array} KiB)", "<= 50 KiB"),
    ]
    print("\n| figure | measured | goal |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ped2", type=Path, default=SHARED / "data" / "ped2")
    parser.add_argument("--vtest", type=Path, default=SHARED / "data" / "vtest")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--bare-videos", type=int, default=4, help="training videos for the bare loops")
    parser.add_argument("--clip-frames", type=int, default=1590,
                        help="frames of the 720p H.264 clip (vtest.avi forward then backward: 1590)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    for path in (args.ped2, args.vtest):
        if not path.exists():
            raise SystemExit(f"{path} is absent: this benchmark needs the real data (../shared/data)")
    import_av()  # before the long runs: the clip needs it
    res = (args.resolution, args.resolution)
    results: dict = {"resolution": list(res)}

    clips, decode_fps = ped2_clips(args.ped2, res, args.bare_videos)
    results["bare_fps"] = {"decode+resize": decode_fps, **bare_teachers(clips)}
    del clips
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

        results.update(clip_figures(args.vtest / "vtest.avi", Path(tmp), args.clip_frames, res))

    bare_all = results["bare_fps"]["all teachers"]
    results["overhead_1w"] = 1 - results["pipeline_1w_fps"] / bare_all
    results["speedup_2w"] = results["pipeline_2w_fps"] / results["pipeline_1w_fps"]
    print_details(results)
    print_goals(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
