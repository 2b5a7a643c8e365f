"""A checkpoint and the store it is used with (issue 12, class 3), its temporary files (class 8), and a pickled
checkpoint refused in plain words (class 9), on tiny random stores (tests/stores.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import zarr
from typer.testing import CliRunner

from mtvad.cli.main import app
from mtvad.errors import CheckpointError
from mtvad.scoring.score import score
from mtvad.store.access import open_store
from mtvad.students import checkpoint as checkpoint_module
from mtvad.students.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from mtvad.students.config import DataConfig, MotionConfig, OptimConfig, RunConfig, TrainConfig
from mtvad.students.train import train
from tests.conftest import one_line_error, run_vad
from tests.stores import make_store, one_torch_thread
from tests.test_bad_inputs import FAST, write_folder_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def config(store, out, max_steps: int = 1) -> TrainConfig:
    """The motion student (vgg11, the cheapest) for `max_steps` steps of batch 2."""
    return TrainConfig(branch="motion", motion=MotionConfig(encoder="vgg11"), data=DataConfig(store=str(store)),
                       optim=OptimConfig(batch_size=2, epochs=1),
                       run=RunConfig(out=str(out), max_steps=max_steps, checkpoint_every=1000))


def tiny(path: Path, **kw):
    """The stores of this module: 2 training videos of 10 frames, 3 classes (`kw` changes what differs)."""
    return make_store(path, **{"n_test": 1, "n_classes": 3, **kw})


def set_dataset(path: Path, dataset: str) -> Path:
    """The same store, as if built from another dataset reader (same teachers: same fingerprint)."""
    zarr.open_group(str(path), mode="r+").attrs["dataset"] = dataset
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-step motion run on store 'a.zarr': (store path, run folder, last.pt)."""
    root = tmp_path_factory.mktemp("ckpt")
    tiny(root / "a.zarr")
    with one_torch_thread():
        train(config(root / "a.zarr", root / "run"), progress=False)
    return root / "a.zarr", root / "run", checkpoint_path(root / "run", "motion")


def copy_run(run, tmp_path: Path) -> Path:
    """A copy of the run folder (a resume writes into it)."""
    import shutil

    return Path(shutil.copytree(run[1], tmp_path / "run"))


def notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note:")]


# ------------------------------------------------------------------------------------- store identity


def test_the_store_identity_names_dataset_build_and_every_video_with_its_frames(run):
    store = open_store(run[0])
    identity = store.identity()
    assert identity["dataset"] == "random" and identity["fingerprint"] == store.fingerprint
    assert identity["created"] == store.attrs["created"]
    assert identity["videos"] == {"train": {"01": 10, "02": 10}, "test": {"01": 10}}
    assert load_checkpoint(run[2])["store"] == identity  # what the checkpoint records


# ---------------------------------------------------------------------------- resume on another store


def test_resume_on_a_store_of_another_dataset_is_refused_naming_both(run, tmp_path):
    other = set_dataset(tiny(tmp_path / "b.zarr").url, "ped2")
    out = copy_run(run, tmp_path)
    with pytest.raises(CheckpointError) as err:
        train(config(other, out, max_steps=2), resume=True, progress=False)
    message = str(err.value)
    for text in ("last.pt", str(run[0]), "'random'", str(other), "'ped2'", "--resume"):
        assert text in message, text
    assert load_checkpoint(checkpoint_path(out, "motion"))["step"] == 1  # nothing trained on


@pytest.mark.parametrize("change", [{"n_frames": [10, 12]}, {"n_train": 3}, {"n_train": 1}])
def test_resume_on_other_training_videos_is_refused(run, tmp_path, change):
    other = tiny(tmp_path / "b.zarr", **change).url
    out = copy_run(run, tmp_path)
    with pytest.raises(CheckpointError, match=r"last\.pt: trained on the training videos of store .*a\.zarr.*"
                                              r"b\.zarr has other training videos \(.*0[23].*\)"):
        train(config(other, out, max_steps=2), resume=True, progress=False)


def test_resume_on_a_rebuilt_store_of_the_same_videos_trains_on_with_a_note(run, tmp_path, capsys):
    other = tiny(tmp_path / "b.zarr", n_test=2).url  # same training videos, one more test video
    out = copy_run(run, tmp_path)
    capsys.readouterr()
    train(config(other, out, max_steps=2), resume=True, progress=False)
    assert load_checkpoint(checkpoint_path(out, "motion"))["step"] == 2
    (note,) = notes(capsys.readouterr().err)
    assert str(run[0]) in note and str(other) in note and "02" in note


# ----------------------------------------------------------------------------- scoring another store


