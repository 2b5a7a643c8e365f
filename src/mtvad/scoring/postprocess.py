"""From raw per-frame scores to decisions (paper 3.6): temporal smoothing, calibration, fusion, threshold.

1. **Smoothing** (Eq. 5): a Savitzky-Golay filter (`scipy.signal.savgol_filter`, its default `mode='interp'`)
   over each video's scores, per branch. The paper gives neither the window nor the polynomial order; ours are
   fixed a priori from the frame rate, never from test labels: a window of 15 frames (1.5 s at the 10 fps of
   UCSD Ped2 and of the synthetic set: longer than the one-frame jumps the paper smooths away, shorter than
   its anomalous events) and order 2. For 25-30 fps footage scale the window with the frame rate (e.g. 41).
   A video shorter than the window is smoothed with the largest odd window <= its length, and the order is
   lowered below that window (a 1-frame video is left as it is).
2. **Invalid frames** (a branch cannot score them: the appearance branch's first and last frame, the motion
   branch's frame 0) are NaN in the scores file with `valid` = False. For smoothing only they are filled with
   the value of the nearest valid frame; after smoothing they are NaN again, and evaluation never counts them.
3. **Calibration** on TRAINING videos only (as AI-VAD calibrates each branch on training scores): each
   branch's smoothed scores are z-scored with the mean and standard deviation of its smoothed training
   scores. No test statistic is used. `per-video min-max` (common in the field) rescales every video's
   smoothed scores to [0, 1] with that video's own min and max: it looks at the test scores, and every output
   that used it says so.
4. **Fusion**: the paper flags a frame when either branch exceeds its threshold; on calibrated scores that is
   the max over branches. The **decision threshold** is a high quantile (0.99) of the fused TRAINING scores.
   The students have seen those frames, so their training scores are lower than on unseen normal footage and
   the threshold flags more than 1 % of normal test frames; it is for reading the figures, AUCs do not use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.signal import savgol_filter

from mtvad.errors import ConfigError

DEFAULT_WINDOW = 15  # frames: 1.5 s at 10 fps (Ped2, synth); a priori, see the module docstring
DEFAULT_POLYORDER = 2
DEFAULT_QUANTILE = 0.99  # of the fused training scores: the decision threshold
NORMALISATIONS = ("train-zscore", "per-video-minmax")
NORMALISATION_LABELS = {
    "train-zscore": "z-score with training-video statistics (no test statistic)",
    "per-video-minmax": "per-video min-max (USES TEST STATISTICS: each test video's own min and max)",
}


@dataclass
class SmoothingConfig:
    window: int = DEFAULT_WINDOW
    polyorder: int = DEFAULT_POLYORDER

    def validate(self) -> "SmoothingConfig":
        if self.window < 1 or self.window % 2 == 0:
            raise ConfigError(f"Savitzky-Golay window must be an odd number of frames >= 1; got {self.window}")
        if not 0 <= self.polyorder < self.window:
            raise ConfigError(f"Savitzky-Golay polynomial order must be in [0, window); got {self.polyorder} "
                              f"for window {self.window}")
        return self


def effective_window(n_frames: int, window: int, polyorder: int) -> tuple[int, int]:
    """(window, polyorder) used on a video of `n_frames`: the window shrinks to the largest odd number <= the
    video's length, and the order below that window. (0, 0) for an empty video."""
    if n_frames <= 0:
        return 0, 0
    w = min(window, n_frames if n_frames % 2 else n_frames - 1)
    return w, min(polyorder, w - 1)


