"""Mask R-CNN (ResNet-50 FPN, COCO) as a semantic segmentation teacher: the paper's seg teacher (3.2, 4.3).

torchvision's `maskrcnn_resnet50_fpn` with its COCO weights (`MaskRCNN_ResNet50_FPN_Weights.COCO_V1`,
file `maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth`) detects instances; they are painted into one class id per
pixel:

- an instance counts if its score is above `score_threshold` (strictly, as torchvision's own
  `box_score_thresh`) and its class is in the vocabulary (COCO's placeholder ids are never painted);
- it covers the pixels where its mask probability is above `mask_threshold` (torchvision pastes each mask
  back at the frame's size);
- where instances overlap, the higher score wins (ties: torchvision's order);
- every other pixel is 0 = background.

The class id is the COCO category id of the detection (1 = person, 2 = bicycle, 3 = car, ..., 90 =
toothbrush), the same ids torchvision and COCO use, so they are stable across versions; `classes` is that
vocabulary (80 names, ids 1..90 with COCO's gaps, plus 0 = background).

torchvision resizes every frame so that its short side is `min_size` (800, torchvision's default; long
side at most `max_size`): the store's 256x256 frames are upsampled to 800x800 before detection, as the
detector was trained on COCO images of that size.

Runs on the GPU where there is one (`needs_gpu`; the device is chosen in `load()`, one GPU per worker
of a LocalCluster: `weights.pick_device`), `batch_size` frames per forward pass. `half=True` runs the
forward pass under CUDA autocast (float16); on CPU it does nothing. The difference between float16 and
float32 segmentations has not been measured (no GPU where this was written): check it on a GPU before building
a store with `half=True`.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtvad.precompute.teachers import weights as W
from mtvad.precompute.teachers.base import Teacher


@functools.cache
def coco_classes() -> dict[int, str]:
    """COCO category id -> name from torchvision's weights metadata (no download), 0 = background."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    categories = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    classes = {0: "background"}
    classes.update({i: name for i, name in enumerate(categories) if i > 0 and name not in ("__background__", "N/A")})
    return classes


@dataclass(frozen=True)
class MaskRCNNParams:
    score_threshold: float = 0.5  # keep detections scoring above this
    mask_threshold: float = 0.5  # an instance covers pixels whose mask probability is above this
    min_size: int = 800  # torchvision's internal resize: short side (torchvision's default)
    max_size: int = 1333  # ... and the long side at most this (torchvision's default)
    max_detections: int = 100  # detections per frame (torchvision's default)
    batch_size: int = 4  # frames per forward pass
    half: bool = False  # CUDA autocast float16 (no effect on CPU)
    weights: str = ""  # a .pth file; empty: torch hub's cache, then a download


class MaskRCNN(Teacher):
    role = "seg"
    name = "maskrcnn"
    version = "1"
    Params = MaskRCNNParams
    summary = ("Mask R-CNN R50-FPN (COCO, torchvision) instances painted into a class map: COCO category id per "
               "pixel, higher score wins")
    needs_gpu = True
    path_params = ("weights",)

    @property
    def classes(self) -> dict[int, str]:  # type: ignore[override]
        return coco_classes()  # imports torchvision: only when asked

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._located: W.Located | None = None
        self.model = None
        self.device = None
        self._valid = None

    # -- weights -------------------------------------------------------------------------------------

    def locate_weights(self) -> W.Located:
        """Where the weights are, or would be expected, without network access or loading them."""
        return W.find_torch_checkpoint(self.params.weights, W.MASKRCNN_FILE)

    def weights_path(self) -> Path:
        if self._located is None:
            self._located = W.resolve_torch_checkpoint(self.params.weights, W.MASKRCNN_FILE, W.MASKRCNN_URL,
                                                       "Mask R-CNN (COCO)")
        return self._located.path  # type: ignore[return-value]

    def weights_sha256(self) -> str:
        return W.sha256_of(self.weights_path())

    # -- model ---------------------------------------------------------------------------------------

    def load(self) -> None:
        import torch
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        from mtvad.errors import TeacherError

        p = self.params
        path = self.weights_path()
        self.device = W.pick_device()
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, min_size=p.min_size,
                                      max_size=p.max_size, box_score_thresh=p.score_threshold,
                                      box_detections_per_img=p.max_detections)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:
            raise TeacherError(f"{path}: not a maskrcnn_resnet50_fpn COCO state dict ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}); get {W.MASKRCNN_FILE} from "
                               f"{W.MASKRCNN_URL}") from exc
        self.model = model.eval().to(self.device)
        valid = torch.zeros(256, dtype=torch.bool)
        valid[list(self.classes)] = True
        valid[0] = False
        self._valid = valid.to(self.device)

    def __call__(self, frames: np.ndarray, n_context: int, state=None) -> dict[str, np.ndarray]:
        import torch

        if self.model is None:
            self.load()
        p = self.params
        frames = frames[n_context:]
        out = np.zeros(frames.shape[:3], np.uint8)
        half = p.half and self.device.type == "cuda"
        with torch.inference_mode():
            for start in range(0, len(frames), p.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(frames[start:start + p.batch_size])).to(self.device)
                images = list(batch.permute(0, 3, 1, 2).float().div_(255))
                with torch.autocast("cuda", dtype=torch.float16) if half else contextlib.nullcontext():
                    detections = self.model(images)
                for i, det in enumerate(detections):
                    out[start + i] = semantic_map(det["masks"], det["labels"], det["scores"], frames.shape[1:3],
                                                  p.score_threshold, p.mask_threshold, self._valid).cpu().numpy()
        return {"seg": out}


def semantic_map(masks, labels, scores, size: tuple[int, int], score_threshold: float, mask_threshold: float,
                 valid=None):
    """One frame's instances -> uint8 class map (H, W) on the masks' device.

    masks: (N, 1, H, W) or (N, H, W) probabilities; labels: (N,) class ids; scores: (N,). A pixel gets the
    label of the highest-scoring instance with score > score_threshold, a label that `valid` (bool indexed
    by class id, None: any id 1..255) allows, and mask probability > mask_threshold there; 0 elsewhere.
    """
    import torch

    masks = torch.as_tensor(masks)
    labels = torch.as_tensor(labels, device=masks.device).long()
    scores = torch.as_tensor(scores, device=masks.device).float()
    h, w = size
    if masks.ndim == 4:
        masks = masks[:, 0]
    keep = (scores > score_threshold) & (labels > 0) & (labels < 256)
    if valid is not None:
        keep &= torch.as_tensor(valid, device=masks.device)[labels.clamp(0, len(valid) - 1)]
    if not bool(keep.any()):
        return torch.zeros((h, w), dtype=torch.uint8, device=masks.device)
    masks, labels, scores = masks[keep], labels[keep], scores[keep]
    order = torch.argsort(scores, descending=True, stable=True)
    masks, labels, scores = masks[order], labels[order], scores[order]
    covered = masks.float() > mask_threshold  # (N, H, W)
    # the first covering instance in descending score order is the highest-scoring one
    first = torch.argmax(covered.to(torch.uint8), dim=0)  # argmax returns the first maximum
    painted = covered.any(dim=0)
    return torch.where(painted, labels[first], torch.zeros_like(labels[first])).to(torch.uint8)
