"""A corpus of bad inputs run through the `vad` command (a subprocess, as a user runs it), one case per fault of
every class of issue 12. For each case: exit code 1, exactly one `error:` line that names the file and the fault,
no traceback, and every file that existed before (inputs, stores, a user's own files) unchanged byte for byte, with
no temporary files left behind.

1 `--overwrite` deletes only a vad store   2 missing data is an error, never zeros   3 a checkpoint knows its store
4 a truncated video is refused   5 user text is printed literally   6 one error line where a traceback was
7 the right words   8 no leftovers   9 scores files and checkpoints are data, never code
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from mtvad.scoring.postprocess import DEFAULT_REDUCTION
from tests.conftest import run_vad
from tests.stores import make_store

pytestmark = pytest.mark.slow

FAST = ("--scheduler", "inprocess", "--resolution", "32", "--preset", "cpu", "--no-progress")  # precompute: no Dask


# ------------------------------------------------------------------------------------------------ the checks


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (links by their target), keyed by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(root))] = "link:" + os.readlink(path)
        elif path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def check_refused(result, before: dict[str, str], root: Path, names: str, *faults: str, code: int = 1) -> str:
    """The promise for bad input: `code`, one `error:` line naming `names` and one of `faults`, no traceback,
    every file of `before` unchanged, no temporary file left. Returns the error line."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output and "distributed.worker" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    line = errors[0]
    assert names in line, line
    assert any(f.lower() in line.lower() for f in faults), (faults, line)
    after = snapshot(root)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    assert not changed, f"changed or deleted: {changed[:10]}"
    left = sorted(k for k in set(after) - set(before) if ".tmp" in k or ".unpack-" in k)
    assert not left, f"left behind: {left}"
    return line


@dataclass
class Case:
    """A bad input: `setup(tmp)` builds it and returns the command's arguments and the name the error must
    give; `faults`: words of which the error line must hold one."""

    setup: Callable[[Path], tuple[list[str], str]]
    faults: tuple[str, ...]
    code: int = 1


def run_case(case: Case, tmp: Path) -> str:
    args, names = case.setup(tmp)
    before = snapshot(tmp)
    result = run_vad(*[str(a) for a in args], cwd=tmp)
    return check_refused(result, before, tmp, names, *case.faults, code=case.code)


# ------------------------------------------------------------------------------------------------ inputs


