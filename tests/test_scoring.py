"""Scores (Eq. 4), the scores file, smoothing (Eq. 5), calibration and fusion, on tiny random stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from scipy.signal import savgol_filter

from mtvad.errors import CheckpointError, ConfigError
from mtvad.scoring.postprocess import (
    NORMALISATION_LABELS,
    PostConfig,
    SmoothingConfig,
    effective_window,
    fill_invalid,
    fit_calibration,
    fuse,
    process,
    smooth,
)
from mtvad.scoring.reductions import CONTROLS
from mtvad.scoring.score import file_sha256, score
from mtvad.scoring.scores_file import BASELINE, FORMAT, ScoresError, is_scores_file, open_scores
from mtvad.store.access import open_store
from mtvad.store.schema import SCHEMA_VERSION
from mtvad.students.checkpoint import load_student
from mtvad.students.data import IMAGENET_MEAN, IMAGENET_STD
from tests.stores import make_store, train_one_step

pytestmark = pytest.mark.usefixtures("one_thread")

# ----------------------------------------------------------------------------------------- smoothing


def test_smoothing_equals_scipy_savgol_on_a_known_signal():
    t = np.arange(60, dtype=float)
    signal = np.sin(t / 5) + 0.3 * (t % 7 == 0)  # a wave with spikes
    assert np.allclose(smooth(signal, window=15, polyorder=2), savgol_filter(signal, 15, 2))
    assert np.allclose(smooth(signal), savgol_filter(signal, 15, 2))  # the defaults: 15 frames, order 2


def test_window_longer_than_the_video_falls_back_to_the_largest_odd_window():
    assert effective_window(6, 15, 2) == (5, 2)
    assert effective_window(7, 15, 2) == (7, 2)
    assert effective_window(4, 15, 3) == (3, 2)  # order lowered below the window
    assert effective_window(2, 15, 2) == (1, 0)
    x = np.array([1.0, 4.0, 2.0, 8.0, 5.0, 7.0])
    assert np.allclose(smooth(x, window=15, polyorder=2), savgol_filter(x, 5, 2))
    assert np.allclose(smooth(x[:2], window=15, polyorder=2), x[:2])  # a window of 1 leaves it as it is
    with pytest.raises(ConfigError):
        SmoothingConfig(window=14).validate()
    with pytest.raises(ConfigError):
        SmoothingConfig(window=5, polyorder=5).validate()


def test_invalid_frames_are_filled_from_the_nearest_valid_frame_for_smoothing_only():
    x = np.array([np.nan, 2.0, 3.0, 10.0, np.nan])
    valid = np.array([False, True, True, True, False])
    assert np.array_equal(fill_invalid(x, valid), [2.0, 2.0, 3.0, 10.0, 10.0])
    out = smooth(x, valid, window=3, polyorder=1)
    assert np.isnan(out[0]) and np.isnan(out[-1])
    assert np.allclose(out[1:4], savgol_filter([2.0, 2.0, 3.0, 10.0, 10.0], 3, 1)[1:4])


# -------------------------------------------------------------------------------- calibration, fusion


def _raw(train_values, test_values):
    mk = lambda a: (np.asarray(a, float), np.isfinite(np.asarray(a, float)))  # noqa: E731
    return {"train": {f"t{i}": {"a": mk(v), "b": mk(2 * np.asarray(v) + 5)} for i, v in enumerate(train_values)},
            "test": {f"s{i}": {"a": mk(v), "b": mk(3 * np.asarray(v))} for i, v in enumerate(test_values)}}


def test_calibration_uses_training_scores_only():
    rng = np.random.default_rng(0)
    train = [rng.normal(10, 2, 30), rng.normal(10, 2, 25)]
    post = PostConfig(window=5, polyorder=2, normalisation="train-zscore")
    a = process(_raw(train, [rng.normal(50, 9, 20)]), ["a", "b"], post)
    b = process(_raw(train, [rng.normal(-3, 0.1, 40), rng.normal(0, 1, 9)]), ["a", "b"], post)
    assert a.calibration.mean == b.calibration.mean and a.calibration.std == b.calibration.std
    assert a.threshold == b.threshold
    smoothed_train = np.concatenate([smooth(v, window=5, polyorder=2) for v in train])
    assert a.calibration.mean["a"] == pytest.approx(smoothed_train.mean())
    assert a.calibration.std["a"] == pytest.approx(smoothed_train.std())
    z = a.calibrated["test"]["s0"]
    assert np.allclose(z["a"], (a.smoothed["test"]["s0"]["a"] - smoothed_train.mean()) / smoothed_train.std())
    assert np.allclose(z["fused"], np.maximum(z["a"], z["b"]))  # either branch: the max
    fused_train = np.concatenate([a.calibrated["train"][v]["fused"] for v in ("t0", "t1")])
    assert a.threshold == pytest.approx(np.quantile(fused_train, 0.99))


def test_per_video_minmax_is_an_option_labelled_as_using_test_statistics():
    assert not PostConfig().uses_test_statistics
    post = PostConfig(window=5, polyorder=2, normalisation="per-video-minmax")
    assert post.uses_test_statistics and post.to_json()["uses_test_statistics"]
    assert "TEST STATISTICS" in post.to_json()["normalisation_label"]
    assert "no test statistic" in NORMALISATION_LABELS["train-zscore"]
    rng = np.random.default_rng(1)
    p = process(_raw([rng.normal(0, 1, 20)], [rng.normal(5, 3, 20)]), ["a", "b"], post)
    a = p.calibrated["test"]["s0"]["a"]
    assert np.nanmin(a) == 0 and np.nanmax(a) == 1
    assert p.calibration.to_json()["method"] == "per-video-minmax"
    with pytest.raises(ConfigError):
        PostConfig(normalisation="minmax").validate()


def test_fusion_is_nan_where_a_branch_cannot_score():
    out = fuse({"a": np.array([np.nan, 1.0, 2.0]), "b": np.array([0.0, 3.0, np.nan])})
    assert np.isnan(out[0]) and out[1] == 3.0 and np.isnan(out[2])
    with pytest.raises(ConfigError):
        fit_calibration({"a": [np.array([np.nan])]})


# ------------------------------------------------------------------------------------ the scores file


def test_scores_file_records_store_checkpoints_and_invalid_frames(paths):
    sf = open_scores(paths["scores"])
    store = open_store(paths["store"])
    a = sf.attrs
    assert is_scores_file(paths["scores"]) and a["format"] == FORMAT
    assert a["store"]["fingerprint"] == store.fingerprint and a["store"]["schema_version"] == SCHEMA_VERSION
    assert a["branches"] == ["appearance", "motion"] and a["rows"] == ["appearance", "motion", *CONTROLS]
    for b in ("appearance", "motion"):
        assert a["checkpoints"][b]["sha256"] == file_sha256(paths[b])
        assert a["checkpoints"][b]["config"]["data"]["store"] == str(paths["store"])
    assert sf.video_ids("train") == ["01", "02"] and sf.video_ids("test") == ["01", "02", "03"]
    for split in ("train", "test"):
        for vid in sf.video_ids(split):
            n = store.video(split, vid).n_frames
            s, v = sf.row(split, vid, "appearance")  # needs t-1 and t+1
            assert np.array_equal(v, (np.arange(n) >= 1) & (np.arange(n) <= n - 2))
            assert np.isnan(s[~v]).all() and np.isfinite(s[v]).all() and (s[v] > 0).all()
            s, v = sf.row(split, vid, "motion")  # frame 0 has no flow
            assert np.array_equal(v, np.arange(n) >= 1) and np.isnan(s[0]) and np.isfinite(s[1:]).all()
            s, v = sf.row(split, vid, BASELINE)
            flow = store.video(split, vid).flow_mag().sum(axis=(1, 2), dtype=np.float64)
            assert np.isnan(s[0]) and np.allclose(s[1:], flow[1:])
    assert np.array_equal(sf.label("test", "02"), store.video("test", "02").label())
    assert sf.label("train", "01") is None


def _manual_appearance_score(store, ckpt_path, vid, t):
    """Eq. 4 by hand: frames t-1, t ImageNet-normalised -> softmax vs one-hot seg of t+1, |diff| summed."""
    model, _, ckpt = load_student(ckpt_path)
    video = store.video("test", vid)
    frames = video.frames(slice(t - 1, t + 1)).astype(np.float32) / 255  # (2, H, W, 3)
    x = (frames - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    x = torch.from_numpy(x).permute(0, 3, 1, 2).reshape(1, 6, *frames.shape[1:3])
    with torch.no_grad():
        p = model(x).softmax(1)[0].numpy()
    onehot = np.eye(ckpt["n_classes"], dtype=np.float32)[video.seg(t + 1)].transpose(2, 0, 1)
    return np.abs(p - onehot).sum()


def _manual_motion_score(store, ckpt_path, vid, t):
    """Eq. 4 by hand: |student(frame t, (|cos|, |sin|, depth)) - flow magnitude x (seg > 0)| summed."""
    model, _, _ = load_student(ckpt_path)
    video = store.video("test", vid)
    frame = video.frames(t).astype(np.float32) / 255
    x = torch.from_numpy((frame - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32))
    ang = video.flow_ang(t)
    context = np.stack([np.abs(np.cos(ang)), np.abs(np.sin(ang)), video.depth(t)])[None].astype(np.float32)
    with torch.no_grad():
        pred = model(x.permute(2, 0, 1)[None], torch.from_numpy(context))[0, 0].numpy()
    return np.abs(pred - video.flow_mag(t, masked=True)).sum()


def test_scores_are_eq4_sum_of_student_teacher_differences(paths):
    sf = open_scores(paths["scores"])
    store = open_store(paths["store"])
    for t in (1, 5, 8):
        s = sf.row("test", "02", "appearance")[0][t]
        assert s == pytest.approx(_manual_appearance_score(store, paths["appearance"], "02", t), rel=1e-4)
        s = sf.row("test", "02", "motion")[0][t]
        assert s == pytest.approx(_manual_motion_score(store, paths["motion"], "02", t), rel=1e-4)
    # the stored maps are the per-pixel differences: they sum to the score (float16), NaN where invalid
    for b in ("appearance", "motion"):
        m = sf.map("test", "02", b).astype(np.float64)
        s, v = sf.row("test", "02", b)
        assert m.shape == (10, 32, 32) and np.isnan(m[~v]).all()
        assert np.allclose(m[v].sum(axis=(1, 2)), s[v], rtol=2e-3)
    assert sf.map("train", "01", "appearance") is None  # maps only for test frames


# ---------------------------------------------------------------------------------------- refusals


def test_checkpoint_of_another_store_is_refused(paths, tmp_path):
    with pytest.raises(CheckpointError, match="fingerprint"):
        score(str(paths["other"]), [paths["appearance"]], tmp_path / "s.zarr", progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_checkpoint_with_other_classes_is_refused(paths, tmp_path):
    # same teachers and resolution (same fingerprint), another class vocabulary
    make_store(tmp_path / "two.zarr", n_test=1, n_classes=2, masks=True)
    with pytest.raises(CheckpointError, match="classes"):
        score(str(tmp_path / "two.zarr"), [paths["appearance"]], tmp_path / "s.zarr", progress=False)


def test_two_checkpoints_of_one_branch_and_no_checkpoint_are_refused(paths, tmp_path):
    with pytest.raises(ConfigError, match="two appearance"):
        score(str(paths["store"]), [paths["appearance"], paths["appearance"]], tmp_path / "s.zarr", progress=False)
    with pytest.raises(ConfigError, match="no --checkpoint"):
        score(str(paths["store"]), [], tmp_path / "s.zarr", progress=False)


def test_an_existing_output_is_never_overwritten_unless_it_is_a_scores_file_and_asked(paths, tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ScoresError, match="not a vad scores file"):
        score(str(paths["store"]), [paths["motion"]], other, progress=False, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ScoresError, match="--overwrite"):
        score(str(paths["store"]), [paths["motion"]], paths["scores"], progress=False)


def test_a_store_without_labels_is_scored(paths, tmp_path):
    out = tmp_path / "s.zarr"
    store = paths["nolabels"]
    # the checkpoints belong to another store of the same teachers: same fingerprint, same classes
    r = score(str(store), [paths["motion"]], out, progress=False)
    sf = open_scores(out)
    assert r.branches == ["motion"] and sf.rows == ["motion", *CONTROLS]
    assert sf.label("test", "01") is None and not zarr.open_group(str(out), mode="r")["test/01"].attrs["has_labels"]


@pytest.mark.slow
def test_scores_of_a_single_branch_after_seg_target_training(tmp_path):
    """The appearance branch trained on the segmentation of frame t (Table 2 'Seg') scores frames 1..T-1."""
    store_path = tmp_path / "s.zarr"
    make_store(store_path, n_test=1, n_classes=3)
    train_one_step(store_path, tmp_path / "r", branch="appearance", target="seg")
    score(str(store_path), [tmp_path / "r" / "appearance" / "last.pt"], tmp_path / "o.zarr", progress=False)
    sf = open_scores(tmp_path / "o.zarr")
    assert np.array_equal(sf.row("test", "01", "appearance")[1], np.arange(10) >= 1)
    assert sf.attrs["checkpoints"]["appearance"]["target_offset"] == 0

