"""Where the students run: the device choice and its mixed precision."""

import pytest
import torch

from mtvad.errors import ConfigError
from mtvad.students.device import amp_settings, pick_device


def test_cuda_asked_without_cuda_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")
    assert pick_device("auto") == torch.device("cpu")


def test_auto_takes_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


def test_amp_on_cuda_only_and_fp16_needs_a_scaler(monkeypatch):
    assert amp_settings(torch.device("cpu"), "auto") == (None, False)
    assert amp_settings(torch.device("cuda"), "off") == (None, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert amp_settings(torch.device("cuda"), "auto") == (torch.bfloat16, False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert amp_settings(torch.device("cuda"), "auto") == (torch.float16, True)