def write_folder_dataset(root: Path, n_frames: int = 6, ext: str = "png", labels: str | None = None) -> Path:
    """A folder dataset: train/cam1 and test/cam2 frame folders of small grey noise; `labels` the text of
    labels/cam2.txt."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for video in ("train/cam1", "test/cam2"):
        folder = root / video
        folder.mkdir(parents=True)
        for i in range(n_frames):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:03d}.{ext}")
    if labels is not None:
        (root / "labels").mkdir()
        (root / "labels" / "cam2.txt").write_text(labels)
    return root


def edit_json(path: Path, **changes) -> None:
    meta = json.loads(path.read_text())
    meta["attributes"].update(changes)
    path.write_text(json.dumps(meta))


def thesis(folder: Path) -> None:
    (folder / "thesis.txt").write_text("four years of work\n")


def precompute_over(folder_maker: Callable[[Path], None]):
    def setup(tmp: Path):
        write_folder_dataset(tmp / "data")
        target = tmp / "target.zarr"
        target.mkdir()
        folder_maker(target)
        thesis(target)
        return ["precompute", "folder", "--data", "data", "--store", "target.zarr", *FAST, "--overwrite"], "target.zarr"
    return setup


def _not_zarr(target: Path) -> None:
    (target / "zarr.json").write_text(json.dumps({"hello": "not zarr"}))


def _other_tools_zarr(target: Path) -> None:
    import zarr

    root = zarr.open_group(str(target), mode="w", zarr_format=3)
    root.create_array("data", data=np.arange(10))


def _store_with_symlink(tmp: Path):
    write_folder_dataset(tmp / "data")
    make_store(tmp / "target.zarr")
    (tmp / "elsewhere.txt").write_text("not the store's\n")
    os.symlink(tmp / "elsewhere.txt", tmp / "target.zarr" / "test" / "link.txt")
    return ["precompute", "folder", "--data", "data", "--store", "target.zarr", *FAST, "--overwrite"], "target.zarr"


def _store_missing_chunk(command: str):
    def setup(tmp: Path):
        make_store(tmp / "s.zarr", n_train=2, n_test=1, n_frames=10, chunk_frames=4)
        (tmp / "s.zarr" / "train/01/seg/c/1/0/0").unlink()  # frames 4-7 of train/01
        args = {"pack": ["store", "pack", "s.zarr", "s.zip"],
                "info": ["store", "info", "s.zarr"],
                "train": ["train", "--store", "s.zarr", "--out", "run", "--branch", "appearance", "--max-steps", "1",
                          "--size", "32", "--batch-size", "2", "--no-progress"]}[command]
        return args, "s.zarr"
    return setup


def _scored_store_missing_a_chunk(paths):
    def setup(tmp: Path):
        shutil.copytree(paths["store"], tmp / "s.zarr")
        (tmp / "s.zarr" / "test/02/flow_mag/c/1/0/0").unlink()  # frames 4-7 of test/02
        return ["score", "--store", "s.zarr", "--checkpoint", str(paths["motion"]), "--out", "scores.zarr",
                "--no-progress"], "s.zarr"
    return setup


def _store_missing_split(tmp: Path):
    make_store(tmp / "s.zarr")
    shutil.rmtree(tmp / "s.zarr" / "test")
    return ["store", "info", "s.zarr"], "s.zarr"


def _resume_on_another_dataset(paths):
    def setup(tmp: Path):
        shutil.copytree(paths["run"], tmp / "run")
        shutil.copytree(paths["store"], tmp / "other.zarr")
        edit_json(tmp / "other.zarr" / "zarr.json", dataset="another-camera")
        return ["train", "--store", "other.zarr", "--out", "run", "--branch", "motion", "--resume", "--max-steps",
                "2", "--no-progress"], "other.zarr"
    return setup


def _truncated_video(tmp: Path):
    import cv2

    (tmp / "data" / "train").mkdir(parents=True)
    video = tmp / "data" / "train" / "cam1.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(40):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    return ["precompute", "folder", "--data", "data", "--store", "s.zarr", *FAST], "cam1.avi"


def _label_value_2_in_a_bracketed_folder(tmp: Path):
    data = "cams [north][/]"  # folder "]" in folder "cams [north]["
    write_folder_dataset(tmp / data, labels="0\n1\n2\n0\n0\n0\n")
    return ["precompute", "folder", "--data", data, "--store", "s.zarr", *FAST], f"{data}/labels/cam2.txt"


def _bracketed_missing_store(tmp: Path):
    return ["store", "info", "no [north] such [/] store.zarr"], "no [north] such [/] store.zarr"


def _file_as_folder(command: str, paths=None):
    def setup(tmp: Path):
        (tmp / "afile").write_text("a file, not a folder\n")
        if command == "precompute":
            write_folder_dataset(tmp / "data")
            return ["precompute", "folder", "--data", "data", "--store", "afile/s.zarr", *FAST], "afile"
        make_store(tmp / "s.zarr")
        if command == "train":
            return ["train", "--store", "s.zarr", "--out", "afile/run", "--max-steps", "1", "--no-progress"], "afile"
        if command == "pack":
            return ["store", "pack", "s.zarr", "afile/s.zip"], "afile"
        raise AssertionError(command)
    return setup


def _schema_version(value):
    def setup(tmp: Path):
        make_store(tmp / "s.zarr")
        edit_json(tmp / "s.zarr" / "zarr.json", schema_version=value)
        return ["store", "info", "s.zarr"], "s.zarr"
    return setup


def _zip_file_and_folder(tmp: Path):
    import zipfile

    make_store(tmp / "s.zarr")
    assert run_vad("store", "pack", "s.zarr", "s.zip", cwd=tmp).returncode == 0
    shutil.rmtree(tmp / "s.zarr")
    with zipfile.ZipFile(tmp / "s.zip", "a") as zf:
        zf.writestr("zz", "a file")
        zf.writestr("zz/inner", "inside the file")
    return ["store", "unpack", "s.zip", "out.zarr"], "s.zip"


def _truncated_jpeg(tmp: Path):
    write_folder_dataset(tmp / "data", ext="jpg")
    frame = tmp / "data" / "train" / "cam1" / "003.jpg"
    frame.write_bytes(frame.read_bytes()[: frame.stat().st_size // 2])
    # the local Dask scheduler: the worker's report of the failed task must not reach the terminal
    return ["precompute", "folder", "--data", "data", "--store", "s.zarr", "--resolution", "32", "--workers", "1",
            "--preset", "cpu", "--no-progress"], "003.jpg"


def _scores(paths, command: str, damage: Callable[[Path], None]):
    def setup(tmp: Path):
        shutil.copytree(paths["scores"], tmp / "scores.zarr")
        damage(tmp / "scores.zarr")
        store = str(paths["store"])
        args = (["eval", "--scores", "scores.zarr", "--store", store] if command == "eval" else
                ["report", "--scores", "scores.zarr", "--store", store, "--out", "report"])
        return args, "scores.zarr"
    return setup


def _pickle_codec(scores: Path) -> None:
    meta = scores / "test/01/motion@sum/zarr.json"
    doc = json.loads(meta.read_text())
    doc["codecs"] = [{"name": "bytes", "configuration": {"endian": "little"}},
                     {"name": "numcodecs.pickle", "configuration": {}}]
    meta.write_text(json.dumps(doc))


def _object_dtype(scores: Path) -> None:
    meta = scores / "test/01/motion@sum/zarr.json"
    doc = json.loads(meta.read_text())
    doc["data_type"] = "string"
    meta.write_text(json.dumps(doc))


def _garbage_chunk(scores: Path) -> None:  # in the array that eval and report read by default
    (scores / f"test/01/motion@{DEFAULT_REDUCTION}/c/0").write_bytes(b"not zstd at all" * 4)


def _deleted_chunk(scores: Path) -> None:
    (scores / f"test/01/motion@{DEFAULT_REDUCTION}/c/0").unlink()


def _deleted_array(scores: Path) -> None:
    shutil.rmtree(scores / "test/02/appearance_valid")


def _rows_not_a_list(scores: Path) -> None:
    edit_json(scores / "zarr.json", rows="appearance")


def _checkpoints_a_list(scores: Path) -> None:
    edit_json(scores / "zarr.json", checkpoints=[1])


class Unpicklable:  # a class a weights-only torch.load refuses
    pass


def _pickled_checkpoint(paths):
    def setup(tmp: Path):
        import torch

        torch.save({"model": Unpicklable()}, tmp / "evil.pt")
        return ["score", "--store", str(paths["store"]), "--checkpoint", "evil.pt", "--out", "s.zarr",
                "--no-progress"], "evil.pt"
    return setup


def _users_file_at_out(paths, command: str):
    """A user's file where the command would write its output (issue 23, 1)."""
    def setup(tmp: Path):
        store, scores = str(paths["store"]), str(paths["scores"])
        if command == "eval":
            (tmp / "user.json").write_text('{"mine": true}\n')
            return ["eval", "--scores", scores, "--store", store, "--out", "user.json"], "user.json"
        if command == "show":
            (tmp / "photo.png").write_bytes(b"\x89PNG my holiday")
            return ["store", "show", store, "--video", "test/01", "--frames", "0", "--out", "photo.png"], "photo.png"
        (tmp / "site").mkdir()
        (tmp / "site" / "index.html").write_text("<html>my home page</html>\n")
        return ["report", "--scores", scores, "--store", store, "--out", "site"], "site/index.html"
    return setup


