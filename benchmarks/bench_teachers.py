"""Teacher quality on real footage (needs ../shared): `make bench-teachers`.

Segmentation teachers, at the store resolution, on Ped2:
- anomaly recall: share of ground-truth anomaly-mask pixels (test videos 01-06) marked foreground;
- moving recall: share of moving pixels (training videos; Farneback magnitude above 0.5 px/frame, read from
  a store built with the flow teacher) marked foreground; Farneback spreads motion a few pixels around
  each walker, so this is a relative measure, not an absolute recall;
- false foreground: share of static background pixels (never above 0.25 px/frame in the whole video)
  marked foreground;
- class separation (class-aware teachers): share of foreground pixels given a named class other than
  "person" (the unclassified "object" does not count), on anomaly pixels and on moving training pixels
  (all normal: people walking);
- frames/s of the teacher's call (one thread; per-video fitting excluded).
Depth teachers: Spearman correlation, over the foreground blobs of training frames, between a blob's
height in pixels (a person-size cue: nearer people are taller) and its mean predicted depth.

Nothing here is fitted or chosen on test labels: every teacher runs with its defaults.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mtvad.precompute.blocks import resize_frames, resize_masks
from mtvad.precompute.datasets import open_dataset
from mtvad.precompute.teachers.background import BackgroundSegmentation
from mtvad.precompute.teachers.base import Teacher, fit_indices
from mtvad.precompute.teachers.deeplab import OBJECT_ID, DeepLabSegmentation
from mtvad.precompute.teachers.ground_plane import GroundPlaneDepth
from mtvad.precompute.teachers.pydnet import PyDNetDepth
from mtvad.store.access import open_store

SHARED = Path(__file__).resolve().parents[2] / "shared"
MOVING, STATIC = 0.5, 0.25  # px/frame at the store resolution (Ped2 walkers: 0.5-1 px/frame at 256x256)
PERSON = 1  # COCO id


def seg_candidates(models: Path) -> dict[str, Teacher]:
    deeplab = str(models / "deeplabv3_257_mv_gpu.tflite")
    return {
        "background": BackgroundSegmentation(),
        "deeplab": DeepLabSegmentation(model=deeplab),
        "deeplab+background gate": DeepLabSegmentation(model=deeplab, gate="background"),
    }


def depth_candidates(models: Path) -> dict[str, Teacher]:
    return {"ground-plane": GroundPlaneDepth(), "pydnet (research licence)": PyDNetDepth(model=str(models / "optimized_pydnet++.tflite"))}


def named_not_person(seg: np.ndarray) -> np.ndarray:
    return (seg > 0) & (seg != PERSON) & (seg != OBJECT_ID)


def sample(n_frames: int, k: int, first: int = 1) -> np.ndarray:
    return np.unique(np.linspace(first, n_frames - 1, k).round().astype(int))


def run_seg(teacher: Teacher, video, frames_idx: np.ndarray, resolution) -> tuple[np.ndarray, float]:
    """Segmentation of the chosen frames, and the seconds the teacher's calls took."""
    fit = None
    if teacher.fit_frames:
        idx = fit_indices(video.n_frames, teacher.fit_frames)
        fit = teacher.fit_video(resize_frames(np.stack([video.read(int(i), int(i) + 1)[0] for i in idx]), resolution))
    frames = resize_frames(np.stack([video.read(int(i), int(i) + 1)[0] for i in frames_idx]), resolution)
    t0 = time.perf_counter()
    seg = teacher(frames, 0, fit)["seg"]
    return seg, time.perf_counter() - t0


