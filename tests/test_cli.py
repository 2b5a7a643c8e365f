"""One command-line style across `vad` (docs/cli.md): --version, exit codes 0/1/2/3, --json on stdout and nothing
else there, --progress/--no-progress, an example in every --help, `vad train --config` with overrides, and the
heavy half imported only by the commands that need it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import mtvad
from mtvad.cli.main import app
from mtvad.console import EXIT_FOUND
from tests.conftest import ROOT, one_line_error
from tests.stores import make_store

runner = CliRunner()


def vad(*args: str):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A complete random store: 2 training videos, 1 test video, 3 classes, chunks of 4 frames."""
    path = tmp_path_factory.mktemp("cli") / "tiny.zarr"
    make_store(path, n_train=2, n_frames=[6, 7], resolution=(32, 32), n_classes=3, chunk_frames=4)
    return path


def _commands(group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


COMMANDS = dict(_commands(typer.main.get_command(app)))


def test_the_commands_are_all_there():
    assert set(COMMANDS) == {("store", c) for c in ("info", "show", "pack", "unpack", "verify", "diff")} | {
        (c,) for c in ("train", "score", "eval", "report", "precompute", "synth", "teachers", "detect")}


def test_version():
    result = vad("--version")
    assert result.exit_code == 0 and result.stdout == f"vad {mtvad.__version__}\n"


@pytest.mark.parametrize("args", [("--bogus",), ("store", "info", "x.zarr", "--bogus"), ("train", "--bogus"),
                                  ("eval",), ("store", "verify"), ("train", "--size", "12x"),
                                  ("precompute", "synth", "--resolution", "abc"), ("eval", "--scores", "s", "--json",
                                                                                  "file.json")])
def test_usage_errors_exit_2(args):
    result = vad(*args)
    assert result.exit_code == 2, result.output
    assert "error:" not in result.output  # click's usage message, not ours


def test_sizes_are_parsed_by_one_function():
    a, b = vad("train", "--size", "12x"), vad("precompute", "synth", "--resolution", "12x")
    for result in (a, b):
        assert "give N (square) or HEIGHTxWIDTH" in " ".join(result.output.split())


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    result = vad(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Example: vad " + " ".join(path) in result.output


def test_one_flag_style_for_progress_and_json():
    progress = {path for path, cmd in COMMANDS.items() for p in cmd.params if p.name == "progress"}
    assert progress >= {("train",), ("score",), ("precompute",), ("store", "pack"), ("store", "unpack"),
                        ("store", "verify")}
    json_commands = set()
    for path, cmd in COMMANDS.items():
        for p in cmd.params:
            assert "--quiet" not in p.opts and "-q" not in p.opts, path
            if p.name == "progress":
                assert p.opts == ["--progress"] and p.secondary_opts == ["--no-progress"], path
            if "--json" in p.opts:
                assert p.is_flag and p.secondary_opts == [], path  # --json never takes a file name
                json_commands.add(path)
    assert json_commands == {("store", "info"), ("store", "verify"), ("store", "diff"), ("eval",)}


# ------------------------------------------------------------------------------------------- exit codes


def _damage(store: Path) -> None:
    chunk = store / "train/01/frames/c/1/0/0/0"  # frames 4-5 of train/01
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def test_verify_exits_3_on_a_damaged_store_0_when_fine_1_when_it_cannot_run(tiny, tmp_path):
    assert EXIT_FOUND == 3
    fine = vad("store", "verify", tiny)
    assert fine.exit_code == 0, fine.output
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(tiny, damaged)
    _damage(damaged)
    result = vad("store", "verify", damaged)
    assert result.exit_code == 3, result.output
    assert "train/01/frames [frames 4-5]" in result.stdout and "FAILED" in result.stdout
    as_json = vad("store", "verify", damaged, "--json", "--no-progress")
    assert as_json.exit_code == 3 and json.loads(as_json.stdout)["ok"] is False
    line = one_line_error(vad("store", "verify", tmp_path / "none.zarr"))
    assert "none.zarr" in line


def test_diff_exits_3_on_different_stores_0_on_interchangeable_ones_1_when_it_cannot_run(tiny, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny, copy)
    same = vad("store", "diff", tiny, copy)
    assert same.exit_code == 0, same.output
    other = tmp_path / "other.zarr"
    make_store(other, n_train=3, n_frames=[6, 8, 5], resolution=(32, 32), n_classes=3, chunk_frames=4, seed=1)
    different = vad("store", "diff", tiny, other)
    assert different.exit_code == 3, different.output
    assert "NOT interchangeable" in different.stdout
    as_json = vad("store", "diff", tiny, other, "--json")
    assert as_json.exit_code == 3 and json.loads(as_json.stdout)["interchangeable"] is False
    assert json.loads(vad("store", "diff", tiny, copy, "--json").stdout)["interchangeable"] is True
    one_line_error(vad("store", "diff", tiny, tmp_path / "none.zarr"))


# ------------------------------------------------------------------------------------------------ --json


def test_store_info_json_is_the_only_thing_on_stdout(tiny):
    result = vad("store", "info", tiny, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # fails if anything else is on stdout
    assert summary["videos"] == {"train": 2, "test": 1} and summary["url"].endswith("tiny.zarr")
    table = vad("store", "info", tiny)
    assert table.exit_code == 0 and "arrays (summed over videos)" in table.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(table.stdout)


def test_eval_json_prints_the_results_on_stdout_and_the_notes_on_stderr(paths, tmp_path):
    args = ("eval", "--scores", paths["scores"], "--store", paths["store"])
    result = vad(*args, "--json")
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)  # nothing else on stdout: no tables, no notes
    assert results["rows"]["fused"]["micro_auc"] is not None
    assert "skips 1 video" in result.stderr and "skips 1 video" not in result.stdout
    out = tmp_path / "r.json"
    tables = vad(*args, "--out", out)
    assert tables.exit_code == 0 and "micro AUC" in tables.stdout
    assert json.loads(out.read_text()) == results
    assert f"wrote {out}" in " ".join(tables.stderr.split())
    assert vad(*args, "--out", out).exit_code == 0  # its own file: replaced
    out.write_text("{}")  # vad's file changed since: no longer vad's to replace
    assert "changed since vad wrote it" in one_line_error(vad(*args, "--out", out)) and out.read_text() == "{}"


# ------------------------------------------------------------------------------------------ train --config


def test_train_config_with_an_unknown_key_is_one_error_line_naming_the_file_and_key(tiny, tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"data": {"store": str(tiny)}, "motion": {"attenton": "skip"}}))
    line = one_line_error(vad("train", "--config", config))
    assert str(config) in line and "config.motion: unknown settings ['attenton']" in line
    config.write_text(json.dumps({"optim": {"batch_size": 0}}))
    line = one_line_error(vad("train", "--config", config, "--store", tiny))
    assert str(config) in line and "config.optim.batch_size" in line
    config.write_text("{not json")
    assert "not valid JSON" in one_line_error(vad("train", "--config", config))
    assert "no config file" in one_line_error(vad("train", "--config", tmp_path / "none.json"))


