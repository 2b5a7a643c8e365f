"""Frame-score reductions, the teacher-only controls, leave-one-video-out calibration, the appearance map's frame
in the pixel AUC and the AUC per anomaly kind: each by hand, on tiny maps, stores and labelled sets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import zarr
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from mtvad.cli.main import app
from mtvad.errors import ConfigError
from mtvad.scoring.evaluate import evaluate, frame_kinds, per_kind_auc, pixel_frames
from mtvad.scoring.postprocess import PostConfig, fit_calibration, fuse, process
from mtvad.scoring.reductions import (
    CONTROLS,
    REDUCTIONS,
    UNCLASSIFIED,
    control_scores,
    keys_to_size,
    object_keys,
    patch_edges,
    reduce_maps,
    teacher_foreground,
    to_size,
)
from mtvad.scoring.scores_file import FORMAT_VERSION, open_scores
from mtvad.store.access import open_store
from mtvad.students.branches import APPEARANCE, MOTION
from tests.stores import make_store

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


# ------------------------------------------------------------------------------------------ reductions


def _reduce(m, fg=None):
    m = torch.as_tensor(np.asarray(m, np.float32))[None]
    fg = torch.ones_like(m, dtype=torch.bool) if fg is None else torch.as_tensor(np.asarray(fg, bool))[None]
    return {k: float(v[0]) for k, v in reduce_maps(m, fg).items()}


def test_sum_and_patch_max_by_hand_on_an_8x8_map():
    m = np.zeros((8, 8))
    m[0, 0] = 3.0  # patch (0, 0): sum 3, the largest single pixel
    m[4:6, 2:4] = 1.0  # patch (2, 1): four pixels of 1, sum 4: the largest patch sum
    m[7, 7] = 2.5  # patch (3, 3): 2.5
    r = _reduce(m)
    assert r["sum"] == 3 + 4 + 2.5
    assert r["patch-max"] == 4.0  # the 2x2 patch with the largest sum, not the largest pixel
    # spread thinly over the whole frame the same total gives a small patch max (background noise)
    assert _reduce(np.full((8, 8), 9.5 / 64)) == pytest.approx({"sum": 9.5, "foreground": 9.5, "patch-max": 9.5 / 16,
                                                                "object-mean": 9.5 / 64, "object-sum": 9.5})


def test_patch_edges_split_any_side_into_four_near_equal_patches():
    assert patch_edges(8) == [0, 2, 4, 6, 8] and patch_edges(256) == [0, 64, 128, 192, 256]
    assert patch_edges(10) == [0, 2, 5, 8, 10]  # round(linspace(0, 10, 5)) = 0, 2.5 -> 2, 5, 7.5 -> 8, 10
    m = np.zeros((6, 10))
    m[2:3, 5:8] = 1.0  # rows [2, 3) are patch row 1 (edges 0 2 3 4 6), columns [5, 8) patch column 2
    m[0, 0] = 2.0
    assert _reduce(m)["patch-max"] == 3.0


def test_foreground_ignores_background_noise():
    rng = np.random.default_rng(0)
    fg = np.zeros((8, 8), bool)
    fg[2:4, 2:5] = True
    objects = np.where(fg, 2.0, 0.0)
    quiet = objects + np.where(fg, 0, rng.uniform(0, 0.01, (8, 8)))
    noisy = objects + np.where(fg, 0, rng.uniform(0, 1.0, (8, 8)))
    a, b = _reduce(quiet, fg), _reduce(noisy, fg)
    assert a["foreground"] == b["foreground"] == pytest.approx(2.0 * 6)
    assert b["sum"] > a["sum"] + 10  # the sum grows with the background noise, the foreground sum does not


def test_object_scores_by_hand_the_unusual_object_wins_however_many_walk_beside_it():
    # a 50x50 map: MIN_OBJECT_SHARE (4e-4) of it is 1 pixel, so every object counts
    m, fg = np.zeros((50, 50)), np.zeros((50, 50), bool)
    fg[10:14, 10:12] = True  # a walker: 8 pixels of 0.5 (mean 0.5, sum 4)
    m[10:14, 10:12] = 0.5
    fg[30:36, 30:34] = True  # the unusual object: 24 pixels, mean 2 (half of 1, half of 3), sum 48
    m[30:33, 30:34], m[33:36, 30:34] = 1.0, 3.0
    m[0, 40] = 9.0  # a hot pixel off the foreground: no object, no score
    alone = _reduce(m, fg)
    assert alone["object-mean"] == pytest.approx(2.0) and alone["object-sum"] == pytest.approx(48.0)
    crowd_m, crowd_fg = m.copy(), fg.copy()
    for k in range(6):  # six more walkers, apart from each other: the sums grow, the object scores do not
        crowd_fg[2 + 7 * k:6 + 7 * k, 44:46] = True
        crowd_m[2 + 7 * k:6 + 7 * k, 44:46] = 0.5
    crowd = _reduce(crowd_m, crowd_fg)
    assert crowd["object-mean"] == alone["object-mean"] and crowd["object-sum"] == alone["object-sum"]
    assert crowd["foreground"] == pytest.approx(alone["foreground"] + 6 * 4)
    # a well-predicted walker (map 0) touching the unusual object merges with it: 24 + 8 pixels, mean 48 / 32
    fg[26:30, 30:32] = True
    assert _reduce(m, fg)["object-mean"] == pytest.approx(48 / 32)
    assert _reduce(np.ones((50, 50)), np.zeros((50, 50), bool))["object-mean"] == 0.0  # no object: 0


def test_touching_objects_of_two_classes_are_two_objects_and_coarse_maps_keep_small_ones():
    m = np.zeros((1, 20, 20))
    keys = np.zeros((1, 20, 20), np.uint8)
    keys[0, 5:15, 2:10] = 1  # a crowd of persons, well predicted
    keys[0, 5:15, 10:13] = 2  # a bicycle touching it, badly predicted
    m[0, 5:15, 10:13] = 2.0
    fg = keys > 0
    t = lambda a: torch.as_tensor(a)  # noqa: E731
    by_class = {k: float(v[0]) for k, v in reduce_maps(t(m), t(fg), t(keys)).items()}
    assert by_class["object-mean"] == 2.0  # the bicycle alone, not diluted by the crowd beside it
    assert _reduce(m[0], fg[0])["object-mean"] == pytest.approx(60 / 110)  # one class: one merged object
    # to a coarser map: the nearest pixel's class, and a small object the nearest pixel misses stays, classless
    seg = np.zeros((1, 8, 8), np.uint8)
    seg[0, 0:4, 0:4] = 3
    flow = np.zeros((1, 8, 8), np.float32)
    flow[0, 5, 5] = 2.0  # one moving pixel, no class
    keys8 = object_keys(seg, flow)
    assert keys8[0, 5, 5] == UNCLASSIFIED and keys8[0, 0, 0] == 3 and keys8[0, 7, 7] == 0
    small = keys_to_size(keys8, (4, 4))[0]
    assert small[0:2, 0:2].tolist() == [[3, 3], [3, 3]] and small[2, 2] == UNCLASSIFIED and small[3, 3] == 0


def test_objects_below_the_smallest_object_size_are_dropped():
    m, fg = np.zeros((100, 100)), np.zeros((100, 100), bool)  # 4e-4 of 10,000 pixels: 4 pixels at least
    fg[0, 0:3], m[0, 0:3] = True, 5.0  # 3 pixels: too small
    fg[50:52, 50:52], m[50:52, 50:52] = True, 1.0  # 4 pixels: an object
    assert _reduce(m, fg)["object-mean"] == 1.0 and _reduce(m, fg)["object-sum"] == 4.0


def test_teacher_foreground_is_seg_or_flow_above_one_pixel_and_any_pixel_under_a_coarser_one():
    seg = np.zeros((1, 4, 4), np.uint8)
    flow = np.zeros((1, 4, 4), np.float32)
    seg[0, 0, 0] = 2
    flow[0, 3, 3], flow[0, 3, 0] = 1.5, 1.0  # 1.0 is not above the threshold
    fg = teacher_foreground(seg, flow)
    assert fg[0].nonzero().tolist() == [[0, 0], [3, 3]]
    assert to_size(fg, (2, 2))[0].tolist() == [[True, False], [False, True]]  # one pixel of four is enough


def test_each_branch_says_where_its_student_predicts_an_object():
    probs = torch.tensor([[[[0.7, 0.2]], [[0.3, 0.8]]]])  # (1, 2 classes, 1, 2): background, then class 1
    assert APPEARANCE.predicted_foreground(probs, 1.0).tolist() == [[[False, True]]]
    flow = torch.tensor([[[[0.4, 0.6, 3.0]]]])
    assert MOTION.predicted_foreground(flow, 0.5).tolist() == [[[False, True, True]]]  # above 1 store px


# --------------------------------------------------------------------------------------------- controls


def _by_hand(m, fg, keys=None):
    """{reduction: (n,)} of (n, H, W) maps with numpy, H, W multiples of 4 here; objects one by one as masks, the
    regions of each class of `keys` (default: the foreground, one class)."""
    from scipy import ndimage

    n, h, w = m.shape
    keys = fg.astype(np.uint8) if keys is None else keys
    patches = m.reshape(n, 4, h // 4, 4, w // 4).sum(axis=(2, 4)).reshape(n, 16)
    means, sums = np.zeros(n), np.zeros(n)
    for t in range(n):
        for key in set(np.unique(keys[t])) - {0}:
            labels, k = ndimage.label(keys[t] == key, structure=np.ones((3, 3)))
            for obj in (labels == i for i in range(1, k + 1)):  # every object counts at 16x16 (4e-4 x 256 < 1)
                means[t], sums[t] = max(means[t], m[t][obj].mean()), max(sums[t], m[t][obj].sum())
    return {"sum": m.sum(axis=(1, 2)), "foreground": (m * fg).sum(axis=(1, 2)), "patch-max": patches.max(axis=1),
            "object-mean": means, "object-sum": sums}


def test_controls_by_hand_on_a_tiny_store(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_train=1, n_test=1, n_frames=6, resolution=(16, 16), n_classes=3)
    video = store.video("test", "01")
    seg, flow = video.seg(), video.flow_mag()
    fg = (seg > 0) | (flow > 1)
    keys = np.where(seg > 0, seg, np.where(flow > 1, 255, 0))  # moving pixels of no class: a class of their own
    out = control_scores(seg, flow, flow_valid_from=1)
    assert set(out) == set(CONTROLS)
    maps = {"raw_flow": flow.astype(np.float64), "masked_flow": flow * (seg > 0),
            "foreground_area": (seg > 0).astype(np.float64)}
    for name, m in maps.items():
        reduced, valid = out[name]
        expected = _by_hand(m, fg, keys)
        first = 0 if name == "foreground_area" else 1  # frame 0 has no flow
        assert valid.tolist() == [t >= first for t in range(6)], name
        for r in REDUCTIONS:
            assert np.isnan(reduced[r][:first]).all()
            assert np.allclose(reduced[r][first:], expected[r][first:], rtol=1e-6), (name, r)
    # the foreground area counts the object pixels; the masked flow is the raw flow on them
    assert np.allclose(out["foreground_area"][0]["sum"], (seg > 0).sum(axis=(1, 2)))
    assert np.allclose(out["masked_flow"][0]["sum"][1:], [flow[t][seg[t] > 0].sum() for t in range(1, 6)],
                       rtol=1e-6)


def test_the_scores_file_holds_every_row_under_every_reduction(paths):
    sf = open_scores(paths["scores"])
    store = open_store(paths["store"])
    assert sf.attrs["format_version"] == FORMAT_VERSION == 2
    assert sf.reductions == list(REDUCTIONS) and sf.controls == list(CONTROLS)
    assert sf.rows == ["appearance", "motion", *CONTROLS]
    group = zarr.open_group(str(paths["scores"]), mode="r")["test/02"]
    assert {f"{row}@{r}" for row in sf.rows for r in REDUCTIONS} <= set(group.array_keys())
    video = store.video("test", "02")
    seg, flow = video.seg(), video.flow_mag()
    expected = _by_hand(flow * (seg > 0), (seg > 0) | (flow > 1), np.where(seg > 0, seg, np.where(flow > 1, 255, 0)))
    for r in REDUCTIONS:  # a control, read back
        s, v = sf.row("test", "02", "masked_flow", r)
        assert np.allclose(s[1:], expected[r][1:], rtol=1e-6) and np.isnan(s[0]) and not v[0]
    for b in ("appearance", "motion"):  # the branch reductions of the stored maps (float16)
        m = sf.map("test", "02", b).astype(np.float64)
        _, valid = sf.row("test", "02", b)
        by_hand = _by_hand(np.nan_to_num(m), np.ones_like(m, bool))
        assert np.allclose(sf.row("test", "02", b, "sum")[0][valid], by_hand["sum"][valid], rtol=2e-3)
        assert np.allclose(sf.row("test", "02", b, "patch-max")[0][valid], by_hand["patch-max"][valid], rtol=2e-3)


def _prediction(store, ckpt_path, vid, t):
    """(anomaly map (h, w), prediction (1, C, h, w)) of one sample, through the branch's own batch and predict."""
    from mtvad.students.branches import get_branch
    from mtvad.students.checkpoint import load_student
    from mtvad.students.data import InMemoryDataset

    model, config, ckpt = load_student(ckpt_path)
    branch = get_branch(ckpt["branch"])
    data = InMemoryDataset(store, "test", [vid], branch.spec(config, store.resolution), int(ckpt["n_classes"]))
    i = int(np.flatnonzero(data.index[:, 1] == t)[0])
    inputs, target = branch.batch(data.__getitems__([i]), config, int(ckpt["n_classes"]), None, torch.device("cpu"))
    with torch.inference_mode():
        pred = branch.predict(model.eval(), inputs)
    return branch.anomaly_map(pred, target)[0].double().numpy(), pred


