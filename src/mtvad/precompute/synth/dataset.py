"""Write a whole synthetic dataset in the official UCSD layout, deterministically from a seed."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mtvad.errors import DatasetError

from .motion import CROWDED_KINDS, KIND_INFO, KINDS, draw_density
from .scene import FPS, Camera, Layout, Lighting, render_background
from .video import VideoPlan, cast, plan_test, plan_train, render

GENERATOR = "mtvad.precompute.synth"
GENERATOR_VERSION = "2"  # bump whenever the same seed would write different files
M_FILE = "UCSDsynth.m"
KINDS_FILE = "anomaly_kinds.json"
README_FILE = "README.txt"
OWNED = ("Train", "Test", README_FILE)  # what `overwrite=True` replaces inside the output folder
GLITCH_EVERY = 3  # test videos 2, 5, 8, ... (1-based) contain a recording glitch

# Independent random streams, so that changing how one thing is drawn does not shift the others
STREAM_BACKGROUND, STREAM_KIND_ORDER, STREAM_VIDEO = 0, 1, 2
SPLIT_CODE = {"train": 0, "test": 1}
PURPOSE_PLAN, PURPOSE_CAST, PURPOSE_LIGHT, PURPOSE_NOISE, PURPOSE_DENSITY = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Profile:
    name: str
    height: int
    width: int
    n_train: int
    n_test: int
    frames: tuple[int, int]  # inclusive range of video lengths
    events_per_test: tuple[int, ...]  # anomaly events of test video i: events_per_test[i % len]


PROFILES = {
    "default": Profile("default", 240, 360, 16, 12, (120, 180), (2, 1)),  # UCSD Ped2's scale
    "small": Profile("small", 60, 90, 3, 5, (40, 40), (2,)),  # for tests: every kind in about a second
}


class SynthOutputExists(DatasetError):
    """The output folder already holds files and overwriting was not asked for."""


def generate(out: str | Path, seed: int = 0, small: bool = False, overwrite: bool = False) -> dict:
    """Write a synthetic Ped2-like dataset into `out` (UCSD layout) and return a summary of what was written.

    The same seed and profile give byte-identical files. `out` must be absent or empty unless `overwrite`,
    which replaces only what this generator writes there (Train/, Test/, README.txt).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    profile = PROFILES["small" if small else "default"]
    out = Path(out)
    _prepare(out, overwrite)
    started = time.perf_counter()

    camera = Camera.for_size(profile.height, profile.width)
    layout = Layout.for_camera(camera)
    background = render_background(camera, layout, _rng(seed, STREAM_BACKGROUND))

    videos = []
    for i in range(profile.n_train):
        plan = plan_train(f"Train{i + 1:03d}", _length(seed, "train", i, profile), _density(seed, "train", i, []))
        videos.append(_write_video(out / "Train", plan, seed, i, camera, layout, background))
    kinds = _assign_kinds(seed, profile)
    for i in range(profile.n_test):
        rng = _rng(seed, STREAM_VIDEO, SPLIT_CODE["test"], i, PURPOSE_PLAN)
        n = _length(seed, "test", i, profile)
        density = _density(seed, "test", i, kinds[i])
        plan = plan_test(f"Test{i + 1:03d}", n, density, kinds[i], rng, glitch=i % GLITCH_EVERY == 1)
        videos.append(_write_video(out / "Test", plan, seed, i, camera, layout, background))

    tests = [v for v in videos if v["split"] == "test"]
    _write_m_file(out / "Test" / M_FILE, tests)
    _write_kinds_file(out / "Test" / KINDS_FILE, tests, seed, profile)
    _write_readme(out / README_FILE, seed, profile)
    return _summary(out, videos, seed, profile, time.perf_counter() - started)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _length(seed: int, split: str, index: int, profile: Profile) -> int:
    rng = _rng(seed, STREAM_VIDEO, SPLIT_CODE[split], index, PURPOSE_PLAN)
    return int(rng.integers(profile.frames[0], profile.frames[1] + 1))


