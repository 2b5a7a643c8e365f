"""`vad`: train, score and inspect from a teacher store (never from raw videos)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mtvad.cli.precompute import app as precompute_app
from mtvad.console import clean_errors, human_bytes
from mtvad.store.access import open_store
from mtvad.store.summary import store_summary

app = typer.Typer(help="Multi-task video anomaly detection from a precomputed teacher store.",
                  no_args_is_help=True, add_completion=False)
store_app = typer.Typer(help="Inspect, share (pack, unpack), verify and compare stores.", no_args_is_help=True)
app.add_typer(store_app, name="store")
app.add_typer(precompute_app)  # precompute, synth, teachers: the heavy half, imported when run


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
    out.print(f"built by {s.get('built_by') or 'unknown'} with pipeline {s.get('pipeline_version') or '?'} from "
              f"{s.get('source_root') or 'unknown source'}", highlight=False, soft_wrap=True)
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
    from mtvad.store.show import teacher_panels

    try:
        indices = [int(f) for f in frames.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{frames!r}: give comma-separated integers") from None
    written = teacher_panels(open_store(path), video, indices, out)
    Console(stderr=True).print(f"wrote {written}")


def _d(path: str):
    """Default of a TrainConfig field ('optim.epochs'), so the CLI and the dataclasses never disagree."""
    from mtvad.students import config as cfg  # light: no torch

    obj = cfg.TrainConfig()
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@app.command("train")
@clean_errors
def train_cmd(
    store: str = typer.Option(..., "--store", help="teacher store (path or fsspec URL)"),
    branch: str = typer.Option(_d("branch"), help="appearance | motion | both (trained one after the other)"),
    out: str = typer.Option(_d("run.out"), "--out", help="output folder: OUT/<branch>/last.pt, log.jsonl"),
    size: str = typer.Option(None, help="network input N (square) or HxW, multiples of 32 (default: the store "
                                        "resolution; paper 256)"),
    epochs: int = typer.Option(_d("optim.epochs"), help="epochs (paper silent; ours)"),
    batch_size: int = typer.Option(_d("optim.batch_size"), help="batch size (paper silent; ours)"),
    lr: float = typer.Option(_d("optim.lr"), help="Adam learning rate (paper 1e-3)"),
    lr_step_epochs: int = typer.Option(_d("optim.lr_step_epochs"), help="halve the lr every N epochs (paper 10)"),
    lr_gamma: float = typer.Option(_d("optim.lr_gamma"), help="lr factor at each step (paper 0.5)"),
    patch_grid: int = typer.Option(_d("optim.patch_grid"), help="patch loss grid: G x G patches (paper 4: 16)"),
    appearance_target: str = typer.Option(_d("appearance.target"),
                                          help="seg-future: seg of t+1 (paper, Seg+Pred) | seg: seg of t (Seg)"),
    scse: str = typer.Option(_d("motion.scse"), help="SCSE placement: encoder-mid (paper 3.4) | decoder (smp's) "
                                                     "| off"),
    attention: str = typer.Option(_d("motion.attention"),
                                  help="context attention position: off | encoder | decoder (paper's best) | "
                                       "skip | final"),
    attention_form: str = typer.Option(_d("motion.attention_form"), help="residual: x*(1+a) | gate: x*a"),
    flow_target: str = typer.Option(_d("motion.flow_target"),
                                    help="masked: flow magnitude x (seg > 0) (paper 4.3) | raw"),
    encoder_weights: list[str] = typer.Option(
        None, "--encoder-weights",
        help="local ImageNet encoder state dict (torchvision or smp); repeat for both branches; resnet files go "
             "to the appearance branch, vgg files to the motion branch. Default: from scratch"),
    max_steps: int = typer.Option(None, help="stop after this many optimizer steps in all (smoke runs)"),
    limit_videos: int = typer.Option(None, help="train on the first N training videos only"),
    in_memory: bool = typer.Option(None, "--in-memory/--streaming",
                                   help="hold the needed arrays in RAM, or stream from the store "
                                        "(default: in memory when they fit the RAM budget)"),
    ram_budget_gb: float = typer.Option(None, help="RAM budget for --in-memory auto (default: half the available)"),
    workers: int = typer.Option(None, help="loader processes in streaming mode (default min(4, cpus-1))"),
    seed: int = typer.Option(_d("run.seed"), help="seed of torch, numpy, python and the sample order"),
    device: str = typer.Option(_d("run.device"), help="auto (CUDA when present) | cpu | cuda"),
    amp: str = typer.Option(_d("run.amp"), help="auto: mixed precision on CUDA | off"),
    checkpoint_every: int = typer.Option(_d("run.checkpoint_every"),
                                         help="write OUT/<branch>/last.pt every N steps (and each epoch end)"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT/<branch>/last.pt, same step, same "
                                                        "optimizer state"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show the progress bar"),
) -> None:
    """Train the students on a store's training videos (paper 4.3: Adam, lr 1e-3 halved every 10 epochs, patch loss)."""
    from mtvad.errors import ConfigError, EncoderWeightsError
    from mtvad.students.config import AppearanceConfig, DataConfig, MotionConfig, OptimConfig, RunConfig, TrainConfig

    size_hw = None
    if size:
        try:
            parts = [int(p) for p in size.lower().split("x")]
        except ValueError:
            raise ConfigError(f"--size {size!r}: give N or HxW") from None
        size_hw = parts * 2 if len(parts) == 1 else parts
    weights = {"appearance": None, "motion": None}
    branches = ("appearance", "motion") if branch == "both" else (branch,)
    for path in encoder_weights or []:
        from mtvad.students.models import encoder_family  # imports torch: only when weights are given

        family = encoder_family(path)
        target = {"resnet": "appearance", "vgg": "motion"}.get(family or "")
        if target is None:
            raise EncoderWeightsError(f"{path}: neither a resnet nor a vgg encoder state dict")
        if target not in branches:
            raise ConfigError(f"{path}: a {family} encoder (the {target} branch), but --branch is {branch}")
        if weights[target] is not None:
            raise ConfigError(f"two --encoder-weights files for the {target} branch: {weights[target]}, {path}")
        weights[target] = path
    d = TrainConfig()
    config = TrainConfig(
        branch=branch,
        appearance=AppearanceConfig(encoder=d.appearance.encoder, target=appearance_target,
                                    encoder_weights=weights["appearance"]),
        motion=MotionConfig(encoder=d.motion.encoder, scse=scse, attention=attention, attention_form=attention_form,
                            flow_target=flow_target, encoder_weights=weights["motion"]),
        optim=OptimConfig(lr=lr, lr_step_epochs=lr_step_epochs, lr_gamma=lr_gamma, epochs=epochs,
                          batch_size=batch_size, patch_grid=patch_grid),
        data=DataConfig(store=store, size=size_hw, limit_videos=limit_videos, in_memory=in_memory,
                        ram_budget_gb=ram_budget_gb, workers=workers),
        run=RunConfig(out=out, seed=seed, device=device, amp=amp, max_steps=max_steps,
                      checkpoint_every=checkpoint_every),
    )
    config.validate()  # bad flags fail here, before torch is imported
    from mtvad.students.train import train

    results = train(config, resume=resume, progress=progress)
    out_console = Console(soft_wrap=True)
    for name, r in results.items():
        first = f"{r.losses[0]:.5g}" if r.losses else "-"
        last = f"{r.losses[-1]:.5g}" if r.losses else "-"
        out_console.print(f"{name}: step {r.step}, epoch {r.epoch}, loss {first} -> {last} over {len(r.losses)} "
                          f"steps, {r.samples_per_s:.2f} samples/s, checkpoint {r.checkpoint}", highlight=False)