def _damaged_array_metadata(command: str, damage: str):
    """A store whose array metadata was replaced or crafted; `command` trusts it as complete (issue 23, 3)."""
    def setup(tmp: Path):
        if command == "precompute":  # a store of this dataset, complete
            write_folder_dataset(tmp / "data")
            assert run_vad("precompute", "folder", "--data", "data", "--store", "s.zarr", *FAST, cwd=tmp).returncode == 0
        else:
            make_store(tmp / "s.zarr")
        meta = tmp / "s.zarr" / ("train/cam1/depth/zarr.json" if command == "precompute" else "test/01/depth/zarr.json")
        doc = json.loads(meta.read_text())
        if damage == "group":
            doc = {"zarr_format": 3, "node_type": "group", "attributes": {}}
        elif damage == "another-arrays":
            doc = json.loads((meta.parent.parent / "flow_mag" / "zarr.json").read_text())
            doc["shape"], doc["data_type"] = json.loads(meta.read_text())["shape"], "uint16"
        elif damage == "pickle":
            doc["codecs"] = [{"name": "bytes", "configuration": {"endian": "little"}},
                             {"name": "numcodecs.pickle", "configuration": {}}]
        else:
            doc["data_type"] = "string"
        meta.write_text(json.dumps(doc))
        if command == "precompute":
            return ["precompute", "folder", "--data", "data", "--store", "s.zarr", *FAST], "s.zarr"
        return ["train", "--store", "s.zarr", "--out", "run", "--branch", "appearance", "--max-steps", "1",
                "--size", "32", "--batch-size", "2", "--no-progress"], "s.zarr"
    return setup


