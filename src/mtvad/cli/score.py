"""`vad score`, `vad eval`, `vad report`: scores from checkpoints, then numbers and figures from the scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mtvad.cli.common import JsonFlag, ProgressFlag
from mtvad.console import clean_errors, console, print_json
from mtvad.scoring.postprocess import DEFAULT_FUSION, DEFAULT_NORMALISATION, DEFAULT_REDUCTION

app = typer.Typer()

_WINDOW_HELP = ("Savitzky-Golay window in frames, odd (ours, a priori: 15 = 1.5 s at 10 fps; the paper gives none); "
                "a shorter video uses the largest odd window <= its length")
_NORMALISE_HELP = ("calibration of every row, fitted on the TRAINING scores: train-zscore (mean, std) | "
                   "train-percentile (median, 99th percentile) | train-loo (median, 99th percentile widened by the "
                   "leave-one-training-video-out spread) | per-video-minmax: each video's own min/max (USES TEST "
                   "STATISTICS)")
_REDUCTION_HELP = ("frame score of every row (branches and controls alike): sum (Eq. 4 as written) | foreground "
                   "(sum over teacher or student foreground pixels) | patch-max (max of the 4x4 grid's patch sums) | "
                   "object-mean, object-sum (max over the foreground's objects of each one's mean or sum)")
_FUSION_HELP = "fusion of the calibrated branches: max (the paper: either branch) | sum (AI-VAD)"
_KINDS_HELP = ("anomaly kind of every test frame (the anomaly_kinds.json of `vad synth`) for the AUC per kind "
               "(default: the store's, when it carries them)")

ScoresOpt = Annotated[Path, typer.Option("--scores", help="scores file written by `vad score`", show_default=False)]
Window = Annotated[int, typer.Option(help=_WINDOW_HELP)]
Polyorder = Annotated[int, typer.Option(help="Savitzky-Golay polynomial order (< window; ours, a priori)")]
Normalise = Annotated[str, typer.Option("--calibration", "--normalise", help=_NORMALISE_HELP)]
Reduction = Annotated[str, typer.Option(help=_REDUCTION_HELP)]
Fusion = Annotated[str, typer.Option(help=_FUSION_HELP)]
Kinds = Annotated[Path | None, typer.Option("--kinds", help=_KINDS_HELP, show_default=False)]
ThresholdQuantile = Annotated[float, typer.Option(
    help="decision threshold: this quantile of the fused TRAINING scores")]
PixelSize = Annotated[int, typer.Option(help="common resolution (N x N) of maps and masks for the pixel AUC")]


def _post_config(window: int, polyorder: int, normalise: str, threshold_quantile: float, reduction: str,
                 fusion: str):
    from mtvad.scoring.postprocess import PostConfig

    return PostConfig(window=window, polyorder=polyorder, normalisation=normalise,
                      threshold_quantile=threshold_quantile, reduction=reduction, fusion=fusion).validate()


@app.command("score")
@clean_errors
def score_cmd(
    store: Annotated[str, typer.Option("--store", help="teacher store the checkpoints were trained on",
                                       show_default=False)],
    checkpoint: Annotated[list[str], typer.Option("--checkpoint", help="OUT/<branch>/best.pt (or last.pt); repeat for both "
                                                                       "branches", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="scores file to write (a Zarr folder)")] = Path(
        "outputs/scores.zarr"),
    maps: Annotated[bool, typer.Option("--maps", help="also store the per-pixel anomaly maps of the test frames "
                                                      "(float16 at the input size; for pixel AUC and overlays)")] = False,
    batch_size: Annotated[int, typer.Option(help="frames per forward pass")] = 16,
    device: Annotated[str, typer.Option(help="auto (CUDA when present) | cpu | cuda")] = "auto",
    amp: Annotated[str, typer.Option(help="auto: the students in bf16 where the hardware has it (CUDA; a CPU with "
                                          "avx512_bf16 or AMX), else float32 | off: float32")] = "auto",
    threads: Annotated[int | None, typer.Option(
        help="torch CPU threads (default: every core; fewer on a machine shared with other jobs)",
        show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing scores file at --out")] = False,
    progress: ProgressFlag = True,
) -> None:
    """Eq. 4 per frame and branch, over every test and training frame, under every frame reduction (sum,
    foreground, patch-max, object-mean, object-sum), beside the teacher-only controls (raw flow, masked flow, foreground area).

    Example: vad score --store stores/ped2.zarr --checkpoint runs/ped2/appearance/best.pt --checkpoint runs/ped2/motion/best.pt --out runs/ped2/scores.zarr --maps
    """
    from mtvad.scoring.score import score

    r = score(store, checkpoint, out, maps=maps, batch_size=batch_size, device=device, overwrite=overwrite,
              progress=progress, threads=threads, amp=amp)
    rates = ", ".join(f"{b} {fps:.1f}" for b, fps in r.frames_per_s.items())
    Console(soft_wrap=True, markup=False).print(
        f"scored {', '.join(r.branches)} on {r.videos.get('train', 0)} training videos ({r.frames.get('train', 0)} "
        f"frames) and {r.videos.get('test', 0)} test videos ({r.frames.get('test', 0)} frames) in {r.seconds:.1f} s "
        f"(frames/s: {rates}; {r.precision}, {r.threads} torch thread{'s' if r.threads > 1 else ''}); wrote {r.out}",
        highlight=False)


@app.command("eval")
@clean_errors
def eval_cmd(
    scores: ScoresOpt,
    store: Annotated[str | None, typer.Option(
        "--store", help="the store it was scored on (checked): labels and pixel masks (default: the labels copied "
                        "into the scores file, no pixel AUC)", show_default=False)] = None,
    as_json: JsonFlag = False,
    out: Annotated[Path | None, typer.Option("--out", help="also write the results as JSON to this file",
                                                show_default=False)] = None,
    window: Window = 15,
    polyorder: Polyorder = 2,
    normalise: Normalise = DEFAULT_NORMALISATION,
    reduction: Reduction = DEFAULT_REDUCTION,
    fusion: Fusion = DEFAULT_FUSION,
    threshold_quantile: ThresholdQuantile = 0.99,
    pixel_size: PixelSize = 64,
    kinds: Kinds = None,
    per_video: Annotated[bool, typer.Option("--per-video/--no-per-video",
                                            help="also print the per-video AUC table")] = True,
) -> None:
    """Frame-level micro and macro AUC, EER and pixel AUC per branch, fused and for the teacher-only controls
    (and the AUC per anomaly kind where the kinds are known).

    The tables go to stdout; with --json the results as JSON instead (the notes then go to stderr).

    Example: vad eval --scores runs/ped2/scores.zarr --store stores/ped2.zarr --out runs/ped2/results.json
    """
    import json

    from mtvad.scoring.evaluate import evaluate, results_notes, results_tables
    from mtvad.scoring.scores_file import open_scores
    from mtvad.store.access import open_store
    from mtvad.written import check_replaceable, write_text

    post = _post_config(window, polyorder, normalise, threshold_quantile, reduction, fusion)
    if out is not None:
        check_replaceable(out.parent, [out], "--out")  # before the work: a user's file is never replaced
    sf = open_scores(scores)
    ev = evaluate(sf, open_store(store) if store else None, post, pixel_size, kinds)
    if as_json:
        print_json(ev.results)
    else:
        tables = Console(soft_wrap=True, markup=False)
        for table in results_tables(ev.results, per_video):
            tables.print(table)
    for note in results_notes(ev.results):
        console.print(f"note: {note}", highlight=False)
    if out is not None:
        write_text(out, json.dumps(ev.results, indent=2) + "\n")
        console.print(f"wrote {out}", highlight=False)


@app.command("report")
@clean_errors
def report_cmd(
    scores: ScoresOpt,
    store: Annotated[str, typer.Option("--store", help="the store it was scored on (frames, labels, masks)",
                                       show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="folder for index.html and the figures")] = Path("outputs/report"),
    window: Window = 15,
    polyorder: Polyorder = 2,
    normalise: Normalise = DEFAULT_NORMALISATION,
    reduction: Reduction = DEFAULT_REDUCTION,
    fusion: Fusion = DEFAULT_FUSION,
    threshold_quantile: ThresholdQuantile = 0.99,
    kinds: Kinds = None,
    top_k: Annotated[int, typer.Option(
        help="highest-scoring test frames shown per branch in the anomaly-map figures")] = 6,
    pixel_size: PixelSize = 64,
) -> None:
    """Figures (ROC, per-video AUC, score timelines, anomaly-map overlays) and an index.html that shows them.

    Example: vad report --scores runs/ped2/scores.zarr --store stores/ped2.zarr --out runs/ped2/report
    """
    from mtvad.scoring.report import make_report
    from mtvad.scoring.scores_file import open_scores
    from mtvad.store.access import open_store

    post = _post_config(window, polyorder, normalise, threshold_quantile, reduction, fusion)
    r = make_report(open_scores(scores), open_store(store), out, post, top_k=top_k, pixel_size=pixel_size,
                    kinds_file=kinds)
    for note in r.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"wrote {len(r.figures)} figures and {r.page}", highlight=False)
