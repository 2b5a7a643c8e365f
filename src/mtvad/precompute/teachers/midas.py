"""MiDaS DPT-Hybrid relative depth: the paper's depth teacher (section 3.5, "the hybrid version").

Hugging Face transformers' `DPTForDepthEstimation` with the `Intel/dpt-hybrid-midas` weights (MiDaS v3
DPT-Hybrid: a ViT-B/16 on a BiT ResNet-50 stem, 123 M parameters). Preprocessing is `DPTImageProcessor`'s
defaults, done in torch on the model's device (the tests check that it gives the same pixel values):
resize the uint8 frames to the model's input size (`config.image_size`, 384x384 for dpt-hybrid-midas;
torchvision bicubic with antialiasing, aspect ratio not kept), scale to [0, 1], normalise with mean 0.5
and std 0.5. A checkpoint whose preprocessor_config.json asks for something else gets a warning. The
output `predicted_depth` is relative inverse depth (larger = nearer); it is resized to the store
resolution (bicubic, as `post_process_depth_estimation`) and min-max normalised per frame to [0, 1]
float32, the store's contract (a constant map becomes 0).

Runs on the GPU where there is one (`needs_gpu`; the device is chosen in `load()`, one GPU per worker
of a LocalCluster: `weights.pick_device`), `batch_size` frames per forward pass. `half=True` runs the
forward pass under CUDA autocast (float16); on CPU it does nothing. The difference between float16 and
float32 depth maps has not been measured (no GPU where this was written): check it on a GPU before building
a store with `half=True`.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtvad.precompute.teachers import weights as W
from mtvad.precompute.teachers.base import Teacher

IMAGE_MEAN = (0.5, 0.5, 0.5)  # DPTImageProcessor's defaults (transformers' IMAGENET_STANDARD_MEAN/STD)
IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class MidasParams:
    batch_size: int = 8  # frames per forward pass
    half: bool = False  # CUDA autocast float16 (no effect on CPU)
    weights: str = ""  # a Hugging Face model folder (config.json + weights); empty: the HF cache, then a download


class Midas(Teacher):
    role = "depth"
    name = "midas"
    version = "1"
    Params = MidasParams
    summary = ("MiDaS DPT-Hybrid (Intel/dpt-hybrid-midas, transformers) relative inverse depth, min-max "
               "normalised per frame")
    needs_gpu = True
    path_params = ("weights",)

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._located: W.Located | None = None
        self.model = None
        self.device = None
        self.input_size: tuple[int, int] | None = None

    # -- weights -------------------------------------------------------------------------------------

    def locate_weights(self) -> W.Located:
        """Where the weights are, or would be expected, without network access or loading them."""
        return W.find_hf_model(self.params.weights, W.MIDAS_MODEL_ID)

    def weights_path(self) -> Path:
        if self._located is None:
            _require_transformers()  # on the client, before any store is written, not first on a worker
            self._located = W.resolve_hf_model(self.params.weights, W.MIDAS_MODEL_ID, W.MIDAS_URL,
                                               "MiDaS DPT-Hybrid")
        return self._located.path  # type: ignore[return-value]

    def weights_sha256(self) -> str:
        return W.sha256_of(self.weights_path())

    # -- model ---------------------------------------------------------------------------------------

    def load(self) -> None:
        import torch

        from mtvad.errors import TeacherError

        _require_transformers()
        from transformers import DPTForDepthEstimation

        folder = self.weights_path().parent
        self.device = W.pick_device()
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar between precompute's own bars
        try:
            model = DPTForDepthEstimation.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        except Exception as exc:
            raise TeacherError(f"{folder}: cannot load a DPT depth model from it ({type(exc).__name__}: "
                               f"{W._first_line(exc)}); get {W.MIDAS_MODEL_ID} from {W.MIDAS_URL}") from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        size = model.config.image_size
        self.input_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        _check_preprocessor(folder, self.input_size)
        self.model = model.eval().to(self.device)

    def preprocess(self, frames: np.ndarray):
        """uint8 RGB (n, H, W, 3) -> the model's pixel_values (n, 3, h, w) float32, on the model's device."""
        import torch
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvF

        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != self.input_size:  # on uint8, as DPTImageProcessor: rounded, clipped
            x = tvF.resize(x, list(self.input_size), interpolation=InterpolationMode.BICUBIC, antialias=True)
        x = x.float()
        mean = torch.tensor(IMAGE_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGE_STD, device=x.device).view(1, 3, 1, 1)
        return (x / 255 - mean) / std

    def __call__(self, frames: np.ndarray, n_context: int, state=None) -> dict[str, np.ndarray]:
        import torch

        if self.model is None:
            self.load()
        frames = frames[n_context:]
        out = np.zeros(frames.shape[:3], np.float32)
        half = self.params.half and self.device.type == "cuda"
        with torch.inference_mode():
            for start in range(0, len(frames), self.params.batch_size):
                pixels = self.preprocess(frames[start:start + self.params.batch_size])
                with torch.autocast("cuda", dtype=torch.float16) if half else contextlib.nullcontext():
                    depth = self.model(pixel_values=pixels).predicted_depth
                out[start:start + len(pixels)] = normalise(depth.float(), frames.shape[1:3]).cpu().numpy()
        return {"depth": out}


def _require_transformers() -> None:
    import importlib.util

    from mtvad.errors import TeacherError

    if importlib.util.find_spec("transformers") is None:
        raise TeacherError("the midas teacher needs Hugging Face transformers: pip install 'transformers>=5'")


def normalise(depth, size: tuple[int, int]):
    """(n, h, w) relative inverse depth -> (n, H, W) resized (bicubic) and min-max normalised per frame."""
    import torch
    import torch.nn.functional as F

    if tuple(depth.shape[-2:]) != tuple(size):
        depth = F.interpolate(depth[:, None], size=tuple(size), mode="bicubic", align_corners=False)[:, 0]
    lo = depth.amin(dim=(1, 2), keepdim=True)
    span = depth.amax(dim=(1, 2), keepdim=True) - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    out = torch.where(span > 0, (depth - lo) / safe, torch.zeros_like(depth))
    return out.clamp_(0, 1).float()


def _check_preprocessor(folder: Path, input_size: tuple[int, int]) -> None:
    """Warn where the checkpoint's own preprocessor_config.json asks for other preprocessing than ours."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    differences = []
    size = cfg.get("size") or {}
    if isinstance(size, dict) and size.get("height") and (size.get("height"), size.get("width")) != input_size:
        differences.append(f"size {size} (model: {input_size})")
    for key, ours in (("image_mean", IMAGE_MEAN), ("image_std", IMAGE_STD)):
        if key in cfg and not np.allclose(cfg[key], ours):
            differences.append(f"{key} {cfg[key]} (ours: {list(ours)})")
    if cfg.get("keep_aspect_ratio"):
        differences.append("keep_aspect_ratio true (ours: false)")
    if cfg.get("resample", 3) != 3:  # PIL codes: 2 bilinear, 3 bicubic
        differences.append(f"resample {cfg['resample']} (ours: 3, bicubic)")
    if cfg.get("do_resize") is False or cfg.get("do_normalize") is False:
        differences.append("do_resize or do_normalize false (ours: both)")
    if differences:
        warnings.warn(f"{path}: the midas teacher preprocesses differently: " + "; ".join(differences), stacklevel=2)
