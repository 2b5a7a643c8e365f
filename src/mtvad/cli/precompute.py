"""`vad precompute`, `vad synth`, `vad teachers`: the heavy half (Dask, OpenCV, the teachers' frameworks).

Everything heavy is imported inside the commands, so `vad --help` and the light commands never import it; when
the `precompute` extra is not installed, these commands say so in one `error:` line.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from mtvad.cli.common import ProgressFlag, parse_size
from mtvad.console import clean_errors, console, stdout, styled
from mtvad.errors import VadError
from mtvad.presets import DEFAULT_PRESET

app = typer.Typer()

# top-level modules of the `precompute` extra (pyproject.toml): missing one means the extra is not installed
HEAVY_MODULES = {"dask": "Dask", "distributed": "Dask distributed", "cv2": "OpenCV", "PIL": "Pillow",
                 "transformers": "transformers", "huggingface_hub": "huggingface_hub"}


@contextlib.contextmanager
def heavy_half(command: str) -> Iterator[None]:
    """Turn a missing module of the heavy half into one `error:` line that says what to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in HEAVY_MODULES:
            raise
        raise VadError(f"vad {command} needs {HEAVY_MODULES[top]} ({top}), which is not installed: install the "
                       "precompute extra, pip install 'mtvad[precompute]'") from None


def require(command: str, *modules: str) -> None:
    """Import what a command needs before it does anything, so a missing extra fails before a store is made."""
    with heavy_half(command):
        for name in modules:
            importlib.import_module(name)


@app.command()
@clean_errors
def precompute(
    dataset: Annotated[str, typer.Argument(help="ped1, ped2, synth, avenue, shanghaitech or folder",
                                           show_default=False)],
    data: Annotated[Path | None, typer.Option(help="dataset root folder", show_default="data/DATASET")] = None,
    store: Annotated[str | None, typer.Option(help="store path or fsspec URL",
                                                 show_default="stores/DATASET.zarr")] = None,
    preset: Annotated[str, typer.Option(help="teacher preset (see `vad teachers`)")] = DEFAULT_PRESET,
    resolution: Annotated[str, typer.Option(help="store resolution, SIZE or HEIGHTxWIDTH (paper: 256)")] = "256",
    chunk_frames: Annotated[int, typer.Option(min=1, help="frames per chunk = frames per task")] = 16,
    workers: Annotated[int | None, typer.Option(min=1, help="local Dask worker processes",
                                                   show_default="CPU cores, at most 8")] = None,
    scheduler: Annotated[str, typer.Option(help="'local' (a LocalCluster), 'inprocess' (no Dask, for debugging) or "
                                                "a scheduler address such as tcp://host:8786")] = "local",
    overwrite: Annotated[bool, typer.Option(help="replace the vad store at --store, deleting only its own files (a "
                                                 "folder holding anything else is refused, nothing deleted)")] = False,
    progress: ProgressFlag = True,
) -> None:
    """Run the teachers once over every video and write (or resume) the store.

    Example: vad precompute ped2 --data ../shared/data/ped2 --store stores/ped2.zarr --workers 2
    """
    size = parse_size(resolution, "--resolution", minimum=16)
    require("precompute", "cv2", "PIL", *(() if scheduler == "inprocess" else ("dask", "distributed")))
    with heavy_half("precompute"):
        from mtvad.precompute.datasets import open_dataset
        from mtvad.precompute.jobs import precompute as run
        from mtvad.precompute.teachers import resolve_preset

        root = data if data is not None else Path("data") / dataset
        store = store or f"stores/{dataset}.zarr"
        ds = open_dataset(dataset, root)
        result = run(ds, store, resolve_preset(preset), resolution=size, chunk_frames=chunk_frames,
                     scheduler=scheduler, workers=workers, overwrite=overwrite, progress=progress)
    if result.blocks_run == 0:
        console.print(f"{store}: complete already ({result.videos} videos), nothing to do")
    else:
        console.print(f"{store}: {result.frames_run} frames in {result.blocks_run} blocks of {result.videos} videos "
                      f"computed in {result.seconds:.1f} s ({result.frames_run / result.seconds:.1f} frames/s)")


@app.command()
@clean_errors
def synth(
    out: Annotated[Path, typer.Argument(help="output folder (UCSD official layout)", show_default=False)],
    seed: Annotated[int, typer.Option(help="random seed: the same seed gives byte-identical files")] = 0,
    small: Annotated[bool, typer.Option(help="the small profile used by tests")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing non-empty output folder")] = False,
) -> None:
    """Generate the embedded synthetic Ped2-like dataset.

    Example: vad synth data/synth --seed 0
    """
    require("synth", "cv2", "PIL")
    with heavy_half("synth"):
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
@clean_errors
def teachers() -> None:
    """List teachers and presets, and whether each teacher's weights are found (nothing is loaded or fetched).

    Example: vad teachers
    """
    from rich.table import Table

    with heavy_half("teachers"):
        from mtvad.precompute.teachers import PRESETS, RECOMMENDED, TEACHERS, build_teacher
        from mtvad.precompute.teachers.base import Teacher

        table = Table(title="teachers")
        for col in ("name", "role", "version", "needs", "weights", "what it does"):
            table.add_column(col)
        ready: dict[str, bool] = {}  # teacher name -> its weights are found (or it needs none)
        for name, cls in sorted(TEACHERS.items()):
            t = build_teacher(name)
            if hasattr(t, "locate_weights"):
                found = t.locate_weights()
                ready[name] = found.path is not None
                weights = (styled(("found", "green"), f" {found.path}") if found.path is not None
                           else styled(("missing", "red"), f", expected at {found.expected}"))
            elif type(t).weights_path is Teacher.weights_path:
                ready[name] = True
                weights = "none needed"
            else:
                ready[name] = False
                weights = "?"  # a teacher that can only tell by resolving (which may download)
            table.add_row(name, t.role, t.version, "GPU" if t.needs_gpu else "CPU", weights, t.summary)
    out = stdout()
    out.print(table)
    usable = {preset: all(ready[n] for n, _ in roles.values()) for preset, roles in PRESETS.items()}
    for preset, roles in PRESETS.items():
        out.print(styled("preset ", (preset, "bold"), ": " + ", ".join(f"{r}={n}" for r, (n, _) in roles.items())
                         + ("" if usable[preset] else " (weights missing)")
                         + (" (the default)" if preset == DEFAULT_PRESET else "")))
    best = next(p for p in RECOMMENDED if usable[p])
    out.print(styled("recommended here: ", (best, "bold"), f" ({RECOMMENDED[best]})"))