# ------------------------------------------------------------------- sharing: pack, unpack, verify, diff


def _bar(description: str):
    """A transient progress bar on stderr (none when stderr is not a terminal): (context, update(done, total))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    err = Console(stderr=True)
    bar = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=err, transient=True, disable=not err.is_terminal)
    task = bar.add_task(description, total=None)

    def update(done: int, total: int, *_) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


@store_app.command("pack")
@clean_errors
def store_pack(
    path: str = typer.Argument(..., help="store folder or fsspec URL"),
    out: Path = typer.Argument(..., help="the .zip file to write"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace OUT if it exists"),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete",
                                          help="pack a store whose blocks are not all computed yet"),
) -> None:
    """Pack a store into one .zip file that every vad command reads in place (`--store OUT.zip`)."""
    from mtvad.store.pack import pack_store

    bar, update = _bar("packing")
    with bar:
        r = pack_store(path, out, overwrite=overwrite, allow_incomplete=allow_incomplete, progress=update)
    Console(stderr=True, soft_wrap=True).print(
        f"packed {r.entries} files ({human_bytes(r.bytes)}) of {path} into {r.out} in {r.seconds:.1f} s",
        highlight=False)


@store_app.command("unpack")
@clean_errors
def store_unpack(
    path: Path = typer.Argument(..., help="a packed store (.zip)"),
    out: Path = typer.Argument(..., help="folder to restore the store into (new, or empty)"),
) -> None:
    """Restore a folder store from a packed one (refuses a non-empty OUT and entries outside it)."""
    from mtvad.store.pack import unpack_store

    bar, update = _bar("unpacking")
    with bar:
        r = unpack_store(path, out, progress=update)
    Console(stderr=True, soft_wrap=True).print(
        f"unpacked {r.entries} files ({human_bytes(r.bytes)}) into {r.out} in {r.seconds:.1f} s", highlight=False)


@store_app.command("verify")
@clean_errors
def store_verify(
    path: str = typer.Argument(..., help="store path, .zip or fsspec URL"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Re-read every chunk and compare it with the checksum recorded when it was written.

    Lists every missing, undecodable or corrupted chunk by video, array and frames, and blocks not computed
    yet; exit code 1 if there is any."""
    from mtvad.store.verify import verify_store

    bar, update = _bar("verifying")
    with bar:
        report = verify_store(path, progress=update)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        out = Console(soft_wrap=True)
        for problem in report.problems:
            out.print(str(problem), highlight=False, markup=False)
        if report.ok:
            out.print(f"[green]ok[/]: {report.videos} videos, {report.blocks} blocks "
                      f"({human_bytes(report.bytes)} decoded) match their checksums ({report.seconds:.1f} s)",
                      highlight=False)
        else:
            videos = len({p.video for p in report.problems})
            n = len(report.problems)
            out.print(f"[bold red]FAILED[/]: {n} problem{'s' if n > 1 else ''} in {videos} of {report.videos} videos "
                      f"({report.blocks} blocks checked, {report.seconds:.1f} s)", highlight=False)
    raise typer.Exit(0 if report.ok else 1)


