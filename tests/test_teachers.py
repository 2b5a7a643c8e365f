"""Teachers: each does its job on scenes whose answer is known; the registry and fingerprints behave."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtvad.errors import TeacherError
from mtvad.precompute import teachers as registry
from mtvad.precompute.teachers import build_teacher, loaded_teacher, resolve_preset
from mtvad.precompute.teachers.base import fit_indices
from tests.conftest import moving_scene


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def textured(shape=(64, 64), seed=0) -> np.ndarray:
    import cv2

    noise = np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 2).astype(np.uint8)


@pytest.mark.parametrize("dx, dy, angle", [(2, 0, 0.0), (0, 2, math.pi / 2), (-2, 0, math.pi)])
def test_farneback_measures_a_known_shift_with_y_pointing_down(dx, dy, angle):
    image = textured((80, 80))
    shifted = np.roll(image, (dy, dx), axis=(0, 1))
    out = build_teacher("farneback")(rgb(np.stack([image, shifted])), n_context=1)
    centre = (slice(20, 60), slice(20, 60))
    assert out["flow_mag"].shape == (1, 80, 80)
    assert np.median(out["flow_mag"][0][centre]) == pytest.approx(2.0, abs=0.15)
    ang = out["flow_ang"][0][centre]
    assert np.median(np.abs(np.angle(np.exp(1j * (ang - angle))))) < 0.1


def test_farneback_gives_zero_flow_to_the_first_frame_of_a_video():
    frames = rgb(np.stack([textured(seed=1), textured(seed=2)]))
    out = build_teacher("farneback")(frames, n_context=0)  # block starting at frame 0: no previous frame
    assert out["flow_mag"].shape == (2, 64, 64)
    assert not out["flow_mag"][0].any() and out["flow_mag"][1].mean() > 0.5


def test_background_teacher_segments_the_moving_object_and_nothing_else():
    frames, masks = moving_scene(30, size=(48, 64))
    teacher = build_teacher("background")
    state = teacher.fit_video(rgb(frames[fit_indices(30, teacher.fit_frames)]))
    seg = teacher(rgb(frames), n_context=0, state=state)["seg"]
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1}
    iou = (seg.astype(bool) & masks).sum() / (seg.astype(bool) | masks).sum()
    assert iou > 0.8
    assert seg[~masks].mean() < 0.01  # static noisy background stays background


def test_background_teacher_drops_blobs_smaller_than_min_area():
    frames, _ = moving_scene(10, size=(48, 64))
    frames[:, 2:4, 2:4] = 255  # a 2x2 speck
    teacher = build_teacher("background", {"min_area": 0.01})  # 31 px at 48x64
    state = teacher.fit_video(rgb(frames))
    state_speck = type(state)(state.background.copy(), state.threshold)
    state_speck.background[2:4, 2:4] = 0
    seg = teacher(rgb(frames), 0, state_speck)["seg"]
    assert not seg[:, 2:4, 2:4].any() and seg.any()


def test_ground_plane_depth_is_a_ramp_from_far_top_to_near_bottom():
    depth = build_teacher("ground-plane")(np.zeros((3, 10, 4, 3), np.uint8), 1)["depth"]
    assert depth.shape == (2, 10, 4)
    assert depth[0, 0, 0] == 0 and depth[0, -1, 0] == 1 and np.all(np.diff(depth[0, :, 0]) > 0)


def test_registry_errors_name_what_is_known():
    with pytest.raises(TeacherError, match="unknown teacher 'nope'; known teachers: background, deeplab, farneback"):
        build_teacher("nope")
    with pytest.raises(TeacherError, match="unknown preset 'gpu'; known presets: cpu, cpu-classes, cpu-motion, paper"):
        resolve_preset("gpu")
    with pytest.raises(TeacherError, match=r"no parameter\(s\) \['winsise'\]"):
        build_teacher("farneback", {"winsise": 3})
    with pytest.raises(TeacherError, match="produces 'flow', not 'seg'"):
        build_teacher("farneback", role="seg")


def test_description_changes_with_every_parameter():
    a = build_teacher("farneback").describe()
    b = build_teacher("farneback", {"winsize": 21}).describe()
    assert a["params"]["winsize"] == 15 and b["params"]["winsize"] == 21 and a != b
    assert set(a) == {"name", "version", "params", "weights_sha256"}


def test_loaded_teacher_loads_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(registry, "_LOADED", {})
    monkeypatch.setattr(registry.Farneback, "load", lambda self: calls.append(self), raising=False)
    first = loaded_teacher("farneback", {})
    for _ in range(5):
        assert loaded_teacher("farneback", {}) is first
    loaded_teacher("farneback", {"levels": 2})  # another configuration is another model
    assert len(calls) == 2
