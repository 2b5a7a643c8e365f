"""The precompute job end to end: Dask tasks -> store; resume, no-op re-runs, kill -9, refusals, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mtvad.errors import DatasetError, StoreError
from mtvad.precompute import teachers as registry
from mtvad.precompute.datasets import open_dataset
from mtvad.precompute.jobs import precompute
from mtvad.precompute.teachers import resolve_preset
from mtvad.store.access import open_store
from mtvad.store.schema import ARRAYS
from tests.conftest import ROOT, run_vad, write_moving_ucsd
from tests.stores import store_arrays as arrays_of
from tests.test_store import documented_arrays

SMALL = dict(resolution=(32, 40), chunk_frames=4, progress=False)


def build(data: Path, store: Path, **kw):
    return precompute(open_dataset("ped2", data), str(store), resolve_preset("cpu"), **{**SMALL, **kw})


def chunk_mtimes(path: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def reference(tiny_ucsd, tmp_path):
    """An uninterrupted in-process build of the tiny dataset."""
    path = tmp_path / "reference.zarr"
    build(tiny_ucsd, path, scheduler="inprocess")
    return path


def test_store_matches_the_documented_contract_and_the_dataset(tiny_ucsd, reference):
    store = open_store(reference)
    store.require_complete()
    assert store.resolution == (32, 40) and store.dataset == "ped2"
    assert [v.key for v in store.videos()] == ["train/01", "train/02", "test/01", "test/02"]
    doc = documented_arrays()
    for video in store.videos():
        for name, spec in ARRAYS.items():
            if name not in video.group:
                assert spec.optional or video.split not in spec.splits, (video.key, name)
                continue
            arr = video.group[name]
            assert str(arr.dtype) == doc[name]["dtype"]
            assert tuple(arr.metadata.dimension_names) == spec.dims
            if spec.dims[0] == "T" and len(spec.dims) > 1:
                assert arr.chunks[0] == 4 and arr.chunks[1:] == arr.shape[1:]
    test = store.video("test", "01")
    assert test.label().tolist() == [0] * 1 + [1] * 19  # .m range 2:20, 1-based
    mask = test.mask()
    assert mask.shape == (20, 32, 40) and not mask[0].any() and mask[1].any()
    assert (mask.any(axis=(1, 2)) == test.label().astype(bool)).all()
    seg = test.seg()
    assert (seg[mask] > 0).mean() > 0.7  # the teacher finds the moving object where the ground truth is
    assert test.flow_mag(0).max() == 0 and test.flow_mag(slice(1, None), masked=True).max() > 1
    assert "label" not in store.video("train", "01").group


def test_grey_footage_is_stored_with_one_channel_and_read_as_rgb(tiny_ucsd, reference):
    from mtvad.precompute.blocks import resize_frames

    (source,) = [v for v in open_dataset("ped2", tiny_ucsd).videos("test") if v.id == "01"]
    video = open_store(reference).video("test", "01")
    assert video.channels == 1 and video.group["frames"].shape == (20, 32, 40, 1)
    assert np.array_equal(video.frames(), resize_frames(source.read(0, 20), (32, 40)))  # three equal channels


def test_colour_footage_keeps_three_channels_and_a_colour_frame_in_grey_footage_is_named(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    colour, grey = tmp_path / "data" / "colour", tmp_path / "data" / "grey"
    for k in range(12):
        for folder, mode in ((colour, "RGB"), (grey, "L")):
            folder.mkdir(parents=True, exist_ok=True)
            shape = (24, 32, 3) if mode == "RGB" else (24, 32)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(folder / f"{k:03d}.png")
    options = dict(scheduler="inprocess", resolution=(24, 32), chunk_frames=4, progress=False)
    store = tmp_path / "s.zarr"
    precompute(open_dataset("folder", tmp_path / "data", split="train"), str(store), resolve_preset("cpu"), **options)
    assert open_store(store).video("train", "colour").channels == 3
    assert open_store(store).video("train", "grey").channels == 1
    # a colour frame between the frames that tell grey from colour (every second of 12)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), "RGB").save(grey / "005.png")
    with pytest.raises(DatasetError, match=f"{grey}: frame 5 is in colour"):
        precompute(open_dataset("folder", tmp_path / "data", split="train"), str(tmp_path / "t.zarr"),
                   resolve_preset("cpu"), **options)


@pytest.mark.slow
def test_dask_workers_write_the_same_arrays_as_one_process(tiny_ucsd, reference, tmp_path):
    import os

    path = tmp_path / "dask.zarr"
    environment = dict(os.environ)
    result = build(tiny_ucsd, path, scheduler="local", workers=2)
    assert result.blocks_run == 4 * 5 and result.frames_run == 80
    # the cluster's nannies set OMP_NUM_THREADS=1 here for their workers: torch imported after it (vad detect
    # trains in the same process) would run on one thread
    assert dict(os.environ) == environment
    expected, actual = arrays_of(reference), arrays_of(path)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert np.array_equal(expected[key], actual[key]), key


def test_the_progress_bars_go_to_stderr_and_leave_stdout_alone(tiny_ucsd, tmp_path, capsys):
    build(tiny_ucsd, tmp_path / "s.zarr", scheduler="inprocess", progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "frames" in err  # stdout is for results (vad detect's table of events)


def test_a_finished_store_is_a_no_op(tiny_ucsd, reference):
    before = chunk_mtimes(reference)
    result = build(tiny_ucsd, reference, scheduler="inprocess")
    assert result.blocks_run == 0
    assert chunk_mtimes(reference) == before


def test_missing_blocks_are_recomputed_to_the_same_values(tiny_ucsd, reference, tmp_path):
    import shutil

    path = tmp_path / "partial.zarr"
    shutil.copytree(reference, path)
    store = open_store(path, mode="r+")
    for video in store.videos():
        video.group["blocks_done"][1] = 0
        video.group["flow_mag"][4:8] = 7  # garbage in a block that is not marked done
    result = build(tiny_ucsd, path, scheduler="inprocess")
    assert result.blocks_run == 4
    expected, actual = arrays_of(reference), arrays_of(path)
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        assert np.array_equal(value, actual[key]), key


@pytest.mark.slow
def test_killed_run_resumes_to_the_arrays_of_an_uninterrupted_run(tmp_path):
    data = write_moving_ucsd(tmp_path / "ped2", n_train=3, n_test=2, n_frames=48, size=(96, 128))
    reference = tmp_path / "reference.zarr"
    build(data, reference, scheduler="inprocess", resolution=(96, 128), chunk_frames=2)
    path = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "mtvad", "precompute", "ped2", "--data", str(data), "--store", str(path),
           "--resolution", "96x128", "--chunk-frames", "2", "--workers", "2", "--preset", "cpu", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done_at_kill = None
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        done = sorted((path / "train").glob("*/blocks_done/c/*"))
        if len(done) >= 3:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole job: client, scheduler, workers
            done_at_kill = len(done)
            break
        time.sleep(0.005)
    if proc.poll() is None and done_at_kill is None:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"fewer than 3 blocks written in 120 s: {proc.stderr.read().decode()[-500:]}")
    proc.wait()
    stderr = proc.stderr.read().decode()
    if done_at_kill is None:
        assert proc.returncode == 0, f"the run failed before it could be killed: {stderr[-500:]}"
        pytest.skip("the run finished before it could be killed (this machine was too fast to test a resume)")
    if not open_store(path).missing_blocks():
        pytest.skip("the kill came after the last block was written: nothing left to resume")
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    expected, actual = arrays_of(reference), arrays_of(path)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert np.array_equal(expected[key], actual[key]), key


def test_other_teacher_settings_are_refused_without_overwrite(tiny_ucsd, reference):
    specs = resolve_preset("cpu")
    specs["flow"] = ("farneback", {"winsize": 9})
    ds = open_dataset("ped2", tiny_ucsd)
    with pytest.raises(StoreError, match="flow teacher farneback .* -> farneback .*winsize\": 9.*--overwrite"):
        precompute(ds, str(reference), specs, scheduler="inprocess", **SMALL)
    result = precompute(ds, str(reference), specs, scheduler="inprocess", overwrite=True, **SMALL)
    assert result.blocks_run == 20
    assert open_store(reference).teachers["flow"]["params"]["winsize"] == 9


def test_each_worker_loads_a_teacher_once(tiny_ucsd, tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(registry, "_LOADED", {})
    for cls in registry.TEACHERS.values():
        monkeypatch.setattr(cls, "load", lambda self: loads.append(self.name))
    build(tiny_ucsd, tmp_path / "s.zarr", scheduler="inprocess")
    assert sorted(loads) == ["background", "farneback", "ground-plane"]  # 20 blocks, one load each


def test_a_truncated_frame_is_named_and_completed_blocks_survive(tiny_ucsd, reference, tmp_path):
    bad = tiny_ucsd / "Test" / "Test002" / "010.tif"
    bad.write_bytes(bad.read_bytes()[:200])
    path = tmp_path / "s.zarr"
    with pytest.raises(DatasetError, match=str(bad)):
        build(tiny_ucsd, path, scheduler="inprocess")
    store = open_store(path)
    done = {v.key: v.blocks_done() for v in store.videos()}
    assert done["train/01"].all() and done["test/01"].all() and not done["test/02"][2]
    for key, value in arrays_of(reference).items():
        video, name = key.rsplit("/", 1)
        if video != "test/02":  # test/02 has blocks not computed: reading them is an error, not zeros
            assert np.array_equal(value, store.video(*video.split("/")).group[name][:]), key


def test_inconsistent_videos_fail_before_anything_is_written(tiny_ucsd, tmp_path):
    from PIL import Image

    Image.new("L", (10, 10)).save(tiny_ucsd / "Train" / "Train002" / "007.tif")
    path = tmp_path / "s.zarr"
    with pytest.raises(DatasetError, match="007.tif"):
        build(tiny_ucsd, path, scheduler="inprocess")
    assert not path.exists()


@pytest.mark.slow
def test_cli_reports_bad_input_in_one_line_with_a_non_zero_exit(tmp_path):
    missing = run_vad("precompute", "ped2", "--data", str(tmp_path / "nope"), "--store", str(tmp_path / "s.zarr"))
    assert missing.returncode == 1
    assert "nope" in missing.stderr and "UCSD_Anomaly_Dataset.tar.gz" in missing.stderr
    assert "Traceback" not in missing.stderr
    notastore = tmp_path / "notes"
    notastore.mkdir()
    (notastore / "a.txt").write_text("keep")
    data = write_moving_ucsd(tmp_path / "ped2", n_train=1, n_test=1, n_frames=4)
    refused = run_vad("precompute", "ped2", "--data", str(data), "--store", str(notastore), "--overwrite")
    assert refused.returncode == 1 and "not a Zarr v3 store" in refused.stderr
    assert (notastore / "a.txt").read_text() == "keep"


@pytest.mark.slow
def test_cli_builds_and_vad_store_info_shows_it(tmp_path):
    data = write_moving_ucsd(tmp_path / "ped2", n_train=1, n_test=1, n_frames=6)
    store = tmp_path / "s.zarr"
    built = run_vad("precompute", "ped2", "--data", str(data), "--store", str(store), "--resolution", "32",
                    "--scheduler", "inprocess", "--preset", "cpu")
    assert built.returncode == 0, built.stderr
    assert "12 frames in 2 blocks of 2 videos" in built.stderr
    again = run_vad("precompute", "ped2", "--data", str(data), "--store", str(store), "--resolution", "32",
                    "--scheduler", "inprocess", "--preset", "cpu")
    assert "complete already" in again.stderr
    info = run_vad("store", "info", str(store))
    assert info.returncode == 0, info.stderr
    for text in ("train 1 (6 frames)", "test 1 (6 frames)", "flow_mag", "uint16", "farneback", "complete",
                 open_store(store).fingerprint[:16]):
        assert text in info.stdout, text
    picture = tmp_path / "teachers.png"
    shown = run_vad("store", "show", str(store), "--video", "test/01", "--frames", "0,5", "--out", str(picture))
    assert shown.returncode == 0, shown.stderr
    from PIL import Image

    with Image.open(picture) as im:
        assert im.size[0] > im.size[1] > 100  # five panels side by side, two rows
    wrong = run_vad("store", "show", str(store), "--frames", "6", "--out", str(tmp_path / "x.png"))
    assert wrong.returncode == 1 and "test/01 has frames 0..5, not [6]" in wrong.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_run_of_blocks_read_in_order_gives_the_arrays_of_block_by_block_reads(tmp_path, monkeypatch):
    """One task decodes a run of blocks once (one seek); the same store built with one block per task (a seek per
    block, from the keyframe before it) holds the same arrays."""
    from tests.conftest import moving_scene
    from tests.videos import write_h264

    from mtvad.precompute import jobs

    grey, _ = moving_scene(40, size=(48, 64))
    write_h264(tmp_path / "data" / "cam.mp4", np.repeat(grey[..., None], 3, axis=-1), fps=10)
    runs = []
    real_run_blocks = jobs.run_blocks
    monkeypatch.setattr(jobs, "run_blocks", lambda *a, **k: runs.append(list(a[2])) or real_run_blocks(*a, **k))

    def build_folder(path: Path):
        runs.clear()
        precompute(open_dataset("folder", tmp_path / "data", split="train"), str(path), resolve_preset("cpu"),
                   scheduler="inprocess", resolution=(32, 48), chunk_frames=4, progress=False)
        return list(runs)

    assert build_folder(tmp_path / "runs.zarr") == [list(range(10))]
    monkeypatch.setattr(jobs, "RUN_FRAMES", 4)  # one block per task
    assert build_folder(tmp_path / "blocks.zarr") == [[b] for b in range(10)]
    expected, actual = arrays_of(tmp_path / "blocks.zarr"), arrays_of(tmp_path / "runs.zarr")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert np.array_equal(expected[key], actual[key]), key


def test_runs_are_consecutive_blocks_of_one_video_split_until_every_worker_has_one():
    from mtvad.precompute.datasets.base import Video
    from mtvad.precompute.jobs import plan_runs

    a, b = (Video(vid, "train", source=None) for vid in ("a", "b"))
    tasks = [(a, k, 4) for k in range(10)] + [(b, k, 4) for k in (2, 3, 7)]
    runs = [(video.id, blocks) for video, blocks in plan_runs(tasks, workers=1, max_blocks=lambda video: 4)]
    assert runs == [("a", [0, 1, 2, 3]), ("a", [4, 5, 6, 7]), ("a", [8, 9]), ("b", [2, 3]), ("b", [7])]
    runs = [(video.id, blocks) for video, blocks in plan_runs(tasks[:10], workers=4, max_blocks=lambda video: 64)]
    assert sorted(runs) == [("a", [0, 1, 2]), ("a", [3, 4]), ("a", [5, 6, 7]), ("a", [8, 9])]
    assert len(plan_runs(tasks[:1], workers=4, max_blocks=lambda video: 64)) == 1  # a block is not split