def _short(value, width: int = 34) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


@store_app.command("diff")
@clean_errors
def store_diff(
    a: str = typer.Argument(..., help="first store (path, .zip or fsspec URL)"),
    b: str = typer.Argument(..., help="second store"),
    as_json: bool = typer.Option(False, "--json", help="print the comparison as JSON"),
) -> None:
    """How two stores differ, and whether they are interchangeable.

    Compares schema, dataset, resolution, teachers (params, weights), fingerprint, provenance, videos, frame
    counts, completeness and contents (by checksum). Exit code 0 when interchangeable (same fingerprint, same
    videos and frame counts, same input frames and labels, both complete), else 1."""
    from mtvad.store.diff import diff_stores

    d = diff_stores(a, b)
    if as_json:
        print(json.dumps(d, indent=2, default=str))
        raise typer.Exit(0 if d["interchangeable"] else 1)
    out = Console(soft_wrap=True)
    out.print(f"A: {d['a']}\nB: {d['b']}", highlight=False, markup=False)
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
    out.print(line, highlight=False)
    if v["frame_counts"]:
        out.print("frame counts differ: " + ", ".join(f"{f['video']}: {f['a']} vs {f['b']} frames"
                                                      for f in v["frame_counts"][:8]), highlight=False)
    m = d["missing_blocks"]
    out.print(f"completeness: A {'complete' if not m['a'] else str(m['a']) + ' blocks missing'}, "
              f"B {'complete' if not m['b'] else str(m['b']) + ' blocks missing'}", highlight=False)
    c = d["contents"]
    if c["identical"]:
        out.print(f"contents: identical contents ({c['blocks_compared']} blocks compared by checksum)", highlight=False)
    else:
        differing = ", ".join(f"{vid} ({', '.join(f'{k} {n}' for k, n in arrays.items())})"
                              for vid, arrays in list(c["differing"].items())[:6])
        out.print(f"contents: {c['blocks_compared']} blocks compared by checksum; differing blocks: "
                  f"{differing or 'none'}" + (f"; labels differ: {', '.join(c['labels_differ'])}"
                                               if c["labels_differ"] else ""), highlight=False)
    for note in d["notes"]:
        out.print(f"note: {note}", highlight=False)
    if d["interchangeable"]:
        out.print("[bold green]interchangeable[/]: same fingerprint, same videos and frame counts, both complete")
    else:
        out.print("[bold red]NOT interchangeable[/]: " + "; ".join(d["reasons"]), highlight=False)
    raise typer.Exit(0 if d["interchangeable"] else 1)


