"""Where the students run: the torch device (`pick_device`) and the mixed precision used on it (`amp_settings`).
Training and scoring both use them."""

from __future__ import annotations

import torch

from mtvad.errors import ConfigError


def pick_device(preference: str = "auto") -> torch.device:
    """'auto': CUDA when present, else the CPU; 'cuda' without a CUDA device is a `ConfigError`."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is available")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def amp_settings(device: torch.device, amp: str) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a grad scaler is needed): bf16 where supported, else fp16 + scaler."""
    if device.type != "cuda" or amp == "off":
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True
