"""A class-aware CPU segmentation teacher: DeepLabv3 + MobileNetV2 (TFLite, PASCAL VOC classes).

The model sees 257x257 inputs; surveillance people are small, so the frame is upscaled by `upscale` and
cut into overlapping 257x257 tiles whose logits are averaged where they overlap. VOC classes are mapped
to COCO category ids so that a store's class vocabulary means the same with this teacher and Mask R-CNN.

With `gate="background"` the teacher keeps its class knowledge but takes object extents from the
per-video background model (`background.py`): each foreground blob gets the DeepLab class most of its
classified pixels have, or OBJECT_ID ("object") when DeepLab sees nothing there.

The model file is not shipped: `deeplabv3_257_mv_gpu.tflite` (Apache-2.0, TensorFlow Lite's segmentation
example) is resolved from the `model` parameter, then `$MTVAD_MODELS`, then `~/.cache/mtvad/models`.
The TFLite runtime is an optional extra: `pip install 'mtvad[tflite]'`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtvad.errors import TeacherError
from mtvad.precompute.teachers.background import BackgroundParams, BackgroundSegmentation
from mtvad.precompute.teachers.tflite import TFLiteTeacher

MODEL_FILE = "deeplabv3_257_mv_gpu.tflite"
MODEL_URL = "https://storage.googleapis.com/download.tensorflow.org/models/tflite/gpu/deeplabv3_257_mv_gpu.tflite"
TILE = 257
# PASCAL VOC index -> (COCO category id, name); VOC 0 is background
VOC_TO_COCO = {
    1: (5, "airplane"), 2: (2, "bicycle"), 3: (16, "bird"), 4: (9, "boat"), 5: (44, "bottle"), 6: (6, "bus"),
    7: (3, "car"), 8: (17, "cat"), 9: (62, "chair"), 10: (21, "cow"), 11: (67, "dining table"), 12: (18, "dog"),
    13: (19, "horse"), 14: (4, "motorcycle"), 15: (1, "person"), 16: (64, "potted plant"), 17: (20, "sheep"),
    18: (63, "couch"), 19: (7, "train"), 20: (72, "tv"),
}
OBJECT_ID = 91  # a foreground blob DeepLab gives no class (beyond COCO's ids 1..90)


@dataclass(frozen=True)
class DeepLabParams:
    model: str = ""  # path to deeplabv3_257_mv_gpu.tflite; empty: $MTVAD_MODELS, ~/.cache/mtvad/models
    upscale: float = 2.0  # 256x256 store frames become 512x512: 4 tiles, people twice as tall for the model
    gate: str = "none"  # "none": DeepLab's own extents; "background": extents from the background model
    min_class_share: float = 0.2  # gate=background: share of a blob's pixels DeepLab must classify
    background: BackgroundParams = BackgroundParams()


class DeepLabSegmentation(TFLiteTeacher):
    role = "seg"
    name = "deeplab"
    version = "1"
    Params = DeepLabParams
    summary = "DeepLabv3-MobileNetV2 (TFLite, VOC classes as COCO ids) on upscaled tiles; optional background gate"
    model_file, model_url = MODEL_FILE, MODEL_URL
    classes = {0: "background", **{coco: name for coco, name in VOC_TO_COCO.values()}, OBJECT_ID: "object"}

    def __init__(self, **params):
        if isinstance(params.get("background"), dict):
            params["background"] = BackgroundParams(**params["background"])
        super().__init__(**params)
        if self.params.gate not in ("none", "background"):
            raise TeacherError(f"deeplab: gate must be 'none' or 'background', not {self.params.gate!r}")
        self._lut = np.zeros(21, np.uint8)
        for voc, (coco, _) in VOC_TO_COCO.items():
            self._lut[voc] = coco
        self._gate = BackgroundSegmentation(**vars(self.params.background)) if self.params.gate == "background" else None

    @property
    def fit_frames(self) -> int:  # type: ignore[override]
        return self._gate.fit_frames if self._gate else 0

    def fit_video(self, sample: np.ndarray):
        return self._gate.fit_video(sample) if self._gate else None

    def coco_ids(self, voc: np.ndarray) -> np.ndarray:
        """VOC class indices -> COCO category ids (uint8, 0 = background)."""
        return self._lut[voc]

    def voc_logits(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 21) logits of one uint8 RGB frame, from overlapping tiles of the upscaled frame."""
        import cv2

        h, w = frame.shape[:2]
        big_h, big_w = max(TILE, round(h * self.params.upscale)), max(TILE, round(w * self.params.upscale))
        big = cv2.resize(frame, (big_w, big_h), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 127.5 - 1
        logits = np.zeros((big_h, big_w, 21), np.float32)
        count = np.zeros((big_h, big_w, 1), np.float32)
        for y in _tile_starts(big_h):
            for x in _tile_starts(big_w):
                logits[y:y + TILE, x:x + TILE] += self.run_model(big[None, y:y + TILE, x:x + TILE])[0]
                count[y:y + TILE, x:x + TILE] += 1
        return cv2.resize(logits / count, (w, h), interpolation=cv2.INTER_LINEAR)

    def __call__(self, frames: np.ndarray, n_context: int, state=None) -> dict[str, np.ndarray]:
        frames = frames[n_context:]
        voc = np.stack([self.voc_logits(f).argmax(-1) for f in frames]).astype(np.uint8)
        seg = self.coco_ids(voc)
        if self._gate is not None:
            seg = self._classify_blobs(self._gate(frames, 0, state)["seg"], seg)
        return {"seg": seg}

    def _classify_blobs(self, foreground: np.ndarray, classes: np.ndarray) -> np.ndarray:
        import cv2

        out = np.zeros_like(classes)
        for i, (fg, cls) in enumerate(zip(foreground, classes)):
            n, labels = cv2.connectedComponents(fg, connectivity=8)
            for blob in range(1, n):
                inside = labels == blob
                ids, counts = np.unique(cls[inside], return_counts=True)
                keep = ids > 0
                if keep.any() and counts[keep].max() >= self.params.min_class_share * inside.sum():
                    out[i][inside] = ids[keep][counts[keep].argmax()]
                else:
                    out[i][inside] = OBJECT_ID
        return out


def _tile_starts(size: int) -> list[int]:
    """Starts of TILE-wide windows covering [0, size): evenly spread, overlapping where needed."""
    n = -(-size // TILE)
    return [round(i * (size - TILE) / max(n - 1, 1)) for i in range(n)]