# ------------------------------------------------------------------- scoring, evaluation, reports


def _post_config(window: int, polyorder: int, normalise: str, threshold_quantile: float):
    from mtvad.scoring.postprocess import PostConfig

    return PostConfig(window=window, polyorder=polyorder, normalisation=normalise,
                      threshold_quantile=threshold_quantile).validate()


_WINDOW_HELP = ("Savitzky-Golay window in frames, odd (ours, a priori: 15 = 1.5 s at 10 fps; the paper gives none); "
                "a shorter video uses the largest odd window <= its length")
_NORMALISE_HELP = ("train-zscore: each branch z-scored with its TRAINING scores' mean/std (no test statistic) | "
                   "per-video-minmax: each video's own min/max (USES TEST STATISTICS)")


@app.command("score")
@clean_errors
def score_cmd(
    store: str = typer.Option(..., "--store", help="teacher store the checkpoints were trained on"),
    checkpoint: list[str] = typer.Option(..., "--checkpoint", help="OUT/<branch>/last.pt; repeat for both branches"),
    out: Path = typer.Option(Path("outputs/scores.zarr"), "--out", help="scores file to write (a Zarr folder)"),
    maps: bool = typer.Option(False, "--maps", help="also store the per-pixel anomaly maps of the test frames "
                                                    "(float16 at the input size; for pixel AUC and overlays)"),
    batch_size: int = typer.Option(16, help="frames per forward pass"),
    device: str = typer.Option("auto", help="auto (CUDA when present) | cpu | cuda"),
    threads: int = typer.Option(None, help="torch CPU threads (default: the cores not busy with other jobs, "
                                           "cores minus the 1-minute load average, at least 1)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing scores file at --out"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show the progress bar"),
) -> None:
    """Eq. 4: S(t) = sum |student - teacher| per frame and branch, over every test and training frame."""
    from mtvad.scoring.score import score

    r = score(store, checkpoint, out, maps=maps, batch_size=batch_size, device=device, overwrite=overwrite,
              progress=progress, threads=threads)
    rates = ", ".join(f"{b} {fps:.1f}" for b, fps in r.frames_per_s.items())
    Console(soft_wrap=True).print(
        f"scored {', '.join(r.branches)} on {r.videos.get('train', 0)} training videos ({r.frames.get('train', 0)} "
        f"frames) and {r.videos.get('test', 0)} test videos ({r.frames.get('test', 0)} frames) in {r.seconds:.1f} s "
        f"(frames/s: {rates}; {r.threads} torch thread{'s' if r.threads > 1 else ''}); wrote {r.out}",
        highlight=False)


@app.command("eval")
@clean_errors
def eval_cmd(
    scores: Path = typer.Option(..., "--scores", help="scores file written by `vad score`"),
    store: str = typer.Option(None, "--store", help="the store it was scored on (checked): labels and pixel masks "
                                                    "(default: the labels copied into the scores file, no pixel AUC)"),
    json_out: Path = typer.Option(None, "--json", help="also write the results as JSON to this file"),
    window: int = typer.Option(15, help=_WINDOW_HELP),
    polyorder: int = typer.Option(2, help="Savitzky-Golay polynomial order (< window; ours, a priori)"),
    normalise: str = typer.Option("train-zscore", help=_NORMALISE_HELP),
    threshold_quantile: float = typer.Option(0.99, help="decision threshold: this quantile of the fused TRAINING "
                                                        "scores"),
    pixel_size: int = typer.Option(64, help="common resolution (N x N) of maps and masks for the pixel AUC"),
    per_video: bool = typer.Option(True, "--per-video/--no-per-video", help="also print the per-video AUC table"),
) -> None:
    """Frame-level micro and macro AUC, EER and pixel AUC per branch, fused and for the teacher-only baseline."""
    from mtvad.scoring.evaluate import evaluate, results_notes, results_tables
    from mtvad.scoring.scores_file import open_scores
    from mtvad.store.access import open_store

    post = _post_config(window, polyorder, normalise, threshold_quantile)
    sf = open_scores(scores)
    ev = evaluate(sf, open_store(store) if store else None, post, pixel_size)
    out = Console(soft_wrap=True)
    for table in results_tables(ev.results, per_video):
        out.print(table)
    for note in results_notes(ev.results):
        out.print(f"note: {note}", highlight=False)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(ev.results, indent=2) + "\n")
        out.print(f"wrote {json_out}", highlight=False)


