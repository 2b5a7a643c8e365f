"""The TFLite CPU teachers (DeepLab segmentation, PyDNet depth): model resolution, errors, outputs."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from mtvad.errors import TeacherError
from mtvad.precompute.teachers.deeplab import OBJECT_ID, TILE, DeepLabSegmentation, _tile_starts
from mtvad.precompute.teachers.pydnet import PyDNetDepth, normalise_per_frame
from tests.conftest import shared_path


def test_a_missing_model_file_is_named_with_where_to_get_it_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MTVAD_MODELS", str(tmp_path / "models"))
    with pytest.raises(TeacherError, match=r"deeplabv3_257_mv_gpu.tflite not found in .*models: download it from "
                                           r"https://storage.googleapis.com/.*MTVAD_MODELS"):
        DeepLabSegmentation().describe()
    with pytest.raises(TeacherError, match=r"nope.tflite: model file does not exist"):
        PyDNetDepth(model=str(tmp_path / "nope.tflite")).weights_path()


def test_model_found_through_mtvad_models_and_fingerprinted(tmp_path, monkeypatch):
    source = shared_path("models", "deeplabv3_257_mv_gpu.tflite")
    (tmp_path / source.name).symlink_to(source)
    monkeypatch.setenv("MTVAD_MODELS", str(tmp_path))
    described = DeepLabSegmentation().describe()
    assert described["weights_sha256"].startswith("68a53978")  # the published file's checksum


def test_a_missing_runtime_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_litert(name, *args, **kwargs):
        if name.startswith("ai_edge_litert"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    teacher = DeepLabSegmentation(model=str(shared_path("models", "deeplabv3_257_mv_gpu.tflite")))
    with pytest.raises(TeacherError, match=r"pip install 'mtvad\[tflite\]'"):
        teacher.load()


@pytest.mark.parametrize("size, starts", [(257, [0]), (512, [0, 255]), (600, [0, 172, 343])])
def test_tiles_cover_the_frame(size, starts):
    assert _tile_starts(size) == starts
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s:s + TILE] = True
    assert covered.all()


def test_background_gate_gives_each_blob_its_majority_class_or_object():
    teacher = DeepLabSegmentation(gate="background", min_class_share=0.3)
    fg = np.zeros((1, 10, 20), np.uint8)
    fg[0, 1:5, 1:5] = 1  # blob A: mostly bicycle
    fg[0, 6:9, 10:18] = 1  # blob B: nothing classified
    classes = np.zeros((1, 10, 20), np.uint8)
    classes[0, 1:5, 1:4] = 2  # bicycle on 12 of 16 pixels
    classes[0, 1:2, 4:5] = 1  # one person pixel
    classes[0, 0, 0] = 1  # classified pixels outside every blob are dropped
    out = teacher._classify_blobs(fg, classes)[0]
    assert (out[1:5, 1:5] == 2).all() and (out[6:9, 10:18] == OBJECT_ID).all()
    assert out[fg[0] == 0].max() == 0


def test_deeplab_finds_people_on_real_ped2_frames():
    from mtvad.precompute.blocks import resize_frames
    from mtvad.precompute.datasets import open_dataset

    video = next(open_dataset("ped2", shared_path("data", "ped2")).videos("train"))
    frames = resize_frames(video.read(0, 2), (256, 256))
    teacher = DeepLabSegmentation(model=str(shared_path("models", "deeplabv3_257_mv_gpu.tflite")))
    teacher.load()
    seg = teacher(frames, 0)["seg"]
    ids, counts = np.unique(seg[seg > 0], return_counts=True)
    assert ids[counts.argmax()] == 1  # COCO person: a walkway of pedestrians
    assert set(ids) <= set(teacher.classes)


def test_pydnet_depth_is_normalised_and_nearer_at_the_bottom_of_ped2():
    from mtvad.precompute.blocks import resize_frames
    from mtvad.precompute.datasets import open_dataset

    video = next(open_dataset("ped2", shared_path("data", "ped2")).videos("train"))
    frames = resize_frames(video.read(0, 2), (256, 256))
    depth = PyDNetDepth(model=str(shared_path("models", "optimized_pydnet++.tflite")))(frames, 0)["depth"]
    assert depth.shape == (2, 256, 256) and depth.min() == 0 and depth.max() == 1
    assert depth[:, -64:].mean() > depth[:, :64].mean()  # the camera looks down at the ground


def test_normalise_per_frame_handles_constant_frames():
    d = np.stack([np.full((2, 2), 3.0), np.array([[1.0, 2.0], [3.0, 5.0]])])
    out = normalise_per_frame(d)
    assert np.all(out[0] == 0) and out[1].min() == 0 and out[1].max() == 1 and out[1, 0, 1] == 0.25
