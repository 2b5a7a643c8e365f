"""Where the students run: the torch device (`pick_device`) and the precision used on it (`precision_for`).
Training and scoring both use them.

Precision: bf16 autocast where the hardware does bf16 natively (CUDA that supports it; a CPU with avx512_bf16
or AMX), fp16 with a grad scaler on older CUDA devices, float32 everywhere else or with `amp='off'`. Under
autocast only the forward pass runs in the low precision; the loss, the metrics and the optimizer stay float32
(`Branch.predict` casts the output). Where bf16 is not native the CPU would emulate it, slower than float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from mtvad.errors import ConfigError


def pick_device(preference: str = "auto") -> torch.device:
    """'auto': CUDA when present, else the CPU; 'cuda' without a CUDA device is a `ConfigError`."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is available")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def cpu_bf16_instructions() -> str | None:
    """The CPU's native bf16 instructions ('AMX', 'avx512_bf16'), or None when it has neither."""
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "avx512_bf16"
    return None


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype | None  # the autocast dtype; None = float32 throughout
    scaler: bool  # fp16 needs a grad scaler
    reason: str  # why, for the first log line: "bf16 autocast (the CPU has avx512_bf16)"
    device_type: str = "cpu"

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward pass runs in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def precision_for(device: torch.device, amp: str) -> Precision:
    """The precision on `device` for `amp` ('auto' or 'off')."""
    kind = device.type
    if amp == "off":
        return Precision(None, False, "float32 (--amp off)", kind)
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, False, "bf16 autocast", kind)
        return Precision(torch.float16, True, "fp16 autocast with a grad scaler (no bf16 on this GPU)", kind)
    if kind == "cpu":
        native = cpu_bf16_instructions()
        if native:
            return Precision(torch.bfloat16, False, f"bf16 autocast (the CPU has {native})", kind)
        return Precision(None, False, "float32 (the CPU has no native bf16: neither avx512_bf16 nor AMX)", kind)
    return Precision(None, False, f"float32 (no autocast on {kind})", kind)