def test_the_foreground_score_is_the_map_over_teacher_foreground_of_its_frame_or_student_foreground(paths):
    sf = open_scores(paths["scores"])
    store = open_store(paths["store"])
    video = store.video("test", "02")
    seg, flow = video.seg(), video.flow_mag()
    student_counts = 0
    for branch in ("appearance", "motion"):
        offset = sf.target_offset(branch)
        assert offset == (1 if branch == "appearance" else 0)
        for t in (1, 4, 8):
            amap, pred = _prediction(store, paths[branch], "02", t)
            u = t + offset  # the frame the map is about
            teacher = (seg[u] > 0) | (flow[u] > 1)
            student = (pred.argmax(1)[0] > 0 if branch == "appearance" else pred[0, 0] > 1.0).numpy()
            got = sf.row("test", "02", branch, "foreground")[0][t]
            assert got == pytest.approx((amap * (teacher | student)).sum(), rel=1e-5), (branch, t)
            student_counts += not np.isclose((amap * teacher).sum(), got, rtol=1e-5)
            if offset:  # the teacher foreground of frame t instead of t + 1 gives another score
                other = (seg[t] > 0) | (flow[t] > 1)
                assert not np.isclose((amap * (other | student)).sum(), got, rtol=1e-5), t
    assert student_counts  # the student's foreground adds pixels on some frame (the test can see it)


