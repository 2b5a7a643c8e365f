"""`vad`: train, score and inspect from a teacher store (never from raw videos)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from vad.console import clean_errors, human_bytes
from vad.store import open_store, store_summary

app = typer.Typer(help="Multi-task video anomaly detection from a precomputed teacher store.",
                  no_args_is_help=True, add_completion=False)
store_app = typer.Typer(help="Inspect a store.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("info")
@clean_errors
def store_info(
    path: str = typer.Argument(..., help="store path or fsspec URL"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Videos, frames, arrays (dtype, chunks, stored/uncompressed bytes), teachers and fingerprint."""
    summary = store_summary(open_store(path))
    if as_json:
        print(json.dumps(summary, indent=2, default=list))
        return
    out = Console()
    s = summary
    out.print(f"[bold]{s['url']}[/]  dataset [bold]{s['dataset']}[/], schema v{s['schema_version']}, "
              f"{s['resolution'][0]}x{s['resolution'][1]}, {s['chunk_frames']} frames per chunk, "
              f"created {s['created']} by vad {s['vad_version']}", highlight=False)
    out.print(f"videos: train {s['videos']['train']} ({s['frames']['train']} frames), "
              f"test {s['videos']['test']} ({s['frames']['test']} frames)", highlight=False)
    status = "complete" if s["missing_blocks"] == 0 else f"[yellow]incomplete: {s['missing_blocks']} blocks missing[/]"
    out.print(f"status: {status}")
    table = Table(title="arrays (summed over videos)")
    for col in ("array", "dtype", "chunk", "videos", "stored", "uncompressed", "ratio"):
        table.add_column(col, justify="left" if col in ("array", "dtype", "chunk") else "right")
    stored = raw = 0
    for name, row in s["arrays"].items():
        stored, raw = stored + row["stored"], raw + row["raw"]
        table.add_row(name, row["dtype"], "x".join(map(str, row["chunks"])), str(row["videos"]),
                      human_bytes(row["stored"]), human_bytes(row["raw"]), f"{row['raw'] / max(row['stored'], 1):.1f}x")
    table.add_row("[bold]total", "", "", "", human_bytes(stored), human_bytes(raw), f"{raw / max(stored, 1):.1f}x")
    out.print(table)
    teachers = Table(title=f"teachers (fingerprint {s['fingerprint'][:16]})")
    for col in ("role", "name", "version", "params", "weights sha256"):
        teachers.add_column(col)
    for role, t in s["teachers"].items():
        teachers.add_row(role, t["name"], str(t["version"]), json.dumps(t["params"], sort_keys=True),
                         (t.get("weights_sha256") or "-")[:16])
    out.print(teachers)
    out.print("classes: " + ", ".join(f"{k}={v}" for k, v in s["classes"].items()), highlight=False)


@store_app.command("show")
@clean_errors
def store_show(
    path: str = typer.Argument(..., help="store path or fsspec URL"),
    video: str = typer.Option("test/01", help="SPLIT/VIDEO, e.g. test/01"),
    frames: str = typer.Option("1,60,120", help="comma-separated frame indices (0-based)"),
    out: Path = typer.Option(Path("outputs/teachers.png"), help="PNG to write"),
) -> None:
    """Side-by-side picture of a few frames: input | segmentation | flow magnitude | flow direction | depth."""
    from vad.figures import teacher_panels

    try:
        indices = [int(f) for f in frames.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{frames!r}: give comma-separated integers") from None
    written = teacher_panels(open_store(path), video, indices, out)
    Console(stderr=True).print(f"wrote {written}")


if __name__ == "__main__":
    app()