def fill_invalid(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each invalid frame takes the value of the nearest valid frame (the earlier one on a tie); all-invalid
    gives NaNs."""
    scores = np.asarray(scores, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(scores)
    if valid.all():
        return scores.copy()
    if not valid.any():
        return np.full_like(scores, np.nan)
    idx = np.flatnonzero(valid)
    pos = np.arange(len(scores))
    right = np.clip(np.searchsorted(idx, pos), 0, len(idx) - 1)
    left = np.clip(right - 1, 0, len(idx) - 1)
    nearest = np.where(np.abs(idx[left] - pos) <= np.abs(idx[right] - pos), idx[left], idx[right])
    return scores[nearest]


def smooth(scores: np.ndarray, valid: np.ndarray | None = None, window: int = DEFAULT_WINDOW,
           polyorder: int = DEFAULT_POLYORDER) -> np.ndarray:
    """Eq. 5 on one video: Savitzky-Golay of the scores, invalid frames filled from the nearest valid frame
    first and NaN again after; the window falls back as `effective_window` says on a short video."""
    scores = np.asarray(scores, dtype=np.float64)
    valid = np.isfinite(scores) if valid is None else np.asarray(valid, bool) & np.isfinite(scores)
    filled = fill_invalid(scores, valid)
    w, p = effective_window(len(scores), window, polyorder)
    if w <= 1 or not valid.any():
        out = filled
    else:
        out = savgol_filter(filled, w, p)
    out = np.asarray(out, dtype=np.float64).copy()
    out[~valid] = np.nan
    return out


@dataclass
class Calibration:
    """Per branch: z = (s - mean) / std, with mean and std of its smoothed TRAINING scores."""

    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    n_frames: dict[str, int] = field(default_factory=dict)  # training frames the statistics came from
    method: str = "train-zscore"

    def apply(self, branch: str, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores, np.float64) - self.mean[branch]) / self.std[branch]

    def to_json(self) -> dict:
        return {**asdict(self), "label": NORMALISATION_LABELS[self.method]}


def fit_calibration(train_scores: Mapping[str, Sequence[np.ndarray]]) -> Calibration:
    """Mean and std per branch over all valid (finite) smoothed training frames. A branch with a constant
    training score gets std 1 (its scores are then only shifted)."""
    cal = Calibration()
    for branch, videos in train_scores.items():
        values = np.concatenate([np.asarray(v, np.float64).ravel() for v in videos]) if len(videos) else np.zeros(0)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ConfigError(f"no valid training scores for the {branch} branch: cannot calibrate it (score the "
                              "training videos too, `vad score` does by default)")
        std = float(values.std())
        cal.mean[branch] = float(values.mean())
        cal.std[branch] = std if std > 0 and np.isfinite(std) else 1.0
        cal.n_frames[branch] = int(values.size)
    return cal


def minmax_per_video(scores: np.ndarray) -> np.ndarray:
    """Rescale one video's scores to [0, 1] with ITS OWN min and max (uses test statistics); a constant video
    gives 0."""
    scores = np.asarray(scores, np.float64)
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return scores.copy()
    lo, hi = finite.min(), finite.max()
    return (scores - lo) / (hi - lo) if hi > lo else np.where(np.isfinite(scores), 0.0, np.nan)


def fuse(calibrated: Mapping[str, np.ndarray]) -> np.ndarray:
    """The paper's decision rule on calibrated scores: a frame is as anomalous as its most anomalous branch.
    NaN where any branch is invalid."""
    arrays = [np.asarray(a, np.float64) for a in calibrated.values()]
    if not arrays:
        raise ValueError("nothing to fuse")
    stacked = np.stack(arrays)
    out = stacked.max(axis=0)
    out[~np.isfinite(stacked).all(axis=0)] = np.nan
    return out


def fit_threshold(fused_train: Sequence[np.ndarray], quantile: float = DEFAULT_QUANTILE) -> float:
    """The decision threshold: `quantile` of the fused training scores (valid frames only)."""
    if not 0 < quantile < 1:
        raise ConfigError(f"threshold quantile must be in (0, 1); got {quantile}")
    values = np.concatenate([np.asarray(v, np.float64).ravel() for v in fused_train]) if len(fused_train) else []
    values = np.asarray(values)[np.isfinite(values)]
    if values.size == 0:
        raise ConfigError("no valid fused training scores to fit the decision threshold on")
    return float(np.quantile(values, quantile))


@dataclass
class PostConfig:
    """Everything that turns raw scores into calibrated, fused scores (recorded in every result)."""

    window: int = DEFAULT_WINDOW
    polyorder: int = DEFAULT_POLYORDER
    normalisation: str = "train-zscore"
    threshold_quantile: float = DEFAULT_QUANTILE

    def validate(self) -> "PostConfig":
        SmoothingConfig(self.window, self.polyorder).validate()
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"normalisation must be one of {', '.join(NORMALISATIONS)}; got {self.normalisation!r}")
        if not 0 < self.threshold_quantile < 1:
            raise ConfigError(f"threshold quantile must be in (0, 1); got {self.threshold_quantile}")
        return self

    @property
    def uses_test_statistics(self) -> bool:
        return self.normalisation == "per-video-minmax"

    def to_json(self) -> dict:
        return {**asdict(self), "normalisation_label": NORMALISATION_LABELS[self.normalisation],
                "uses_test_statistics": self.uses_test_statistics}


@dataclass
class Processed:
    """Smoothed, calibrated and fused scores of every video: {split: {video: {row: array}}}."""

    config: PostConfig
    rows: list[str]  # the branches, then 'teacher_flow' (the baseline) when present; 'fused' is added
    smoothed: dict[str, dict[str, dict[str, np.ndarray]]]
    calibrated: dict[str, dict[str, dict[str, np.ndarray]]]  # includes 'fused'
    calibration: Calibration
    threshold: float


def process(raw: Mapping[str, Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]], branches: Sequence[str],
            config: PostConfig | None = None) -> Processed:
    """raw = {split: {video: {row: (scores, valid)}}} -> smoothed per video, calibrated on the train split,
    fused over `branches` (max), threshold from the fused training scores."""
    config = (config or PostConfig()).validate()
    rows = list(next(iter(next(iter(raw.values())).values())).keys()) if raw else []
    smoothed: dict = {}
    for split, videos in raw.items():
        smoothed[split] = {vid: {row: smooth(s, v, config.window, config.polyorder) for row, (s, v) in rows_.items()}
                           for vid, rows_ in videos.items()}
    train = smoothed.get("train", {})
    calibration = fit_calibration({row: [train[v][row] for v in train] for row in rows})
    calibrated: dict = {}
    for split, videos in smoothed.items():
        calibrated[split] = {}
        for vid, per_row in videos.items():
            if config.normalisation == "per-video-minmax":
                out = {row: minmax_per_video(s) for row, s in per_row.items()}
            else:
                out = {row: calibration.apply(row, s) for row, s in per_row.items()}
            out["fused"] = fuse({b: out[b] for b in branches})
            calibrated[split][vid] = out
    if config.normalisation == "per-video-minmax":
        calibration.method = "per-video-minmax"
    threshold = fit_threshold([calibrated["train"][v]["fused"] for v in calibrated.get("train", {})],
                              config.threshold_quantile)
    return Processed(config, rows, smoothed, calibrated, calibration, threshold)
