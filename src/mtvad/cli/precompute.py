"""`pipeline`: run the teachers over a dataset into a store, make the synthetic dataset, list teachers."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mtvad.console import clean_errors, console
from mtvad.errors import VadError

app = typer.Typer(help="Precompute teacher outputs (segmentation, flow, depth) into a Zarr store.",
                  no_args_is_help=True, add_completion=False)


def parse_resolution(text: str) -> tuple[int, int]:
    """'256' -> (256, 256); '240x360' -> (240, 360) as height x width."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 16:
        raise typer.BadParameter(f"{text!r}: give SIZE or HEIGHTxWIDTH, each at least 16")
    return parts[0], parts[1]


@app.command()
@clean_errors
def precompute(
    dataset: str = typer.Argument(..., help="ped1, ped2, synth, avenue, shanghaitech or folder"),
    data: Optional[Path] = typer.Option(None, help="dataset root folder", show_default="data/DATASET"),
    store: Optional[str] = typer.Option(None, help="store path or fsspec URL", show_default="stores/DATASET.zarr"),
    preset: str = typer.Option("cpu", help="teacher preset (see `vad teachers`)"),
    resolution: str = typer.Option("256", help="store resolution, SIZE or HEIGHTxWIDTH (paper: 256)"),
    chunk_frames: int = typer.Option(16, min=1, help="frames per chunk = frames per task"),
    workers: Optional[int] = typer.Option(None, min=1, help="local Dask worker processes", show_default="CPU cores, at most 8"),
    scheduler: str = typer.Option("local", help="'local' (a LocalCluster), 'inprocess' (no Dask, for "
                                  "debugging) or a scheduler address such as tcp://host:8786"),
    overwrite: bool = typer.Option(False, help="delete the store at --store and rebuild it from scratch (a folder "
                                   "that is not a Zarr store is never deleted)"),
    quiet: bool = typer.Option(False, help="no progress bars"),
) -> None:
    """Run the teachers once over every video and write (or resume) the store."""
    from mtvad.precompute.datasets import open_dataset
    from mtvad.precompute.jobs import precompute as run
    from mtvad.precompute.teachers import resolve_preset

    root = data if data is not None else Path("data") / dataset
    store = store or f"stores/{dataset}.zarr"
    size = parse_resolution(resolution)
    ds = open_dataset(dataset, root)
    result = run(ds, store, resolve_preset(preset), resolution=size, chunk_frames=chunk_frames,
                 scheduler=scheduler, workers=workers, overwrite=overwrite, progress=not quiet)
    if result.blocks_run == 0:
        console.print(f"{store}: complete already ({result.videos} videos), nothing to do")
    else:
        console.print(f"{store}: {result.frames_run} frames in {result.blocks_run} blocks of {result.videos} videos "
                      f"computed in {result.seconds:.1f} s ({result.frames_run / result.seconds:.1f} frames/s)")


@app.command()
@clean_errors
def synth(
    out: Path = typer.Argument(..., help="output folder (UCSD official layout)"),
    seed: int = typer.Option(0, help="random seed: the same seed gives byte-identical files"),
    small: bool = typer.Option(False, help="the small profile used by tests"),
    overwrite: bool = typer.Option(False, help="replace an existing non-empty output folder"),
) -> None:
    """Generate the embedded synthetic Ped2-like dataset."""
    from mtvad.precompute.synth import generate

    try:
        s = generate(out, seed=seed, small=small, overwrite=overwrite)
    except ValueError as exc:  # a bad seed
        raise VadError(str(exc)) from exc
    h, w = s["frame_size"]
    console.print(f"{out}: {s['train_videos']} train videos ({s['train_frames']} frames), {s['test_videos']} test "
                  f"videos ({s['test_frames']} frames, {s['anomalous_test_frames']} anomalous), {h}x{w}, "
                  f"seed {seed}, {s['profile']} profile, {s['seconds']:.1f} s")
    console.print("anomaly share of test frames: "
                  + ", ".join(f"{kind} {100 * share:.1f}%" for kind, share in s["anomaly_share"].items()))


@app.command()
def teachers() -> None:
    """List teachers and presets, and whether each teacher's weights are found (nothing is loaded or fetched)."""
    from rich.markup import escape

    from mtvad.precompute.teachers import PRESETS, TEACHERS, build_teacher
    from mtvad.precompute.teachers.base import Teacher

    table = Table(title="teachers")
    for col in ("name", "role", "version", "needs", "weights", "what it does"):
        table.add_column(col)
    for name, cls in sorted(TEACHERS.items()):
        t = build_teacher(name)
        if hasattr(t, "locate_weights"):
            found = t.locate_weights()
            weights = (f"[green]found[/] {escape(str(found.path))}" if found.path is not None
                       else f"[red]missing[/], expected at {escape(found.expected)}")
        elif type(t).weights_path is Teacher.weights_path:
            weights = "none needed"
        else:
            weights = "?"  # a teacher that can only tell by resolving (which may download)
        table.add_row(name, t.role, t.version, "GPU" if t.needs_gpu else "CPU", weights, t.summary)
    out = Console()
    out.print(table)
    for preset, roles in PRESETS.items():
        out.print(f"preset [bold]{preset}[/]: " + ", ".join(f"{r}={n}" for r, (n, _) in roles.items()))