# ---------------------------------------------------------------------------------------- calibration


def test_train_percentile_by_hand():
    x = np.arange(101, dtype=float)  # median 50, 99th percentile 99
    cal = fit_calibration({"a": {"v": x}}, "train-percentile")
    assert cal.loc["a"] == 50 and cal.scale["a"] == pytest.approx(49)
    assert cal.apply("a", np.array([50.0, 99.0])) == pytest.approx([0, 1])
    constant = fit_calibration({"a": {"v": np.ones(5)}}, "train-percentile")
    assert constant.scale["a"] == 1.0  # nothing spreads: shifted only


def test_leave_one_video_out_calibration_by_hand_on_three_videos():
    videos = {"v1": np.array([0.0, 2.0]), "v2": np.array([4.0, 6.0]), "v3": np.array([8.0, 10.0])}
    q = 0.99
    cal = fit_calibration({"a": videos}, "train-loo", q)

    def percentile(values):  # numpy's linear interpolation: between the last two sorted values
        values = np.sort(values)
        pos = q * (len(values) - 1)
        lo = int(pos)
        return values[lo] + (pos - lo) * (values[lo + 1] - values[lo])

    # v1 held out: the others are 4 6 8 10, median 7, 99th percentile 9.94 -> scale 2.94
    assert cal.held_out["a"]["v1"][0] == 7.0
    held = {"v1": (7.0, percentile([4, 6, 8, 10]) - 7), "v2": (5.0, percentile([0, 2, 8, 10]) - 5),
            "v3": (3.0, percentile([0, 2, 4, 6]) - 3)}
    assert held["v1"][1] == pytest.approx(2.94) and held["v2"][1] == pytest.approx(4.94)
    calibrated = np.concatenate([(videos[v] - held[v][0]) / held[v][1] for v in videos])
    # v3 is far from v1 and v2: held out its frames land at (8 - 3) / 2.94 = 1.701 and (10 - 3) / 2.94 = 2.381,
    # the two largest of the six, so P = 1.701 + 0.95 (2.381 - 1.701) = 2.347
    spread = percentile(calibrated)
    assert spread == pytest.approx(2.347, abs=1e-3) and cal.spread["a"] == pytest.approx(spread)
    all_values = np.concatenate(list(videos.values()))
    assert cal.loc["a"] == 5.0 and cal.scale["a"] == pytest.approx((percentile(all_values) - 5.0) * spread)
    for v, (loc, scale) in held.items():  # each training video keeps its held-out statistics, widened by P
        assert cal.held_out["a"][v] == pytest.approx((loc, scale * spread))
    # in process(): training videos calibrated with the others' statistics, test videos with all of them; the
    # threshold is the quantile of those held-out training scores
    mk = lambda a: (np.asarray(a, float), np.ones(len(a), bool))  # noqa: E731
    raw = {"train": {v: {"a": mk(x), "b": mk(x)} for v, x in videos.items()},
           "test": {"s": {"a": mk([5.0, 20.0]), "b": mk([0.0, 0.0])}}}
    p = process(raw, ["a", "b"], PostConfig(window=1, polyorder=0, normalisation="train-loo"))
    loc, scale = held["v3"][0], held["v3"][1] * spread
    assert p.calibrated["train"]["v3"]["a"] == pytest.approx((videos["v3"] - loc) / scale)
    assert p.calibrated["test"]["s"]["a"] == pytest.approx((np.array([5.0, 20.0]) - 5.0) / cal.scale["a"])
    train_fused = np.concatenate([p.calibrated["train"][v]["fused"] for v in videos])
    assert p.threshold == pytest.approx(np.quantile(train_fused, 0.99))
    # one training video: nothing to leave out, the scale is the plain percentile's
    one = fit_calibration({"a": {"v1": videos["v1"]}}, "train-loo")
    assert one.spread["a"] == 1.0 and one.held_out["a"] == {}