def _cases(paths) -> dict[str, Case]:
    return {
        # 1: --overwrite deletes only a vad store
        "1-overwrite-a-folder-whose-zarr.json-is-not-zarr": Case(precompute_over(_not_zarr), ("not a vad store",)),
        "1-overwrite-another-tools-zarr-store": Case(precompute_over(_other_tools_zarr), ("not a vad store",)),
        "1-overwrite-a-store-holding-a-symlink": Case(_store_with_symlink, ("link",)),
        "1-eval-out-a-users-file": Case(_users_file_at_out(paths, "eval"), ("not written by vad",)),
        "1-show-out-a-users-picture": Case(_users_file_at_out(paths, "show"), ("not written by vad",)),
        "1-report-out-a-users-site": Case(_users_file_at_out(paths, "report"), ("not written by vad",)),
        # 2: a chunk that should exist and does not is an error wherever it is read
        "2-pack-a-store-missing-a-chunk": Case(_store_missing_chunk("pack"), ("missing",)),
        "2-score-a-store-missing-a-chunk": Case(_scored_store_missing_a_chunk(paths), ("missing",)),
        "2-train-on-a-store-missing-a-chunk": Case(_store_missing_chunk("train"), ("missing",)),
        "2-info-on-a-store-missing-its-test-split": Case(_store_missing_split, ("missing", "deleted")),
        "2-precompute-over-array-metadata-replaced-by-a-group": Case(_damaged_array_metadata("precompute", "group"),
                                                                     ("is a group",)),
        "2-precompute-over-another-arrays-metadata": Case(_damaged_array_metadata("precompute", "another-arrays"),
                                                          ("another array",)),
        "2-train-on-a-store-with-a-pickled-test-array": Case(_damaged_array_metadata("train", "pickle"),
                                                             ("numcodecs.pickle",)),
        "2-train-on-a-store-with-a-string-test-array": Case(_damaged_array_metadata("train", "string"),
                                                            ("data type",)),
        # 3: a checkpoint knows the store it was trained on
        "3-resume-on-another-datasets-store": Case(_resume_on_another_dataset(paths), ("dataset",)),
        # 4: a truncated video
        "4-truncated-video": Case(_truncated_video, ("frames",)),
        # 5: user text printed literally
        "5-label-value-2-in-a-bracketed-folder": Case(_label_value_2_in_a_bracketed_folder, ("found 2",)),
        "5-bracketed-path-of-a-missing-store": Case(_bracketed_missing_store, ("no store",)),
        # 6: one error line where there was a traceback
        "6-precompute-into-a-path-under-a-file": Case(_file_as_folder("precompute"), ("folder is needed",)),
        "6-train-out-under-a-file": Case(_file_as_folder("train"), ("folder is needed",)),
        "6-pack-out-under-a-file": Case(_file_as_folder("pack"), ("folder is needed",)),
        "6-schema-version-a-string": Case(_schema_version("two"), ("schema_version",)),
        "6-schema-version-a-list": Case(_schema_version([2]), ("schema_version",)),
        "6-zip-holding-a-file-and-a-folder-of-the-same-name": Case(_zip_file_and_folder, ("'zz'",)),
        "6-truncated-jpeg-on-dask": Case(_truncated_jpeg, ("truncated",)),
        "6-eval-garbage-chunk": Case(_scores(paths, "eval", _garbage_chunk), ("cannot be read",)),
        "6-report-garbage-chunk": Case(_scores(paths, "report", _garbage_chunk), ("cannot be read",)),
        "6-eval-deleted-chunk": Case(_scores(paths, "eval", _deleted_chunk), ("hold no score",)),
        "6-eval-deleted-array": Case(_scores(paths, "eval", _deleted_array), ("no array",)),
        "6-report-deleted-array": Case(_scores(paths, "report", _deleted_array), ("no array",)),
        "6-eval-rows-not-a-list": Case(_scores(paths, "eval", _rows_not_a_list), ("'rows'",)),
        "6-report-checkpoints-a-list": Case(_scores(paths, "report", _checkpoints_a_list), ("'checkpoints'",)),
        # 9: data, never code
        "9-eval-pickle-codec": Case(_scores(paths, "eval", _pickle_codec), ("numcodecs.pickle",)),
        "9-report-object-dtype": Case(_scores(paths, "report", _object_dtype), ("data type",)),
        "9-pickled-checkpoint": Case(_pickled_checkpoint(paths), ("refused", "not allowed", "pickle")),
    }


