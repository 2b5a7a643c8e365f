"""`vad detect` end to end on tiny synthetic footage written as real video files (MJPG .avi, H.264 .mkv): the
events, their times, the report and the annotated video; reuse (a second call recomputes nothing, a new video only
its own part); bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtvad.detect.run import DetectError, DetectSettings, detect, smoothing_window, store_resolution
from mtvad.errors import DatasetError
from tests.conftest import one_line_error
from tests.videos import video_info, write_h264, write_video

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (32, 64)  # H, W of the footage and of the store
# the smallest students of the paper's encoder families, 2 steps of batch 2, validated at every step
TRAIN = {"appearance": {"encoder": "resnet18"}, "motion": {"encoder": "vgg11"},
         "optim": {"batch_size": 2, "epochs": 1}, "run": {"max_steps": 2, "checkpoint_every": 1}}


def footage(n: int, seed: int, burst: tuple[int, int] | None = None) -> np.ndarray:
    """RGB frames (n, H, W, 3): a square walking slowly over a textured background; during `burst` a big
    square races across (the anomaly)."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    background = np.random.default_rng(0).integers(40, 120, size=SIZE).astype(np.float32)
    frames = []
    for t in range(n):
        f = background + rng.normal(0, 2, SIZE)
        x = 2 + (t % 40)
        f[10:18, x : x + 8] = 220
        if burst and burst[0] <= t <= burst[1]:
            x2 = (9 * (t - burst[0])) % (w - 16)
            f[4:28, x2 : x2 + 16] = 255
        frames.append(np.repeat(np.clip(f, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
    return np.stack(frames)


def settings(**kw) -> DetectSettings:
    return DetectSettings(**{"resolution": SIZE, "segment_seconds": 2.0, "scheduler": "inprocess", "train": TRAIN,
                             "progress": False, **kw})


def file_times(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("footage")
    return {
        "normal": write_video(root / "cam" / "normal.avi", footage(60, seed=1), 12.5),
        "a": write_video(root / "cam" / "a.avi", footage(40, seed=2, burst=(15, 30)), 12.5),
        "b": write_h264(root / "cam" / "b.mkv", footage(30, seed=3, burst=(5, 20)), 8.0),
    }


@pytest.fixture(scope="module")
def first(inputs, tmp_path_factory):
    """One run: normal footage + new video a, with the annotated MP4; (run folder, result, times after it)."""
    out = tmp_path_factory.mktemp("detect") / "run"
    r = detect([inputs["normal"]], [inputs["a"]], out, settings(mp4=True))
    return out, r, file_times(out)


def test_the_run_writes_events_report_and_an_annotated_video_with_the_inputs_frames_and_fps(first, inputs):
    out, r, _ = first
    doc = json.loads((out / "events.json").read_text())
    assert doc["videos"]["a"]["fps"] == 12.5 and doc["videos"]["a"]["frames"] == 40
    assert doc["threshold"] == pytest.approx(r.threshold)
    assert r.events, "the racing square of video a is flagged"
    for e in doc["events"]:
        assert e["start_s"] == pytest.approx(e["start_frame"] / 12.5, abs=1e-3)
        assert e["end_s"] == pytest.approx((e["end_frame"] + 1) / 12.5, abs=1e-3)
        assert e["duration_s"] >= 0.5 and (out / e["thumbnail"]).is_file()
    csv_rows = (out / "events.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(doc["events"])
    assert video_info(out / "videos" / "a.mp4") == (40, 12.5, SIZE)
    page = (out / "index.html").read_text()
    assert "timelines/a.png" in page and all(e["thumbnail"] in page for e in doc["events"])
    assert r.steps["teachers"].startswith("computed") and "trained appearance" in r.steps["students"]


def test_the_normal_footage_is_cut_into_segments_of_the_store(first):
    from mtvad.store.access import open_store

    store = open_store(first[0] / "store.zarr")
    # 60 frames at 12.5 fps in 2 s segments (25 frames): 25 and 35 (the 10-frame remainder joins the last one)
    assert {v: store.video("train", v).n_frames for v in store.video_ids("train")} == {"normal-s01": 25,
                                                                                        "normal-s02": 35}


def test_a_second_call_with_the_same_inputs_recomputes_nothing(first, inputs):
    out, _, times = first
    r = detect([inputs["normal"]], [inputs["a"]], out, settings(mp4=True))
    assert r.steps["teachers"].startswith("reused") and r.steps["scores"].startswith("reused")
    assert r.steps["students"].startswith("reused appearance")
    now = file_times(out)
    unchanged = {k: t for k, t in times.items() if not k.startswith(("events.", "index.html"))}
    assert {k: now.get(k) for k in unchanged} == unchanged


def test_another_new_video_computes_only_its_own_teachers_and_scores(first, inputs, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(first[0], out)
    before = file_times(out)
    r = detect([inputs["normal"]], [inputs["b"]], out, settings(mp4=True))
    assert r.steps["teachers"] == "computed 30 frames in 2 blocks"
    assert r.steps["scores"].startswith("scored 1 new video(s) and 0 normal")
    assert r.steps["students"].startswith("reused")
    after = file_times(out)
    computed = {k for k in before if k.startswith(("store.zarr/train", "store.zarr/test/a", "train/", "scores.zarr/t",
                                                   "videos/a", "thumbnails/a"))}
    assert computed and {k: after[k] for k in computed} == {k: before[k] for k in computed}
    assert video_info(out / "videos" / "b.mp4") == (30, 8.0, SIZE)
    doc = json.loads((out / "events.json").read_text())
    assert set(doc["videos"]) == {"a", "b"} and doc["videos"]["b"]["fps"] == 8.0
    for e in (e for e in doc["events"] if e["video"] == "b"):
        assert e["start_s"] == pytest.approx(e["start_frame"] / 8.0, abs=1e-3)


def test_a_new_threshold_removes_only_the_thumbnails_vad_wrote(first, inputs, tmp_path):
    """Events change (another threshold): the earlier run's thumbnails beyond the new events go, a user's file
    named like one stays byte for byte."""
    import shutil

    from mtvad.written import record_written

    out = tmp_path / "run"
    shutil.copytree(first[0], out)
    ours, users = out / "thumbnails" / "a-e08.png", out / "thumbnails" / "a-e09.png"
    shutil.copy(next((out / "thumbnails").glob("a-e01.png")), ours)
    record_written(out, [ours])  # as if an earlier run had found 8 events
    users.write_bytes(b"my own picture")
    detect([inputs["normal"]], [inputs["a"]], out, settings(mp4=True, threshold_quantile=0.9))
    assert not ours.exists() and users.read_bytes() == b"my own picture"


def test_a_run_file_that_records_no_settings_is_refused_naming_it(inputs, tmp_path):
    from mtvad.detect.run import FORMAT, DetectError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "detect.json").write_text(json.dumps({"format": FORMAT}))
    with pytest.raises(DetectError, match=r"run/detect.json: a damaged vad detect run file \(it records no preset"):
        detect([inputs["normal"]], [inputs["a"]], tmp_path / "run", settings())
    assert json.loads((tmp_path / "run" / "detect.json").read_text()) == {"format": FORMAT}


def test_other_normal_footage_in_the_same_run_folder_is_refused(first, inputs):
    before = file_times(first[0])
    with pytest.raises(DetectError, match="normal"):
        detect([inputs["a"]], [inputs["b"]], first[0], settings())
    assert file_times(first[0]) == before


def test_a_folder_holding_something_else_is_refused_and_kept(inputs, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DetectError, match="did not write"):
        detect([inputs["normal"]], [inputs["a"]], tmp_path, settings())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("case", ["one-frame", "truncated", "unreadable", "no-normal"])
def test_bad_footage_is_one_error_naming_the_file_and_writes_nothing(case, inputs, tmp_path):
    normal, new = [inputs["normal"]], [inputs["a"]]
    bad = tmp_path / "bad.avi"
    if case == "one-frame":
        new = [write_video(bad, footage(1, seed=4), 12.5)]
    elif case == "truncated":
        data = inputs["a"].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        new = [bad]
    elif case == "unreadable":
        bad.write_text("not a video")
        new = [bad]
    else:
        (tmp_path / "empty").mkdir()
        normal = [tmp_path / "empty"]
        bad = tmp_path / "empty"
    with pytest.raises(DatasetError) as exc:
        detect(normal, new, tmp_path / "run", settings())
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "run" / "store.zarr").exists()


def test_vad_detect_reports_bad_input_as_one_error_line(inputs, tmp_path):
    from typer.testing import CliRunner

    from mtvad.cli.main import app

    bad = tmp_path / "new.avi"
    bad.write_text("not a video")
    r = CliRunner().invoke(app, ["detect", "--normal", str(inputs["normal"]), "--video", str(bad), "--out",
                                 str(tmp_path / "run"), "--no-progress"], env={"COLUMNS": "300"})
    assert str(bad) in one_line_error(r)


def test_the_store_keeps_the_footages_aspect_and_the_window_follows_the_fps():
    assert store_resolution((576, 768)) == (192, 256)  # vtest.avi, 4:3
    assert store_resolution((720, 1280)) == (160, 256)  # 16:9: 144 rounds to 160 (multiples of 32)
    assert store_resolution((240, 360)) == (160, 256)  # UCSD Ped2
    assert smoothing_window(10) == 15 and smoothing_window(25) == 39 and smoothing_window(1) == 3


def test_a_new_video_of_an_existing_name_but_other_contents_is_refused(first, inputs, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(first[0], out)
    other = write_video(tmp_path / "elsewhere" / "a.avi", footage(40, seed=9), 12.5)
    before = file_times(out)
    with pytest.raises(DetectError, match="already holds a new video 'a'"):
        detect([inputs["normal"]], [other], out, settings())
    assert file_times(out) == before
