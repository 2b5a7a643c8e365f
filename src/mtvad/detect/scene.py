"""Is a new video from the normal footage's camera? Two cheap checks before `vad detect` computes anything.

- Aspect ratio: a new video whose width/height differs from the normal footage's by more than 2 % is stretched to
  the store resolution, so objects look wider or taller than in training.
- Background: a few frames sampled evenly over each video (SAMPLE_FRAMES; only those are read), their per-pixel
  median (the background without the people passing), grey, downscaled to WIDTH pixels wide, blurred (sigma
  BLUR_SIGMA), then compared by normalised cross-correlation (Pearson's r over the pixels; the new video's
  background is stretched to the normal one's shape, as the store stretches it). A new video is compared with
  every normal video or segment (at most MAX_NORMAL, spread evenly) and keeps its best match.

Measured (8 frames, 64 px wide, sigma 1):
  same camera:  vtest.avi first half vs second half 1.00; UCSD Ped2 train vs train 0.995-1.00, train vs test
                0.994-1.00; `vad synth --small` videos among themselves 0.98-1.00 (vs seed 1: 0.96-0.97);
                Ped2 with one background shifted by 5 % of its width 0.91, vtest 0.91; gamma 0.5 or 2: 0.99
  other camera: Ped2 vs vtest -0.35 to -0.30; Ped2 vs synth -0.12 to -0.07; vtest vs synth 0.40-0.42
SCENE_THRESHOLD 0.7 lies between the highest cross-camera value (0.42) and the lowest same-camera one (0.91
shifted, 0.96 unshifted). Reading 8 frames of each half of vtest.avi (768x576 MPEG-4) takes about 0.7 s a half.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mtvad.precompute.datasets.base import Video

ASPECT_TOLERANCE = 0.02
SAMPLE_FRAMES = 8
WIDTH = 64
BLUR_SIGMA = 1.0
SCENE_THRESHOLD = 0.7
MAX_NORMAL = 16  # normal videos/segments whose backgrounds are estimated (spread evenly over the footage)
FLAT_STD = 1e-3  # a background whose grey levels vary less than this has no structure to correlate


def source_path(video: Video) -> str:
    return str(video.meta.get("source_path", video.source.path))


def background(video: Video, frames: int = SAMPLE_FRAMES, width: int = WIDTH) -> np.ndarray:
    """The per-pixel median of `frames` frames sampled evenly over the video, grey, `width` px wide (float32)."""
    import cv2

    n = video.n_frames
    picks = np.unique(np.linspace(0, n - 1, min(frames, n)).round().astype(int))
    grey = np.stack([cv2.cvtColor(video.read(i, i + 1)[0], cv2.COLOR_RGB2GRAY) for i in picks])
    median = np.median(grey, axis=0).astype(np.float32)
    h, w = median.shape
    return cv2.resize(median, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def similarity(reference: np.ndarray, other: np.ndarray) -> float:
    """Normalised cross-correlation of two backgrounds after a small blur; `other` is stretched to `reference`'s
    shape. Two flat backgrounds score 1 if their grey levels are within 10 of each other, a flat and a
    structured one 0."""
    import cv2

    other = cv2.resize(other, (reference.shape[1], reference.shape[0]), interpolation=cv2.INTER_AREA)
    a, b = (cv2.GaussianBlur(x, (0, 0), BLUR_SIGMA) for x in (reference, other))
    flat_a, flat_b = a.std() < FLAT_STD, b.std() < FLAT_STD
    if flat_a or flat_b:
        return float(flat_a and flat_b and abs(float(a.mean()) - float(b.mean())) <= 10)
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _spread(videos: Sequence[Video], most: int) -> list[Video]:
    if len(videos) <= most:
        return list(videos)
    return [videos[i] for i in np.unique(np.linspace(0, len(videos) - 1, most).round().astype(int))]


def footage_warnings(normal: Sequence[Video], new: Sequence[Video]) -> list[str]:
    """One line per new video that does not fit the normal footage (aspect ratio, camera), naming its file."""
    if not normal or not new:
        return []
    first = normal[0]
    h0, w0 = first.source.frame_size()
    references = [background(v) for v in _spread(normal, MAX_NORMAL)]
    among = None
    if len(references) >= 2:  # each normal background's best match among the others; the lowest of them
        among = min(max(similarity(r, o) for j, o in enumerate(references) if j != i)
                    for i, r in enumerate(references))
    lines = []
    for video in new:
        h, w = video.source.frame_size()
        if abs((w / h) / (w0 / h0) - 1) > ASPECT_TOLERANCE:
            lines.append(f"{source_path(video)}: its aspect ratio {w}x{h} ({w / h:.2f}) differs from the normal "
                         f"footage's ({w0}x{h0}, {w0 / h0:.2f}, of {source_path(first)}): it is stretched to the "
                         "store resolution, so objects look wider or taller than in training")
        own = background(video)
        score = max(similarity(r, own) for r in references)
        if score < SCENE_THRESHOLD:
            figure = (f"; the normal footage's {'segments' if _segmented(normal) else 'videos'} score {among:.2f} "
                      "among themselves") if among is not None else ""
            lines.append(f"{source_path(video)}: does not look like the normal footage's camera (background "
                         f"similarity {score:.2f}, below {SCENE_THRESHOLD:g}{figure}): its anomaly scores mean "
                         "little")
    return lines


def _segmented(normal: Sequence[Video]) -> bool:
    return len({source_path(v) for v in normal}) < len(normal)
