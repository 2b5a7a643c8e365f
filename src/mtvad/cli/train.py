"""`vad train`: the students from a store, configured by flags and/or a JSON file of the nested TrainConfig."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mtvad.cli.common import ProgressFlag, parse_size
from mtvad.console import clean_errors
from mtvad.students import config as cfg  # light: pydantic, no torch

app = typer.Typer()
_DEFAULT = cfg.TrainConfig()


def _d(key: str) -> Any:
    """Default of a TrainConfig setting ('optim.epochs'), so the flags and the models never disagree."""
    obj: Any = _DEFAULT
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _choices(values: tuple[str, ...]) -> str:
    return " | ".join(values)


# command-line parameter -> its key in the nested TrainConfig (what `--config FILE` holds)
KEYS = {
    "store": "data.store", "branch": "branch", "out": "run.out", "size": "data.size",
    "epochs": "optim.epochs", "batch_size": "optim.batch_size", "lr": "optim.lr",
    "lr_step_epochs": "optim.lr_step_epochs", "lr_gamma": "optim.lr_gamma", "patch_grid": "optim.patch_grid",
    "mean_loss_weight": "motion.mean_loss_weight",
    "appearance_target": "appearance.target", "scse": "motion.scse", "attention": "motion.attention",
    "attention_form": "motion.attention_form", "flow_target": "motion.flow_target",
    "max_steps": "run.max_steps", "limit_videos": "data.limit_videos", "in_memory": "data.in_memory",
    "ram_budget_gb": "data.ram_budget_gb", "workers": "data.workers", "seed": "run.seed", "device": "run.device",
    "amp": "run.amp", "checkpoint_every": "run.checkpoint_every", "patience": "run.patience",
    "val_videos": "data.val_videos",
    "recipe": "run.recipe",
}


@app.command("train")
@clean_errors
def train_cmd(
    ctx: typer.Context,
    config_file: Annotated[Path | None, typer.Option(
        "--config", help="JSON file of the nested TrainConfig (any subset of its keys; OUT/<branch>/config.json of "
                         "an earlier run repeats it); options given on the command line override it",
        show_default=False)] = None,
    store: Annotated[str | None, typer.Option(help="teacher store (path, .zip or fsspec URL)",
                                                 show_default=False)] = None,
    branch: Annotated[str, typer.Option(help="appearance | motion | both (trained one after the other)")] = _d("branch"),
    out: Annotated[str, typer.Option(help="output folder: OUT/<branch>/last.pt, best.pt, log.jsonl, history.json, "
                                          "config.json")] = _d("run.out"),
    recipe: Annotated[str, typer.Option(
        help=f"{_choices(cfg.RECIPES)}: auto = paper on CUDA, cpu on a CPU ({cfg.CPU_APPEARANCE_ENCODER} and "
             f"{cfg.CPU_MOTION_ENCODER} encoders, input {cfg.CPU_SIZE} px, validation every "
             f"{cfg.CPU_CHECKPOINT_EVERY} steps, stop {cfg.CPU_PATIENCE} validations after the best or at "
             f"{cfg.CPU_MAX_STEPS} steps); options you give win over the recipe's")] = _d("run.recipe"),
    size: Annotated[str | None, typer.Option(
        help="network input N (square) or HxW, multiples of 32 (default: the recipe's: the store resolution "
             f"(paper 256), longer side {cfg.CPU_SIZE} on the cpu recipe)", show_default=False)] = None,
    epochs: Annotated[int, typer.Option(help="epochs (paper silent; ours)")] = _d("optim.epochs"),
    batch_size: Annotated[int, typer.Option(help="batch size (paper silent; ours)")] = _d("optim.batch_size"),
    lr: Annotated[float, typer.Option(help="Adam learning rate (paper 1e-3)")] = _d("optim.lr"),
    lr_step_epochs: Annotated[int, typer.Option(help="halve the lr every N epochs (paper 10)")] = _d(
        "optim.lr_step_epochs"),
    lr_gamma: Annotated[float, typer.Option(help="lr factor at each step (paper 0.5)")] = _d("optim.lr_gamma"),
    patch_grid: Annotated[int, typer.Option(help="patch loss grid: G x G patches (paper 4: 16)")] = _d(
        "optim.patch_grid"),
    mean_loss_weight: Annotated[float | None, typer.Option(
        help="motion branch: add W x the MSE over the whole map to the patch loss (ours; default: the recipe's: "
             f"paper 0 = Eq. 6 alone, cpu {cfg.CPU_MEAN_LOSS_WEIGHT:g})", show_default=False)] = None,
    appearance_target: Annotated[str, typer.Option(
        help="seg-future: seg of t+1 (paper, Seg+Pred) | seg: seg of t (Seg)")] = _d("appearance.target"),
    scse: Annotated[str, typer.Option(help=f"SCSE placement: {_choices(cfg.SCSE_PLACEMENTS)} (paper 3.4: "
                                           "encoder-mid; decoder: smp's)")] = _d("motion.scse"),
    attention: Annotated[str, typer.Option(help=f"context attention position: {_choices(cfg.ATTENTION_POSITIONS)} "
                                                "(paper's best: decoder)")] = _d("motion.attention"),
    attention_form: Annotated[str, typer.Option(help="residual: x*(1+a) | gate: x*a")] = _d("motion.attention_form"),
    flow_target: Annotated[str, typer.Option(help="masked: flow magnitude x (seg > 0) (paper 4.3) | raw")] = _d(
        "motion.flow_target"),
    encoder_weights: Annotated[list[str] | None, typer.Option(
        "--encoder-weights",
        help="local ImageNet encoder state dict (torchvision or smp); repeat for both branches; resnet files go "
             "to the appearance branch, vgg files to the motion branch. Default: from scratch",
        show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option(
        help=f"stop after this many optimizer steps per branch (default: the recipe's: paper none, cpu "
             f"{cfg.CPU_MAX_STEPS})", show_default=False)] = None,
    patience: Annotated[int | None, typer.Option(
        help="stop when the best validation loss is N validation intervals (N x --checkpoint-every steps) old; "
             f"0 = never (default: the recipe's: paper 0, cpu {cfg.CPU_PATIENCE})", show_default=False)] = None,
    limit_videos: Annotated[int | None, typer.Option(help="train on the first N training videos only (of those "
                                                             "left after --val-videos)", show_default=False)] = None,
    val_videos: Annotated[str, typer.Option(
        help="training videos held out of the gradient to validate on (best.pt, the trivial controls, converged): "
             "auto = every 7th training video id (at least one) | none | ID,ID")] = _d("data.val_videos"),
    in_memory: Annotated[bool | None, typer.Option(
        "--in-memory/--streaming", help="hold the needed arrays in RAM, or stream from the store (default: in "
                                        "memory when they fit the RAM budget)", show_default=False)] = None,
    ram_budget_gb: Annotated[float | None, typer.Option(
        help="RAM budget for --in-memory auto (default: half the available)", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(
        help="loader processes in streaming mode (default min(4, cpus-1))", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="seed of torch, numpy, python and the sample order")] = _d("run.seed"),
    device: Annotated[str, typer.Option(help="auto (CUDA when present) | cpu | cuda")] = _d("run.device"),
    amp: Annotated[str, typer.Option(help="auto: bf16 autocast where the hardware has it (CUDA; a CPU with "
                                          "avx512_bf16 or AMX), else float32 | off: float32")] = _d("run.amp"),
    checkpoint_every: Annotated[int | None, typer.Option(
        help="write OUT/<branch>/last.pt (and validate) every N steps, and at each epoch end (default: the "
             f"recipe's: paper {cfg.PAPER_CHECKPOINT_EVERY}, cpu {cfg.CPU_CHECKPOINT_EVERY})",
        show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from OUT/<branch>/last.pt, same step, same "
                                                          "optimizer state")] = False,
    progress: ProgressFlag = True,
) -> None:
    """Train the students on a store's training videos (paper 4.3: Adam, lr 1e-3 halved every 10 epochs, patch loss).

    The recipe (--recipe auto): the paper's on CUDA (its networks, the store resolution, all epochs); on a CPU
    ours, which trains both branches of Ped2 in minutes on 2 cores (resnet34 and vgg11 encoders, input 128,
    validation every 50 steps, stop 4 validations (200 steps) after the best or at 1000 steps). The first line of
    each branch says the device, the precision (bf16 where the CPU has it), the recipe and what it set.

    Settings come from the defaults (the paper's), then --config FILE, then the options given on the command
    line. Each branch's effective config is written to OUT/<branch>/config.json (as every checkpoint holds
    it): `vad train --config OUT/motion/config.json` repeats that run.

    With validation (the default), OUT/<branch>/best.pt is the checkpoint of the lowest validation loss (score
    that one) and a branch that does not beat its trivial controls is reported as not converged.

    Example: vad train --store stores/ped2.zarr --branch motion --size 128 --out runs/ped2
    """
    given = {name: value for name, value in ctx.params.items() if name in KEYS and _given(ctx, name)}
    if "size" in given:
        given["size"] = list(parse_size(given["size"], "--size"))
    config = build_config(config_file, given)
    if encoder_weights:
        config = _with_encoder_weights(config, encoder_weights)
    config.validate()  # bad settings fail here, before torch is imported
    from mtvad.students.train import train

    results = train(config, resume=resume, progress=progress)
    out_console = Console(soft_wrap=True, markup=False)
    for name, r in results.items():
        first = f"{r.losses[0]:.5g}" if r.losses else "-"
        last = f"{r.losses[-1]:.5g}" if r.losses else "-"
        out_console.print(f"{name}: step {r.step}, epoch {r.epoch}, loss {first} -> {last} over {len(r.losses)} "
                          f"steps, {r.samples_per_s:.2f} samples/s, checkpoint {r.checkpoint}", highlight=False)
        if r.best is not None or r.converged is not None:
            control = min(r.controls.items(), key=lambda kv: kv[1]) if r.controls else None
            best = (f"best validation loss {r.best['loss']:.5g} at step {r.best['step']}, {r.best_checkpoint}"
                    if r.best is not None else "no finite validation loss")
            out_console.print(f"{name}: {best}; best control {control[0]} {control[1]:.5g}; "
                              f"converged: {'yes' if r.converged else 'NO'}", highlight=False)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave this option (on the command line or by environment), rather than its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def read_config_file(path: Path) -> dict[str, Any]:
    """The nested dict of a `--config` JSON file, checked on its own (errors name the file and the key)."""
    from mtvad.errors import ConfigError

    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no config file at this path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable config file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    try:
        cfg.TrainConfig.from_dict(d)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return d


def build_config(config_file: Path | None, given: dict[str, Any]) -> cfg.TrainConfig:
    """Defaults < the `--config` file < the options given on the command line ({parameter: value}, see KEYS)."""
    d = read_config_file(config_file) if config_file is not None else {}
    for name, value in given.items():
        *sections, field = KEYS[name].split(".")
        node = d
        for section in sections:
            node = node.setdefault(section, {})
        node[field] = value
    config = cfg.TrainConfig.from_dict(d)
    store = config.data.store
    if "store" not in given and store and "://" not in store and not Path(store).is_absolute() \
            and not Path(store).exists():  # the config file's own store, relative: to where the command runs
        from mtvad.errors import ConfigError

        raise ConfigError(f"{config_file}: its data.store {store!r} is relative, and there is no store at "
                          f"{Path.cwd() / store}: give --store, or run from the folder it is relative to")
    return config


def _with_encoder_weights(config: cfg.TrainConfig, files: list[str]) -> cfg.TrainConfig:
    """Each --encoder-weights file to the branch of its family (resnet: appearance, vgg: motion)."""
    from mtvad.errors import ConfigError, EncoderWeightsError
    from mtvad.students.models import encoder_family  # imports torch: only when weights are given

    weights: dict[str, str | None] = {"appearance": None, "motion": None}
    for path in files:
        family = encoder_family(path)
        target = {"resnet": "appearance", "vgg": "motion"}.get(family or "")
        if target is None:
            raise EncoderWeightsError(f"{path}: neither a resnet nor a vgg encoder state dict")
        if target not in config.branches:
            raise ConfigError(f"{path}: a {family} encoder (the {target} branch), but --branch is {config.branch}")
        if weights[target] is not None:
            raise ConfigError(f"two --encoder-weights files for the {target} branch: {weights[target]}, {path}")
        weights[target] = path
    d = config.to_dict()
    for branch, path in weights.items():
        if path is not None:
            d[branch]["encoder_weights"] = path
    return cfg.TrainConfig.from_dict(d)
