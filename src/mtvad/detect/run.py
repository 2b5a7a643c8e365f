"""`vad detect`: a camera's normal footage and new videos in, events out, every step reused when it is done.

    RUN/
      detect.json            what the run folder is for: its normal footage and settings (written first)
      store.zarr/            the teachers' store: normal footage (train, in segments) and every new video (test)
      train/<branch>/        the students (best.pt, last.pt, history.json, ... as `vad train` writes them)
      scores.zarr/           the scores file of every new video (and of the normal footage: calibration)
      events.json, .csv      the events of every new video scored in RUN
      thumbnails/, timelines/, index.html   the report;  videos/<id>.mp4 with --mp4

Each step is the project's own: `precompute` (only blocks not yet computed: a new video adds its own),
`train_branch` (skipped when the branch's checkpoint is finished and fits the store; resumed when it is not
finished), `score` with `update` (only videos the scores file lacks), then `postprocess.process` (smoothing,
leave-one-video-out calibration on the normal footage, max fusion, the threshold at a quantile of the fused
normal scores) and `events.find_events`. A second run with another new video computes that video's teachers
and scores and nothing else.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from mtvad import __version__
from mtvad.console import console, warn
from mtvad.detect.events import (DEFAULT_MERGE_GAP_S, DEFAULT_MIN_DURATION_S, Event, check_event_settings, clock,
                                 find_events)
from mtvad.errors import VadError
from mtvad.presets import DEFAULT_PRESET
from mtvad.scoring.postprocess import DEFAULT_QUANTILE
from mtvad.students.config import UNET_STRIDE
from mtvad.written import read_record, remove_leftovers, remove_written, replacing, write_json

MARKER = "detect.json"
FORMAT = "vad-detect"
FORMAT_VERSION = 1
STORE_SIDE = 256  # the paper's store resolution, as the longer side: the footage's aspect is kept
SMOOTHING_SECONDS = 1.5  # the Savitzky-Golay window of `vad eval` (15 frames at 10 fps), in seconds
HEAT_QUANTILE = 0.999  # a branch's map divided by this quantile of its values on frames below the threshold


class DetectError(VadError):
    """The run folder cannot be used as asked (it holds something else, or other normal footage)."""


@dataclass
class DetectSettings:
    preset: str = DEFAULT_PRESET
    resolution: tuple[int, int] | None = None  # None: the normal footage's aspect, longer side STORE_SIDE
    segment_seconds: float = 10.0
    fps: float | None = None  # for frame folders (and files whose container has none)
    merge_gap_s: float = DEFAULT_MERGE_GAP_S
    min_duration_s: float = DEFAULT_MIN_DURATION_S
    threshold_quantile: float = DEFAULT_QUANTILE
    mp4: bool = False
    scheduler: str = "local"
    workers: int | None = None
    device: str = "auto"
    train: dict = field(default_factory=dict)  # nested TrainConfig keys (`vad train --config`); {}: the recipe's
    progress: bool = True


@dataclass
class DetectResult:
    out: Path
    events: list[Event]
    threshold: float
    steps: dict[str, str] = field(default_factory=dict)  # step -> what it did ("computed ...", "reused ...")
    seconds: dict[str, float] = field(default_factory=dict)
    videos: list[str] = field(default_factory=list)  # the new videos of this call
    report: Path | None = None
    mp4s: dict[str, Path] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)  # per new video of this call


def store_resolution(frame_size: tuple[int, int], side: int = STORE_SIDE) -> tuple[int, int]:
    """(H, W) of the store: the footage's aspect with its longer side `side`, each side a multiple of 32."""
    h, w = frame_size
    scale = side / max(h, w)
    return tuple(max(UNET_STRIDE, int(s * scale / UNET_STRIDE + 0.5) * UNET_STRIDE) for s in (h, w))


def smoothing_window(fps: float) -> int:
    """The odd number of frames nearest SMOOTHING_SECONDS at `fps` (at least 1)."""
    n = max(1, int(SMOOTHING_SECONDS * fps + 0.5))
    return n if n % 2 else n + 1


