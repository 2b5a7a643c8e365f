"""Events: runs of flagged frames, merged over short gaps and filtered by duration, in frames and seconds.

A frame is flagged when its fused calibrated score is above the decision threshold (NaN: not flagged). Runs of
flagged frames whose gap (unflagged frames between them) lasts at most `merge_gap_s` seconds are one event; an
event that lasts less than `min_duration_s` seconds (its frames / fps, gaps included) is dropped. The paper
says nothing of events; both defaults are ours, a priori: an event people look for (a cyclist crossing, a
person running) lasts seconds, a flicker of one or two frames is noise, and a person hidden behind another for
a moment is still the same event.

Frame indices are 0-based; an event covers frames [start_frame, end_frame] (both included) and the times
[start_frame / fps, (end_frame + 1) / fps) in seconds from the start of the video.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mtvad.errors import ConfigError

DEFAULT_MERGE_GAP_S = 1.0
DEFAULT_MIN_DURATION_S = 0.5
CSV_COLUMNS = ("video", "event", "start_frame", "end_frame", "start_time", "end_time", "start_s", "end_s",
               "duration_s", "peak_frame", "peak_s", "peak_score", "branch", "thumbnail")


@dataclass
class Event:
    video: str
    index: int  # 1-based, in time order within the video
    start_frame: int
    end_frame: int  # included
    fps: float
    peak_frame: int
    peak_score: float  # the fused calibrated score at the peak (threshold units: see the run's threshold)
    branch: str  # the branch with the highest calibrated score at the peak frame
    branch_scores: dict[str, float] = field(default_factory=dict)  # every branch's calibrated score at the peak
    thumbnail: str | None = None  # the peak frame with its anomaly map, relative to the run folder

    @property
    def start_s(self) -> float:
        return self.start_frame / self.fps

    @property
    def end_s(self) -> float:
        return (self.end_frame + 1) / self.fps

    @property
    def duration_s(self) -> float:
        return (self.end_frame + 1 - self.start_frame) / self.fps

    @property
    def peak_s(self) -> float:
        return self.peak_frame / self.fps

    def to_json(self) -> dict:
        doc = asdict(self)
        doc.update({"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                    "duration_s": round(self.duration_s, 3), "peak_s": round(self.peak_s, 3),
                    "start_time": clock(self.start_s), "end_time": clock(self.end_s)})
        return doc


def clock(seconds: float) -> str:
    """'hh:mm:ss.ss' of a time in seconds."""
    minutes, s = divmod(seconds, 60)
    h, m = divmod(int(minutes), 60)
    return f"{h:02d}:{m:02d}:{s:05.2f}"


def check_event_settings(merge_gap_s: float, min_duration_s: float) -> None:
    if not (math.isfinite(merge_gap_s) and merge_gap_s >= 0):
        raise ConfigError(f"the merge gap must be >= 0 seconds; got {merge_gap_s}")
    if not (math.isfinite(min_duration_s) and min_duration_s >= 0):
        raise ConfigError(f"the minimum event duration must be >= 0 seconds; got {min_duration_s}")


def flagged_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[(first, last)] of every run of True (both included), in order."""
    flags = np.asarray(flags, bool)
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def merge_runs(runs: Sequence[tuple[int, int]], fps: float, merge_gap_s: float,
               min_duration_s: float) -> list[tuple[int, int]]:
    """Runs closer than `merge_gap_s` (gap frames / fps <= it) joined, then those shorter than `min_duration_s`
    dropped (frames / fps < it)."""
    if not fps > 0:
        raise ConfigError(f"the frame rate must be > 0; got {fps}")
    merged: list[list[int]] = []
    for first, last in runs:
        if merged and (first - merged[-1][1] - 1) / fps <= merge_gap_s:
            merged[-1][1] = last
        else:
            merged.append([first, last])
    return [(a, b) for a, b in merged if (b + 1 - a) / fps >= min_duration_s]


def find_events(video: str, fused: np.ndarray, branches: Mapping[str, np.ndarray], threshold: float, fps: float,
                merge_gap_s: float = DEFAULT_MERGE_GAP_S, min_duration_s: float = DEFAULT_MIN_DURATION_S,
                ) -> list[Event]:
    """The events of one video from its fused calibrated scores (T,) and each branch's (T,)."""
    check_event_settings(merge_gap_s, min_duration_s)
    fused = np.asarray(fused, np.float64)
    flags = np.where(np.isfinite(fused), fused, -np.inf) > threshold
    events = []
    for i, (first, last) in enumerate(merge_runs(flagged_runs(flags), fps, merge_gap_s, min_duration_s), start=1):
        window = np.where(flags[first : last + 1], fused[first : last + 1], -np.inf)
        peak = first + int(np.argmax(window))
        at_peak = {b: float(np.asarray(s, np.float64)[peak]) for b, s in branches.items()}
        finite = {b: v for b, v in at_peak.items() if math.isfinite(v)}
        branch = max(finite, key=finite.get) if finite else ""
        events.append(Event(video, i, first, last, float(fps), peak, float(fused[peak]), branch,
                            {b: round(v, 4) for b, v in finite.items()}))
    return events


def write_events(events: Sequence[Event], json_path: Path, csv_path: Path, header: dict | None = None) -> None:
    """Events as JSON ({**header, "events": [...]}) and as CSV (one row per event, CSV_COLUMNS)."""
    doc = {**(header or {}), "events": [e.to_json() for e in events]}
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for e in events:
            d = e.to_json()
            writer.writerow([e.video, e.index, e.start_frame, e.end_frame, d["start_time"], d["end_time"],
                             d["start_s"], d["end_s"], d["duration_s"], e.peak_frame, d["peak_s"],
                             f"{e.peak_score:.4f}", e.branch, e.thumbnail or ""])