def test_fusion_max_or_sum_and_bad_options_refused():
    a, b = np.array([1.0, -2.0, np.nan]), np.array([0.5, 3.0, 1.0])
    assert fuse({"a": a, "b": b})[:2].tolist() == [1.0, 3.0]
    assert fuse({"a": a, "b": b}, "sum")[:2].tolist() == [1.5, 1.0] and np.isnan(fuse({"a": a, "b": b}, "sum")[2])
    for bad in ({"fusion": "mean"}, {"reduction": "max"}, {"normalisation": "loo"}):
        with pytest.raises(ConfigError):
            PostConfig(**bad).validate()


# ------------------------------------------------------------------------------ pixel AUC, the map's frame


def test_pixel_frames_are_those_whose_every_map_is_counted():
    counted = np.array([False, True, True, True, False])
    assert pixel_frames(counted, {"appearance": 1, "motion": 0}).tolist() == [2, 3]
    assert pixel_frames(counted, {"motion": 0}).tolist() == [1, 2, 3]


def test_the_appearance_map_is_compared_with_the_mask_of_the_frame_it_is_about(paths, tmp_path, monkeypatch):
    copy = tmp_path / "scores.zarr"
    shutil.copytree(paths["scores"], copy)
    store = open_store(paths["store"])
    group = zarr.open_group(str(copy), mode="r+")
    masks = {v: store.video("test", v).mask() for v in ("01", "02", "03")}
    for vid, mask in masks.items():  # the map of sample t is the mask of frame t + 1 (seg-future target)
        shifted = np.zeros_like(mask)
        shifted[:-1] = mask[1:]
        group[f"test/{vid}/appearance_map"][:] = shifted.astype(np.float16)
    sf = open_scores(copy)
    assert sf.target_offset("appearance") == 1
    ev = evaluate(sf, store, PostConfig(window=5, polyorder=2), pixel_size=32)
    assert ev.results["rows"]["appearance"]["pixel_auc"] == 1.0
    # compared with the mask of frame t instead (as before the fix) the same maps miss the onset frames
    maps, labels = [], []
    for vid, mask in masks.items():
        frames = np.flatnonzero(ev.counted[vid])
        maps.append(sf.map("test", vid, "appearance")[frames].astype(np.float32).ravel())
        labels.append(mask[frames].ravel())
    assert roc_auc_score(np.concatenate(labels), np.concatenate(maps)) < 1.0
    assert set(ev.results["pixel"]["auc"]) == {"appearance", "motion", "fused", *CONTROLS}
    from mtvad.scoring.scores_file import ScoresFile

    monkeypatch.setattr(ScoresFile, "target_offset", lambda self, branch: 0)  # the map taken as about frame t
    before = evaluate(sf, store, PostConfig(window=5, polyorder=2), pixel_size=32).results
    assert before["rows"]["appearance"]["pixel_auc"] < 1.0


