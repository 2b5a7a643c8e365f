"""Metrics against hand-computed cases, and `vad eval` on tiny scored stores (refusals included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from mtvad.cli.main import app
from mtvad.scoring.evaluate import EvaluationError, evaluate, fmt
from mtvad.scoring.metrics import eer, macro_auc, micro_auc, rates_at
from mtvad.scoring.postprocess import PostConfig
from mtvad.scoring.reductions import CONTROLS
from mtvad.scoring.score import score
from mtvad.scoring.scores_file import BASELINE, ScoresError, open_scores
from mtvad.store.access import open_store
from tests.conftest import one_line_error
from tests.stores import scores_with_maps

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


# ------------------------------------------------------------------------------------ by hand


def test_micro_and_macro_auc_on_a_hand_made_three_video_example():
    labels = {"v1": np.array([0, 0, 1, 1]), "v2": np.array([0, 1, 0, 1]), "v3": np.array([1, 1, 1])}
    scores = {"v1": np.array([0.1, 0.2, 0.3, 0.4]),  # AUC 1
              "v2": np.array([0.1, 0.2, 0.3, 0.4]),  # positives 0.2, 0.4 vs negatives 0.1, 0.3: 3 of 4 pairs
              "v3": np.array([5.0, 6.0, 7.0])}  # all anomalous: no ROC
    macro, per_video, skipped = macro_auc(labels, scores)
    assert per_video == {"v1": 1.0, "v2": 0.75, "v3": None} and skipped == ["v3"]
    assert macro == pytest.approx((1.0 + 0.75) / 2)
    # micro: 7 positives x 4 negatives = 28 pairs; won 26 (ties 0.3/0.3 and 0.2/0.2 count one half each)
    assert micro_auc(list(labels.values()), list(scores.values())) == pytest.approx(26 / 28)
    assert micro_auc([np.array([1, 1])], [np.array([0.3, 0.1])]) is None


def test_eer_by_hand():
    # one positive among 4, ranked second: the ROC goes (0,0) (1/3,0) (1/3,1) (2/3,1) (1,1); FPR = FNR at 1/3
    assert eer(np.array([0, 0, 0, 1]), np.array([0.1, 0.2, 0.4, 0.3])) == pytest.approx(1 / 3)
    assert eer(np.array([0, 1]), np.array([0.1, 0.2])) == 0.0  # separable
    assert eer(np.array([0, 1]), np.array([0.2, 0.1])) == 1.0  # inverted
    assert eer(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9])) == pytest.approx(0.5)
    assert eer(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_rates_at_a_threshold():
    r = rates_at(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]), 0.5)
    assert r == {"tpr": 0.5, "fpr": 0.5, "flagged": 0.5}


# ---------------------------------------------------------------------------- on a scores file


def test_evaluation_counts_only_frames_every_row_can_score(paths):
    ev = evaluate(open_scores(paths["scores"]), open_store(paths["store"]), PostConfig(window=5, polyorder=2))
    r = ev.results
    assert r["frames"]["counted"] == 3 * 8 and r["frames"]["excluded_invalid"] == 3 * 2  # frames 0 and 9 out
    for vid, c in ev.counted.items():
        assert not c[0] and not c[-1] and c[1:-1].all()
    assert set(r["rows"]) == {"fused", "appearance", "motion", *CONTROLS}
    # test video 03 is all anomalous: skipped in the macro AUC, listed, still in the micro AUC
    assert r["macro_skipped"] == ["03"] and r["rows"]["fused"]["per_video_auc"]["03"] is None
    for row, m in r["rows"].items():
        per = [a for a in m["per_video_auc"].values() if a is not None]
        assert m["macro_auc"] == pytest.approx(np.mean(per))
        assert 0 <= m["micro_auc"] <= 1 and 0 <= m["eer"] <= 1 and 0 <= m["pixel_auc"] <= 1
    assert r["pixel"]["size"] == [64, 64] and r["pixel"]["pixels"] == 21 * 64 * 64  # frames 2-8: every map counted
    assert not r["postprocess"]["uses_test_statistics"]
    json.dumps(r)  # JSON-able


def test_pixel_auc_is_one_when_the_map_is_the_mask(paths, tmp_path):
    import shutil

    copy = tmp_path / "scores.zarr"
    shutil.copytree(paths["scores"], copy)
    store = open_store(paths["store"])
    group = zarr.open_group(str(copy), mode="r+")
    for vid in ("01", "02", "03"):
        group[f"test/{vid}/appearance_map"][:] = _next(store.video("test", vid).mask()).astype(np.float16)
    ev = evaluate(open_scores(copy), store, PostConfig(window=5, polyorder=2), pixel_size=16)
    assert ev.results["rows"]["appearance"]["pixel_auc"] == 1.0
    assert ev.results["pixel"]["size"] == [16, 16]


def test_the_flow_baseline_finds_the_anomalous_square_by_pixel_and_by_frame(paths):
    # the store's anomalous square moves ANOMALY_FLOW px faster than anything else (tests/stores.py): the teacher
    # flow alone ranks its pixels above all others, and the frames that hold it above those that do not
    r = evaluate(open_scores(paths["scores"]), open_store(paths["store"]), PostConfig(window=1, polyorder=0)).results
    baseline = r["rows"][BASELINE]
    assert baseline["pixel_auc"] > 0.99, baseline
    assert baseline["micro_auc"] > 0.99 and baseline["eer"] < 0.05, baseline
    assert r["pixel"]["anomalous_pixels"] == 64 * 4 * (7 + 6 + 7)  # the 8x8 square at 64x64, on frames 2-8


def _next(mask):
    """The appearance map of sample t is about frame t + 1 (seg-future): the masks one frame earlier."""
    return np.concatenate([mask[1:], mask[-1:]])


def _per_pixel_training_mean(scores, branch):
    """Eq. 4's score is a map's sum: the mean training score over the map's pixels is the mean per-pixel activation."""
    values = np.concatenate([scores.row("train", v, branch)[0] for v in scores.video_ids("train")])
    h, w = scores.attrs["map_sizes"][branch]
    return np.nanmean(values) / (h * w)