CASE_NAMES = list(_cases({}))  # the setups read `paths` only when run


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_error_line_and_changes_nothing(name, paths, tmp_path):
    line = run_case(_cases(paths)[name], tmp_path)
    if name.startswith("5-"):  # printed as given: no bracket of the path dropped
        assert "[north]" in line and "[/]" in line or "found 2" in line, line
    if name == "9-pickled-checkpoint":
        assert "add_safe_globals" not in line  # no invitation to switch the protection off


# ---------------------------------------------------------------------------------- cases with their own checks


def test_a_read_only_output_folder_is_one_error_line_naming_it(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders: the file-under-a-file cases cover the same path")
    make_store(tmp_path / "s.zarr")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        before = snapshot(tmp_path)
        for args in (["store", "pack", "s.zarr", "locked/s.zip"], ["train", "--store", "s.zarr", "--out", "locked/run",
                                                                    "--max-steps", "1", "--no-progress"]):
            check_refused(run_vad(*args, cwd=tmp_path), before, tmp_path, "locked", "permission denied")
    finally:
        locked.chmod(0o755)


def test_a_failed_write_of_zarrs_temporary_file_names_the_store(tmp_path):
    """A read-only store location (root writes anyway, so the OSError is made here): the store, not Zarr's file."""
    from mtvad.console import os_error_message

    make_store(tmp_path / "s.zarr")
    partial = tmp_path / "s.zarr/train/01/seg/c/1/0/0/0.0123456789abcdef0123456789abcdef.partial"
    line = os_error_message(OSError(30, "Read-only file system", str(partial)))
    assert line == f"{tmp_path / 's.zarr'}: cannot write into the store (Read-only file system)"


def test_every_case_class_is_in_the_corpus():
    assert {name.split("-")[0] for name in CASE_NAMES} >= {"1", "2", "3", "4", "5", "6", "9"}
    # 7 (the right words) and 8 (no leftovers) are checked on every case by check_refused and below


def test_a_store_of_another_dataset_is_refused_naming_the_dataset_not_an_unknown_difference(tmp_path):
    write_folder_dataset(tmp_path / "data")
    built = run_vad("precompute", "folder", "--data", "data", "--store", "s.zarr", *FAST, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    edit_json(tmp_path / "s.zarr" / "zarr.json", dataset="ped2")
    before = snapshot(tmp_path)
    result = run_vad("precompute", "folder", "--data", "data", "--store", "s.zarr", *FAST, cwd=tmp_path)
    line = check_refused(result, before, tmp_path, "s.zarr", "dataset 'ped2'")
    assert "unknown difference" not in line
