"""The class-aware movers teacher (`motion-classes`, preset `cpu-classes`): crops, the vote per object, the
missing model file, and the real DeepLab file on real Ped2 frames (skipped without ../shared)."""

from __future__ import annotations

import numpy as np
import pytest

from mtvad.errors import TeacherError
from mtvad.precompute.teachers.deeplab import OBJECT_ID, TILE
from mtvad.precompute.teachers.motion_classes import MotionClassSegmentation, crop_window, vote
from tests.conftest import shared_path

PERSON, BICYCLE = 1, 2  # COCO ids
VOC_BICYCLE, VOC_PERSON = 2, 15


def test_crop_window_is_a_square_around_the_object_inside_the_frame():
    # a 10x20 (w x h) box centred at (x 45, y 50): side 2 x 20 = 40, centred
    assert crop_window((100, 120), left=40, top=40, width=10, height=20, scale=2.0, min_side=16) == (30, 25, 40)
    # a tiny box gets the smallest crop; one at the corner is shifted inside the frame
    assert crop_window((100, 120), left=0, top=0, width=3, height=3, scale=2.0, min_side=16) == (0, 0, 16)
    assert crop_window((100, 120), left=115, top=95, width=5, height=5, scale=2.0, min_side=16) == (84, 104, 16)
    # never larger than the frame's shorter side
    assert crop_window((100, 120), left=0, top=0, width=120, height=100, scale=2.0, min_side=16)[2] == 100


def test_the_vote_takes_the_class_of_the_highest_mean_probability_or_none():
    logits = np.zeros((3, 21), np.float32)
    logits[0, VOC_PERSON] = 5.0  # one pixel surely a person
    logits[1:, VOC_BICYCLE] = 3.0  # two pixels rather a bicycle
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert p[:, VOC_BICYCLE].mean() > p[:, VOC_PERSON].mean()  # by hand: 0.49 against 0.38
    assert vote(logits, 0.1) == VOC_BICYCLE  # the mean probability, not the most confident pixel
    assert vote(logits, 0.5) == 0  # the winner's mean is below the floor: no class
    assert vote(np.zeros((4, 21), np.float32), 0.1) == 0  # uniform: 1/21 each, below 0.1
    assert vote(np.zeros((0, 21), np.float32), 0.0) == 0  # no pixel of the object in the crop


def test_each_object_gets_the_class_deeplab_sees_in_its_own_crop(monkeypatch):
    teacher = MotionClassSegmentation(min_crop=8, crop_scale=2.0)
    seen = []

    def model(x):  # a stand-in for DeepLab: "bicycle" on bright crops, background elsewhere
        seen.append(x.shape)
        logits = np.zeros((1, TILE, TILE, 21), np.float32)
        logits[..., 0] = 4.0
        if x.max() > 0:
            logits[..., VOC_BICYCLE] = 8.0
        return logits

    monkeypatch.setattr(teacher._deeplab, "run_model", model)
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[5:15, 5:10] = 255  # object 1: bright
    labels = np.zeros((64, 64), np.int32)
    labels[5:15, 5:10], labels[40:50, 40:45] = 1, 2  # object 2 lies on a dark patch
    stats = np.array([[50, 5, 5, 5, 10], [50, 40, 40, 5, 10]], np.float64)  # area, left, top, width, height
    assert teacher.object_classes(frame, labels, stats).tolist() == [BICYCLE, OBJECT_ID]
    assert seen == [(1, TILE, TILE, 3)] * 2  # one crop per object, at the model's input size


def test_a_missing_model_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MTVAD_MODELS", str(tmp_path))
    with pytest.raises(TeacherError, match=r"deeplabv3_257_mv_gpu.tflite not found in .*: download it from"):
        MotionClassSegmentation().describe()
    assert MotionClassSegmentation().locate_weights().path is None