@pytest.mark.parametrize("section, key, value", [("run", "max_steps", True), ("optim", "batch_size", "8"),
                                                 ("optim", "lr", "1e-3"), ("data", "ram_budget_gb", "4")])
def test_train_config_values_are_not_coerced(tiny, tmp_path, section, key, value):
    """A bool is not an int and a string not a number: one error line naming the file and the dotted key."""
    config = tmp_path / "run.json"
    config.write_text(json.dumps({section: {key: value}}))
    line = one_line_error(vad("train", "--config", config, "--store", tiny))
    assert str(config) in line and f"config.{section}.{key}" in line, line


def test_a_relative_store_of_a_config_file_names_the_file_and_the_folder_it_was_resolved_against(tmp_path):
    config = tmp_path / "elsewhere" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"data": {"store": "stores/no-such-store.zarr"}}))
    line = one_line_error(vad("train", "--config", config))
    assert str(config) in line and str(Path.cwd() / "stores/no-such-store.zarr") in line and "relative" in line


def test_a_library_warning_is_one_warning_line_without_its_source_file(tiny, monkeypatch):
    import warnings

    import mtvad.store.access

    real = mtvad.store.access.open_store

    def noisy(*args, **kw):
        warnings.warn("object arrays are not portable", UserWarning, stacklevel=1)
        return real(*args, **kw)

    monkeypatch.setattr(mtvad.store.access, "open_store", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result = vad("store", "info", tiny)
    assert result.exit_code == 0, result.output
    assert "warning: object arrays are not portable" in result.stderr
    assert "UserWarning" not in result.stderr and ".py:" not in result.stderr


@pytest.fixture
def captured(monkeypatch):
    """`vad train` up to the training: the TrainConfig it would train with."""
    import mtvad.students.train

    seen = []
    monkeypatch.setattr(mtvad.students.train, "train", lambda config, **kw: seen.append(config) or {})
    return seen


def test_options_given_on_the_command_line_override_the_config_file(tiny, tmp_path, captured):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"branch": "motion", "data": {"store": "elsewhere.zarr", "size": [64, 64]},
                                  "optim": {"epochs": 5, "batch_size": 4, "lr": 0.01},
                                  "motion": {"scse": "off", "attention": "skip"}, "run": {"seed": 3}}))
    result = vad("train", "--config", config, "--store", tiny, "--epochs", "7", "--batch-size", "8",
                 "--attention", "final", "--size", "96x128")
    assert result.exit_code == 0, result.output
    [cfg] = captured
    assert (cfg.data.store, cfg.optim.epochs, cfg.motion.attention, cfg.data.size) == (str(tiny), 7, "final",
                                                                                       [96, 128])
    assert cfg.optim.batch_size == 8  # given explicitly, even though 8 is the default
    assert (cfg.branch, cfg.optim.lr, cfg.motion.scse, cfg.run.seed) == ("motion", 0.01, "off", 3)  # the file's
    assert cfg.optim.lr_step_epochs == 10  # neither: the paper's default
    bad = vad("train", "--config", config, "--scse", "everywhere")
    assert "scse must be one of encoder-mid, decoder, off" in one_line_error(bad)
    assert str(config) not in bad.output  # the bad value came from the command line, not the file