def check_run_folder(out: Path) -> dict | None:
    """The run's detect.json, None for a folder to start a run in; DetectError for a folder holding other things."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise DetectError(f"{out}: is a file, not a folder: choose another --out (nothing was written)")
    if marker.is_file():
        try:
            doc = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            raise DetectError(f"{marker}: unreadable ({exc}): choose another --out (nothing was written)") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DetectError(f"{marker}: not a vad detect run file: choose another --out (nothing was written)")
        return doc
    if out.is_dir() and any(p for p in out.iterdir()):
        names = sorted(p.name for p in out.iterdir())
        raise DetectError(f"{out}: holds files vad detect did not write ({', '.join(names[:3])}"
                          f"{', ...' if len(names) > 3 else ''}): choose another --out (nothing was written)")
    return None


def _normal_record(videos) -> list[dict]:
    return [{"id": v.id, "source": str(v.meta.get("source_path", v.source.path)), "frames": v.n_frames,
             "first_frame": int(v.meta.get("first_frame", 0))} for v in videos]


def _begin(out: Path, footage, settings: DetectSettings, resolution: tuple[int, int]) -> None:
    """Check the run folder against this call (its normal footage, settings and new videos of the same names)
    and write its detect.json (before anything is computed; rewritten only when new videos join)."""
    doc = check_run_folder(out)
    normal = _normal_record(footage.videos("train"))
    wanted = {"preset": settings.preset, "resolution": list(resolution), "segment_seconds": settings.segment_seconds,
              "train": settings.train, "normal": normal}
    new = {v.id: _signature(Path(v.meta.get("source_path", v.source.path))) for v in footage.videos("test")}
    if doc is not None:
        missing = [key for key in (*wanted, "videos") if key not in doc]
        if missing:
            raise DetectError(f"{out / MARKER}: a damaged vad detect run file (it records no {', '.join(missing)}): "
                              "use another --out (nothing was changed)")
        for key, value in wanted.items():
            if doc.get(key) != value:
                raise DetectError(
                    f"{out}: this run folder was made with {key} {_short(doc.get(key))}, this call gives "
                    f"{_short(value)}: use another --out for other normal footage or settings (nothing was changed)")
        known = doc.get("videos", {})
        for vid, sig in new.items():
            if vid in known and known[vid] != sig:
                raise DetectError(
                    f"{sig['source']}: {out} already holds a new video {vid!r} from {known[vid]['source']} with "
                    "other contents (size or modification time): rename the file or use another --out (nothing "
                    "was changed)")
        if all(known.get(vid) == sig for vid, sig in new.items()):
            return
        doc["videos"] = {**known, **new}
    else:
        out.mkdir(parents=True, exist_ok=True)
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **wanted, "videos": new,
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "vad_version": __version__}
    write_json(out / MARKER, doc)


def _signature(path: Path) -> dict:
    """What tells one new video file (or frame folder) from another of the same name: its bytes and time."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    stats = [f.stat() for f in files]
    return {"source": str(path), "bytes": sum(st.st_size for st in stats),
            "mtime_ns": max((st.st_mtime_ns for st in stats), default=0)}


def _short(value) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return f"{len(value)} normal videos ({', '.join(sorted({v['source'] for v in value})[:2])})"
    return json.dumps(value)