def test_the_fused_pixel_map_is_the_max_of_the_branch_maps_over_their_training_means(paths, tmp_path):
    store, post = open_store(paths["store"]), PostConfig(window=5, polyorder=2)
    # both maps are the mask of their frame
    both = scores_with_maps(paths, tmp_path / "a", appearance=_next, motion=lambda m: 2 * m)
    auc = {row: m["pixel_auc"] for row, m in evaluate(both, store, post).results["rows"].items()}
    assert auc["appearance"] == auc["motion"] == auc["fused"] == 1.0
    # appearance: the mask; motion: its complement, scaled so that after division by the training means it is
    # below (then above) the appearance map: the fused map follows the appearance map (then the motion map)
    scores = open_scores(paths["scores"])
    ratio = _per_pixel_training_mean(scores, "motion") / _per_pixel_training_mean(scores, "appearance")
    for factor, fused in ((0.5, 1.0), (2.0, 0.0)):
        sf = scores_with_maps(paths, tmp_path / str(factor), appearance=_next,
                              motion=lambda m: factor * ratio * ~m)
        r = evaluate(sf, store, post).results
        assert r["rows"]["appearance"]["pixel_auc"] == 1.0 and r["rows"]["motion"]["pixel_auc"] == 0.0
        assert r["rows"]["fused"]["pixel_auc"] == fused, factor
        assert r["pixel"]["per_pixel_training_mean"]["motion"] == pytest.approx(
            _per_pixel_training_mean(scores, "motion"), rel=1e-6)


def test_without_store_labels_come_from_the_scores_file_and_no_pixel_auc(paths):
    with_store = evaluate(open_scores(paths["scores"]), open_store(paths["store"]))
    without = evaluate(open_scores(paths["scores"]))
    assert without.results["rows"]["fused"]["micro_auc"] == with_store.results["rows"]["fused"]["micro_auc"]
    assert "give --store" in without.results["pixel"]["note"]
    assert "pixel_auc" not in without.results["rows"]["fused"]


def test_min_max_results_are_labelled(paths):
    r = evaluate(open_scores(paths["scores"]), post=PostConfig(normalisation="per-video-minmax")).results
    assert r["postprocess"]["uses_test_statistics"] and "TEST STATISTICS" in r["postprocess"]["normalisation_label"]


# ------------------------------------------------------------------------------------------ CLI


