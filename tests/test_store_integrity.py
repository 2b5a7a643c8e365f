"""Nothing lost, nothing read as zeros, the right words (issue 12, classes 1, 2 and 7, the store side):
`--overwrite` deletes only a vad store's own files and is atomic; a chunk, array, video or split that should
exist and does not is an error for every reader, found by `verify` and recomputed by a re-run of precompute;
`verify` and the refusals name the real fault."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from mtvad.cli.main import app
from mtvad.errors import StoreError
from mtvad.precompute.datasets import open_dataset
from mtvad.precompute.jobs import precompute
from mtvad.precompute.teachers import resolve_preset
from mtvad.store import layout
from mtvad.store.access import create_store, open_store
from mtvad.store.diff import diff_stores
from mtvad.store.pack import pack_store
from mtvad.store.schema import SCHEMA_VERSION
from mtvad.store.verify import verify_store
from tests.conftest import one_line_error
from tests.stores import DEFAULT_TEACHERS, make_store, store_arrays

runner = CliRunner()
BUILD = {"schema_version": SCHEMA_VERSION, "resolution": [32, 32], "chunk_frames": 4, "teachers": DEFAULT_TEACHERS}
SMALL = dict(resolution=(32, 40), chunk_frames=4, progress=False, scheduler="inprocess")


def vad(*args: str):
    return runner.invoke(app, list(args))


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under a folder: sha256 of each file, the target of each link (not followed)."""
    out = {}
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            p = Path(top) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "link -> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ 1. --overwrite: only a vad store, only its files


def junk_zarr_json(p: Path) -> str:
    p.mkdir()
    (p / "zarr.json").write_text(json.dumps({"hello": "not zarr"}))
    (p / "thesis.txt").write_text("years of work")
    return "thesis.txt"


def plain_zarr(p: Path) -> str:
    zarr.open_group(str(p), mode="w").create_array("x", data=np.arange(10))
    (p / "thesis.txt").write_text("years of work")
    return "thesis.txt"


def store_with_a_user_file(p: Path) -> str:
    make_store(p)
    (p / "thesis.txt").write_text("years of work")
    return "thesis.txt"


def store_with_a_file_in_a_video(p: Path) -> str:
    make_store(p)
    (p / "train/01/notes.md").write_text("mine")
    return "train/01/notes.md"


def store_with_another_tools_array(p: Path) -> str:
    make_store(p)
    zarr.open_group(str(p), mode="r+")["train/01"].create_array("embeddings", data=np.arange(4))
    return "train/01/embeddings"


def store_with_a_linked_folder(p: Path) -> str:
    make_store(p)
    outside = p.parent / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    (p / "test" / "link").symlink_to(outside, target_is_directory=True)
    return "test/link (a symbolic link)"


def store_with_a_linked_chunk(p: Path) -> str:
    make_store(p)
    chunk = p / "train/01/seg/c/0/0/0"
    outside = p.parent / "chunk-copy"
    shutil.copy(chunk, outside)
    chunk.unlink()
    chunk.symlink_to(outside)
    return "train/01/seg/c/0/0/0 (a symbolic link)"


FOREIGN = [junk_zarr_json, plain_zarr, store_with_a_user_file, store_with_a_file_in_a_video,
           store_with_another_tools_array, store_with_a_linked_folder, store_with_a_linked_chunk]


@pytest.mark.parametrize("setup", FOREIGN, ids=lambda f: f.__name__)
def test_overwrite_refuses_anything_but_a_vad_store_naming_what_it_would_destroy(tmp_path, setup):
    path = tmp_path / "target"
    named = setup(path)
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match=r"--overwrite refused, nothing was deleted.*" + named.split(" ")[0]):
        create_store(path, dataset="random", build=BUILD, classes={0: "bg"}, overwrite=True)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("setup", [junk_zarr_json, store_with_a_user_file, store_with_a_linked_folder],
                         ids=lambda f: f.__name__)
