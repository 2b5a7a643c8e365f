"""The students and how they are built: `build_model(branch, config, n_classes)` (asks the branch,
`mtvad.students.branches`).

Encoders start from ImageNet weights only from a local file (`load_encoder_weights`): nothing is downloaded.
A file may be a torchvision classification state dict (`resnet34-b627a593.pth`, `vgg16-397923af.pth`; the
classifier is dropped), an smp encoder state dict, a full smp model state dict (keys `encoder.*`), or any of
these under a 'state_dict' or 'model' key; `.safetensors` files too. A 3-channel first convolution is adapted
to the appearance student's 6 input channels the way smp does (weights repeated, scaled by 3/6).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mtvad.errors import EncoderWeightsError
from mtvad.hashing import file_sha256
from mtvad.students.config import TrainConfig
from mtvad.students.models.appearance import AppearanceStudent
from mtvad.students.models.attention import ContextAttention, apply_attention
from mtvad.students.models.motion import MotionStudent

if TYPE_CHECKING:
    from mtvad.students.branches import Branch

__all__ = ["AppearanceStudent", "MotionStudent", "ContextAttention", "apply_attention", "build_model",
           "load_encoder_weights", "read_encoder_state", "encoder_family", "count_parameters", "file_sha256"]

_DROPPED_PREFIXES = ("fc.", "classifier.", "decoder.", "segmentation_head.", "classification_head.")


def build_model(branch: str | Branch, config: TrainConfig, n_classes: int) -> nn.Module:
    """The branch's student with random weights (encoder weights, if any, are loaded separately)."""
    from mtvad.students.branches import get_branch  # the branches import the students from here

    return get_branch(branch).build_model(config, n_classes)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def refused_pickle(exc: BaseException) -> str | None:
    """What a file holds that torch's weights-only reader refused (None for another failure), never torch's advice
    on how to let it load (that would run the pickled code)."""
    text = str(exc)
    if "Weights only load failed" not in text and "WeightsUnpickler" not in text:
        return None
    found = re.search(r"GLOBAL ([\w.]+)", text)
    return f"holds pickled Python code or objects{f' ({found[1]})' if found else ''}, which vad does not load"


def read_encoder_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The encoder tensors of a weights file, keys as in torchvision / smp encoders (prefixes stripped)."""
    path = Path(path)
    if not path.is_file():
        raise EncoderWeightsError(f"{path}: encoder weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, pickled code refused by weights_only, ...
        refused = refused_pickle(exc)
        if refused is not None:
            raise EncoderWeightsError(f"{path}: {refused}: a weights file holds only tensors") from None
        raise EncoderWeightsError(f"{path}: cannot be read as a weights file ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderWeightsError(f"{path}: not a state dict of tensors")
    for prefix in ("module.", "encoder."):
        if all(k.startswith(prefix) or k.startswith(_DROPPED_PREFIXES) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith(_DROPPED_PREFIXES)}


def encoder_family(path: str | Path) -> str | None:
    """'resnet' or 'vgg' from a weights file's keys (None when neither)."""
    keys = read_encoder_state(path).keys()
    if any(k.startswith("layer1.") for k in keys) and "conv1.weight" in keys:
        return "resnet"
    if "features.0.weight" in keys:
        return "vgg"
    return None


def load_encoder_weights(encoder: nn.Module, path: str | Path, encoder_name: str = "") -> dict[str, Any]:
    """Load a local ImageNet state dict into a student's encoder (strict: every tensor, every shape).

    Returns what a checkpoint records about the initialisation: {'init': 'file', 'path', 'sha256'}."""
    state = read_encoder_state(path)
    own = encoder.state_dict()
    adapted = {}
    for key, value in state.items():
        target = own.get(key)
        if (target is not None and value.dim() == 4 and target.dim() == 4 and value.shape[1] == 3
                and target.shape[1] != 3 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
            k = target.shape[1]  # smp's patch_first_conv for pretrained weights: repeat channels, scale 3/k
            value = torch.cat([value[:, i % 3 : i % 3 + 1] for i in range(k)], dim=1) * (3 / k)
        adapted[key] = value
    missing = [k for k in own if k not in adapted and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in adapted if k not in own]
    wrong = [f"{k} {tuple(adapted[k].shape)} vs {tuple(own[k].shape)}" for k in adapted
             if k in own and adapted[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} encoder tensors missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape (file vs model: {'; '.join(wrong[:2])})")
        raise EncoderWeightsError(f"{path}: does not fit the {encoder_name or 'student'} encoder: "
                                  + ", ".join(parts))
    for key in own:
        if key.endswith("num_batches_tracked") and key not in adapted:
            adapted[key] = own[key]
    encoder.load_state_dict(adapted, strict=True)
    return {"init": "file", "path": str(Path(path).resolve()), "sha256": file_sha256(path)}