def detect(normal: Sequence[str | Path], new: Sequence[str | Path], out: str | Path,
           settings: DetectSettings | None = None) -> DetectResult:
    """The whole workflow (module docstring); returns the events of every new video scored in OUT."""
    from mtvad.detect.scene import footage_warnings
    from mtvad.precompute.datasets.footage import Footage
    from mtvad.precompute.jobs import precompute
    from mtvad.precompute.teachers import resolve_preset

    started = time.perf_counter()
    s = settings or DetectSettings()
    check_event_settings(s.merge_gap_s, s.min_duration_s)
    out = Path(out)
    check_run_folder(out)  # before the footage is read: a folder of something else is refused at once
    if not new:
        raise DetectError("no new video given (--video FILE): nothing to detect in")
    footage = Footage(normal, new, segment_seconds=s.segment_seconds, fps=s.fps)
    train = list(footage.videos("train"))
    test = list(footage.videos("test"))
    for video in train + test:
        video.validate()
    resolution = tuple(s.resolution) if s.resolution else store_resolution(train[0].source.frame_size())
    _begin(out, footage, s, resolution)
    _remove_leftovers(out)
    result = DetectResult(out, [], float("nan"), videos=[v.id for v in test])
    lines = footage_warnings(train, test)
    for line in lines:
        warn(line)
    result.warnings = {v.id: [x for x in lines if x.startswith(str(v.meta.get("source_path", v.source.path)) + ":")]
                       for v in test}

    t0 = time.perf_counter()
    store_url = str(out / "store.zarr")
    pre = precompute(footage, store_url, resolve_preset(s.preset), resolution=resolution, scheduler=s.scheduler,
                     workers=s.workers, progress=s.progress)
    result.seconds["teachers"] = time.perf_counter() - t0
    result.steps["teachers"] = (f"computed {pre.frames_run} frames in {pre.blocks_run} blocks"
                                if pre.blocks_run else "reused: the store holds every frame already")
    _say("teachers", result)

    from mtvad.store.access import open_store

    store = open_store(store_url)
    t0 = time.perf_counter()
    checkpoints, what = _students(store, out / "train", s)
    result.seconds["students"] = time.perf_counter() - t0
    result.steps["students"] = what
    _say("students", result)

    from mtvad.scoring.score import score

    t0 = time.perf_counter()
    scores_path = out / "scores.zarr"
    sc = score(store_url, checkpoints, scores_path, maps=True, update=True, overwrite=True, device=s.device,
               progress=s.progress)
    result.seconds["scores"] = time.perf_counter() - t0
    n_new = sum(sc.videos.values())
    result.steps["scores"] = (f"scored {sc.videos.get('test', 0)} new video(s) and {sc.videos.get('train', 0)} "
                              "normal video(s)" if n_new else "reused: every video is scored already")
    _say("scores", result)

    t0 = time.perf_counter()
    _events_and_report(store, scores_path, test, s, result)
    result.seconds["events"] = time.perf_counter() - t0
    result.seconds["total"] = time.perf_counter() - started
    return result


def _say(step: str, result: DetectResult) -> None:
    console.print(f"{step}: {result.steps[step]} ({result.seconds[step]:.1f} s)")


def _students(store, train_out: Path, s: DetectSettings) -> tuple[list[Path], str]:
    """The checkpoints to score with (best.pt where validation ran, else last.pt), and what was done."""
    from mtvad.students.branches import BRANCHES
    from mtvad.students.checkpoint import best_path, check_fits_store, checkpoint_path, load_checkpoint
    from mtvad.students.config import TrainConfig
    from mtvad.students.train import train_branch

    done: list[str] = []
    paths = []
    for branch in BRANCHES:
        last = checkpoint_path(train_out, branch)
        given = s.train
        config = TrainConfig.from_dict({**given, "branch": branch,
                                        "data": {**given.get("data", {}), "store": store.url},
                                        "run": {**given.get("run", {}), "out": str(train_out), "device": s.device}})
        if not last.exists():
            r = train_branch(config, branch, store, progress=s.progress)
            done.append(f"trained {branch} to step {r.step}")
        else:
            ckpt = load_checkpoint(last, branch=branch)
            check_fits_store(last, ckpt, store, remedy="use another --out for this footage")
            if _finished(ckpt):
                done.append(f"reused {branch} (step {ckpt['step']})")
            else:
                r = train_branch(config, branch, store, resume=True, progress=s.progress)
                done.append(f"resumed {branch} to step {r.step}")
        best = best_path(train_out, branch)
        paths.append(best if best.exists() else last)
    return paths, "; ".join(done)


def _finished(ckpt: dict) -> bool:
    """The checkpoint's run reached its end: its max_steps, all its epochs, or its patience."""
    from mtvad.students.validation import patience_spent

    config = ckpt["config_obj"]
    max_steps, step = config.run.max_steps, int(ckpt["step"])
    return ((max_steps is not None and step >= max_steps) or int(ckpt["epoch"]) >= config.optim.epochs
            or patience_spent(ckpt.get("validation", []), step, config))


