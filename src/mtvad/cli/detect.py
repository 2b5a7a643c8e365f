"""`vad detect`: a camera's normal footage and new videos in, flagged events out (both halves, mtvad.detect)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mtvad.cli.common import ProgressFlag, parse_size
from mtvad.cli.precompute import heavy_half, require
from mtvad.cli.train import read_config_file
from mtvad.console import clean_errors, console, stdout
from mtvad.detect.events import DEFAULT_MERGE_GAP_S, DEFAULT_MIN_DURATION_S
from mtvad.detect.run import DEFAULT_PRESET, DetectSettings

app = typer.Typer()


@app.command()
@clean_errors
def detect(
    normal: Annotated[list[Path], typer.Option(
        "--normal", help="normal footage of the camera: a video file (mp4, avi, mkv, ...), a frame folder, or a folder "
                         "of them; repeat for several", show_default=False)],
    video: Annotated[list[Path], typer.Option(
        "--video", help="new footage to look for anomalies in (a video file or a frame folder); repeat for several",
        show_default=False)],
    out: Annotated[Path, typer.Option(
        "--out", help="run folder: store, students, scores, events, report; a second call with the same --out and "
                      "--normal reuses them")] = Path("runs/detect"),
    preset: Annotated[str, typer.Option(help="teacher preset (see `vad teachers`)")] = DEFAULT_PRESET,
    resolution: Annotated[str | None, typer.Option(
        help="store resolution, SIZE or HEIGHTxWIDTH (default: the normal footage's aspect, longer side 256)",
        show_default=False)] = None,
    segment: Annotated[float, typer.Option(
        help="normal footage is cut into segments of this many seconds (some are held out for validation and "
             "calibration; 0: one video per file)")] = DetectSettings.segment_seconds,
    fps: Annotated[float | None, typer.Option(
        min=0.001, help="frame rate of frame folders (and of files whose container has none)",
        show_default=False)] = None,
    merge_gap: Annotated[float, typer.Option(
        help="flagged runs this many seconds apart or closer are one event")] = DEFAULT_MERGE_GAP_S,
    min_duration: Annotated[float, typer.Option(
        help="events shorter than this many seconds are dropped")] = DEFAULT_MIN_DURATION_S,
    threshold_quantile: Annotated[float, typer.Option(
        help="decision threshold: this quantile of the fused scores of the normal footage")] = (
        DetectSettings.threshold_quantile),
    mp4: Annotated[bool, typer.Option("--mp4/--no-mp4", help="also write RUN/videos/<id>.mp4: the video with "
                                                              "its anomaly map, a score bar and the events")] = False,
    workers: Annotated[int | None, typer.Option(min=1, help="local Dask worker processes for the teachers",
                                                   show_default="CPU cores, at most 8")] = None,
    scheduler: Annotated[str, typer.Option(help="'local', 'inprocess' or a Dask scheduler address")] = "local",
    device: Annotated[str, typer.Option(help="auto (CUDA when present) | cpu | cuda")] = "auto",
    train_config: Annotated[Path | None, typer.Option(
        "--train-config", help="JSON file of the students' TrainConfig, as `vad train --config` reads (default: the "
                               "recipe's: `vad train` with no options)", show_default=False)] = None,
    progress: ProgressFlag = True,
) -> None:
    """Find the anomalous events in new footage of a camera, from its normal footage: teachers, students,
    scores, events (JSON, CSV), a report and, with --mp4, annotated videos. Everything already done in --out is
    reused: a second new video costs its own teachers and scores only.

    Example: vad detect --normal data/cam/normal.avi --video data/cam/new.avi --out runs/cam --mp4
    """
    from mtvad.detect.events import check_event_settings

    check_event_settings(merge_gap, min_duration)
    train = read_config_file(train_config) if train_config is not None else {}
    size = parse_size(resolution, "--resolution", minimum=32) if resolution else None
    require("detect", "cv2", "PIL", *(() if scheduler == "inprocess" else ("dask", "distributed")))
    with heavy_half("detect"):
        from mtvad.detect.run import detect as run

        settings = DetectSettings(preset=preset, resolution=size, segment_seconds=segment, fps=fps,
                                  merge_gap_s=merge_gap, min_duration_s=min_duration,
                                  threshold_quantile=threshold_quantile, mp4=mp4, scheduler=scheduler,
                                  workers=workers, device=device, train=train, progress=progress)
        r = run(normal, video, out, settings)
    _print_events(r)
    console.print(f"wrote {out / 'events.json'}, {out / 'events.csv'} and {r.report}"
                  + "".join(f", {p}" for p in r.mp4s.values()) + f" in {r.seconds['total']:.0f} s")


def _print_events(r) -> None:
    from rich.table import Table

    from mtvad.detect.events import clock

    table = Table(title=f"events (threshold {r.threshold:.3f})")
    for col in ("video", "event", "start", "end", "duration", "peak", "branch"):
        table.add_column(col, justify="right" if col in ("event", "duration", "peak") else "left")
    for e in r.events:
        table.add_row(e.video, str(e.index), clock(e.start_s), clock(e.end_s), f"{e.duration_s:.1f} s",
                      f"{e.peak_score:.2f}", e.branch)
    out = stdout()
    out.print(table)
    if not r.events:
        out.print("no events above the threshold")