def _density(seed: int, split: str, index: int, kinds: list[str]) -> float:
    """A video's crowd density, from its own stream: crowded where one of its anomaly kinds needs a crowd."""
    rng = _rng(seed, STREAM_VIDEO, SPLIT_CODE[split], index, PURPOSE_DENSITY)
    return draw_density(rng, crowded=any(k in CROWDED_KINDS for k in kinds))


def _assign_kinds(seed: int, profile: Profile) -> list[list[str]]:
    """Anomaly kinds of each test video: seeded shuffles of all kinds, one after another, so every kind recurs.

    A shuffle never starts with the kind the previous one ended with: no video holds one kind twice.
    """
    rng = _rng(seed, STREAM_KIND_ORDER)
    counts = [profile.events_per_test[i % len(profile.events_per_test)] for i in range(profile.n_test)]
    order: list[str] = []
    while len(order) < sum(counts):
        shuffle = [KINDS[k] for k in rng.permutation(len(KINDS))]
        if order and shuffle[0] == order[-1]:
            shuffle[0], shuffle[1] = shuffle[1], shuffle[0]
        order.extend(shuffle)
    ends = np.cumsum(counts)
    return [order[end - count : end] for count, end in zip(counts, ends)]


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthOutputExists(f"{out}: exists and is not a folder; pass another output folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthOutputExists(
                f"{out}: folder is not empty; pass an empty or new folder, or --overwrite (overwrite=True) to replace "
                f"its {', '.join(OWNED)}"
            )
        for name in OWNED:  # only what this generator writes, and never through a link
            path = out / name
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
    out.mkdir(parents=True, exist_ok=True)


def _write_video(
    folder: Path, plan: VideoPlan, seed: int, index: int, camera: Camera, layout: Layout, background: np.ndarray
) -> dict:
    """Render one video to `folder/NAME/001.tif ...` (and `NAME_gt/001.bmp` masks for test videos)."""
    split = SPLIT_CODE[plan.split]
    actors = cast(plan, _rng(seed, STREAM_VIDEO, split, index, PURPOSE_CAST), camera, layout)
    lighting = Lighting.draw(_rng(seed, STREAM_VIDEO, split, index, PURPOSE_LIGHT))
    noise = _rng(seed, STREAM_VIDEO, split, index, PURPOSE_NOISE)
    frames_dir = folder / plan.name
    frames_dir.mkdir(parents=True)
    masks_dir = folder / f"{plan.name}_gt"
    if plan.events:
        masks_dir.mkdir()
    owners = []  # per frame: the event numbers whose anomalous actor has pixels in it
    for i, (frame, labels) in enumerate(render(plan, actors, camera, background, lighting, noise)):
        name = f"{i + 1:03d}"
        Image.fromarray(frame).save(frames_dir / f"{name}.tif", format="TIFF")
        if plan.events:
            Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8)).save(masks_dir / f"{name}.bmp", format="BMP")
            owners.append(_owners(labels, len(plan.events)))
    return {
        "name": plan.name,
        "split": plan.split,
        "frames": plan.n_frames,
        "actors": len(actors),
        "anomalous_actors": sum(1 for a in actors if a.event),
        "kinds": _frame_kinds(plan, owners) if plan.events else [None] * plan.n_frames,
        "glitch_frames": [f + 1 for f in plan.glitch_frames],
    }


def _owners(labels: np.ndarray, n_events: int) -> list[int]:
    if not labels.any():
        return []
    counts = np.bincount(labels.ravel(), minlength=n_events + 1)
    return [int(e) for e in np.flatnonzero(counts[1:]) + 1]


def _frame_kinds(plan: VideoPlan, owners: list[list[int]]) -> list[str | None]:
    """The anomaly kind of every frame; checks that each event stays in its slot and shows up at all."""
    kinds: list[str | None] = []
    for i, events in enumerate(owners):
        if len(events) > 1:
            raise RuntimeError(f"{plan.name} frame {i + 1}: anomaly events {events} overlap (generator bug)")
        if events:
            event = plan.events[events[0] - 1]
            if not event.first <= i < event.stop or i in plan.glitch_frames:
                raise RuntimeError(f"{plan.name} frame {i + 1}: {event.kind} outside its slot (generator bug)")
        kinds.append(plan.events[events[0] - 1].kind if events else None)
    for event in plan.events:
        if event.kind not in kinds[event.first : event.stop]:
            raise RuntimeError(f"{plan.name}: the {event.kind} event never shows (generator bug)")
    return kinds


