"""The synthetic Ped2-like dataset generator (small profile: about a second per run)."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtvad.errors import DatasetError
from mtvad.precompute.synth import KIND_INFO, KINDS, KINDS_FILE, M_FILE, PROFILES, SynthOutputExists, generate
from mtvad.precompute.synth.bodies import Canvas, PersonLook, Pose, VehicleLook, draw_person, draw_skateboard, on_screen
from mtvad.precompute.synth.dataset import _assign_kinds, _density
from mtvad.precompute.synth.motion import (
    CROWDED_DENSITY_RANGE,
    DENSITY_RANGE,
    WALK_SPEED_MEAN,
    WALK_SPEED_RANGE,
    Slot,
    build_event,
)
from mtvad.precompute.synth.scene import DT, Camera, Layout

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
    assert len(reference) == 3 * 40 + 5 * 40 * 2 + 3  # frames, masks, .m, kinds file, README
    assert _hashes(tmp_path / "again") == reference
    other = _hashes(tmp_path / "other")
    differing = [name for name in reference if other.get(name) != reference[name]]
    assert len(differing) > len(reference) // 2


def test_ucsd_layout_and_file_formats(small):
    root, summary = small
    trains = sorted((root / "Train").iterdir())
    assert [p.name for p in trains] == ["Train001", "Train002", "Train003"]
    tests = sorted(p for p in (root / "Test").iterdir() if p.is_dir() and not p.name.endswith("_gt"))
    assert [p.name for p in tests] == ["Test001", "Test002", "Test003", "Test004", "Test005"]
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
    assert len(table) == summary["test_videos"] == 5
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
    assert sorted(kinds["videos"]) == ["Test001", "Test002", "Test003", "Test004", "Test005"]


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


def test_every_kind_recurs_and_the_small_profile_holds_each():
    for seed in range(20):
        default = _assign_kinds(seed, PROFILES["default"])
        assert Counter(k for video in default for k in video) == {k: 2 for k in KINDS}  # 18 events, 9 kinds
        small = _assign_kinds(seed, PROFILES["small"])
        assert {k for video in small for k in video} == set(KINDS)
        assert all(len(set(video)) == len(video) for video in default + small)


@pytest.mark.parametrize("kind", ["slow-bicycle", "skateboard", "slow-cart"])
def test_new_kinds_are_labelled_on_exactly_the_frames_their_actor_shows(small, kind):
    root, _ = small
    data = json.loads((root / "Test" / KINDS_FILE).read_text())
    assert data["kinds"][kind]["category"] == KIND_INFO[kind][0]
    holding = [name for name, video in data["videos"].items() if kind in video["frames"]]
    assert holding
    for name in holding:
        frames = data["videos"][name]["frames"]
        has_pixels = [np.asarray(Image.open(m)).any() for m in _frames(root / "Test" / f"{name}_gt", ".bmp")]
        assert has_pixels == [k is not None for k in frames]
        mine = [i for i, k in enumerate(frames) if k == kind]
        others = [i for i, k in enumerate(frames) if k not in (None, kind)]
        assert not others or max(mine) < min(others) or min(mine) > max(others)  # the two events do not interleave


def _speeds_in_view(kind: str, mode: str) -> np.ndarray:
    """Track speeds of the anomalous actor of `kind` at the steps it is in view, over several random draws."""
    camera = Camera.for_size(240, 360)
    layout = Layout.for_camera(camera)
    speeds = []
    for seed in range(20):
        actors = build_event(kind, 1, Slot(100, 400, mode), np.random.default_rng(seed), camera, layout)
        (actor,) = [a for a in actors if a.event]
        assert actor.track.flagged.all()
        seen = on_screen(camera, actor.body, actor.track.pos[:, 0], actor.track.pos[:, 1])
        speeds.append(actor.track.speed[seen])
    return np.concatenate(speeds)


@pytest.mark.parametrize("mode", ["enter", "exit"])
def test_slow_cyclist_rides_at_walking_pace_the_cyclist_faster(mode):
    slow, fast = _speeds_in_view("slow-bicycle", mode), _speeds_in_view("bicycle", mode)
    assert WALK_SPEED_RANGE[0] <= slow.min() and slow.max() <= WALK_SPEED_RANGE[1]
    assert fast.min() > WALK_SPEED_RANGE[1]


@pytest.mark.parametrize("mode", ["enter", "exit"])
def test_skater_glides_at_1_3_to_2_times_walking_speed_and_slow_cart_below_walking(mode):
    skater = _speeds_in_view("skateboard", mode) / WALK_SPEED_MEAN
    assert 1.3 <= skater.min() and skater.max() <= 2.0
    slow_cart = _speeds_in_view("slow-cart", mode)
    assert 0.6 <= slow_cart.min() and slow_cart.max() <= 1.1


def test_slow_cart_is_anomalous_its_pusher_is_not_and_skaters_push_now_and_then():
    camera = Camera.for_size(240, 360)
    layout = Layout.for_camera(camera)
    cart, pusher = build_event("slow-cart", 2, Slot(0, 300, "enter"), np.random.default_rng(0), camera, layout)
    assert (cart.body, cart.event, pusher.body, pusher.event) == ("cart", 2, "person", 0)
    pushing = []
    for seed in range(10):
        (skater,) = build_event("skateboard", 1, Slot(0, 300, "enter"), np.random.default_rng(seed), camera, layout)
        pushing.append(np.mean(skater.push > 0))
    assert 0.05 < min(pushing) and max(pushing) < 0.4  # mostly gliding


def _draw_skater(camera: Camera, look: VehicleLook, phase: float, push: float) -> Canvas:
    shape = (camera.height, camera.width)
    canvas = Canvas(np.full(shape, 150.0, np.float32), np.zeros(shape, np.uint8))
    pose = Pose(x=0.0, z=camera.z_near + 2.0, hx=1.0, hz=0.0, phase=phase, leg_amp=0.4, arm_amp=0.0, push=push)
    draw_skateboard(canvas, camera, pose, look, label=1)
    return canvas


def test_skater_stands_on_a_dark_board_with_still_legs_and_all_of_it_is_anomalous():
    camera = Camera.for_size(240, 360)
    look = VehicleLook(body=200.0, dark=30.0, top=200.0, rider=PersonLook(1.7, 60.0, 220.0, 110.0))
    glide = _draw_skater(camera, look, phase=0.0, push=0.0)
    painted = glide.image != 150.0
    np.testing.assert_array_equal(glide.labels > 0, painted)  # the skater and the board: all labelled
    board_rows = np.flatnonzero((glide.image == 30.0).any(axis=1))
    assert board_rows.size and board_rows.max() == np.flatnonzero(painted.any(axis=1)).max()  # under the feet
    np.testing.assert_array_equal(_draw_skater(camera, look, phase=2.0, push=0.0).labels, glide.labels)  # no gait
    assert (_draw_skater(camera, look, phase=0.0, push=0.5).labels != glide.labels).any()  # a push moves a foot
    walker = [_person_mask(camera, 0.0, camera.z_near + 2.0, phase) for phase in (0.0, 2.0)]
    assert (walker[0] != walker[1]).any()  # whereas a walker's legs swing with the phase


def test_crowd_density_differs_between_videos_and_is_high_around_a_slow_cyclist(small):
    root, summary = small
    people = {v["name"]: v["actors"] - v["anomalous_actors"] for v in summary["videos"]}
    assert max(people.values()) >= 5 * max(1, min(people.values()))
    data = json.loads((root / "Test" / KINDS_FILE).read_text())
    crowded = [name for name, video in data["videos"].items() if "slow-bicycle" in video["frames"]]
    assert crowded and all(people[name] >= 2 * np.median(list(people.values())) for name in crowded)
    for seed in range(10):
        normal = [_density(seed, split, i, ["cart"]) for split in ("train", "test") for i in range(16)]
        assert DENSITY_RANGE[0] <= min(normal) and max(normal) <= DENSITY_RANGE[1]
        assert max(normal) > 4 * min(normal)
        assert min(_density(seed, "test", i, ["slow-bicycle", "cart"]) for i in range(12)) >= CROWDED_DENSITY_RANGE[0]


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


def _person_mask(camera: Camera, x: float, z: float, phase: float = 0.0) -> np.ndarray:
    shape = (camera.height, camera.width)
    canvas = Canvas(np.zeros(shape, np.float32), np.zeros(shape, np.uint8))
    pose = Pose(x=x, z=z, hx=1.0, hz=0.0, phase=phase, leg_amp=0.4, arm_amp=0.3)
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