def test_the_effective_config_written_beside_the_checkpoint_repeats_the_run(tiny, tmp_path, one_thread):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"branch": "appearance", "appearance": {"encoder": "resnet18"},
                                  "optim": {"batch_size": 2, "epochs": 1}, "run": {"max_steps": 1}}))
    out = tmp_path / "run"
    done = vad("train", "--config", config, "--store", tiny, "--out", out, "--seed", "4", "--no-progress")
    assert done.exit_code == 0, done.output
    assert "appearance: step 1" in done.stdout
    written = json.loads((out / "appearance" / "config.json").read_text())
    assert written["run"]["seed"] == 4 and written["appearance"]["encoder"] == "resnet18"
    assert written["data"]["store"] == str(tiny) and written["run"]["out"] == str(out)
    again = vad("train", "--config", out / "appearance" / "config.json")
    assert "a checkpoint is already there" in one_line_error(again)  # the same run, to the same OUT


# ------------------------------------------------------------------------------------------ the heavy half


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_help_and_light_commands_never_import_the_heavy_half(tiny):
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom mtvad.cli.main import app\n"
            "r = CliRunner()\n"
            "assert r.invoke(app, ['--help']).exit_code == 0\n"
            "assert r.invoke(app, ['train', '--help']).exit_code == 0\n"
            f"assert r.invoke(app, ['store', 'info', {str(tiny)!r}, '--json']).exit_code == 0\n"
            f"assert r.invoke(app, ['store', 'verify', {str(tiny)!r}]).exit_code == 0\n"
            "heavy = ('dask', 'distributed', 'cv2', 'torch', 'transformers', 'mtvad.precompute.jobs')\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("blocked, args", [
    ("dask", ["precompute", "synth", "--data", "nowhere", "--store", "nowhere.zarr"]),
    ("cv2", ["synth", "nowhere"]),
])
def test_without_the_precompute_extra_the_heavy_commands_say_what_to_install(blocked, args):
    code = (f"import sys\nsys.modules[{blocked!r}] = None  # as if not installed\n"
            f"from mtvad.cli.main import app\napp({args!r}, prog_name='vad')\n")
    done = _python(code)
    assert done.returncode == 1, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert f"({blocked})" in lines[0] and "pip install 'mtvad[precompute]'" in lines[0]
    assert not (ROOT / "nowhere").exists() and not (ROOT / "nowhere.zarr").exists()


# ------------------------------------------------------------------------------- user text printed literally


BRACKETS = "cam [north] a[/]b [bold]x\\"  # markup-like text, a closing tag with nothing to close, a trailing '\'


def test_errors_warnings_and_notes_print_user_text_literally(capsys):
    from mtvad.console import error, note, warn

    error(f"{BRACKETS}: bad")
    warn(BRACKETS)
    note(BRACKETS)
    assert capsys.readouterr().err.splitlines() == [f"error: {BRACKETS}: bad", f"warning: {BRACKETS}",
                                                    f"note: {BRACKETS}"]


def test_paths_with_brackets_are_printed_as_given(tiny, tmp_path):
    store = tmp_path / "site [north]" / "a[" / "]b.zarr"  # the path holds '[north]' and '[/]'
    shutil.copytree(tiny, store)
    info = vad("store", "info", store)
    assert info.exit_code == 0, info.output
    assert str(store) in info.stdout
    shown = vad("store", "show", store, "--video", "train/01", "--frames", "1", "--out", store.parent / "[x].png")
    assert shown.exit_code == 0, shown.output
    assert f"wrote {store.parent / '[x].png'}" in shown.stderr
    missing = one_line_error(vad("store", "info", tmp_path / "no [north] a[/]b"))
    assert f"{tmp_path / 'no [north] a[/]b'}: no store at this path" in missing


def test_a_file_where_an_output_folder_should_be_is_one_error_line_naming_it(tiny, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    line = one_line_error(vad("store", "show", tiny, "--frames", "1", "--out", tmp_path / "afile" / "x.png"))
    assert f"{tmp_path / 'afile'}" in line and "folder is needed" in line
    line = one_line_error(vad("store", "pack", tiny, tmp_path / "afile" / "s.zip"))
    assert f"{tmp_path / 'afile'}" in line and "folder is needed" in line
    assert (tmp_path / "afile").read_text() == "not a folder"