def _ranges(flags: list[bool]) -> list[tuple[int, int]]:
    """1-based inclusive ranges of the true entries."""
    ranges, start = [], None
    for i, flag in enumerate(list(flags) + [False]):
        if flag and start is None:
            start = i + 1
        elif not flag and start is not None:
            ranges.append((start, i))
            start = None
    return ranges


def _write_m_file(path: Path, tests: list[dict]) -> None:
    """Frame-level ground truth in UCSD's `.m` format (1-based inclusive ranges, one line per test video)."""
    lines = ["TestVideoFile = {};"]
    for video in tests:
        ranges = _ranges([k is not None for k in video["kinds"]])
        body = ", ".join(f"{a}:{b}" for a, b in ranges)
        lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{body}];")
    path.write_text("\n".join(lines) + "\n")


def _write_kinds_file(path: Path, tests: list[dict], seed: int, profile: Profile) -> None:
    data = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "profile": profile.name,
        "notes": (
            "frames[i] is the anomaly kind of frame i+1 (file %03d.tif), null when normal; glitch_frames are "
            "1-based frames that follow a skipped stretch of the recording: normal frames, not anomalies"
        ),
        "kinds": {k: {"category": KIND_INFO[k][0], "description": KIND_INFO[k][1]} for k in KINDS},
        "videos": {
            v["name"]: {
                "frames": v["kinds"],
                "glitch_frames": v["glitch_frames"],
                "events": [
                    {"kind": kind, "first": a, "last": b}
                    for kind in dict.fromkeys(k for k in v["kinds"] if k)
                    for a, b in _ranges([k == kind for k in v["kinds"]])
                ],
            }
            for v in tests
        },
    }
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _write_readme(path: Path, seed: int, profile: Profile) -> None:
    flag = " --small" if profile.name == "small" else ""
    path.write_text(
        f"Synthetic Ped2-like video anomaly dataset (UCSD official layout).\n"
        f"Generated by {GENERATOR} version {GENERATOR_VERSION}, seed {seed}, profile {profile.name}: "
        f"{profile.n_train} training and {profile.n_test} test videos of {profile.frames[0]}-{profile.frames[1]} "
        f"frames, {profile.height}x{profile.width} (HxW) 8-bit grey, {FPS:g} fps.\n"
        f"Regenerate (byte-identical): vad synth OUT --seed {seed}{flag}\n\n"
        f"Train/TrainNNN/MMM.tif   training frames (normal only)\n"
        f"Test/TestNNN/MMM.tif     test frames\n"
        f"Test/TestNNN_gt/MMM.bmp  pixel masks (255 = anomalous), one per test frame\n"
        f"Test/{M_FILE}        frame-level ground truth, UCSD format (1-based inclusive ranges)\n"
        f"Test/{KINDS_FILE}  anomaly kind of every test frame, and recording glitches (not anomalies)\n\n"
        f"Anomaly kinds: " + ", ".join(f"{k} ({KIND_INFO[k][0]})" for k in KINDS) + ".\n"
    )


def _summary(out: Path, videos: list[dict], seed: int, profile: Profile, seconds: float) -> dict:
    tests = [v for v in videos if v["split"] == "test"]
    test_frames = sum(v["frames"] for v in tests)
    frame_kinds = [k for v in tests for k in v["kinds"]]
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "profile": profile.name,
        "root": str(out),
        "frame_size": [profile.height, profile.width],
        "fps": FPS,
        "train_videos": profile.n_train,
        "test_videos": profile.n_test,
        "train_frames": sum(v["frames"] for v in videos if v["split"] == "train"),
        "test_frames": test_frames,
        "anomalous_test_frames": sum(k is not None for k in frame_kinds),
        "anomaly_share": {k: frame_kinds.count(k) / test_frames for k in KINDS},
        "glitch_frames": {v["name"]: v["glitch_frames"] for v in tests if v["glitch_frames"]},
        "videos": [{k: v[k] for k in ("name", "split", "frames", "actors", "anomalous_actors")} for v in videos],
        "seconds": round(seconds, 3),
    }