def test_on_real_ped2_a_cyclist_is_not_a_person_and_the_walkers_are():
    from mtvad.precompute.blocks import resize_frames, resize_masks
    from mtvad.precompute.datasets import open_dataset
    from mtvad.precompute.teachers.base import fit_indices
    from mtvad.precompute.teachers.motion_seg import MotionShapeSegmentation

    model = shared_path("models", "deeplabv3_257_mv_gpu.tflite")
    dataset = open_dataset("ped2", shared_path("data", "ped2"))
    train = list(dataset.videos("train"))[:3]
    fit = MotionShapeSegmentation(fit_videos=3).fit_dataset(train, (256, 256))
    teacher = MotionClassSegmentation(fit=fit, model=str(model))
    video = next(v for v in dataset.videos("test") if v.id == "01")  # a cyclist rides through from frame 61
    t = 100
    state = teacher.fit_video(resize_frames(video.read(0, video.n_frames)[fit_indices(video.n_frames, 48)],
                                            (256, 256)))
    seg = teacher(resize_frames(video.read(t - 1, t + 1), (256, 256)), 1, state)["seg"][0]
    cyclist = resize_masks(video.read_masks(t, t + 1), (256, 256))[0]
    on_cyclist = np.bincount(seg[cyclist], minlength=256)
    assert on_cyclist.argmax() not in (0, PERSON, OBJECT_ID)  # a named class that is not a person
    walkers = np.bincount(seg[~cyclist & (seg > 0)], minlength=256)
    assert walkers.argmax() == PERSON


def test_the_cpu_classes_preset_has_the_movers_of_cpu_motion_with_coco_classes(tmp_path, monkeypatch):
    from mtvad.precompute.teachers import resolve_preset
    from mtvad.store.access import open_store
    from tests.test_motion_seg import build, write_scenes

    monkeypatch.setenv("MTVAD_MODELS", str(shared_path("models")))
    data = write_scenes(tmp_path / "ped2")
    build(data, tmp_path / "classes.zarr", specs=resolve_preset("cpu-classes"))
    build(data, tmp_path / "motion.zarr", specs=resolve_preset("cpu-motion"))
    classes, motion = open_store(tmp_path / "classes.zarr"), open_store(tmp_path / "motion.zarr")
    classes.require_complete()
    assert classes.classes[1] == "person" and classes.classes[OBJECT_ID] == "object"
    seg = classes.teachers["seg"]
    assert seg["name"] == "motion-classes" and "model" not in seg["params"]
    assert seg["weights_sha256"].startswith("68a53978")
    assert seg["params"]["fit"] == motion.teachers["seg"]["params"]["fit"]  # the same dataset-level fit
    for video in classes.videos():
        theirs = motion.video(video.split, video.id)
        assert np.array_equal(video.seg() > 0, theirs.seg() > 0)  # the same movers, other class ids
        assert set(np.unique(video.seg())) <= set(classes.classes)
        assert np.array_equal(video.flow_mag(), theirs.flow_mag())


def test_vad_teachers_recommends_cpu_classes_only_where_the_model_file_is(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mtvad.cli.main import app

    for var in ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE"):  # no paper weights
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("MTVAD_MODELS", str(tmp_path / "none"))
    listing = CliRunner().invoke(app, ["teachers"])
    assert listing.exit_code == 0
    assert ("preset cpu-classes: seg=motion-classes, flow=farneback, depth=ground-plane (weights missing)"
            in listing.output)
    assert "(the default)" in listing.output.split("preset cpu-motion")[1].splitlines()[0]
    assert "recommended here: cpu-motion" in listing.output
    monkeypatch.setenv("MTVAD_MODELS", str(shared_path("models")))
    assert "recommended here: cpu-classes" in CliRunner().invoke(app, ["teachers"]).output


def test_the_default_preset_is_a_preset_that_needs_no_download():
    from mtvad.precompute.teachers import DEFAULT_PRESET, PRESETS, build_teacher

    assert DEFAULT_PRESET in PRESETS
    assert all(build_teacher(name).weights_path() is None for name, _ in PRESETS[DEFAULT_PRESET].values())