def test_score_with_a_checkpoint_of_another_dataset_is_refused(run, tmp_path):
    other = set_dataset(tiny(tmp_path / "b.zarr").url, "ped2")
    with pytest.raises(CheckpointError, match=r"last\.pt: trained on store .*a\.zarr of dataset 'random', but .*"
                                              r"b\.zarr holds dataset 'ped2'"):
        score(str(other), [run[2]], tmp_path / "s.zarr", progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_vad_score_with_a_checkpoint_of_another_dataset_is_one_error_line(run, tmp_path):
    other = set_dataset(tiny(tmp_path / "b.zarr").url, "ped2")
    result = CliRunner().invoke(app, ["score", "--store", str(other), "--checkpoint", str(run[2]),
                                      "--out", str(tmp_path / "s.zarr"), "--no-progress"])
    line = one_line_error(result)
    assert str(run[2]) in line and "'ped2'" in line and "'random'" in line
    assert not (tmp_path / "s.zarr").exists()


def test_score_with_a_checkpoint_of_other_training_videos_is_refused(run, tmp_path):
    other = tiny(tmp_path / "b.zarr", n_frames=[10, 12]).url
    with pytest.raises(CheckpointError, match=r"other training videos \(02 has 12 frames here, 10 there\)"):
        score(str(other), [run[2]], tmp_path / "s.zarr", progress=False)


def test_score_of_new_test_footage_of_the_same_camera_is_allowed_with_one_note(run, tmp_path, capsys):
    other = tiny(tmp_path / "b.zarr", n_test=3, seed=5).url
    capsys.readouterr()
    score(str(other), [run[2]], tmp_path / "s.zarr", progress=False)
    (note,) = notes(capsys.readouterr().err)
    assert str(run[2]) in note and str(run[0]) in note and str(other) in note
    assert "test videos" in note and "02, 03 only here" in note


def test_score_on_the_store_trained_on_prints_no_note(run, tmp_path, capsys):
    capsys.readouterr()
    score(str(run[0]), [run[2]], tmp_path / "s.zarr", progress=False)
    assert notes(capsys.readouterr().err) == []


# ---------------------------------------------------------------- checkpoints from before the identity


def old_checkpoint(run, tmp_path: Path, **drop_ckpt) -> Path:
    """The run's checkpoint as an older vad wrote it: its store without `created` and `videos`."""
    ckpt = torch.load(run[2], weights_only=True)
    for key in ("created", "videos"):
        ckpt["store"].pop(key)
    for key in drop_ckpt:
        ckpt.pop(key)
    path = tmp_path / "old" / "motion" / "last.pt"
    save_checkpoint(path, ckpt)
    return path


def test_an_old_checkpoint_scores_its_own_store_silently_and_another_with_a_note(run, tmp_path, capsys):
    old = old_checkpoint(run, tmp_path)
    capsys.readouterr()
    score(str(run[0]), [old], tmp_path / "s.zarr", progress=False)
    assert notes(capsys.readouterr().err) == []
    other = tiny(tmp_path / "b.zarr", n_test=2).url
    score(str(other), [old], tmp_path / "s2.zarr", progress=False)
    (note,) = notes(capsys.readouterr().err)
    assert str(old) in note and "older vad" in note and str(other) in note


def test_an_old_checkpoint_is_still_refused_on_another_dataset_or_missing_training_videos(run, tmp_path):
    old = old_checkpoint(run, tmp_path)
    other = set_dataset(tiny(tmp_path / "b.zarr").url, "ped2")
    with pytest.raises(CheckpointError, match="holds dataset 'ped2'"):
        score(str(other), [old], tmp_path / "s.zarr", progress=False)
    fewer = tiny(tmp_path / "c.zarr", n_train=1).url
    with pytest.raises(CheckpointError, match=r"other training videos \(02 only there\)"):
        score(str(fewer), [old], tmp_path / "s.zarr", progress=False)


# ---------------------------------------------------------------------------------- temporary files


def dead_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_files_of_dead_processes_are_removed_at_the_next_save(tmp_path):
    folder = tmp_path / "run" / "motion"
    folder.mkdir(parents=True)
    dead = dead_pid()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [folder / f".last.pt.tmp-{dead}", folder / f".best.pt.tmp-{dead}"]
        kept = [folder / f".last.pt.tmp-{alive.pid}",  # another run writing right now
                folder / f"notes.tmp-{dead}", folder / ".last.pt.tmp-x", folder / f".mine.pt.tmp-{dead}",
                tmp_path / "run" / f".last.pt.tmp-{dead}"]  # not in the checkpoint's folder
        for path in stale + kept:
            path.write_bytes(b"partial")
            os.utime(path, (time.time() - 3600,) * 2)  # written an hour ago
        fresh = folder / f".best.pt.tmp-{dead_pid()}"  # written just now: maybe by a process of another host
        fresh.write_bytes(b"partial")
        kept.append(fresh)
        link = folder / f".last.pt.tmp-{dead_pid()}"  # a link is never ours
        link.symlink_to(tmp_path / "run" / f".last.pt.tmp-{dead}")
        save_checkpoint(folder / "last.pt", {"step": 1})
        assert not any(p.exists() for p in stale)
        assert all(p.read_bytes() == b"partial" for p in kept) and link.is_symlink()  # nothing not ours
        assert torch.load(folder / "last.pt", weights_only=True) == {"step": 1}
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_checkpoint_write_removes_its_temporary_file_and_keeps_the_old(tmp_path, monkeypatch, failure):
    path = save_checkpoint(tmp_path / "motion" / "last.pt", {"step": 1})

    def torn_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise failure

    monkeypatch.setattr(checkpoint_module.torch, "save", torn_save)
    with pytest.raises(CheckpointError if isinstance(failure, OSError) else KeyboardInterrupt) as err:
        save_checkpoint(path, {"step": 2})
    if isinstance(failure, OSError):
        assert f"{path}: cannot write the checkpoint" in str(err.value) and "No space left" in str(err.value)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
    assert torch.load(path, weights_only=True) == {"step": 1}


# --------------------------------------------------------------------------------- pickled checkpoints


class Payload:
    """Pickles as a call of os.mkdir: what a crafted checkpoint would run if it were unpickled."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def test_a_pickled_checkpoint_is_refused_in_one_line_without_torchs_hint(tmp_path):
    marker = tmp_path / "it-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "vad-checkpoint", "format_version": 1, "x": Payload(marker)}, evil)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(evil)
    message = str(err.value)
    assert message.startswith(f"{evil}: ") and "pickled" in message and "does not load" in message
    assert "safe_globals" not in message and "weights_only" not in message and "\n" not in message
    store = tiny(tmp_path / "a.zarr").url
    result = CliRunner().invoke(app, ["score", "--store", store, "--checkpoint", str(evil),
                                      "--out", str(tmp_path / "s.zarr"), "--no-progress"])
    assert result.exit_code == 1 and "safe_globals" not in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_a_plain_pickle_file_is_refused_as_pickled_objects(tmp_path):
    import pickle

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": Payload(tmp_path / "it-ran")}))
    with pytest.raises(CheckpointError, match=r"model\.pkl: .*pickled") as err:
        load_checkpoint(path)
    assert "safe_globals" not in str(err.value) and not (tmp_path / "it-ran").exists()


# ------------------------------------------------------------------------ what a killed run leaves (issue 23, 2)


def left_over(path: Path, folder: bool = False) -> Path:
    """A temporary file (or a folder holding one) untouched for an hour."""
    if folder:
        path.mkdir()
        (path / "zarr.json").write_text("{}")
    else:
        path.write_bytes(b"partial")
    os.utime(path, (time.time() - 3600,) * 2)
    return path


def test_a_no_op_resume_removes_the_checkpoint_temporaries_of_a_killed_run(run, tmp_path):
    folder = copy_run(run, tmp_path) / "motion"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [left_over(folder / f".last.pt.tmp-{dead_pid()}"),
                 left_over(folder / f".history.json.tmp-{dead_pid()}")]
        kept = left_over(folder / f".best.pt.tmp-{alive.pid}")  # another run writing now
        train(config(run[0], folder.parent), resume=True, progress=False)  # finished already: trains nothing
        assert not any(p.exists() for p in stale) and kept.exists()
    finally:
        alive.kill()
        alive.wait()


def test_scoring_removes_the_temporary_scores_folder_of_a_killed_scoring(run, tmp_path):
    killed = left_over(tmp_path / f".s.zarr.tmp-{dead_pid()}", folder=True)
    other = left_over(tmp_path / f".other.zarr.tmp-{dead_pid()}", folder=True)  # of another --out
    score(str(run[0]), [run[2]], tmp_path / "s.zarr", progress=False)
    assert not killed.exists() and other.exists()


def test_a_stray_zarr_temporary_is_named_by_verify_never_packed_and_removed_by_precompute(tmp_path):
    write_folder_dataset(tmp_path / "data")
    assert run_vad("precompute", "folder", "--data", "data", "--store", "s.zarr", *FAST, cwd=tmp_path).returncode == 0
    partial = left_over(tmp_path / "s.zarr/train/cam1/seg/c/0/0/0.0123456789abcdef0123456789abcdef.partial")
    verify = run_vad("store", "verify", "s.zarr", "--no-progress", cwd=tmp_path)
    assert verify.returncode == 3 and "seg/c/0/0/0.0123456789abcdef0123456789abcdef.partial: stray" in verify.stdout
    assert run_vad("store", "pack", "s.zarr", "s.zip", "--no-progress", cwd=tmp_path).returncode == 0
    assert not [n for n in zipfile.ZipFile(tmp_path / "s.zip").namelist() if n.endswith(".partial")]
    again = run_vad("precompute", "folder", "--data", "data", "--store", "s.zarr", *FAST, cwd=tmp_path)
    assert again.returncode == 0 and not partial.exists()
    assert run_vad("store", "verify", "s.zarr", "--no-progress", cwd=tmp_path).returncode == 0