def _events_and_report(store, scores_path: Path, test_videos, s: DetectSettings, result: DetectResult) -> None:
    from mtvad.detect.events import write_events
    from mtvad.detect.render import timeline_figure, write_detect_report, write_thumbnail
    from mtvad.scoring.postprocess import PostConfig, process
    from mtvad.scoring.scores_file import open_scores

    sf = open_scores(scores_path)
    sf.check_store(store)
    normal_fps = _fps(store, "train", store.video_ids("train")[0])
    post = PostConfig(window=smoothing_window(normal_fps), threshold_quantile=s.threshold_quantile).validate()
    processed = process(sf.raw(post.reduction), sf.branches, post)
    result.threshold = processed.threshold
    out = result.out
    previous = _previous_events(out)
    heat_scale = _heat_scale(sf, processed)
    pages = []
    for vid in sf.video_ids("test"):
        fps = _fps(store, "test", vid)
        series = processed.calibrated["test"][vid]
        events = find_events(vid, series["fused"], {b: series[b] for b in sf.branches}, processed.threshold, fps,
                             s.merge_gap_s, s.min_duration_s)
        unchanged = previous.get("threshold") == round(processed.threshold, 6) and \
            previous.get("videos", {}).get(vid) == [e.to_json() | {"thumbnail": None} for e in events]
        _remove_stale_thumbnails(out, vid, len(events))
        for e in events:
            e.thumbnail = f"thumbnails/{vid}-e{e.index:02d}.png"
            if not (unchanged and (out / e.thumbnail).exists()):
                frame, heat = _peak_view(store, sf, vid, e, heat_scale)
                with replacing(out / e.thumbnail, out) as tmp:
                    write_thumbnail(tmp, frame, heat, f"{vid} event {e.index} - {clock(e.peak_s)} - "
                                    f"{e.branch} {e.peak_score:.2f}")
        timeline = f"timelines/{vid}.png"
        if not (unchanged and (out / timeline).exists()):
            with replacing(out / timeline, out) as tmp:
                timeline_figure(tmp, vid, fps, series["fused"], processed.threshold, events,
                                {b: series[b] for b in sf.branches})
        page = {"id": vid, "path": store.video("test", vid).group.attrs.get("source", ""), "fps": fps,
                "frames": len(series["fused"]), "timeline": timeline, "events": events,
                "warnings": result.warnings.get(vid, previous.get("warnings", {}).get(vid, []))}
        mp4 = out / "videos" / f"{vid}.mp4"
        source = next((v for v in test_videos if v.id == vid), None)
        if s.mp4 and source is not None and not (unchanged and mp4.exists()):
            _annotate(mp4, source, sf, vid, series["fused"], processed.threshold, events, heat_scale, s.progress)
        if mp4.exists():
            page["video"] = f"videos/{vid}.mp4"
            if source is not None:
                result.mp4s[vid] = mp4
        pages.append(page)
        result.events.extend(events)
    header = {"threshold": round(processed.threshold, 6), "threshold_quantile": s.threshold_quantile,
              "merge_gap_s": s.merge_gap_s, "min_duration_s": s.min_duration_s, "smoothing_window": post.window,
              "calibration": post.normalisation, "reduction": post.reduction, "fusion": post.fusion,
              "store": str(store.url), "checkpoints": {b: c["path"] for b, c in sf.attrs["checkpoints"].items()},
              "videos": {p["id"]: {"fps": p["fps"], "frames": p["frames"], "source": p["path"],
                                   "warnings": p["warnings"]} for p in pages}}
    write_events(result.events, out / "events.json", out / "events.csv", header)
    settings = {"threshold": f"{processed.threshold:.4f} ({s.threshold_quantile:g} quantile of the fused scores "
                             "of the normal footage)",
                "merge gap": f"{s.merge_gap_s:g} s", "minimum duration": f"{s.min_duration_s:g} s",
                "smoothing": f"{post.window} frames", "calibration": post.normalisation, "fusion": post.fusion,
                "store": str(store.url), "teachers": s.preset,
                "checkpoints": ", ".join(c["path"] for c in sf.attrs["checkpoints"].values())}
    result.report = write_detect_report(out, pages, processed.threshold, settings)


def _remove_leftovers(out: Path) -> None:
    """What a killed call left in the run folder's own folders (the store's Zarr files, and the scores file's,
    are cleaned by precompute and scoring)."""
    from mtvad.students.branches import BRANCHES
    from mtvad.students.checkpoint import RUN_FILES

    for folder in (out, out / "thumbnails", out / "timelines", out / "videos"):
        remove_leftovers(folder)
    for branch in BRANCHES:
        remove_leftovers(out / "train" / branch, RUN_FILES)