def test_vad_eval_prints_micro_and_macro_and_writes_json(paths, tmp_path):
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["eval", "--scores", str(paths["scores"]), "--store", str(paths["store"]),
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "micro AUC" in res.output and "macro AUC" in res.output and "raw teacher flow" in res.output
    assert "skips 1 video" in res.output and "03" in res.output
    written = json.loads(out.read_text())
    expected = evaluate(open_scores(paths["scores"]), open_store(paths["store"])).results  # the command's defaults
    assert written["rows"] == json.loads(json.dumps(expected["rows"])) and written["frames"] == expected["frames"]
    for row, m in expected["rows"].items():  # each row printed with its numbers
        printed = next(line for line in res.output.splitlines() if m["title"] in line)
        for key in ("micro_auc", "macro_auc", "eer", "pixel_auc"):
            assert fmt(m[key]) in printed, (row, key, printed)


def test_vad_eval_refuses_a_store_without_labels_and_scores_of_another_store(paths, tmp_path):
    out = tmp_path / "nolabels_scores.zarr"
    score(str(paths["nolabels"]), [paths["motion"]], out, progress=False)  # scoring works without labels
    line = one_line_error(runner.invoke(app, ["eval", "--scores", str(out)]))
    assert "no frame labels" in line
    line = one_line_error(runner.invoke(app, ["eval", "--scores", str(out), "--store", str(paths["nolabels"])]))
    assert "no frame labels" in line
    line = one_line_error(runner.invoke(app, ["eval", "--scores", str(paths["scores"]), "--store",
                                               str(paths["other"])]))
    assert "fingerprint" in line
    with pytest.raises(ScoresError, match="videos"):  # same fingerprint, other videos
        evaluate(open_scores(out), open_store(paths["store"]))
    line = one_line_error(runner.invoke(app, ["eval", "--scores", str(tmp_path / "missing.zarr")]))
    assert "no scores file" in line
    line = one_line_error(runner.invoke(app, ["eval", "--scores", str(paths["scores"]), "--window", "4"]))
    assert "odd" in line


def test_evaluation_and_scores_errors_are_one_line_refusals_of_every_command(paths, tmp_path):
    # an EvaluationError raised deep in the pixel metrics and a ScoresError of a folder that is not a scores
    # file: each command prints one 'error:' line and exits 1, no traceback
    with pytest.raises(EvaluationError, match="pixel size must be >= 1"):
        evaluate(open_scores(paths["scores"]), open_store(paths["store"]), pixel_size=0)
    line = one_line_error(runner.invoke(app, ["eval", "--scores", str(paths["scores"]), "--store", str(paths["store"]),
                                              "--pixel-size", "0"]))
    assert "pixel size must be >= 1" in line
    # the report refuses the bad option too, rather than writing a page that says "no evaluation"
    report_dir = tmp_path / "refused"
    line = one_line_error(runner.invoke(app, ["report", "--scores", str(paths["scores"]), "--store",
                                              str(paths["store"]), "--out", str(report_dir), "--pixel-size", "0"]))
    assert "pixel size must be >= 1" in line and not report_dir.exists()
    not_scores = tmp_path / "store_copy.zarr"
    zarr.open_group(str(not_scores), mode="w").attrs["format"] = "something else"
    with pytest.raises(ScoresError, match="not a vad scores file"):
        open_scores(not_scores)
    for command in (["eval", "--scores", str(not_scores)],
                    ["report", "--scores", str(not_scores), "--store", str(paths["store"]), "--out", str(tmp_path / "r")]):
        line = one_line_error(runner.invoke(app, command))
        assert f"{not_scores}: not a vad scores file" in line, command


@pytest.mark.parametrize(("edit", "words"), [
    (lambda store: store.update(dataset="avenue"), "scored on a store of dataset 'avenue'"),
    (lambda store: store["videos"]["test"].update({"01": 999}), "scored test/01 with 999 frames"),
])
def test_a_scores_file_is_refused_with_a_store_of_another_dataset_or_other_frame_counts(paths, tmp_path, edit,
                                                                                        words):
    import shutil

    copy = tmp_path / "scores.zarr"
    shutil.copytree(paths["scores"], copy)
    meta = json.loads((copy / "zarr.json").read_text())
    edit(meta["attributes"]["store"])  # what the file says it was scored on; the store is the real one
    (copy / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ScoresError, match=words):
        evaluate(open_scores(copy), open_store(paths["store"]), PostConfig(window=5))
