"""Teacher quality on real footage (needs ../shared): `make bench-teachers`.

Three sections (`--section motion|classes|objects|all`).

**motion** (needs only ../shared/data/ped2): the model-free segmentation teachers as masks of what moves, at
the store resolution 256x256, with Farneback flow (the flow teacher's defaults) computed here on the same
resized frames:
- moving recall: share of training pixels moving more than 1 px/frame (and 0.5) that the teacher marks;
- static false foreground: share of training pixels that never move more than 0.25 px/frame in their video
  (flow of every frame pair) marked foreground;
- foreground area (share of the frame) and flow energy inside the mask (sum of flow magnitude inside / all),
  on training frames;
- anomaly recall per test video 01-06 (pixel masks);
- pseudo-classes (`motion-shapes`): the share of each class among anomaly pixels, among normal moving pixels
  of the test videos (> 1 px/frame, outside the masks) and among moving training pixels; and among object
  blobs (before the halo) that overlap an anomaly mask vs the other test blobs;
- frames/s of the teacher's call (one thread, its own flow included; per-video fitting excluded), and the
  seconds of the dataset-level fit on the 16 training videos.
Frames are subsampled (`--step`, default every 2nd frame from frame 1; the static mask uses every frame).
The dataset-level fit of `motion-shapes` sees the training videos only; the test labels are read only to
score.

**classes** (needs a store built with the flow teacher, `--store`, and the models in ../shared/models):
segmentation teachers, at the store resolution, on Ped2:
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

**objects** (needs ../shared/data/ped2 and the DeepLab file in ../shared/models): the class-aware movers teacher
(`motion-classes`, the `cpu-classes` preset) and the variants its defaults were chosen from, on `--frames`
frames per video (from frame 1, evenly spaced), after the same dataset-level fit as `motion-shapes`:
- class shares of the moving training pixels (> 1 px/frame, inside the mask): Ped2's training videos hold only
  walkers, so the share called "person" is the teacher's hit rate on normal objects and every other named class
  is a false alarm the appearance student must learn as normal;
- class shares of the anomaly pixels of test videos 01-06 (inside the mask; pixels the mask misses apart) and
  of their normal moving pixels;
- frames/s of the teacher's call (one thread, its own flow and blobs included).
The variants: the crop's size (`crop_scale` x the object's longer side, at least `min_crop`), the vote's
threshold (`min_class_prob`), and DeepLab on 257x257 tiles of the whole frame upscaled 3x with the same vote
per object. The defaults are the variant with the largest "person" share minus "other named" share of the
moving training pixels (hits minus false alarms on normal objects: a training-only criterion); the test
columns are reported, not used.

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
from mtvad.precompute.teachers.farneback import Farneback
from mtvad.precompute.teachers.ground_plane import GroundPlaneDepth
from mtvad.precompute.teachers.motion_classes import MotionClassSegmentation, vote
from mtvad.precompute.teachers.motion_seg import MotionShapeSegmentation
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


MOVING_FAST = 1.0  # px/frame: the motion section's moving pixels


def motion_section(ped2: Path, step: int, resolution=(256, 256)) -> dict:
    """The motion section's numbers (see the module docstring)."""
    dataset = open_dataset("ped2", ped2)
    train = list(dataset.videos("train"))
    test = [v for v in dataset.videos("test") if v.masks is not None]
    flow_teacher = Farneback()
    t0 = time.perf_counter()
    fit = MotionShapeSegmentation().fit_dataset(train, resolution)  # the job's dataset-level stage
    fit_seconds = time.perf_counter() - t0
    teachers: dict[str, Teacher] = {
        "background (cpu preset)": BackgroundSegmentation(),
        "motion-shapes (cpu-motion preset)": MotionShapeSegmentation(fit=fit),
        "motion-shapes, objects only (halo=False)": MotionShapeSegmentation(fit=fit, halo=False),
    }
    shaped, objects = "motion-shapes (cpu-motion preset)", "motion-shapes, objects only (halo=False)"
    k = len(fit["centres"])
    acc = {name: {"moving_hit": 0, "moving": 0, "slow_hit": 0, "slow": 0, "static_hit": 0, "static": 0,
                  "fg": 0, "pixels": 0, "energy_in": 0.0, "energy": 0.0, "seconds": 0.0, "frames": 0,
                  "anomaly": {}} for name in teachers}
    shares = {key: np.zeros(k + 1) for key in ("anomaly", "test_normal_moving", "train_moving")}
    blob_shares = {key: np.zeros(k + 1) for key in ("anomaly_blobs", "other_test_blobs")}
    for video in train + test:
        frames = resize_frames(video.read(0, video.n_frames), resolution)
        idx = np.arange(1, video.n_frames, step)
        if video.split == "train":
            mag = flow_teacher(frames, 0)["flow_mag"]  # every frame: the static mask needs them
            static = mag[1:].max(axis=0) < STATIC
            mag = mag[idx]
        else:
            mag = np.stack([flow_teacher(frames[t - 1:t + 1], 1)["flow_mag"][0] for t in idx])
            mask = resize_masks(video.read_masks(0, video.n_frames)[idx], resolution)
        moving = mag > MOVING_FAST
        segs = {}
        for name, teacher in teachers.items():
            state = teacher.fit_video(frames[fit_indices(video.n_frames, teacher.fit_frames)])
            t0 = time.perf_counter()
            if teacher.context:
                segs[name] = np.concatenate([teacher(frames[t - 1:t + 1], 1, state)["seg"] for t in idx])
            else:
                segs[name] = teacher(frames[idx], 0, state)["seg"]
            acc[name]["seconds"] += time.perf_counter() - t0
            acc[name]["frames"] += len(idx)
        for name, seg in segs.items():
            a = acc[name]
            fg = seg > 0
            if video.split == "train":
                a["moving_hit"] += int(fg[moving].sum())
                a["moving"] += int(moving.sum())
                a["slow_hit"] += int(fg[mag > MOVING].sum())
                a["slow"] += int((mag > MOVING).sum())
                a["static_hit"] += int(fg[:, static].sum())
                a["static"] += int(static.sum()) * len(idx)
                a["fg"] += int(fg.sum())
                a["pixels"] += fg.size
                a["energy_in"] += float(mag[fg].sum())
                a["energy"] += float(mag.sum())
            else:
                a["anomaly"][video.id] = [int(fg[mask].sum()), int(mask.sum())]
            if name != shaped:
                continue
            if video.split == "train":
                shares["train_moving"] += np.bincount(seg[moving & fg], minlength=k + 1)
            else:
                shares["anomaly"] += np.bincount(seg[mask & fg], minlength=k + 1)
                shares["test_normal_moving"] += np.bincount(seg[moving & ~mask & fg], minlength=k + 1)
                for blobs, anomaly in zip(segs[objects], mask):
                    count_blobs(blobs, anomaly, blob_shares)
        print(video.split, video.id, flush=True)
    results = {"fit": fit, "fit_seconds": fit_seconds, "step": step, "teachers": {}, "class_shares": {},
               "classes": MotionShapeSegmentation(fit=fit).classes}
    for name, a in acc.items():
        results["teachers"][name] = {
            "moving_recall": a["moving_hit"] / a["moving"], "moving_recall_0.5": a["slow_hit"] / a["slow"],
            "static_false_foreground": a["static_hit"] / a["static"], "foreground_area": a["fg"] / a["pixels"],
            "flow_energy_inside": a["energy_in"] / a["energy"], "fps": a["frames"] / a["seconds"],
            "anomaly_recall": {vid: hit / max(total, 1) for vid, (hit, total) in sorted(a["anomaly"].items())},
        }
    for key, counts in {**shares, **blob_shares}.items():
        results["class_shares"][key] = (counts[1:] / max(counts[1:].sum(), 1)).tolist()
    return results


