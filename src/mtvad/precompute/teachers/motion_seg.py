"""A model-free segmentation teacher that finds what moves, with shape pseudo-classes: `motion-shapes`.

Per frame t (the teacher computes its own Farneback flow from t-1, with the flow teacher's parameters, so it
depends on no other role):

1. **Objects**: the per-video background model (`background.py`: |frame - median| above the video's
   threshold) or, where the flow exceeds the flow threshold, a background difference above `loose` x
   that threshold; opened (speckle), closed with an upright ellipse (joins a walker's head, body
   and legs, not two walkers side by side); blobs below `min_area` dropped. On Ped2 the background model
   alone catches low-contrast walkers as thin fragments or not at all.
2. **Classes**: each object blob gets one of K shape pseudo-classes (ids 1..K, 0 = background, as Mask
   R-CNN's masks get COCO ids): the nearest k-means centre of three features,
   relative size log(area / s(y)^2) (s(y): the expected blob side at the blob's bottom row y, a line fitted
   on the training blobs: far objects are higher and smaller), aspect log(height / width), and fill
   (area / bounding-box area). Classes are ordered by relative size and named with what their members
   are, e.g. `shape-2 (size 1x, h/w 2.6, fill 0.57)`.
3. **Halo** (`halo=True`): the objects grow into the moving pixels (flow above the threshold) connected to
   them, each pixel taking the class of its nearest object pixel. Farneback spreads an object's motion
   several pixels beyond it (on Ped2 three quarters of the pixels moving > 1 px/frame lie beside the
   objects, not on them), so without the halo the motion student's target (flow masked by seg) would lose
   most of the motion; with it the mask is about 3x the objects' area (`benchmarks/bench_teachers.py`).

**Dataset-level fit** (`fit_dataset`: once, on the training videos, before any block): the flow threshold
(unless `flow_threshold` > 0: the valley of the histogram of log flow magnitude between its noise mode and
its mover mode), the perspective line, the feature scaling and the k-means centres. The fitted state is
JSON and is the parameter `fit`: in the store's `teachers` root attribute and fingerprint (a store never
mixes two fits), and every worker builds the same fitted teacher from it. Nothing is fitted on test videos.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtvad.errors import TeacherError
from mtvad.precompute.teachers.background import BackgroundSegmentation, BackgroundState
from mtvad.precompute.teachers.base import Teacher, fit_indices, to_gray
from mtvad.precompute.teachers.farneback import FarnebackParams

FEATURES = ("log_rel_area", "log_aspect", "fill")
FIT_VERSION = 1  # layout of the fitted state
MIN_FEATURE_STD = 0.05  # feature scaling: a feature that hardly varies on the training blobs is not blown up


@dataclass(frozen=True)
class MotionShapeParams:
    n_classes: int = 4  # K shape pseudo-classes (k-means)
    flow_threshold: float = 0.0  # store px/frame; 0 = fitted on the training videos (histogram valley)
    min_flow_threshold: float = 0.1  # floor of a fitted threshold
    fit_frames: int = 48  # background model: frames per video (median), as the background teacher
    k_noise: float = 4.0
    min_threshold: float = 12.0  # grey levels
    loose: float = 0.5  # where the flow exceeds its threshold, difference above loose x the video's threshold
    open_px: int = 3  # opening of the object mask (speckle)
    close_w: int = 3  # closing of the object mask: an upright ellipse, width x height (px)
    close_h: int = 7
    halo: bool = True  # grow objects into the moving pixels attached to them (Farneback's spread of motion)
    halo_px: int = 0  # farthest halo pixel from its object (px); 0 = no limit
    min_area: float = 4e-4  # smallest blob, as a fraction of the frame area
    fit_videos: int = 32  # dataset fit: at most this many training videos, evenly spaced
    fit_pairs: int = 24  # dataset fit: frame pairs (t-1, t) per video, evenly spaced
    seed: int = 0  # k-means
    farneback: FarnebackParams = field(default_factory=FarnebackParams)
    fit: dict = field(default_factory=dict)  # the dataset-level fit (filled by the job; see fit_dataset)


class MotionShapeSegmentation(Teacher):
    role = "seg"
    name = "motion-shapes"
    version = "1"
    Params = MotionShapeParams
    summary = ("moving objects from the background model and Farneback flow, grown into the flow around them; "
               "K shape pseudo-classes (k-means on perspective-normalised size, aspect, fill; fitted on training)")
    context = 1
    dataset_fit = True

    def __init__(self, **params: Any):
        if isinstance(params.get("farneback"), dict):
            params["farneback"] = FarnebackParams(**params["farneback"])
        super().__init__(**params)
        p = self.params
        if p.n_classes < 1 or p.n_classes > 254:
            raise TeacherError(f"motion-shapes: n_classes must be in 1..254, not {p.n_classes}")
        self._background = BackgroundSegmentation(fit_frames=p.fit_frames, k_noise=p.k_noise,
                                                  min_threshold=p.min_threshold)
        if p.fit:
            check_fit(p.fit, p.n_classes)

    # ---- protocol ---------------------------------------------------------------------------------------
    @property
    def fit_frames(self) -> int:  # type: ignore[override]
        return self.params.fit_frames

    @property
    def classes(self) -> dict[int, str]:  # type: ignore[override]
        names = {0: "background"}
        fit = self.params.fit
        for k in range(1, self.params.n_classes + 1):
            if fit:
                size, aspect, fill = fit["class_centres"][k - 1]
                names[k] = f"shape-{k} (size {size:.2g}x, h/w {aspect:.2g}, fill {fill:.2f})"
            else:
                names[k] = f"shape-{k}"
        return names

    def fit_video(self, sample: np.ndarray) -> BackgroundState:
        return self._background.fit_video(sample)

    def fit_dataset(self, videos: Sequence[Any], resolution: tuple[int, int]) -> dict[str, Any]:
        """The fitted state (JSON) from the training videos: read, at the store resolution, each video's
        background sample and `fit_pairs` frame pairs; see the module docstring for what is fitted."""
        from mtvad.precompute.blocks import resize_frames
        from mtvad.precompute.datasets.base import read_frames

        p = self.params
        if not videos:
            raise TeacherError("motion-shapes: the dataset-level fit needs training videos; the dataset has none")
        chosen = [videos[int(i)] for i in fit_indices(len(videos), p.fit_videos)]
        per_video = []
        for video in chosen:
            idx = fit_indices(video.n_frames, p.fit_frames)
            state = self.fit_video(resize_frames(read_frames(video, idx), resolution))  # one pass each
            ts = fit_indices(video.n_frames - 1, p.fit_pairs) + 1 if video.n_frames > 1 else np.array([], int)
            if len(ts):
                pairs = np.unique(np.concatenate([ts - 1, ts]))
                frames = to_gray(resize_frames(read_frames(video, pairs), resolution))
                at = np.searchsorted(pairs, np.stack([ts - 1, ts], axis=1))  # (n, 2) positions in `pairs`
                gray = frames[at]
            else:
                gray = np.zeros((0, 2, *resolution), np.uint8)
            per_video.append((state, gray))
        return self.fit_samples(per_video, resolution, videos=[f"{v.split}/{v.id}" for v in chosen])

    def fit_samples(self, per_video: list[tuple[BackgroundState, np.ndarray]], resolution: tuple[int, int],
                    videos: list[str] | None = None) -> dict[str, Any]:
        """The fit from (background state, grey frame pairs (n, 2, H, W)) per training video."""
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        p = self.params
        h, w = resolution
        flows = [[self._flow(pair[0], pair[1]) for pair in gray] for _, gray in per_video]
        all_mags = np.concatenate([m.ravel() for ms in flows for m in ms]) if any(flows) else np.zeros(0)
        threshold = p.flow_threshold or round_floats(fit_flow_threshold(all_mags, p.min_flow_threshold))
        stats = []
        for (state, gray), mags in zip(per_video, flows):
            for pair, mag in zip(gray, mags):
                _, blob_stats = self._blobs(pair[1], mag, state, threshold)
                stats.append(blob_stats)
        stats = np.concatenate(stats) if stats else np.zeros((0, 5))
        if len(stats) < max(p.n_classes, 2) * 3:
            raise TeacherError(f"motion-shapes: the training videos gave {len(stats)} blobs, too few to fit "
                               f"{p.n_classes} shape classes (need {max(p.n_classes, 2) * 3}); lower n_classes")
        perspective = fit_perspective(stats, h)
        raw = blob_features(stats, perspective, h)
        mean, std = raw.mean(axis=0), np.maximum(raw.std(axis=0), MIN_FEATURE_STD)
        z = (raw - mean) / std
        with warnings.catch_warnings():  # fewer distinct shapes than classes (a synthetic scene): centres repeat
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(n_clusters=p.n_classes, n_init=10, random_state=p.seed).fit(z)
        order = np.argsort(km.cluster_centers_[:, 0], kind="stable")  # by relative size
        centres = km.cluster_centers_[order]
        counts = np.bincount(np.argsort(order)[km.labels_], minlength=p.n_classes)
        # what each class is, in the features' own units (median member)
        labels = np.argsort(order)[km.labels_]
        described = []
        for k in range(p.n_classes):
            member = raw[labels == k]
            med = np.median(member, axis=0) if len(member) else centres[k] * std + mean
            described.append([float(np.exp(med[0])), float(np.exp(med[1])), float(med[2])])
        fit = {
            "fit_version": FIT_VERSION,
            "resolution": [h, w],
            "flow_threshold": threshold,
            "perspective": perspective,
            "features": list(FEATURES),
            "feature_mean": mean.tolist(),
            "feature_std": std.tolist(),
            "centres": centres.tolist(),
            "class_centres": described,
            "class_shares": (counts / counts.sum()).tolist(),
            "blobs": len(stats),
        }
        if videos is not None:
            fit["videos"] = len(videos)
        return round_floats(fit)

    def __call__(self, frames: np.ndarray, n_context: int, state: BackgroundState | None = None
                 ) -> dict[str, np.ndarray]:
        if state is None:
            raise ValueError("the motion-shapes teacher needs its per-video state (fit_video)")
        fit = self.params.fit
        if not fit:
            raise TeacherError("motion-shapes: not fitted; the job runs fit_dataset on the training videos "
                               "(or pass a recorded fit as the parameter 'fit')")
        if tuple(fit["resolution"]) != frames.shape[1:3]:
            raise TeacherError(f"motion-shapes: fitted at {fit['resolution']}, called on {list(frames.shape[1:3])}")
        gray = to_gray(frames)
        n = len(frames) - n_context
        seg = np.zeros((n,) + gray.shape[1:], np.uint8)
        for i in range(n):
            t = n_context + i
            # the first frame of a video has no flow: the background model alone
            mag = self._flow(gray[t - 1], gray[t]) if t > 0 else np.zeros(gray.shape[1:], np.float32)
            labels, stats = self._blobs(gray[t], mag, state, fit["flow_threshold"])
            if len(stats):
                lut = np.zeros(len(stats) + 1, np.uint8)
                lut[1:] = self.object_classes(frames[t], labels, stats)
                seg[i] = lut[labels]
                if self.params.halo:
                    seg[i] = self.add_halo(seg[i], mag, fit["flow_threshold"])
        return {"seg": seg}

    # ---- pieces ---------------------------------------------------------------------------------------
    def object_classes(self, frame: np.ndarray, labels: np.ndarray, stats: np.ndarray) -> np.ndarray:
        """The class id of each object blob of one frame (uint8 RGB `frame`, blob `labels` 1..m, `stats` rows):
        here its shape pseudo-class."""
        return self.classify(stats)

    def classify(self, stats: np.ndarray) -> np.ndarray:
        """Class ids 1..K of blobs given as rows (area, left, top, width, height)."""
        fit = self.params.fit
        z = (blob_features(stats, fit["perspective"], fit["resolution"][0]) - np.asarray(fit["feature_mean"])) \
            / np.asarray(fit["feature_std"])
        d = ((z[:, None, :] - np.asarray(fit["centres"])[None]) ** 2).sum(-1)
        return (d.argmin(axis=1) + 1).astype(np.uint8)

    def objects(self, gray: np.ndarray, mag: np.ndarray, state: BackgroundState, threshold: float) -> np.ndarray:
        """uint8 0/1 mask of the objects proper in one grey frame: background difference above the video's
        threshold, or above `loose` x that threshold where the flow exceeds `threshold`; opened, then closed
        with an upright kernel (joins a person's parts, not two people side by side). (A frame difference
        would also mark the background an object uncovers: a trail that changes the object's shape.)"""
        import cv2

        p = self.params
        frame = gray.astype(np.float32)
        diff = np.abs(frame - state.background)
        fg = diff > state.threshold
        fg |= (mag > threshold) & (diff > p.loose * state.threshold)
        fg = fg.astype(np.uint8)
        if p.open_px > 1:
            fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((p.open_px, p.open_px), np.uint8))
        if p.close_w > 1 or p.close_h > 1:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (p.close_w, p.close_h))
            fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, kernel)
        return fg

    def _blobs(self, gray: np.ndarray, mag: np.ndarray, state: BackgroundState, threshold: float
               ) -> tuple[np.ndarray, np.ndarray]:
        """(labels (H, W) int32 renumbered 1..m over kept object blobs, stats (m, 5): area, left, top, width,
        height)."""
        import cv2

        fg = self.objects(gray, mag, state, threshold)
        n, labels, cc, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        area = cc[1:, cv2.CC_STAT_AREA]
        keep = np.flatnonzero(area >= self.params.min_area * gray.size) + 1
        renumber = np.zeros(n, np.int32)
        renumber[keep] = np.arange(1, len(keep) + 1)
        cols = [cv2.CC_STAT_AREA, cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT]
        return renumber[labels], cc[keep][:, cols].astype(np.float64)

    def add_halo(self, seg: np.ndarray, mag: np.ndarray, threshold: float) -> np.ndarray:
        """`seg` grown into the moving pixels (flow above `threshold`) connected to an object, each taking the
        class of its nearest object pixel (at most `halo_px` away when that is > 0)."""
        import cv2

        objects = seg > 0
        if not objects.any():
            return seg
        region = (objects | (mag > threshold)).astype(np.uint8)
        n, comp = cv2.connectedComponents(region, connectivity=8)
        attached = np.zeros(n, bool)
        attached[np.unique(comp[objects])] = True
        attached[0] = False
        halo = attached[comp] & ~objects
        if not halo.any():
            return seg
        dist, nearest = cv2.distanceTransformWithLabels((~objects).astype(np.uint8), cv2.DIST_L2, 5,
                                                        labelType=cv2.DIST_LABEL_PIXEL)
        if self.params.halo_px > 0:
            halo &= dist <= self.params.halo_px
        lut = np.zeros(int(nearest.max()) + 1, np.uint8)
        lut[nearest[objects]] = seg[objects]
        out = seg.copy()
        out[halo] = lut[nearest[halo]]
        return out

    def _flow(self, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        import cv2

        f = self.params.farneback
        flow = cv2.calcOpticalFlowFarneback(prev, cur, None, f.pyr_scale, f.levels, f.winsize, f.iterations,
                                            f.poly_n, f.poly_sigma, 0)
        return cv2.magnitude(flow[..., 0], flow[..., 1])


def fit_flow_threshold(mags: np.ndarray, floor: float) -> float:
    """The valley of the histogram of log10 flow magnitude between its two modes, noise (still pixels, below)
    and movers (above): the highest peak, and the peak at least half a decade from it with the deepest valley
    between them; `floor` if there is no valley, never below `floor`."""
    if mags.size == 0:
        return float(floor)
    logm = np.log10(np.maximum(mags, 1e-3))
    hist, edges = np.histogram(logm, bins=80, range=(-3.0, 1.0))
    hist = np.convolve(hist, np.ones(5) / 5, mode="same")
    centres = (edges[:-1] + edges[1:]) / 2
    top = int(hist.argmax())
    best, valley = 0.0, None
    for other in np.flatnonzero(np.abs(centres - centres[top]) >= 0.5):
        lo, hi = sorted((top, int(other)))
        dip = lo + int(hist[lo:hi + 1].argmin())
        depth = min(hist[top], hist[other]) - hist[dip]
        if depth > best:
            best, valley = depth, dip
    if valley is None:
        return float(floor)
    return float(max(floor, 10 ** centres[valley]))


def fit_perspective(stats: np.ndarray, height: int) -> list[float]:
    """[a, b]: expected blob side sqrt(area) = a + b * (bottom row / H), a robust line through the medians of
    sqrt(area) in 16 row bins (weighted by their counts); a constant where the rows span too little."""
    side = np.sqrt(stats[:, 0])
    row = (stats[:, 2] + stats[:, 4]) / height
    bins = np.minimum((row * 16).astype(int), 15)
    xs, ys, ws = [], [], []
    for b in np.unique(bins):
        inside = bins == b
        if inside.sum() >= 3:
            xs.append(float(np.median(row[inside])))
            ys.append(float(np.median(side[inside])))
            ws.append(float(inside.sum()))
    if len(xs) < 2 or max(xs) - min(xs) < 0.1:
        return [float(np.median(side)), 0.0]
    b, a = np.polyfit(xs, ys, 1, w=np.sqrt(ws))
    return [float(a), float(b)]


def blob_features(stats: np.ndarray, perspective: Sequence[float], height: int) -> np.ndarray:
    """(m, 3) features of blobs given as rows (area, left, top, width, height): see FEATURES."""
    area, width, blob_h = stats[:, 0], stats[:, 3], stats[:, 4]
    row = (stats[:, 2] + blob_h) / height
    a, b = perspective
    expected = np.maximum(a + b * row, 0.25 * max(a, a + b, 1.0))  # never near 0 at the horizon
    return np.stack([np.log(area / expected ** 2), np.log(blob_h / width), area / (width * blob_h)], axis=1)


def check_fit(fit: dict, n_classes: int) -> None:
    need = {"fit_version", "resolution", "flow_threshold", "perspective", "feature_mean", "feature_std", "centres",
            "class_centres"}
    missing = need - set(fit)
    if missing:
        raise TeacherError(f"motion-shapes: the parameter 'fit' lacks {sorted(missing)}")
    if fit["fit_version"] != FIT_VERSION:
        raise TeacherError(f"motion-shapes: a fit of layout {fit['fit_version']}, this code reads {FIT_VERSION}")
    if len(fit["centres"]) != n_classes:
        raise TeacherError(f"motion-shapes: the fit has {len(fit['centres'])} classes, n_classes is {n_classes}")


def round_floats(value: Any, digits: int = 5) -> Any:
    """JSON value with every float rounded to `digits` significant digits: a fit recorded in a fingerprint
    does not change with the last bits of a sum's order (threads, BLAS)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [round_floats(v, digits) for v in value]
    if isinstance(value, np.generic):
        return round_floats(value.item(), digits)
    return value


__all__ = ["MotionShapeParams", "MotionShapeSegmentation", "blob_features", "fit_flow_threshold", "fit_perspective"]
