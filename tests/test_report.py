"""`vad report` writes every figure its page lists; `vad score` / `eval` / `report` round trip as commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mtvad.cli.main import app
from mtvad.scoring.postprocess import PostConfig
from mtvad.scoring.report import make_report, top_frames
from mtvad.scoring.score import score
from mtvad.scoring.scores_file import open_scores
from mtvad.store.access import open_store
from tests.conftest import one_line_error, run_vad

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def _listed(page: Path) -> list[str]:
    return re.findall(r"<img src='([^']+)'", page.read_text())


def _pngs(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}


def test_report_writes_every_figure_it_lists(paths, tmp_path):
    r = make_report(open_scores(paths["scores"]), open_store(paths["store"]), tmp_path / "rep",
                    PostConfig(window=5, polyorder=2), top_k=3)
    listed = _listed(r.page)
    assert listed and len(listed) == len(set(listed)) == len(r.figures)
    assert set(listed) == _pngs(tmp_path / "rep")  # every listed figure written, nothing unlisted
    for rel in listed:
        assert (tmp_path / "rep" / rel).stat().st_size > 1000
    assert {"roc.png", "per_video_auc.png", "maps_appearance.png", "maps_motion.png", "timelines/01.png",
            "timelines/02.png", "timelines/03.png"} == set(listed)
    assert json.loads((tmp_path / "rep" / "results.json").read_text())["rows"]["fused"]["micro_auc"] is not None
    assert "micro AUC" in r.page.read_text() and "macro" in r.page.read_text()


def test_report_without_maps_or_labels_says_so_and_still_lists_only_what_it_wrote(paths, tmp_path):
    out = tmp_path / "nolabels.zarr"
    score(str(paths["nolabels"]), [paths["appearance"], paths["motion"]], out, progress=False)  # no --maps
    r = make_report(open_scores(out), open_store(paths["nolabels"]), tmp_path / "rep", PostConfig(window=5))
    listed = _listed(r.page)
    assert set(listed) == _pngs(tmp_path / "rep") == {"timelines/01.png", "timelines/02.png"}
    text = r.page.read_text()
    assert "no frame labels" in text and "no maps" in text
    assert not (tmp_path / "rep" / "results.json").exists()


def test_top_frames_are_spaced_within_a_video():
    series = {"a": np.array([np.nan, 5, 6, 7, 1, 1, 1, 1, 1, 9]), "b": np.array([0, 8, np.nan])}
    assert top_frames(series, 3, spacing=3) == [("a", 9, 9.0), ("b", 1, 8.0), ("a", 3, 7.0)]
    assert top_frames(series, 2, spacing=3) == [("a", 9, 9.0), ("b", 1, 8.0)]  # one per video first
    assert top_frames({"a": series["a"]}, 3, spacing=3) == [("a", 9, 9.0), ("a", 3, 7.0), ("a", 6, 1.0)]


@pytest.mark.slow
def test_cli_round_trip_score_eval_report(paths, tmp_path):
    scores = tmp_path / "scores.zarr"
    r = run_vad("score", "--store", str(paths["store"]), "--checkpoint", str(paths["appearance"]), "--checkpoint",
             str(paths["motion"]), "--out", str(scores), "--maps", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "scored appearance, motion" in r.stdout
    a, b = open_scores(scores), open_scores(paths["scores"])  # same checkpoints, same store: same scores
    assert np.allclose(a.row("test", "02", "motion")[0], b.row("test", "02", "motion")[0], equal_nan=True)
    r = run_vad("eval", "--scores", str(scores), "--store", str(paths["store"]), "--out", str(tmp_path / "r.json"),
             "--window", "5")
    assert r.returncode == 0, r.stderr
    assert "micro AUC" in r.stdout and "macro AUC" in r.stdout
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["postprocess"]["window"] == 5
    r = run_vad("report", "--scores", str(scores), "--store", str(paths["store"]), "--out", str(tmp_path / "rep"),
             "--window", "5")
    assert r.returncode == 0, r.stderr
    assert set(_listed(tmp_path / "rep" / "index.html")) == _pngs(tmp_path / "rep")


def test_cli_refusals_are_one_line(paths, tmp_path):
    line = one_line_error(runner.invoke(app, ["score", "--store", str(paths["other"]), "--checkpoint",
                                               str(paths["motion"]), "--out", str(tmp_path / "s.zarr")]))
    assert "fingerprint" in line and str(paths["motion"]) in line
    line = one_line_error(runner.invoke(app, ["report", "--scores", str(paths["scores"]), "--store",
                                               str(paths["other"]), "--out", str(tmp_path / "rep")]))
    assert "fingerprint" in line
    line = one_line_error(runner.invoke(app, ["score", "--store", str(paths["store"]), "--checkpoint",
                                               str(tmp_path / "nope.pt"), "--out", str(tmp_path / "s.zarr")]))
    assert "no checkpoint" in line