def _remove_stale_thumbnails(out: Path, vid: str, keep: int) -> None:
    """The thumbnails vad wrote for a video's events beyond its `keep` events now (an earlier run's, of other
    events); a file it did not write is kept, whatever its name."""
    pattern = re.compile("thumbnails/" + re.escape(vid) + r"-e(\d+)\.png")
    stale = [out / key for key in read_record(out) if (m := pattern.fullmatch(key)) and int(m.group(1)) > keep]
    remove_written(out, stale)


def _fps(store, split: str, vid: str) -> float:
    fps = (store.video(split, vid).meta or {}).get("fps")
    if not fps:
        raise DetectError(f"{store.url}: {split}/{vid} records no frame rate: the store was not made by vad detect")
    return float(fps)


def _previous_events(out: Path) -> dict:
    """{threshold, videos: {id: [event dicts without thumbnails]}, warnings: {id: lines}} of the last run's
    events.json ({} if none)."""
    try:
        doc = json.loads((out / "events.json").read_text())
    except (OSError, ValueError):
        return {}
    videos: dict[str, list] = {}
    for e in doc.get("events", []):
        videos.setdefault(e.get("video"), []).append({**e, "thumbnail": None})
    return {"threshold": doc.get("threshold"), "videos": {v: videos.get(v, []) for v in doc.get("videos", {})},
            "warnings": {v: info.get("warnings", []) for v, info in doc.get("videos", {}).items()}}


def _heat_scale(sf, processed) -> dict[str, float]:
    """Per branch: HEAT_QUANTILE of its map values over the test frames below the threshold (display only)."""
    scale = {}
    for b in sf.branches:
        values = []
        for vid in sf.video_ids("test"):
            quiet = ~(processed.calibrated["test"][vid]["fused"] > processed.threshold)
            m = sf.map("test", vid, b)
            if m is not None:
                picked = m[quiet] if quiet.any() else m
                values.append(picked[::max(1, len(picked) // 200)].astype(np.float32).ravel())
        v = np.concatenate(values) if values else np.zeros(0)
        v = v[np.isfinite(v)]
        q = float(np.quantile(v, HEAT_QUANTILE)) if v.size else 1.0
        scale[b] = q if q > 0 else 1.0
    return scale


def _heat(sf, vid: str, scale: dict[str, float], n: int) -> np.ndarray:
    """(T, h, w) float32 in [0, 1]: per frame, the largest of the branches' scaled maps about that frame."""
    heat = None
    for b in sf.branches:
        m = sf.map("test", vid, b)
        if m is None:
            continue
        m = np.clip(np.nan_to_num(m.astype(np.float32) / scale[b]), 0, 1)
        if heat is not None and m.shape[1:] != heat.shape[1:]:
            import cv2

            m = np.stack([cv2.resize(f, heat.shape[:0:-1]) for f in m])
        shifted = np.zeros((n, *m.shape[1:]), np.float32)
        off = sf.target_offset(b)  # the map of frame t is about frame t + off
        shifted[off:] = m[: n - off]
        heat = shifted if heat is None else np.maximum(heat, shifted)
    return heat if heat is not None else np.zeros((n, 1, 1), np.float32)


def _peak_view(store, sf, vid: str, event: Event, scale: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(store frame RGB, heat (h, w)) of the frame the firing branch's map at the peak is about."""
    branch = event.branch or sf.branches[0]
    off = sf.target_offset(branch)
    n = store.video("test", vid).n_frames
    about = min(event.peak_frame + off, n - 1)
    m = sf.map("test", vid, branch, slice(event.peak_frame, event.peak_frame + 1))
    heat = np.clip(np.nan_to_num(m[0].astype(np.float32) / scale[branch]), 0, 1) if m is not None else None
    frame = store.video("test", vid).frames(slice(about, about + 1))[0]
    return frame, heat if heat is not None else np.zeros(frame.shape[:2], np.float32)


def _annotate(path: Path, source, sf, vid: str, fused: np.ndarray, threshold: float, events: list[Event],
              scale: dict[str, float], progress: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mtvad.detect.render import write_annotated_video

    n = source.n_frames
    heat = _heat(sf, vid, scale, n)
    fps = float(source.meta["fps"])

    def frames():
        for lo in range(0, n, 64):
            yield from source.read(lo, min(lo + 64, n))

    columns = (TextColumn(f"annotating {vid}", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("mp4", total=n)
        write_annotated_video(path, frames(), fps, heat, fused, threshold, events,
                              progress=lambda k: bar.advance(task, k))