def count_blobs(seg: np.ndarray, mask: np.ndarray, out: dict) -> None:
    """Per class, the object blobs of one frame's segmentation that overlap the anomaly mask, and the others."""
    import cv2

    n, labels = cv2.connectedComponents((seg > 0).astype(np.uint8), connectivity=8)
    for blob in range(1, n):
        inside = labels == blob
        cls = int(np.bincount(seg[inside]).argmax())
        out["anomaly_blobs" if mask[inside].any() else "other_test_blobs"][cls] += 1


def print_motion(r: dict) -> None:
    ids = sorted(next(iter(r["teachers"].values()))["anomaly_recall"])
    print(f"\nmotion section: one frame in {r['step']} from frame 1 (static mask: every frame); dataset-level "
          f"fit {r['fit_seconds']:.1f} s on the training videos, flow threshold {r['fit']['flow_threshold']:.3g} "
          "px/frame")
    print("\n| teacher | moving recall (> 1 / > 0.5 px/frame) | static false fg | fg area | flow energy inside | "
          + " | ".join(f"anomaly recall {v}" for v in ids) + " | frames/s |")
    print("|---|---|---|---|---|" + "---|" * len(ids) + "---|")
    for name, t in r["teachers"].items():
        print(f"| {name} | {100 * t['moving_recall']:.1f}% / {100 * t['moving_recall_0.5']:.1f}% | "
              f"{100 * t['static_false_foreground']:.2f}% | {100 * t['foreground_area']:.1f}% | "
              f"{100 * t['flow_energy_inside']:.1f}% | "
              + " | ".join(f"{100 * t['anomaly_recall'][v]:.1f}%" for v in ids) + f" | {t['fps']:.1f} |")
    rows = {"anomaly": "anomaly pixels (test 01-06)", "test_normal_moving": "normal moving pixels (test, > 1 px)",
            "train_moving": "moving pixels (train, > 1 px)", "anomaly_blobs": "object blobs on an anomaly",
            "other_test_blobs": "other object blobs (test)"}
    names = [r["classes"][c] for c in range(1, len(r["fit"]["centres"]) + 1)]
    print("\n| share of each pseudo-class among | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, label in rows.items():
        print(f"| {label} | " + " | ".join(f"{100 * v:.1f}%" for v in r["class_shares"][key]) + " |")


def main() -> None:
    import cv2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=("all", "motion", "classes", "objects"), default="all")
    parser.add_argument("--ped2", type=Path, default=SHARED / "data" / "ped2")
    parser.add_argument("--models", type=Path, default=SHARED / "models")
    parser.add_argument("--store", type=Path, default=Path("stores/ped2.zarr"),
                        help="classes section: a store of the same footage built with the farneback flow teacher")
    parser.add_argument("--frames", type=int, default=12, help="classes and objects sections: frames per video")
    parser.add_argument("--step", type=int, default=2, help="motion section: every STEP-th frame")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    results: dict = {}
    if args.section in ("all", "motion"):
        results["motion"] = motion_section(args.ped2, args.step)
        print_motion(results["motion"])
    if args.section in ("all", "classes"):
        results.update(classes_section(args))
    if args.section in ("all", "objects"):
        results["objects"] = objects_section(args.ped2, args.models, args.frames)
        print_objects(results["objects"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


class TiledMotionClasses(MotionClassSegmentation):
    """The movers of `motion-classes`, each classed by the same vote over DeepLab's logits of the whole frame
    upscaled 3x and cut into tiles (`deeplab.py`), instead of a crop around it."""

    def load(self) -> None:
        super().load()
        self._tiles = DeepLabSegmentation(model=self.params.model, upscale=3.0)
        self._tiles.load()

    def object_classes(self, frame, labels, stats):
        logits = self._tiles.voc_logits(frame)
        out = np.empty(len(stats), np.uint8)
        for b in range(len(stats)):
            voc = vote(logits[labels == b + 1], self.params.min_class_prob)
            out[b] = OBJECT_ID if voc == 0 else self._deeplab.coco_ids(voc)
        return out


def object_candidates(models: Path, fit: dict) -> dict[str, Teacher]:
    model = str(models / "deeplabv3_257_mv_gpu.tflite")
    default = MotionClassSegmentation(fit=fit, model=model)
    p = default.params
    out: dict[str, Teacher] = {f"crop {p.crop_scale:g}x, min {p.min_crop} px, vote >= {p.min_class_prob:g} "
                               "(defaults)": default}
    for scale, smallest, prob in ((1.5, 32, 0.1), (3.0, 48, 0.1), (2.0, 32, 0.0)):
        out[f"crop {scale:g}x, min {smallest} px, vote >= {prob:g}"] = MotionClassSegmentation(
            fit=fit, model=model, crop_scale=scale, min_crop=smallest, min_class_prob=prob)
    out[f"tiles of the frame upscaled 3x, vote >= {p.min_class_prob:g}"] = TiledMotionClasses(fit=fit, model=model)
    return out


def objects_section(ped2: Path, models: Path, frames_per_video: int, resolution=(256, 256)) -> dict:
    """The objects section's numbers (see the module docstring)."""
    dataset = open_dataset("ped2", ped2)
    train = list(dataset.videos("train"))
    test = [v for v in dataset.videos("test") if v.masks is not None]
    fit = MotionShapeSegmentation().fit_dataset(train, resolution)  # the job's dataset-level stage
    teachers = object_candidates(models, fit)
    names = next(iter(teachers.values())).classes
    flow_teacher = Farneback()
    acc = {name: {"train_moving": {}, "anomaly": {}, "test_normal_moving": {}, "seconds": 0.0, "frames": 0}
           for name in teachers}
    for teacher in teachers.values():
        teacher.load()
    for video in train + test:
        frames = resize_frames(video.read(0, video.n_frames), resolution)
        idx = sample(video.n_frames, frames_per_video)
        moving = np.stack([flow_teacher(frames[t - 1:t + 1], 1)["flow_mag"][0] for t in idx]) > MOVING_FAST
        mask = resize_masks(video.read_masks(0, video.n_frames)[idx], resolution) if video.split == "test" else None
        for name, teacher in teachers.items():
            state = teacher.fit_video(frames[fit_indices(video.n_frames, teacher.fit_frames)])
            t0 = time.perf_counter()
            seg = np.concatenate([teacher(frames[t - 1:t + 1], 1, state)["seg"] for t in idx])
            a = acc[name]
            a["seconds"] += time.perf_counter() - t0
            a["frames"] += len(idx)
            parts = ({"train_moving": moving} if mask is None
                     else {"anomaly": mask, "test_normal_moving": moving & ~mask})
            for part, where in parts.items():
                for c, n in zip(*np.unique(seg[where], return_counts=True)):
                    label = "missed (background)" if c == 0 else names.get(int(c), str(c))
                    a[part][label] = a[part].get(label, 0) + int(n)
        print(video.split, video.id, flush=True)
    results = {"frames_per_video": frames_per_video, "flow_threshold": fit["flow_threshold"], "teachers": {}}
    for name, a in acc.items():
        shares = {}
        for part in ("train_moving", "anomaly", "test_normal_moving"):
            found = {k: v for k, v in a[part].items() if k != "missed (background)"}
            total = max(sum(found.values()), 1)
            shares[part] = dict(sorted(((k, v / total) for k, v in found.items()), key=lambda kv: -kv[1]))
            shares[part + "_found"] = sum(found.values()) / max(sum(a[part].values()), 1)
        results["teachers"][name] = {**shares, "fps": a["frames"] / a["seconds"]}
    return results


def print_objects(r: dict) -> None:
    def top(shares: dict) -> str:
        return ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(shares.items())[:5])

    print(f"\nobjects section: {r['frames_per_video']} frames per video; shares of the pixels the teacher marks")
    print("\n| variant | moving training pixels: person / object / other named | top classes | "
          "anomaly pixels 01-06: person / object / other named | top classes | normal moving test pixels: "
          "person / object / other named | frames/s |\n|---|---|---|---|---|---|---|")
    for name, t in r["teachers"].items():
        cells = []
        for part in ("train_moving", "anomaly", "test_normal_moving"):
            s = t[part]
            person, obj = s.get("person", 0.0), s.get("object", 0.0)
            cells.append(f"{100 * person:.0f}% / {100 * obj:.0f}% / {100 * (1 - person - obj):.0f}%")
        print(f"| {name} | {cells[0]} | {top(t['train_moving'])} | {cells[1]} | {top(t['anomaly'])} | {cells[2]} "
              f"| {t['fps']:.1f} |")


def classes_section(args) -> dict:
    import cv2
    from scipy.stats import spearmanr

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
    return results


if __name__ == "__main__":
    main()