def main() -> None:
    import cv2
    from scipy.stats import spearmanr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ped2", type=Path, default=SHARED / "data" / "ped2")
    parser.add_argument("--models", type=Path, default=SHARED / "models")
    parser.add_argument("--store", type=Path, default=Path("stores/ped2.zarr"),
                        help="a store of the same footage built with the farneback flow teacher")
    parser.add_argument("--frames", type=int, default=12, help="frames sampled per video")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    store = open_store(args.store)
    res = store.resolution
    dataset = open_dataset("ped2", args.ped2)
    train = list(dataset.videos("train"))
    test = [v for v in dataset.videos("test") if v.masks is not None]
    results: dict = {"segmentation": {}, "depth": {}}

    for name, teacher in seg_candidates(args.models).items():
        teacher.load()
        hit = total = mov_hit = mov_total = fp = static_total = frames = 0
        odd_anomaly = odd_normal = 0  # foreground pixels of a class other than person
        anomaly_classes: dict[str, int] = {}  # class name -> anomaly pixels given it
        seconds = 0.0
        for video in test:
            idx = sample(video.n_frames, args.frames, first=0)
            seg, dt = run_seg(teacher, video, idx, res)
            mask = resize_masks(np.stack([video.read_masks(int(i), int(i) + 1)[0] for i in idx]), res)
            hit, total = hit + int((seg[mask] > 0).sum()), total + int(mask.sum())
            odd_anomaly += int(named_not_person(seg[mask]).sum())
            for c, n in zip(*np.unique(seg[mask][seg[mask] > 0], return_counts=True)):
                name_c = teacher.classes.get(int(c), str(c))
                anomaly_classes[name_c] = anomaly_classes.get(name_c, 0) + int(n)
            seconds, frames = seconds + dt, frames + len(idx)
        for video in train:
            idx = sample(video.n_frames, args.frames)
            seg, dt = run_seg(teacher, video, idx, res)
            flow = store.video("train", video.id).flow_mag()
            moving = flow[idx] > MOVING
            static = flow[1:].max(axis=0) < STATIC
            mov_hit, mov_total = mov_hit + int((seg[moving] > 0).sum()), mov_total + int(moving.sum())
            odd_normal += int(named_not_person(seg[moving]).sum())
            fp, static_total = fp + int((seg[:, static] > 0).sum()), static_total + int(static.sum()) * len(idx)
            seconds, frames = seconds + dt, frames + len(idx)
        results["segmentation"][name] = {
            "anomaly_recall": hit / total, "moving_recall": mov_hit / mov_total,
            "false_foreground": fp / static_total, "fps": frames / seconds,
            "non_person_share_anomaly": odd_anomaly / max(hit, 1), "non_person_share_normal": odd_normal / max(mov_hit, 1),
            "class_aware": PERSON in teacher.classes and len(teacher.classes) > 2,
            "anomaly_classes": dict(sorted(anomaly_classes.items(), key=lambda kv: -kv[1])),
        }
        print(name, results["segmentation"][name], flush=True)

    blob_teacher = BackgroundSegmentation()
    for name, teacher in depth_candidates(args.models).items():
        teacher.load()
        rhos, seconds, frames = [], 0.0, 0
        for video in train:
            idx = sample(video.n_frames, args.frames)
            blobs, _ = run_seg(blob_teacher, video, idx, res)
            rgb = resize_frames(np.stack([video.read(int(i), int(i) + 1)[0] for i in idx]), res)
            t0 = time.perf_counter()
            depth = teacher(rgb, 0)["depth"]
            seconds, frames = seconds + time.perf_counter() - t0, frames + len(idx)
            heights, depths = [], []
            for fg, d in zip(blobs, depth):
                n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
                for b in range(1, n):
                    if stats[b, cv2.CC_STAT_AREA] >= 30:
                        heights.append(stats[b, cv2.CC_STAT_HEIGHT])
                        depths.append(float(d[labels == b].mean()))
            if len(heights) > 5:
                rhos.append(spearmanr(heights, depths).statistic)
        results["depth"][name] = {"size_depth_spearman": float(np.mean(rhos)), "videos": len(rhos), "fps": frames / seconds}
        print(name, results["depth"][name], flush=True)

    print("\n| segmentation teacher | anomaly-pixel recall | moving-pixel recall | false foreground | "
          "named not-person share: anomaly / normal | frames/s |")
    print("|---|---|---|---|---|---|")
    for name, r in results["segmentation"].items():
        classes = (f"{100 * r['non_person_share_anomaly']:.1f}% / {100 * r['non_person_share_normal']:.1f}%"
                   if r["class_aware"] else "one class")
        print(f"| {name} | {100 * r['anomaly_recall']:.1f}% | {100 * r['moving_recall']:.1f}% | "
              f"{100 * r['false_foreground']:.2f}% | {classes} | {r['fps']:.1f} |")
    for name, r in results["segmentation"].items():
        if r["class_aware"]:
            total = sum(r["anomaly_classes"].values())
            top = ", ".join(f"{c} {100 * n / total:.0f}%" for c, n in list(r["anomaly_classes"].items())[:6])
            print(f"\n{name}: classes on anomaly pixels: {top}")
    print("\n| depth teacher | Spearman(blob height, depth) | frames/s |\n|---|---|---|")
    for name, r in results["depth"].items():
        print(f"| {name} | {r['size_depth_spearman']:.2f} (mean of {r['videos']} videos) | {r['fps']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