# ------------------------------------------------------------------------------------------ per kind


def test_per_kind_auc_on_a_hand_made_labelled_set():
    labels = {"v": np.array([0, 0, 0, 1, 1, 1, 1, 0])}
    counted = {"v": np.array([True] * 7 + [False])}  # the last (normal) frame is not counted
    kinds = {"v": [None, None, None, "a", "a", "b", "b", None]}
    test = {"v": {"x": np.array([1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 2.5, 99.0])}}
    r = per_kind_auc(labels, counted, test, ["x"], kinds, "hand")
    assert r["frames"] == {"a": 2, "b": 2} and r["normal_frames"] == 3
    assert r["auc"]["x"]["a"] == 1.0  # 4, 5 above 1, 2, 3
    assert r["auc"]["x"]["b"] == pytest.approx(2 / 6)  # 0 beats none; 2.5 beats 1 and 2
    assert "note" in per_kind_auc(labels, counted, test, ["x"], {}, None)


def test_vad_eval_prints_the_auc_per_kind_of_a_kinds_file_for_every_row(paths, tmp_path):
    store = open_store(paths["store"])
    videos = {}
    for k, vid in enumerate(("01", "02", "03")):  # kinds by folder name, matched to the store's videos by number
        lab = store.video("test", vid).label()
        videos[f"Test{k + 1:03d}"] = {"frames": [("runner" if t % 2 else "cart") if lab[t] else None
                                                for t in range(len(lab))]}
    kinds_file = tmp_path / "anomaly_kinds.json"
    kinds_file.write_text(json.dumps({"videos": videos}))
    kinds, source = frame_kinds(open_scores(paths["scores"]), store, kinds_file)
    assert kinds["03"] == videos["Test003"]["frames"] and source == str(kinds_file)
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["eval", "--scores", str(paths["scores"]), "--store", str(paths["store"]), "--kinds",
                              str(kinds_file), "--reduction", "patch-max", "--calibration", "train-loo",
                              "--fusion", "sum", "--out", str(out)])
    assert res.exit_code == 0, res.output
    results = json.loads(out.read_text())
    assert results["reduction"] == "patch-max" and results["postprocess"]["fusion"] == "sum"
    assert results["postprocess"]["normalisation"] == "train-loo"
    per_kind = results["per_kind"]
    assert set(per_kind["auc"]) == {"fused", "appearance", "motion", *CONTROLS}
    assert set(per_kind["frames"]) == {"cart", "runner"}
    assert "AUC per anomaly kind" in res.output and "runner" in res.output and "cart (" in res.output
    ev = evaluate(open_scores(paths["scores"]), store, PostConfig(reduction="patch-max", normalisation="train-loo",
                                                                  fusion="sum"), kinds_file=kinds_file)
    assert per_kind["auc"] == json.loads(json.dumps(ev.results["per_kind"]["auc"]))
    assert "fused (sum of branches)" in res.output


def test_the_synthetic_reader_puts_the_kind_of_every_frame_into_the_video_meta(tmp_path):
    from mtvad.precompute.datasets.ucsd import Synth
    from mtvad.precompute.synth.dataset import generate

    generate(tmp_path / "synth", seed=0, small=True)
    written = json.loads((tmp_path / "synth" / "Test" / "anomaly_kinds.json").read_text())["videos"]
    test = list(Synth(tmp_path / "synth").videos("test"))
    assert test and all(v.meta["anomaly_kinds"] == written[v.meta["folder"]]["frames"] for v in test)
    assert all((np.array([k is not None for k in v.meta["anomaly_kinds"]]) == v.labels.astype(bool)).all()
               for v in test)
    assert all("anomaly_kinds" not in v.meta for v in Synth(tmp_path / "synth").videos("train"))
