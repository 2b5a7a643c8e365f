"""Events from hand-made score sequences: runs, merging over gaps, the minimum duration, times from the fps."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mtvad.detect.events import clock, find_events, flagged_runs, merge_runs, write_events
from mtvad.errors import ConfigError


def scores(n: int, high: list[tuple[int, int]], value: float = 3.0) -> np.ndarray:
    """n frames at 0 with [first, last] ranges (both included) at `value`."""
    s = np.zeros(n)
    for a, b in high:
        s[a : b + 1] = value
    return s


def test_flagged_runs_are_the_runs_above_the_threshold_with_both_ends_included():
    assert flagged_runs(np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 1], bool)) == [(1, 2), (5, 5), (7, 9)]
    assert flagged_runs(np.ones(4, bool)) == [(0, 3)]
    assert flagged_runs(np.zeros(4, bool)) == []


def test_runs_closer_than_the_merge_gap_are_one_event_and_farther_ones_are_not():
    # at 10 fps a 1 s gap is 10 frames: a gap of 10 unflagged frames merges, 11 does not
    assert merge_runs([(0, 9), (20, 29)], fps=10, merge_gap_s=1.0, min_duration_s=0) == [(0, 29)]
    assert merge_runs([(0, 9), (21, 30)], fps=10, merge_gap_s=1.0, min_duration_s=0) == [(0, 9), (21, 30)]
    # merging chains: three runs each within the gap of the previous one
    assert merge_runs([(0, 1), (5, 6), (10, 11)], fps=10, merge_gap_s=0.4, min_duration_s=0) == [(0, 11)]


def test_events_shorter_than_the_minimum_duration_are_dropped_after_merging():
    # two 3-frame runs (0.3 s each at 10 fps) 4 frames apart: alone each is too short, merged (1.0 s) it stays
    runs = [(0, 2), (7, 9)]
    assert merge_runs(runs, fps=10, merge_gap_s=0.0, min_duration_s=0.5) == []
    assert merge_runs(runs, fps=10, merge_gap_s=0.5, min_duration_s=0.5) == [(0, 9)]
    # exactly the minimum duration is kept
    assert merge_runs([(0, 4)], fps=10, merge_gap_s=0, min_duration_s=0.5) == [(0, 4)]
    assert merge_runs([(0, 3)], fps=10, merge_gap_s=0, min_duration_s=0.5) == []


def test_the_same_frames_make_other_events_at_another_frame_rate():
    # a gap of 6 frames lasts 0.6 s at 10 fps (more than the 0.5 s merge gap) and 0.24 s at 25 fps (less)
    s = scores(60, [(10, 19), (26, 35)])
    at10 = find_events("v", s, {"motion": s}, 1.0, fps=10, merge_gap_s=0.5, min_duration_s=0.3)
    at25 = find_events("v", s, {"motion": s}, 1.0, fps=25, merge_gap_s=0.5, min_duration_s=0.3)
    assert [(e.start_frame, e.end_frame) for e in at10] == [(10, 19), (26, 35)]
    assert [(e.start_frame, e.end_frame) for e in at25] == [(10, 35)]


def test_event_times_follow_the_fps():
    s = scores(100, [(25, 49)])
    (e,) = find_events("cam", s, {"motion": s}, 1.0, fps=12.5, merge_gap_s=1, min_duration_s=0.5)
    assert (e.start_frame, e.end_frame) == (25, 49)
    assert e.start_s == pytest.approx(2.0) and e.end_s == pytest.approx(4.0)  # 25 / 12.5, (49 + 1) / 12.5
    assert e.duration_s == pytest.approx(2.0)
    assert e.to_json()["start_time"] == "00:00:02.00" and e.to_json()["end_time"] == "00:00:04.00"
    assert clock(3725.5) == "01:02:05.50"


def test_the_peak_is_the_highest_flagged_frame_and_the_branch_is_the_one_highest_there():
    fused = scores(40, [(10, 20)])
    fused[14] = 7.0
    appearance = np.where(fused > 1, 0.5, 0.0)
    motion = fused.copy()
    appearance[30] = 9.0  # higher, but outside the event: not its peak
    (e,) = find_events("v", fused, {"appearance": appearance, "motion": motion}, 1.0, fps=10)
    assert e.peak_frame == 14 and e.peak_score == 7.0 and e.branch == "motion"
    assert e.branch_scores == {"appearance": 0.5, "motion": 7.0}
    motion[14], appearance[14] = 1.0, 6.5
    (e,) = find_events("v", fused, {"appearance": appearance, "motion": motion}, 1.0, fps=10)
    assert e.branch == "appearance"


def test_nan_frames_are_not_flagged_and_events_are_numbered_in_time_order():
    s = scores(80, [(5, 14), (40, 54)])
    s[[0, 79]] = np.nan
    s[8] = np.nan  # an invalid frame inside a run splits it only if the gap is longer than the merge gap
    events = find_events("v", s, {"motion": s}, 1.0, fps=10, merge_gap_s=0.5, min_duration_s=0.5)
    assert [(e.index, e.start_frame, e.end_frame) for e in events] == [(1, 5, 14), (2, 40, 54)]
    assert find_events("v", np.full(10, np.nan), {"motion": np.full(10, np.nan)}, 0.0, fps=10) == []


def test_bad_settings_are_config_errors():
    s = scores(10, [(2, 8)])
    with pytest.raises(ConfigError, match="merge gap"):
        find_events("v", s, {}, 1.0, fps=10, merge_gap_s=-1)
    with pytest.raises(ConfigError, match="minimum event duration"):
        find_events("v", s, {}, 1.0, fps=10, min_duration_s=float("nan"))
    with pytest.raises(ConfigError, match="frame rate"):
        find_events("v", s, {}, 1.0, fps=0)


def test_events_are_written_as_json_and_csv_with_the_same_rows(tmp_path):
    s = scores(100, [(10, 29), (60, 79)])
    events = find_events("cam1", s, {"motion": s}, 1.0, fps=10)
    events[0].thumbnail = "thumbnails/cam1-e01.png"
    write_events(events, tmp_path / "e.json", tmp_path / "e.csv", {"threshold": 1.0})
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["threshold"] == 1.0 and len(doc["events"]) == 2
    assert doc["events"][1]["start_s"] == 6.0 and doc["events"][1]["end_s"] == 8.0
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    assert [(r["video"], r["event"], r["start_frame"], r["end_frame"]) for r in rows] == [
        ("cam1", "1", "10", "29"), ("cam1", "2", "60", "79")]
    assert rows[0]["thumbnail"] == "thumbnails/cam1-e01.png" and rows[1]["thumbnail"] == ""
    assert rows[0]["start_time"] == "00:00:01.00"
