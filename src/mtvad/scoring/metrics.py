"""Frame-level metrics over label and score arrays: AUC (micro over all frames, macro over videos), EER,
rates at a threshold. scikit-learn's `roc_auc_score` and `roc_curve` do the work."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def two_classes(labels: np.ndarray) -> bool:
    return np.unique(labels).size == 2


def frame_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC, or None when the labels hold one class only."""
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, np.float64)
    return float(roc_auc_score(labels, scores)) if two_classes(labels) else None


def micro_auc(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> float | None:
    """One ROC over all videos' frames concatenated."""
    return frame_auc(np.concatenate(labels), np.concatenate(scores))


def macro_auc(labels: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray]
              ) -> tuple[float | None, dict[str, float | None], list[str]]:
    """(mean of the per-video AUCs, per-video AUC (None when skipped), skipped videos: one class only)."""
    per_video = {v: frame_auc(labels[v], scores[v]) for v in labels}
    skipped = [v for v, a in per_video.items() if a is None]
    kept = [a for a in per_video.values() if a is not None]
    return (float(np.mean(kept)) if kept else None), per_video, skipped


def eer(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Equal error rate: the point of the ROC where FPR = FNR (= 1 - TPR), interpolated linearly."""
    labels = np.asarray(labels).astype(int)
    if not two_classes(labels):
        return None
    fpr, tpr, _ = roc_curve(labels, np.asarray(scores, np.float64), drop_intermediate=False)
    diff = (1 - tpr) - fpr  # 1 at the strictest threshold, -1 at the loosest: crosses 0 once
    i = int(np.argmax(diff <= 0))
    if diff[i] == 0 or i == 0:
        return float(fpr[i])
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def rates_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    """TPR, FPR and the share of flagged frames when frames with score > threshold are flagged."""
    labels, flagged = np.asarray(labels).astype(bool), np.asarray(scores) > threshold
    pos, neg = labels.sum(), (~labels).sum()
    return {"tpr": float((flagged & labels).sum() / pos) if pos else None,
            "fpr": float((flagged & ~labels).sum() / neg) if neg else None,
            "flagged": float(flagged.mean()) if flagged.size else None}
