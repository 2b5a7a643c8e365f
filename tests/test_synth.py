"""The synthetic Ped2-like dataset generator (small profile: about a second per run)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtvad.errors import DatasetError
from mtvad.precompute.synth import KINDS, KINDS_FILE, M_FILE, SynthOutputExists, generate
from mtvad.precompute.synth.bodies import Canvas, PersonLook, Pose, draw_person
from mtvad.precompute.synth.scene import DT, Camera

M_LINE = re.compile(r"TestVideoFile\{end\+1\}\.gt_frame = \[(\d+:\d+(?:, \d+:\d+)*)\];")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "data"
    return root, generate(root, seed=0, small=True)


def _hashes(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _parse_m(path: Path) -> list[list[tuple[int, int]]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "TestVideoFile = {};"
    table = []
    for line in lines[1:]:
        match = M_LINE.fullmatch(line)
        assert match, f"not in UCSD's format: {line!r}"
        table.append([tuple(int(v) for v in r.split(":")) for r in match.group(1).split(", ")])
    return table


def _labels(ranges: list[tuple[int, int]], n: int) -> np.ndarray:
    labels = np.zeros(n, bool)
    for first, last in ranges:
        assert 1 <= first <= last <= n
        labels[first - 1 : last] = True
    return labels


def _frames(folder: Path, suffix: str) -> list[Path]:
    return sorted(folder.glob(f"*{suffix}"))


def test_same_seed_same_bytes_other_seed_other_bytes(small, tmp_path):
    root, _ = small
    generate(tmp_path / "again", seed=0, small=True)
    generate(tmp_path / "other", seed=1, small=True)
    reference = _hashes(root)
    assert len(reference) == 3 * 40 + 4 * 40 * 2 + 3  # frames, masks, .m, kinds file, README
    assert _hashes(tmp_path / "again") == reference
    other = _hashes(tmp_path / "other")
    differing = [name for name in reference if other.get(name) != reference[name]]
    assert len(differing) > len(reference) // 2


def test_ucsd_layout_and_file_formats(small):
    root, summary = small
    trains = sorted((root / "Train").iterdir())
    assert [p.name for p in trains] == ["Train001", "Train002", "Train003"]
    tests = sorted(p for p in (root / "Test").iterdir() if p.is_dir() and not p.name.endswith("_gt"))
    assert [p.name for p in tests] == ["Test001", "Test002", "Test003", "Test004"]
    for video in trains + tests:
        files = _frames(video, ".tif")
        assert [f.name for f in files] == [f"{i:03d}.tif" for i in range(1, len(files) + 1)]
        with Image.open(files[0]) as im:
            assert (im.format, im.mode, im.size) == ("TIFF", "L", (90, 60))
    for video in tests:
        masks = _frames(root / "Test" / f"{video.name}_gt", ".bmp")
        assert [m.name for m in masks] == [f.name.replace(".tif", ".bmp") for f in _frames(video, ".tif")]
        with Image.open(masks[0]) as im:
            assert (im.format, im.size) == ("BMP", (90, 60))
        assert set(np.unique(np.asarray(Image.open(masks[len(masks) // 2])))) <= {0, 255}
    readme = (root / "README.txt").read_text()
    assert "seed 0" in readme and "profile small" in readme and f"version {summary['version']}" in readme


def test_m_labels_agree_with_masks_frame_by_frame(small):
    root, summary = small
    table = _parse_m(root / "Test" / M_FILE)
    assert len(table) == summary["test_videos"] == 4
    for number, ranges in enumerate(table, 1):
        masks = _frames(root / "Test" / f"Test{number:03d}_gt", ".bmp")
        labels = _labels(ranges, len(masks))
        has_pixels = np.array([np.asarray(Image.open(m)).any() for m in masks])
        np.testing.assert_array_equal(labels, has_pixels, err_msg=f"Test{number:03d}")
        assert labels.any() and not labels.all()  # every test video has anomalous and normal frames


def test_training_videos_hold_no_anomaly(small):
    root, summary = small
    trains = [v for v in summary["videos"] if v["split"] == "train"]
    assert len(trains) == 3 and all(v["actors"] > 0 for v in trains)
    assert all(v["anomalous_actors"] == 0 for v in trains)
    assert all(v["anomalous_actors"] > 0 for v in summary["videos"] if v["split"] == "test")
    assert not list((root / "Train").glob("*_gt"))
    kinds = json.loads((root / "Test" / KINDS_FILE).read_text())
    assert sorted(kinds["videos"]) == ["Test001", "Test002", "Test003", "Test004"]


def test_every_kind_recorded_per_frame_consistently_with_labels(small):
    root, summary = small
    data = json.loads((root / "Test" / KINDS_FILE).read_text())
    table = _parse_m(root / "Test" / M_FILE)
    seen = set()
    for number, ranges in enumerate(table, 1):
        video = data["videos"][f"Test{number:03d}"]
        frames = video["frames"]
        labels = _labels(ranges, len(frames))
        np.testing.assert_array_equal(labels, [k is not None for k in frames])
        seen.update(k for k in frames if k is not None)
        for event in video["events"]:
            assert set(frames[event["first"] - 1 : event["last"]]) == {event["kind"]}
    assert seen == set(KINDS) == set(data["kinds"])
    total = sum(len(v["frames"]) for v in data["videos"].values())
    for kind in KINDS:
        count = sum(v["frames"].count(kind) for v in data["videos"].values())
        assert summary["anomaly_share"][kind] == pytest.approx(count / total)
        assert count > 0


def test_glitch_frames_are_real_jumps_but_not_anomalies(small):
    root, _ = small
    data = json.loads((root / "Test" / KINDS_FILE).read_text())
    table = _parse_m(root / "Test" / M_FILE)
    glitched = 0
    for number, ranges in enumerate(table, 1):
        name = f"Test{number:03d}"
        for frame in data["videos"][name]["glitch_frames"]:
            glitched += 1
            labels = _labels(ranges, len(data["videos"][name]["frames"]))
            assert not labels[frame - 1] and not labels[frame - 2]
            assert data["videos"][name]["frames"][frame - 1] is None
            video = np.stack([np.asarray(Image.open(f), dtype=np.int16) for f in _frames(root / "Test" / name, ".tif")])
            changed = (np.abs(np.diff(video, axis=0)) > 25).sum(axis=(1, 2))
            assert changed[frame - 2] > 1.5 * np.median(changed)  # the recording really skips there
    assert glitched >= 1


def _person_mask(camera: Camera, x: float, z: float) -> np.ndarray:
    shape = (camera.height, camera.width)
    canvas = Canvas(np.zeros(shape, np.float32), np.zeros(shape, np.uint8))
    pose = Pose(x=x, z=z, hx=1.0, hz=0.0, phase=0.0, leg_amp=0.4, arm_amp=0.3)
    draw_person(canvas, camera, pose, PersonLook(1.7, 50.0, 200.0, 60.0), label=1)
    return canvas.labels > 0


@pytest.mark.parametrize("size", [(60, 90), (240, 360)])
def test_far_actors_are_smaller_and_move_fewer_pixels(size):
    camera = Camera.for_size(*size)
    step = 1.4 * DT  # one frame of walking
    rows_height_shift = []
    for z in np.linspace(camera.z_near + 1.0, camera.z_far - 1.0, 4):
        mask = _person_mask(camera, 0.0, z)
        moved = _person_mask(camera, step * 10, z)  # ten frames, to measure whole pixels
        rows = np.flatnonzero(mask.any(axis=1))
        cols, moved_cols = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(moved.any(axis=0))
        rows_height_shift.append((rows.max(), rows.max() - rows.min() + 1, moved_cols.mean() - cols.mean()))
    bottoms, heights, shifts = np.array(rows_height_shift).T
    assert np.all(np.diff(bottoms) < 0)  # farther: higher in the image
    assert np.all(np.diff(heights) < 0)  # smaller
    assert np.all(np.diff(shifts) < 0) and shifts[-1] > 0  # and fewer pixels per frame
    assert heights[0] > 2.5 * heights[-1]


def test_refuses_non_empty_folder_and_overwrites_only_its_own_files(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SynthOutputExists, match=re.escape(str(out))) as info:
        generate(out, seed=0, small=True)
    assert isinstance(info.value, DatasetError)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    (out / "Train").mkdir()
    (out / "Train" / "Train099").mkdir()  # stale output of an earlier run
    generate(out, seed=0, small=True, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "Train" / "Train099").exists()
    assert (out / "Test" / M_FILE).is_file()

    (tmp_path / "file").write_text("x")
    with pytest.raises(SynthOutputExists):
        generate(tmp_path / "file", seed=0, small=True, overwrite=True)
    with pytest.raises(ValueError):
        generate(tmp_path / "fresh", seed=-1, small=True)


def test_reads_back_through_the_projects_ucsd_reader(small):
    from mtvad.precompute.datasets import open_dataset

    root, summary = small
    dataset = open_dataset("synth", root)
    trains, tests = list(dataset.videos("train")), list(dataset.videos("test"))
    assert (len(trains), len(tests)) == (summary["train_videos"], summary["test_videos"])
    assert sum(v.n_frames for v in trains) == summary["train_frames"]
    assert sum(v.n_frames for v in tests) == summary["test_frames"]
    assert all(v.labels is None and v.masks is None for v in trains)
    table = _parse_m(root / "Test" / M_FILE)
    for video, ranges in zip(tests, table):
        assert video.validate() == (60, 90)
        np.testing.assert_array_equal(video.labels, _labels(ranges, video.n_frames))
        masks = video.read_masks(0, video.n_frames)
        np.testing.assert_array_equal(masks.any(axis=(1, 2)), video.labels.astype(bool))
    assert tests[0].read(0, 2).shape == (2, 60, 90, 3)
