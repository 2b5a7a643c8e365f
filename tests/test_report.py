"""`vad report` writes every figure its page lists; `vad score` / `eval` / `report` round trip as commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import mtvad.scoring.report as report_module
from mtvad.cli.main import app
from mtvad.scoring.evaluate import evaluate, fmt, row_title
from mtvad.scoring.postprocess import PostConfig
from mtvad.scoring.report import make_report, top_frames
from mtvad.scoring.score import score
from mtvad.scoring.scores_file import open_scores
from mtvad.store.access import open_store
from tests.conftest import one_line_error, run_vad
from tests.stores import scores_with_maps

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def _listed(page: Path) -> list[str]:
    return re.findall(r"<img src='([^']+)'", page.read_text())


def _pngs(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}


@pytest.fixture
def drawn(monkeypatch) -> dict:
    """The figures a report saves, by path relative to its folder: (figure, dpi), kept to read what they show."""
    figures = {}
    save = report_module._save

    def keep(fig, path, report, dpi=90):
        save(fig, path, report, dpi=dpi)
        figures[path.relative_to(report.out).as_posix()] = (fig, dpi)

    monkeypatch.setattr(report_module, "_save", keep)
    return figures


def _lines(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {line.get_label(): (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
            for line in ax.get_lines()}


def _read_png(path: Path, fig, dpi: int) -> np.ndarray:
    """The PNG as RGB floats in [0, 1], checked to be the figure at its dpi and not blank."""
    import matplotlib.image as mpimg

    image = mpimg.imread(path)[..., :3]
    w, h = fig.get_size_inches() * dpi
    assert image.shape[:2] == (round(h), round(w)), path
    assert image.std() > 0.05, path
    return image


def _maps_columns(fig) -> list[tuple[object, object]]:
    """(top, bottom) axes of each column of a maps figure (subplots(2, k): row-major)."""
    k = len(fig.axes) // 2
    return [(fig.axes[j], fig.axes[k + j]) for j in range(k)]


def test_report_writes_every_figure_it_lists_and_each_shows_its_data(paths, tmp_path, drawn):
    scores, store, post = open_scores(paths["scores"]), open_store(paths["store"]), PostConfig(window=5, polyorder=2)
    out = tmp_path / "rep"
    r = make_report(scores, store, out, post, top_k=3)
    listed = _listed(r.page)
    assert listed and len(listed) == len(set(listed)) == len(r.figures)
    assert set(listed) == _pngs(out)  # every listed figure written, nothing unlisted
    assert {"training.png", "roc.png", "per_video_auc.png", "maps_appearance.png", "maps_motion.png",
            "timelines/01.png", "timelines/02.png", "timelines/03.png"} == set(listed) == set(drawn)
    for rel, (fig, dpi) in drawn.items():
        _read_png(out / rel, fig, dpi)
    ev = evaluate(scores, store, post)
    rows = ev.results["rows"]
    assert json.loads((out / "results.json").read_text())["rows"] == json.loads(json.dumps(rows))
    assert "micro AUC" in r.page.read_text() and fmt(rows["fused"]["micro_auc"]) in r.page.read_text()

    roc = _lines(drawn["roc.png"][0].axes[0])  # each row's micro ROC, labelled with its AUC
    for row, (fpr, tpr) in ev.curves.items():
        label = f"{row_title(row)}: AUC {fmt(rows[row]['micro_auc'], 3)}"
        assert np.array_equal(roc[label][0], fpr) and np.array_equal(roc[label][1], tpr), row
    assert len(ev.curves) == 6  # fused, 2 branches, 3 teacher-only controls

    bars = {c.get_label(): [b.get_height() for b in c] for c in drawn["per_video_auc.png"][0].axes[0].containers}
    for row, m in rows.items():  # video 03 is all anomalous: no AUC, drawn as 0 and marked skipped
        assert bars[row_title(row)] == pytest.approx([m["per_video_auc"][v] or 0 for v in ("01", "02", "03")])
    assert rows["fused"]["per_video_auc"]["03"] is None

    test = ev.processed.calibrated["test"]
    for vid in ("01", "02", "03"):
        ax = drawn[f"timelines/{vid}.png"][0].axes[0]
        lines = _lines(ax)
        for row in ("fused", "appearance", "motion", "raw_flow", "masked_flow", "foreground_area"):
            assert np.array_equal(lines[row_title(row)][1], test[vid][row], equal_nan=True), (vid, row)
        assert np.all(lines["decision threshold (training)"][1] == ev.processed.threshold)
        shaded = [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches]
        first = int(np.argmax(ev.labels[vid]))  # the anomalous frames, from `first` to the end
        assert shaded == [(first - 0.5, 10 - 0.5)], vid

    import torch

    training = {ax.get_title().split(":")[0]: ax for ax in drawn["training.png"][0].axes}
    for branch in ("appearance", "motion"):  # each run's validation losses against its controls, as trained
        ckpt = torch.load(scores.attrs["checkpoints"][branch]["path"], weights_only=True)
        lines, title = _lines(training[branch]), training[branch].get_title()
        assert np.array_equal(lines["validation loss"][0], [e["step"] for e in ckpt["validation"]])
        assert np.allclose(lines["validation loss"][1], [e["loss"] for e in ckpt["validation"]])
        for name, loss in ckpt["controls"].items():
            assert np.allclose(lines[f"control: {name}"][1], loss), (branch, name)
        assert np.allclose(lines["converged below (0.9 x best control)"][1], 0.9 * min(ckpt["controls"].values()))
        assert ("NOT converged" in title) == (ckpt["converged"] is False)
        assert (f"The {branch} student has not converged" in r.page.read_text()) == (ckpt["converged"] is False)

    for branch in ("appearance", "motion"):  # each map panel: the branch's map of the frame it names
        offset = scores.attrs["checkpoints"][branch]["target_offset"]
        for top, bottom in _maps_columns(drawn[f"maps_{branch}.png"][0]):
            vid, shown = top.get_title().split()[0].removeprefix("test/"), int(top.get_title().split()[2])
            expected = scores.map("test", vid, branch, shown - offset).astype(np.float32)
            assert np.array_equal(bottom.get_images()[1].get_array(), expected), (branch, vid, shown)


def test_the_maps_figure_shows_the_map_of_each_top_frame_over_its_input(paths, tmp_path, drawn):
    # a copy of the scores whose appearance maps are 1 on the anomalous square, 0 elsewhere (+ t / 1000 on frame t)
    scores = scores_with_maps(paths, tmp_path, appearance=lambda m: m + np.arange(10)[:, None, None] / 1000)
    store, post = open_store(paths["store"]), PostConfig(window=5, polyorder=2)
    make_report(scores, store, tmp_path / "rep", post, top_k=3)
    fig, dpi = drawn["maps_appearance.png"]
    calibrated = report_module.process(scores.raw(post.reduction), scores.branches, post).calibrated["test"]
    best = max(np.nanmax(calibrated[v]["appearance"]) for v in ("01", "02", "03"))
    offset = scores.attrs["checkpoints"]["appearance"]["target_offset"]
    assert offset == 1  # seg-future: the map of frame t compares the segmentation of t + 1
    columns = _maps_columns(fig)
    assert len(columns) == 3
    seen = {}
    for top, bottom in columns:
        vid, shown = top.get_title().split()[0].removeprefix("test/"), int(top.get_title().split()[2])
        t = shown - offset
        value = float(bottom.get_xlabel().split()[-1])
        assert value == pytest.approx(calibrated[vid]["appearance"][t], abs=0.006), (vid, t)
        video = store.video("test", vid)
        frame_image, map_image = top.get_images()[0], bottom.get_images()[1]
        assert np.array_equal(frame_image.get_array(), video.frames(shown))
        assert np.array_equal(map_image.get_array(), scores.map("test", vid, "appearance", t).astype(np.float32))
        assert bool(top.collections) == bool(video.mask(shown).any())  # the ground truth outlined where there is one
        seen[vid] = (bottom, value)
    assert set(seen) == {"01", "02", "03"}  # the top frame of each video first
    shown_maps = [bottom.get_images()[1].get_array() for _, bottom in columns]
    assert all(b.get_images()[1].get_clim() == (0, max(m.max() for m in shown_maps)) for _, b in columns)
    assert max(v for _, v in seen.values()) == pytest.approx(best, abs=0.006)
    # and in the PNG: the square of video 03 (all anomalous) is bright in its map panel, the rest dark
    image = _read_png(tmp_path / "rep" / "maps_appearance.png", fig, dpi)
    x0, y0, x1, y1 = (seen["03"][0].get_window_extent().extents * dpi / fig.dpi)
    height = image.shape[0]

    def region(rows, cols):  # fractions of the panel, from its top left
        r0, r1 = (height - (y1 - f * (y1 - y0)) for f in rows)
        c0, c1 = (x0 + f * (x1 - x0) for f in cols)
        return image[round(r0):round(r1), round(c0):round(c1)].mean()

    square = region((0.3, 0.45), (0.3, 0.45))  # the square is rows and columns 8-16 of 32
    elsewhere = [region((0.6, 0.9), (0.6, 0.9)), region((0.05, 0.2), (0.6, 0.9)), region((0.6, 0.9), (0.05, 0.2))]
    assert square > 0.6 and max(elsewhere) < 0.4, (square, elsewhere)


def test_report_without_maps_or_labels_says_so_and_still_lists_only_what_it_wrote(paths, tmp_path):
    out = tmp_path / "nolabels.zarr"
    score(str(paths["nolabels"]), [paths["appearance"], paths["motion"]], out, progress=False)  # no --maps
    r = make_report(open_scores(out), open_store(paths["nolabels"]), tmp_path / "rep", PostConfig(window=5))
    listed = _listed(r.page)
    assert set(listed) == _pngs(tmp_path / "rep") == {"training.png", "timelines/01.png", "timelines/02.png"}
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
             str(paths["motion"]), "--out", str(scores), "--maps", "--no-progress", "--amp", "off")
    assert r.returncode == 0, r.stderr
    assert "scored appearance, motion" in r.stdout
    a, b = open_scores(scores), open_scores(paths["scores"])  # same checkpoints, store, precision: same scores
    for split in ("train", "test"):
        for vid in b.video_ids(split):
            for row in b.rows:
                assert np.allclose(a.row(split, vid, row)[0], b.row(split, vid, row)[0], equal_nan=True), (vid, row)
                assert np.array_equal(a.row(split, vid, row)[1], b.row(split, vid, row)[1])
    for branch in ("appearance", "motion"):
        assert np.allclose(a.map("test", "03", branch), b.map("test", "03", branch), equal_nan=True, atol=1e-3)
    r = run_vad("eval", "--scores", str(scores), "--store", str(paths["store"]), "--out", str(tmp_path / "r.json"),
             "--window", "5")
    assert r.returncode == 0, r.stderr
    assert "micro AUC" in r.stdout and "macro AUC" in r.stdout
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["postprocess"]["window"] == 5
    expected = evaluate(b, open_store(paths["store"]), PostConfig(window=5)).results["rows"]
    assert results["rows"].keys() == expected.keys()
    for row, m in expected.items():
        for key in ("micro_auc", "macro_auc", "eer", "pixel_auc"):
            assert results["rows"][row][key] == pytest.approx(m[key], abs=1e-6), (row, key)
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
