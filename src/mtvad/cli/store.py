"""`vad store`: info, show, pack, unpack, verify, diff. The store modules are imported when a command runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mtvad.cli.common import JsonFlag, ProgressFlag, progress_bar
from mtvad.console import EXIT_FOUND, clean_errors, console, human_bytes, print_json, stdout, styled

app = typer.Typer(name="store", help="Inspect, share (pack, unpack), verify and compare stores.", no_args_is_help=True)

StoreArg = Annotated[str, typer.Argument(help="store path, .zip or fsspec URL (s3://, gs://, file://)",
                                         show_default=False)]


@app.command("info")
@clean_errors
def store_info(path: StoreArg, as_json: JsonFlag = False) -> None:
    """Videos, frames, arrays (dtype, chunks, stored/uncompressed bytes), teachers and fingerprint.

    Example: vad store info stores/ped2.zarr --json
    """
    from rich.table import Table

    from mtvad.store.access import open_store
    from mtvad.store.summary import store_summary

    s = store_summary(open_store(path))
    if as_json:
        print_json(s)
        return
    out = stdout()
    out.print(styled((str(s["url"]), "bold"), "  dataset ", (str(s["dataset"]), "bold"),
                     f", schema v{s['schema_version']}, {s['resolution'][0]}x{s['resolution'][1]}, "
                     f"{s['chunk_frames']} frames per chunk, created {s['created']} by vad {s['vad_version']}"))
    out.print(f"built by {s.get('built_by') or 'unknown'} with pipeline {s.get('pipeline_version') or '?'} from "
              f"{s.get('source_root') or 'unknown source'}")
    out.print(f"videos: train {s['videos']['train']} ({s['frames']['train']} frames), "
              f"test {s['videos']['test']} ({s['frames']['test']} frames)")
    if s["missing_data"]:  # lost since it was written: not "complete", whatever the block flags say
        out.print(styled("status: ", (f"damaged: {len(s['missing_data'])} missing ({s['missing_data'][0]}"
                                      + (", ..." if len(s["missing_data"]) > 1 else "") + ")", "red"),
                         ": `vad store verify` lists them, a re-run of `vad precompute` recomputes them"))
    else:
        out.print(styled("status: ", "complete" if s["missing_blocks"] == 0
                         else (f"incomplete: {s['missing_blocks']} blocks missing", "yellow")))
    table = Table(title="arrays (summed over videos)")
    for col in ("array", "dtype", "chunk", "videos", "stored", "uncompressed", "ratio"):
        table.add_column(col, justify="left" if col in ("array", "dtype", "chunk") else "right")
    stored = raw = 0
    for name, row in s["arrays"].items():
        stored, raw = stored + row["stored"], raw + row["raw"]
        table.add_row(name, row["dtype"], "x".join(map(str, row["chunks"])), str(row["videos"]),
                      human_bytes(row["stored"]), human_bytes(row["raw"]), f"{row['raw'] / max(row['stored'], 1):.1f}x")
    table.add_row(styled(("total", "bold")), "", "", "", human_bytes(stored), human_bytes(raw),
                  f"{raw / max(stored, 1):.1f}x")
    out.print(table)
    teachers = Table(title=f"teachers (fingerprint {s['fingerprint'][:16]})")
    for col in ("role", "name", "version", "params", "weights sha256"):
        teachers.add_column(col)
    for role, t in s["teachers"].items():
        teachers.add_row(role, t["name"], str(t["version"]), json.dumps(t["params"], sort_keys=True),
                         (t.get("weights_sha256") or "-")[:16])
    out.print(teachers)
    out.print("classes: " + ", ".join(f"{k}={v}" for k, v in s["classes"].items()))


@app.command("show")
@clean_errors
def store_show(
    path: StoreArg,
    video: Annotated[str, typer.Option(help="SPLIT/VIDEO, e.g. test/01")] = "test/01",
    frames: Annotated[str, typer.Option(help="comma-separated frame indices (0-based)")] = "1,60,120",
    out: Annotated[Path, typer.Option(help="PNG to write")] = Path("outputs/teachers.png"),
) -> None:
    """Side-by-side picture of a few frames: input | segmentation | flow magnitude | flow direction | depth.

    Example: vad store show stores/ped2.zarr --video test/01 --frames 10,70,150 --out outputs/teachers.png
    """
    from mtvad.store.access import open_store
    from mtvad.store.show import teacher_panels

    try:
        indices = [int(f) for f in frames.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{frames!r}: give comma-separated integers", param_hint="--frames") from None
    written = teacher_panels(open_store(path), video, indices, out)
    console.print(f"wrote {written}")


@app.command("pack")
@clean_errors
def store_pack(
    path: StoreArg,
    out: Annotated[Path, typer.Argument(help="the .zip file to write", show_default=False)],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace OUT if it exists")] = False,
    allow_incomplete: Annotated[bool, typer.Option("--allow-incomplete",
                                                   help="pack a store whose blocks are not all computed yet")] = False,
    progress: ProgressFlag = True,
) -> None:
    """Pack a store into one .zip file that every vad command reads in place (`--store OUT.zip`).

    Example: vad store pack stores/ped2.zarr stores/ped2.zip
    """
    from mtvad.store.pack import pack_store

    bar, update = progress_bar("packing", progress)
    with bar:
        r = pack_store(path, out, overwrite=overwrite, allow_incomplete=allow_incomplete, progress=update)
    console.print(f"packed {r.entries} files ({human_bytes(r.bytes)}) of {path} into {r.out} in {r.seconds:.1f} s")


@app.command("unpack")
@clean_errors
def store_unpack(
    path: Annotated[Path, typer.Argument(help="a packed store (.zip)", show_default=False)],
    out: Annotated[Path, typer.Argument(help="folder to restore the store into (new, or empty)", show_default=False)],
    progress: ProgressFlag = True,
) -> None:
    """Restore a folder store from a packed one (refuses a non-empty OUT and entries outside it).

    Example: vad store unpack stores/ped2.zip /scratch/ped2.zarr
    """
    from mtvad.store.pack import unpack_store

    bar, update = progress_bar("unpacking", progress)
    with bar:
        r = unpack_store(path, out, progress=update)
    console.print(f"unpacked {r.entries} files ({human_bytes(r.bytes)}) into {r.out} in {r.seconds:.1f} s")


@app.command("verify")
@clean_errors
def store_verify(path: StoreArg, as_json: JsonFlag = False, progress: ProgressFlag = True) -> None:
    """Re-read every chunk and compare it with the checksum recorded when it was written.

    Lists every missing, undecodable or corrupted chunk by video, array and frames, and blocks not computed
    yet. Exit code 0: every chunk matches; 3: damaged or incomplete (the problems are listed); 1: the store
    could not be read at all.

    Example: vad store verify stores/ped2.zip --json
    """
    from mtvad.store.verify import verify_store

    bar, update = progress_bar("verifying", progress)
    with bar:
        report = verify_store(path, progress=update)
    if as_json:
        print_json(report.to_json())
    else:
        out = stdout()
        for problem in report.problems:
            out.print(str(problem))
        if report.ok:
            out.print(styled(("ok", "green"), f": {report.videos} videos, {report.blocks} blocks "
                             f"({human_bytes(report.bytes)} decoded) match their checksums ({report.seconds:.1f} s)"))
        else:
            videos = len({p.video for p in report.problems})
            n = len(report.problems)
            out.print(styled(("FAILED", "bold red"), f": {n} problem{'s' if n > 1 else ''} in {videos} of "
                             f"{report.videos} videos ({report.blocks} blocks checked, {report.seconds:.1f} s)"))
    raise typer.Exit(0 if report.ok else EXIT_FOUND)


def _short(value: Any, width: int = 34) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


@app.command("diff")
@clean_errors
def store_diff(
    a: Annotated[str, typer.Argument(help="first store (path, .zip or fsspec URL)", show_default=False)],
    b: Annotated[str, typer.Argument(help="second store", show_default=False)],
    as_json: JsonFlag = False,
) -> None:
    """How two stores differ, and whether they are interchangeable.

    Compares schema, dataset, resolution, teachers (params, weights), fingerprint, provenance, videos, frame
    counts, completeness and contents (by checksum). Exit code 0: interchangeable (same fingerprint, same
    videos and frame counts, same input frames and labels, both complete); 3: not interchangeable; 1: a store
    could not be read.

    Example: vad store diff stores/ped2.zarr s3://bucket/ped2.zarr
    """
    from rich.table import Table

    from mtvad.store.diff import diff_stores

    d = diff_stores(a, b)
    code = 0 if d["interchangeable"] else EXIT_FOUND
    if as_json:
        print_json(d)
        raise typer.Exit(code)
    out = stdout()
    out.print(f"A: {d['a']}\nB: {d['b']}")
    table = Table(show_edge=False)
    for col in ("", "A", "B"):
        table.add_column(col, overflow="fold")
    for row in d["fields"] + d["provenance"]:
        style = None if row["same"] else "yellow"
        if row["field"] in ("fingerprint", "weights") or row["field"].endswith(" weights"):
            va, vb = (str(v)[:16] if v else "-" for v in (row["a"], row["b"]))
        else:
            va, vb = ("-" if x is None else _short(x) for x in (row["a"], row["b"]))
        table.add_row(("  " if row["same"] else "≠ ") + row["field"], va, "=" if row["same"] else vb, style=style)
    out.print(table)
    v = d["videos"]
    line = f"videos: A {v['a']}, B {v['b']}, {v['common']} in both"
    if v["only_a"]:
        line += f"; only in A: {', '.join(v['only_a'][:8])}" + (" ..." if len(v["only_a"]) > 8 else "")
    if v["only_b"]:
        line += f"; only in B: {', '.join(v['only_b'][:8])}" + (" ..." if len(v["only_b"]) > 8 else "")
    out.print(line)
    if v["frame_counts"]:
        out.print("frame counts differ: " + ", ".join(f"{f['video']}: {f['a']} vs {f['b']} frames"
                                                      for f in v["frame_counts"][:8]))
    m = d["missing_blocks"]
    out.print(f"completeness: A {'complete' if not m['a'] else str(m['a']) + ' blocks missing'}, "
              f"B {'complete' if not m['b'] else str(m['b']) + ' blocks missing'}")
    c = d["contents"]
    if c["identical"]:
        out.print(f"contents: identical contents ({c['blocks_compared']} blocks compared by checksum)")
    else:
        differing = ", ".join(f"{vid} ({', '.join(f'{k} {n}' for k, n in arrays.items())})"
                              for vid, arrays in list(c["differing"].items())[:6])
        out.print(f"contents: {c['blocks_compared']} blocks compared by checksum; differing blocks: "
                  f"{differing or 'none'}" + (f"; labels differ: {', '.join(c['labels_differ'])}"
                                               if c["labels_differ"] else ""))
    for text in d["notes"]:
        out.print(f"note: {text}")
    if d["interchangeable"]:
        out.print(styled(("interchangeable", "bold green"), ": same fingerprint, same videos and frame counts, "
                                                            "both complete"))
    else:
        out.print(styled(("NOT interchangeable", "bold red"), ": " + "; ".join(d["reasons"])))
    raise typer.Exit(code)