def test_precompute_overwrite_refuses_in_one_line_before_computing_anything(tiny_ucsd, tmp_path, setup):
    path = tmp_path / "target"
    named = setup(path)
    before = snapshot(tmp_path)
    result = vad("precompute", "ped2", "--data", str(tiny_ucsd), "--store", str(path), "--overwrite",
                 "--scheduler", "inprocess", "--resolution", "32", "--preset", "cpu", "--no-progress")
    line = one_line_error(result)
    assert str(path) in line and named.split(" ")[0] in line and "nothing was deleted" in line
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_a_vad_store_and_touches_nothing_beside_it(tmp_path):
    path = tmp_path / "s.zarr"
    make_store(path, chunk_frames=2)
    (tmp_path / "beside.txt").write_text("keep")
    new = create_store(path, dataset="random", build=BUILD, classes={0: "bg"}, overwrite=True)
    assert new.chunk_frames == 4 and list(new.videos()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beside.txt", "s.zarr"]  # no folder left aside
    assert (tmp_path / "beside.txt").read_text() == "keep"
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*")) == [
        "test", "test/zarr.json", "train", "train/zarr.json", "zarr.json"]


def test_overwrite_is_atomic_for_the_user(tmp_path, monkeypatch):
    import mtvad.store.access as access

    path = tmp_path / "s.zarr"
    make_store(path)
    before = snapshot(path)

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:  # creating the new store fails: the old one is back, whole
        m.setattr(access.zarr, "create_group", broken)
        with pytest.raises(OSError):
            create_store(path, dataset="random", build=BUILD, classes={0: "bg"}, overwrite=True)
    assert snapshot(path) == before and not layout.aside_path(path).exists()
    assert verify_store(path).ok

    real_delete = layout.delete_local
    with monkeypatch.context() as m:  # killed while deleting the old store: the new one is already in place
        m.setattr(layout, "delete_local", lambda p: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            create_store(path, dataset="random", build=BUILD, classes={0: "bg"}, overwrite=True)
    assert list(open_store(path).videos()) == [] and layout.aside_path(path).exists()
    assert layout.delete_local is real_delete
    create_store(path, dataset="random", build=BUILD, classes={0: "bg"}, overwrite=True)  # clears what was left
    assert not layout.aside_path(path).exists()


# ------------------------------------------------------------------------- 2. missing data is never zeros


@pytest.fixture
def damaged(tmp_path) -> tuple[Path, Path]:
    """(a complete random store, a copy of it whose chunk of frames 4-7 of train/01/seg was deleted)."""
    good = tmp_path / "good.zarr"
    make_store(good, n_frames=10)
    bad = tmp_path / "bad.zarr"
    shutil.copytree(good, bad)
    (bad / "train/01/seg/c/1/0/0").unlink()
    return good, bad


def test_a_deleted_chunk_is_an_error_for_every_reader(damaged, tmp_path):
    good, bad = damaged
    store = open_store(bad, validate=False)
    video = store.video("train", "01")
    with pytest.raises(StoreError, match=r"train/01/seg/c/1/0/0 is missing"):
        video.seg()
    with pytest.raises(StoreError, match=r"train/01/seg/c/1/0/0 is missing"):
        video.flow_mag(slice(3, 6), masked=True)
    with pytest.raises(StoreError, match=r"train/01/seg/c/1/0/0 is missing"):
        video.group["seg"][:]  # what the training loaders read, through the store's zarr group
    with pytest.raises(StoreError, match=r"train/01/seg \[frames 4-7\]: chunk file missing"):
        store.require_complete()  # training, scoring and pack check this first
    with pytest.raises(StoreError, match=r"train/01/seg \[frames 4-7\]"):
        store.require_complete(["train/01"])
    store.require_complete(["train/02"])  # the other videos are whole
    for allow in (False, True):
        with pytest.raises(StoreError, match=r"train/01/seg \[frames 4-7\]"):
            pack_store(bad, tmp_path / "bad.zip", allow_incomplete=allow)
        assert not (tmp_path / "bad.zip").exists()
    d = diff_stores(good, bad)
    assert not d["interchangeable"] and not d["contents"]["identical"]
    assert any("B is damaged" in r and "train/01/seg [frames 4-7]" in r for r in d["reasons"])
    line = one_line_error(vad("store", "pack", str(bad), str(tmp_path / "bad.zip")))
    assert "train/01/seg [frames 4-7]: chunk file missing" in line
    diff = vad("store", "diff", str(good), str(bad))
    assert diff.exit_code == 3 and "identical contents" not in diff.output and "damaged" in diff.output


def test_a_deleted_chunk_fails_training_before_a_step(damaged, tmp_path, one_thread):
    from tests.stores import train_one_step

    _, bad = damaged
    with pytest.raises(StoreError, match=r"train/01/seg \[frames 4-7\]: chunk file missing"):
        train_one_step(bad, tmp_path / "run", branch="appearance")
    assert not (tmp_path / "run" / "appearance" / "last.pt").exists()


@pytest.mark.parametrize("deleted, video, array, reader", [
    ("train/02", "train/02", "-", "train/02: video group missing"),
    ("test", "test", "-", "test: split group missing"),
    ("train/01/depth", "train/01", "depth", "train/01 lacks array 'depth'|train/01/depth: array missing"),
    ("test/01/mask", "test/01", "mask", "test/01 lacks array 'mask'|test/01/mask: array missing"),
    ("train/01/checksums/c/0/0", "train/01", "checksums", r"train/01/checksums \[frames 0-3\]"),
    ("test/01/label/c/0", "test/01", "label", r"test/01/label \[frames 0-9\]"),
])
def test_verify_finds_a_deleted_video_split_array_or_chunk_and_readers_refuse_it(tmp_path, deleted, video, array,
                                                                                  reader):
    path = tmp_path / "s.zarr"
    make_store(path, n_frames=10, masks=True)
    target = path / deleted
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    report = verify_store(path)
    found = [(p.video, p.array, p.kind) for p in report.problems]
    also = [("test/01", "-", "missing")] if deleted == "test" else []  # a deleted split: its recorded videos too
    assert found == [(video, array, "missing")] + also
    result = vad("store", "verify", str(path))
    assert result.exit_code == 3 and "missing" in result.output
    with pytest.raises(StoreError, match=reader):
        open_store(path).require_complete()  # scoring, pack, info
    if array not in ("depth", "mask"):  # training opens unvalidated, and names the arrays a branch needs itself
        with pytest.raises(StoreError, match=reader):
            open_store(path, validate=False).require_complete()


def ucsd_store(data: Path, path: Path, **kw):
    return precompute(open_dataset("ped2", data), str(path), resolve_preset("cpu"), **{**SMALL, **kw})


def test_a_rerun_of_precompute_recomputes_what_went_missing(tiny_ucsd, tmp_path):
    reference = tmp_path / "reference.zarr"
    ucsd_store(tiny_ucsd, reference)
    assert open_store(reference).recorded_videos() == {"train": {"01": 20, "02": 20}, "test": {"01": 20, "02": 20}}
    path = tmp_path / "damaged.zarr"
    shutil.copytree(reference, path)
    (path / "train/01/seg/c/1/0/0").unlink()  # 1 block
    shutil.rmtree(path / "test/01/flow_mag")  # 5 blocks: the array comes back empty
    (path / "test/02/checksums/c/0/0").unlink()  # 1 block
    (path / "test/02/label/c/0").unlink()  # no block: labels are rewritten
    shutil.rmtree(path / "train/02")  # 5 blocks: the video comes back
    result = ucsd_store(tiny_ucsd, path)
    assert (result.blocks_run, result.blocks_repaired) == (12, 7)
    assert verify_store(path).ok
    expected, actual = store_arrays(reference), store_arrays(path)
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        assert np.array_equal(value, actual[key]), key
    assert ucsd_store(tiny_ucsd, path).blocks_run == 0  # whole again: a no-op


def test_a_rerun_of_precompute_restores_a_deleted_split(tiny_ucsd, tmp_path):
    path = tmp_path / "s.zarr"
    ucsd_store(tiny_ucsd, path)
    expected = store_arrays(path)
    shutil.rmtree(path / "test")
    assert ucsd_store(tiny_ucsd, path).blocks_run == 10
    actual = store_arrays(path)
    assert expected.keys() == actual.keys() and all(np.array_equal(v, actual[k]) for k, v in expected.items())


# ------------------------------------------------------------------------------------------ 7. the right words


def test_verify_of_an_interrupted_store_says_not_computed_and_never_deleted(tmp_path):
    path = tmp_path / "s.zarr"
    make_store(path, n_frames=10, complete=False)
    report = verify_store(path)
    assert report.problems and {p.kind for p in report.problems} == {"not computed"}
    assert all("deleted" not in str(p) for p in report.problems)
    with pytest.raises(StoreError, match=r"train/01/seg frames 8-9 are not computed yet"):
        open_store(path).video("train", "01").seg(slice(6, 10))


def test_a_store_of_another_dataset_with_the_same_teachers_names_the_dataset(tmp_path):
    path = tmp_path / "s.zarr"
    make_store(path)
    with pytest.raises(StoreError) as err:
        create_store(path, dataset="ped2", build=BUILD, classes={0: "bg"})
    message = str(err.value)
    assert "built from dataset 'random', not 'ped2'" in message and "--overwrite" in message
    assert "unknown difference" not in message and "teachers or settings" not in message


@pytest.mark.parametrize("array", ["checksums", "blocks_done"])
def test_a_flipped_byte_in_a_bookkeeping_chunk_is_damage_of_that_array(tmp_path, array):
    path = tmp_path / "s.zarr"
    make_store(path, n_frames=10)
    chunk = path / f"train/01/{array}/c/1" / ("0" if array == "checksums" else "")  # (1, A) and (1,) chunks
    original = chunk.read_bytes()
    for offset in range(len(original)):
        flip(chunk, offset)
        problems = verify_store(path).problems
        assert problems and {(p.video, p.array, p.frames) for p in problems} == {("train/01", array, (4, 8))}, \
            (offset, [str(p) for p in problems])
        chunk.write_bytes(original)
    assert verify_store(path).ok


def test_a_store_made_before_videos_were_recorded_reads_as_before_and_a_resume_records_them(tmp_path):
    path = tmp_path / "old.zarr"
    store = make_store(path, n_frames=10)
    del store.root.attrs["videos"]  # what stores made before the record look like
    for video in store.videos():
        del video.group.attrs["arrays"]
    old = open_store(path)
    assert old.recorded_videos() is None and old.gaps() == [] and verify_store(path).ok
    old.require_complete()
    again = create_store(path, dataset="random", build=BUILD, classes={0: "bg"}, videos={"test": {"02": 10}})
    assert again.recorded_videos() == {"train": {"01": 10, "02": 10}, "test": {"01": 10, "02": 10}}


@pytest.mark.parametrize("version", ["2", 2.5, None, True])
def test_a_schema_version_of_the_wrong_type_is_one_error(tmp_path, version):
    path = tmp_path / "s.zarr"
    make_store(path).root.attrs["schema_version"] = version
    with pytest.raises(StoreError, match="'schema_version' is .*not an integer"):
        open_store(path)


def test_store_info_calls_a_store_with_a_deleted_chunk_damaged_not_complete(damaged):
    good, bad = damaged
    assert "status: complete" in vad("store", "info", str(good)).output
    shown = vad("store", "info", str(bad))
    assert shown.exit_code == 0 and "status: complete" not in shown.output
    assert "status: damaged: 1 missing (train/01/seg [frames 4-7]" in shown.output, shown.output