@app.command("report")
@clean_errors
def report_cmd(
    scores: Path = typer.Option(..., "--scores", help="scores file written by `vad score`"),
    store: str = typer.Option(..., "--store", help="the store it was scored on (frames, labels, masks)"),
    out: Path = typer.Option(Path("outputs/report"), "--out", help="folder for index.html and the figures"),
    window: int = typer.Option(15, help=_WINDOW_HELP),
    polyorder: int = typer.Option(2, help="Savitzky-Golay polynomial order (< window; ours, a priori)"),
    normalise: str = typer.Option("train-zscore", help=_NORMALISE_HELP),
    threshold_quantile: float = typer.Option(0.99, help="decision threshold: this quantile of the fused TRAINING "
                                                        "scores"),
    top_k: int = typer.Option(6, help="highest-scoring test frames shown per branch in the anomaly-map figures"),
    pixel_size: int = typer.Option(64, help="common resolution (N x N) of maps and masks for the pixel AUC"),
) -> None:
    """Figures (ROC, per-video AUC, score timelines, anomaly-map overlays) and an index.html that shows them."""
    from mtvad.scoring.report import make_report
    from mtvad.scoring.scores_file import open_scores
    from mtvad.store.access import open_store

    post = _post_config(window, polyorder, normalise, threshold_quantile)
    r = make_report(open_scores(scores), open_store(store), out, post, top_k=top_k, pixel_size=pixel_size)
    con = Console(soft_wrap=True)
    for note in r.notes:
        con.print(f"note: {note}", highlight=False)
    con.print(f"wrote {len(r.figures)} figures and {r.page}", highlight=False)
