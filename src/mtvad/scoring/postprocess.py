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
3. **Calibration** on TRAINING videos only (as AI-VAD calibrates each branch on training scores), one of
   `CALIBRATIONS`; each is an affine map z = (s - loc) / scale per row, fitted on the smoothed training scores:
   - `train-zscore`: loc, scale = mean and standard deviation of the training scores.
   - `train-percentile`: loc = their median, scale = their 99th percentile minus the median (robust: a normal
     training frame at the 99th percentile maps to 1, whatever the tail).
   - `train-loo` (leave one video out, as AI-VAD and anomalib leave each training video's own group out): each
     training video is calibrated as `train-percentile` with the statistics of the OTHER training videos, which
     says how a video the statistics have not seen spreads; the 99th percentile P of those held-out calibrated
     training scores widens the scale: loc = median, scale = (99th percentile - median) x P over all training
     videos. A branch whose normal level shifts from video to video (crowd size, background noise) gets a
     larger P and is damped in the fusion. The training videos themselves keep their held-out calibration
     (the threshold is fitted on it). With one training video there is nothing to leave out: P = 1.
   `per-video-minmax` (common in the field) rescales every video's smoothed scores to [0, 1] with that video's
   own min and max: it looks at the test scores, and every output that used it says so.
4. **Fusion** of the calibrated branches (the teacher-only controls are never fused): `max` (default; the
   paper flags a frame when either branch exceeds its threshold) or `sum` (AI-VAD). The **decision
   threshold** is a high quantile (0.99) of the fused calibrated TRAINING scores. The students have seen those
   frames, so their training scores are lower than on unseen normal footage and the threshold flags more than
   1 % of normal test frames; it is for reading the figures, AUCs do not use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Mapping, Sequence, get_args

import numpy as np

from mtvad.errors import ConfigError

DEFAULT_WINDOW = 15  # frames: 1.5 s at 10 fps (Ped2, synth); a priori, see the module docstring
DEFAULT_POLYORDER = 2
DEFAULT_QUANTILE = 0.99  # of the fused training scores: the decision threshold
CALIBRATION_QUANTILE = 0.99  # the robust calibrations' scale: this percentile of the training scores (a priori)
CalibrationName = Literal["train-loo", "train-percentile", "train-zscore", "per-video-minmax"]
NORMALISATIONS: tuple[str, ...] = get_args(CalibrationName)
CALIBRATIONS = NORMALISATIONS
Fusion = Literal["max", "sum"]
FUSIONS: tuple[str, ...] = get_args(Fusion)
# The defaults, chosen on the synthetic demo (`benchmarks/bench_reductions.py`, docs/scoring.md): on the synthetic
# set whose crowd density differs between videos (generator version 2), patch-max gives the best fused micro AUC
# and the lowest held-out false-alarm rate on training videos of all five reductions; train-loo and max fuse best
DEFAULT_NORMALISATION = "train-loo"
DEFAULT_FUSION = "max"
DEFAULT_REDUCTION = "patch-max"
NORMALISATION_LABELS = {
    "train-zscore": "z-score with training-video statistics (no test statistic)",
    "train-percentile": "training median and 99th percentile (no test statistic)",
    "train-loo": "training median and 99th percentile, widened by the leave-one-video-out spread of the "
                 "training videos (no test statistic)",
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
        from scipy.signal import savgol_filter  # here: `vad --help` need not load scipy

        out = savgol_filter(filled, w, p)
    out = np.asarray(out, dtype=np.float64).copy()
    out[~valid] = np.nan
    return out


@dataclass
class Calibration:
    """Per row: z = (s - loc) / scale, fitted on its smoothed TRAINING scores (`method`, module docstring 3).
    `held_out` ('train-loo' only): per row and training video, the (loc, scale) of the other training videos
    that calibrate that video; `spread`: the held-out 99th percentile P that widened the scale."""

    loc: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
    n_frames: dict[str, int] = field(default_factory=dict)  # training frames the statistics came from
    method: str = "train-zscore"
    quantile: float = CALIBRATION_QUANTILE
    spread: dict[str, float] = field(default_factory=dict)
    held_out: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:  # the z-score's names
        return self.loc

    @property
    def std(self) -> dict[str, float]:
        return self.scale

    def apply(self, row: str, scores: np.ndarray, video: str | None = None) -> np.ndarray:
        """Calibrated scores of a row; a training video (`video` in `held_out`) with its held-out statistics."""
        loc, scale = self.held_out.get(row, {}).get(video, (self.loc[row], self.scale[row]))
        return (np.asarray(scores, np.float64) - loc) / scale

    def to_json(self) -> dict:
        return {**asdict(self), "label": NORMALISATION_LABELS[self.method]}


def _concat(videos) -> np.ndarray:
    values = np.concatenate([np.asarray(v, np.float64).ravel() for v in videos]) if len(videos) else np.zeros(0)
    return values[np.isfinite(values)]


def loc_scale(values: np.ndarray, method: str, quantile: float = CALIBRATION_QUANTILE) -> tuple[float, float]:
    """(loc, scale) of finite training values: mean and std (train-zscore), or median and the `quantile`
    percentile minus the median (the robust methods). A scale that is not > 0 (constant scores) falls back to
    the std, then to 1 (the scores are then only shifted)."""
    if method == "train-zscore":
        loc, scale = float(values.mean()), float(values.std())
    else:
        loc = float(np.median(values))
        scale = float(np.quantile(values, quantile)) - loc
    if not (scale > 0 and np.isfinite(scale)):
        std = float(values.std())
        scale = std if std > 0 and np.isfinite(std) else 1.0
    return loc, scale


def fit_calibration(train_scores: Mapping[str, Sequence[np.ndarray] | Mapping[str, np.ndarray]],
                    method: str = "train-zscore", quantile: float = CALIBRATION_QUANTILE) -> Calibration:
    """Each row's (loc, scale) over all valid (finite) smoothed training frames, as `method` says (module
    docstring 3). `train_scores`: {row: {training video: scores}} (or a list per row: videos by position)."""
    method = "train-zscore" if method == "per-video-minmax" else method
    cal = Calibration(method=method, quantile=quantile)
    for row, videos in train_scores.items():
        videos = dict(videos) if isinstance(videos, Mapping) else {str(i): v for i, v in enumerate(videos)}
        values = _concat(list(videos.values()))
        if values.size == 0:
            raise ConfigError(f"no valid training scores for the {row} row: cannot calibrate it (score the "
                              "training videos too, `vad score` does by default)")
        cal.loc[row], cal.scale[row] = loc_scale(values, method, quantile)
        cal.n_frames[row] = int(values.size)
        if method == "train-loo":
            _leave_one_video_out(cal, row, videos, quantile)
    return cal


def _leave_one_video_out(cal: Calibration, row: str, videos: Mapping[str, np.ndarray], quantile: float) -> None:
    """'train-loo': each training video calibrated with the other videos' median and percentile; their
    `quantile` percentile P widens every scale (the global one and the held-out ones) by P."""
    held, calibrated = {}, []
    for vid, scores in videos.items():
        others = _concat([v for k, v in videos.items() if k != vid])
        own = _concat([scores])
        if others.size == 0 or own.size == 0:
            continue
        held[vid] = loc_scale(others, "train-percentile", quantile)
        calibrated.append((own - held[vid][0]) / held[vid][1])
    spread = float(np.quantile(np.concatenate(calibrated), quantile)) if len(calibrated) > 1 else 1.0
    spread = spread if spread > 0 and np.isfinite(spread) else 1.0
    cal.spread[row] = spread
    cal.scale[row] *= spread
    cal.held_out[row] = {vid: (loc, scale * spread) for vid, (loc, scale) in held.items()} if len(held) > 1 else {}


def minmax_per_video(scores: np.ndarray) -> np.ndarray:
    """Rescale one video's scores to [0, 1] with ITS OWN min and max (uses test statistics); a constant video
    gives 0."""
    scores = np.asarray(scores, np.float64)
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return scores.copy()
    lo, hi = finite.min(), finite.max()
    return (scores - lo) / (hi - lo) if hi > lo else np.where(np.isfinite(scores), 0.0, np.nan)


def fuse(calibrated: Mapping[str, np.ndarray], fusion: str = DEFAULT_FUSION) -> np.ndarray:
    """Calibrated branch scores fused per frame: `max` (the paper's rule: a frame is as anomalous as its most
    anomalous branch) or `sum` (AI-VAD). NaN where any branch is invalid."""
    arrays = [np.asarray(a, np.float64) for a in calibrated.values()]
    if not arrays:
        raise ValueError("nothing to fuse")
    if fusion not in FUSIONS:
        raise ConfigError(f"fusion must be one of {', '.join(FUSIONS)}; got {fusion!r}")
    stacked = np.stack(arrays)
    out = stacked.max(axis=0) if fusion == "max" else stacked.sum(axis=0)
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
    normalisation: str = DEFAULT_NORMALISATION  # the calibration, one of CALIBRATIONS
    threshold_quantile: float = DEFAULT_QUANTILE
    reduction: str = DEFAULT_REDUCTION  # which frame reduction of the scores file (mtvad.scoring.reductions)
    fusion: str = DEFAULT_FUSION

    def validate(self) -> "PostConfig":
        from mtvad.scoring.reductions import check_reduction

        SmoothingConfig(self.window, self.polyorder).validate()
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"calibration must be one of {', '.join(NORMALISATIONS)}; got {self.normalisation!r}")
        check_reduction(self.reduction)
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {', '.join(FUSIONS)}; got {self.fusion!r}")
        if not 0 < self.threshold_quantile < 1:
            raise ConfigError(f"threshold quantile must be in (0, 1); got {self.threshold_quantile}")
        return self

    @property
    def uses_test_statistics(self) -> bool:
        return self.normalisation == "per-video-minmax"

    def to_json(self) -> dict:
        from mtvad.scoring.reductions import REDUCTION_LABELS

        return {**asdict(self), "normalisation_label": NORMALISATION_LABELS[self.normalisation],
                "reduction_label": REDUCTION_LABELS[self.reduction],
                "uses_test_statistics": self.uses_test_statistics}


@dataclass
class Processed:
    """Smoothed, calibrated and fused scores of every video: {split: {video: {row: array}}}."""

    config: PostConfig
    rows: list[str]  # the branches, then the teacher-only controls when present; 'fused' is added
    smoothed: dict[str, dict[str, dict[str, np.ndarray]]]
    calibrated: dict[str, dict[str, dict[str, np.ndarray]]]  # includes 'fused'
    calibration: Calibration
    threshold: float


def process(raw: Mapping[str, Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]], branches: Sequence[str],
            config: PostConfig | None = None) -> Processed:
    """raw = {split: {video: {row: (scores, valid)}}} (one reduction) -> smoothed per video, calibrated on the
    train split, fused over `branches` (`config.fusion`), threshold from the fused training scores."""
    config = (config or PostConfig()).validate()
    rows = list(next(iter(next(iter(raw.values())).values())).keys()) if raw else []
    smoothed: dict = {}
    for split, videos in raw.items():
        smoothed[split] = {vid: {row: smooth(s, v, config.window, config.polyorder) for row, (s, v) in rows_.items()}
                           for vid, rows_ in videos.items()}
    train = smoothed.get("train", {})
    calibration = fit_calibration({row: {v: train[v][row] for v in train} for row in rows}, config.normalisation,
                                  CALIBRATION_QUANTILE)
    calibrated: dict = {}
    for split, videos in smoothed.items():
        calibrated[split] = {}
        for vid, per_row in videos.items():
            if config.normalisation == "per-video-minmax":
                out = {row: minmax_per_video(s) for row, s in per_row.items()}
            else:
                held = vid if split == "train" else None  # train-loo: a training video with the others' statistics
                out = {row: calibration.apply(row, s, held) for row, s in per_row.items()}
            out["fused"] = fuse({b: out[b] for b in branches}, config.fusion)
            calibrated[split][vid] = out
    if config.normalisation == "per-video-minmax":
        calibration.method = "per-video-minmax"
    threshold = fit_threshold([calibrated["train"][v]["fused"] for v in calibrated.get("train", {})],
                              config.threshold_quantile)
    return Processed(config, rows, smoothed, calibrated, calibration, threshold)
