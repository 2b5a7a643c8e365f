"""Where the students run: the device choice and its precision."""

import pytest
import torch

from mtvad.errors import ConfigError
from mtvad.students.device import pick_device, precision_for


def test_cuda_asked_without_cuda_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")
    assert pick_device("auto") == torch.device("cpu")


def test_auto_takes_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


def test_bf16_on_cuda_that_has_it_fp16_with_a_scaler_on_older_cuda(monkeypatch):
    assert precision_for(torch.device("cuda"), "off").dtype is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    p = precision_for(torch.device("cuda"), "auto")
    assert (p.dtype, p.scaler, p.name) == (torch.bfloat16, False, "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    p = precision_for(torch.device("cuda"), "auto")
    assert (p.dtype, p.scaler) == (torch.float16, True)


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [
    (True, False, "bf16 autocast (the CPU has AMX)"),
    (False, True, "bf16 autocast (the CPU has avx512_bf16)"),
    (False, False, "float32 (the CPU has no native bf16: neither avx512_bf16 nor AMX)")])
def test_bf16_on_a_cpu_only_where_it_is_native(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    p = precision_for(torch.device("cpu"), "auto")
    assert p.reason == expected and not p.scaler
    assert p.dtype == (torch.bfloat16 if amx or avx512_bf16 else None)
    with p.autocast():
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == (torch.bfloat16 if p.dtype else torch.float32)
    assert precision_for(torch.device("cpu"), "off").reason == "float32 (--amp off)"
