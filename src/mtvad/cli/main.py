"""`vad`: the one command. Each group lives in its own module; this one assembles them (docs/cli.md).

    vad store info|show|pack|unpack|verify|diff   mtvad.cli.store
    vad train                                     mtvad.cli.train
    vad score|eval|report                         mtvad.cli.score
    vad precompute|synth|teachers                 mtvad.cli.precompute (the heavy half, imported when run)
    vad detect                                    mtvad.cli.detect (both halves: mtvad.detect)
"""

from __future__ import annotations

import warnings
from typing import Annotated

import typer

from mtvad.cli.detect import app as detect_app
from mtvad.cli.precompute import app as precompute_app
from mtvad.cli.score import app as score_app
from mtvad.cli.store import app as store_app
from mtvad.cli.train import app as train_app
from mtvad.console import show_warning

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _print_version(value: bool) -> None:
    if value:
        from mtvad import __version__

        print(f"vad {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Multi-task video anomaly detection: teachers precomputed into a store, students trained and scored on it.

    Exit codes: 0 success, 1 an error you can fix (one `error:` line), 2 a usage error, 3 `store verify` found
    damage / `store diff` found differences. `--json` prints JSON on stdout and nothing else there.

    Example: vad store info stores/ped2.zarr
    """
    warnings.showwarning = show_warning  # a library's warning as one `warning:` line, without its source path


app.add_typer(store_app, name="store")
app.add_typer(train_app)  # train
app.add_typer(score_app)  # score, eval, report
app.add_typer(precompute_app)  # precompute, synth, teachers
app.add_typer(detect_app)  # detect
