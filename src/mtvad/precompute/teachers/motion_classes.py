"""A class-aware CPU segmentation teacher: every mover found, each given a real class: `motion-classes`.

Extents come from the movers teacher (`motion_seg.py`: background model and flow, grown into Farneback's halo;
the same dataset-level fit), so the mask, and with it the motion branch's target, is `motion-shapes`' own. Each
object blob then gets a COCO class from DeepLab (`deeplab.py`: DeepLabv3 + MobileNetV2, PASCAL VOC classes as
COCO ids), run where the object is: a square crop centred on the blob, `crop_scale` times its longer side (at
least `min_crop` store pixels), resized to the model's 257x257, so that a small far walker and a near cyclist
are both seen at a size the model knows. The blob takes the non-background class of the highest mean softmax
probability over its pixels in the crop (a soft vote: one class per object, where DeepLab's per-pixel labels
are noisy), when that mean is at least `min_class_prob`; otherwise OBJECT_ID ("object": something moves there,
DeepLab does not say what). Halo pixels take the class of their nearest object, as in `motion-shapes`. The
defaults were chosen on Ped2's training videos, whose movers are all walkers (benchmarks/bench_teachers.py
--section objects): of the crop sizes, votes and whole-frame tiles measured there, the one with the largest
share of moving training pixels called "person" minus the share called another named class.

Class ids are COCO's, as Mask R-CNN's (`paper` preset): 1 person, 2 bicycle, 3 car, 4 motorcycle, ...; the
vocabulary is DeepLab's 20 VOC classes plus "object". The model file is not shipped (see `deeplab.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mtvad.errors import TeacherError
from mtvad.precompute.teachers.deeplab import OBJECT_ID, TILE, DeepLabSegmentation
from mtvad.precompute.teachers.motion_seg import MotionShapeParams, MotionShapeSegmentation
from mtvad.precompute.teachers.weights import Located


@dataclass(frozen=True)
class MotionClassParams(MotionShapeParams):
    model: str = ""  # path to deeplabv3_257_mv_gpu.tflite; empty: $MTVAD_MODELS, ~/.cache/mtvad/models
    crop_scale: float = 2.0  # crop side / the object's longer side (bench_teachers.py --section objects)
    min_crop: int = 32  # store pixels: the smallest crop (a far walker keeps some context around it)
    min_class_prob: float = 0.1  # the winning class's mean probability over the blob, below which it is "object"


class MotionClassSegmentation(MotionShapeSegmentation):
    role = "seg"
    name = "motion-classes"
    version = "1"
    Params = MotionClassParams
    summary = ("movers as motion-shapes finds them, each classed by DeepLab (TFLite) on a crop around it: "
               "COCO ids (person, bicycle, car, ...) or 'object'")
    path_params = ("model",)
    classes = DeepLabSegmentation.classes  # type: ignore[assignment]

    def __init__(self, **params: Any):
        super().__init__(**params)
        p = self.params
        if p.crop_scale < 1 or p.min_crop < 8:
            raise TeacherError(f"motion-classes: crop_scale must be >= 1 and min_crop >= 8, not {p.crop_scale} "
                               f"and {p.min_crop}")
        if not 0 <= p.min_class_prob < 1:
            raise TeacherError(f"motion-classes: min_class_prob must be in [0, 1), not {p.min_class_prob}")
        self._deeplab = DeepLabSegmentation(model=p.model)

    # the model file is DeepLab's
    def locate_weights(self) -> Located:
        return self._deeplab.locate_weights()

    def weights_path(self):
        return self._deeplab.weights_path()

    def load(self) -> None:
        self._deeplab.load()

    def object_classes(self, frame: np.ndarray, labels: np.ndarray, stats: np.ndarray) -> np.ndarray:
        """The COCO class of each object blob: DeepLab's vote over the blob's pixels in a crop around it."""
        out = np.empty(len(stats), np.uint8)
        for b, (_, left, top, width, height) in enumerate(stats.astype(int)):
            y0, x0, side = crop_window(frame.shape[:2], left, top, width, height, self.params.crop_scale,
                                       self.params.min_crop)
            logits = self.crop_logits(frame[y0:y0 + side, x0:x0 + side])
            inside = labels[y0:y0 + side, x0:x0 + side] == b + 1
            voc = vote(logits[inside], self.params.min_class_prob)
            out[b] = OBJECT_ID if voc == 0 else self._deeplab.coco_ids(voc)
        return out

    def crop_logits(self, crop: np.ndarray) -> np.ndarray:
        """(side, side, 21) VOC logits of a square uint8 RGB crop, DeepLab run on it resized to 257x257."""
        import cv2

        side = crop.shape[0]
        x = cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 127.5 - 1
        return cv2.resize(self._deeplab.run_model(x[None])[0], (side, side), interpolation=cv2.INTER_LINEAR)


def crop_window(shape: tuple[int, int], left: int, top: int, width: int, height: int, scale: float,
                min_side: int) -> tuple[int, int, int]:
    """(top, left, side) of the square crop centred on a bounding box: `scale` x its longer side, at least
    `min_side`, at most the frame's shorter side, shifted to lie inside the frame."""
    h, w = shape
    side = int(min(max(round(scale * max(width, height)), min_side), h, w))
    y0 = int(np.clip(round(top + height / 2 - side / 2), 0, h - side))
    x0 = int(np.clip(round(left + width / 2 - side / 2), 0, w - side))
    return y0, x0, side


def vote(logits: np.ndarray, min_prob: float) -> int:
    """The VOC class of an object from the logits (n, 21) of its pixels: the non-background class of the highest
    mean softmax probability over them, or 0 (none) when that mean is below `min_prob` (or there are no pixels)."""
    if len(logits) == 0:
        return 0
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    mean = (e / e.sum(axis=1, keepdims=True)).mean(axis=0)
    best = int(mean[1:].argmax()) + 1
    return best if mean[best] >= min_prob else 0


__all__ = ["MotionClassParams", "MotionClassSegmentation", "crop_window", "vote"]
