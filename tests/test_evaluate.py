"""Metrics against hand-computed cases, and `vad eval` on tiny scored stores (refusals included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from mtvad.cli.main import app
from mtvad.scoring.evaluate import EvaluationError, evaluate
from mtvad.scoring.metrics import eer, macro_auc, micro_auc, rates_at
from mtvad.scoring.postprocess import PostConfig
from mtvad.scoring.score import score
from mtvad.scoring.scores_file import BASELINE, ScoresError, open_scores
from mtvad.store.access import open_store
from tests.conftest import one_line_error

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
    assert set(r["rows"]) == {"fused", "appearance", "motion", BASELINE}
    # test video 03 is all anomalous: skipped in the macro AUC, listed, still in the micro AUC
    assert r["macro_skipped"] == ["03"] and r["rows"]["fused"]["per_video_auc"]["03"] is None
    for row, m in r["rows"].items():
        per = [a for a in m["per_video_auc"].values() if a is not None]
        assert m["macro_auc"] == pytest.approx(np.mean(per))
        assert 0 <= m["micro_auc"] <= 1 and 0 <= m["eer"] <= 1 and 0 <= m["pixel_auc"] <= 1
    assert r["pixel"]["size"] == [64, 64] and r["pixel"]["pixels"] == 24 * 64 * 64
    assert not r["postprocess"]["uses_test_statistics"]
    json.dumps(r)  # JSON-able


def test_pixel_auc_is_one_when_the_map_is_the_mask(paths, tmp_path):
    import shutil

    copy = tmp_path / "scores.zarr"
    shutil.copytree(paths["scores"], copy)
    store = open_store(paths["store"])
    group = zarr.open_group(str(copy), mode="r+")
    for vid in ("01", "02", "03"):
        group[f"test/{vid}/appearance_map"][:] = store.video("test", vid).mask().astype(np.float16)
    ev = evaluate(open_scores(copy), store, PostConfig(window=5, polyorder=2), pixel_size=16)
    assert ev.results["rows"]["appearance"]["pixel_auc"] == 1.0
    assert ev.results["pixel"]["size"] == [16, 16]


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
    assert "micro AUC" in res.output and "macro AUC" in res.output and "teacher flow only" in res.output
    assert "skips 1 video" in res.output and "03" in res.output
    assert json.loads(out.read_text())["rows"]["fused"]["micro_auc"] is not None


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


def test_evaluation_error_is_a_vad_error():
    from mtvad.errors import VadError

    assert issubclass(EvaluationError, VadError) and issubclass(ScoresError, VadError)
