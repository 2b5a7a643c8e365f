"""Shared fixtures and helpers: a tiny moving-object dataset in the UCSD official layout, the ../shared folder,
torch on one thread, the scored stores of the scoring/evaluation/report tests (`paths`, from tests/stores.py),
and running the `vad` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import labels_of, write_m_file
from tests.stores import one_torch_thread, scored_stores

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a skip saying it is absent (a user's fresh clone has no ../shared)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the real data beside the repository (../shared)")
    return path


def moving_scene(n_frames: int, size=(48, 64), seed: int = 0, speed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Grey frames (n, H, W) of a textured square moving right over a noisy static background, and its masks."""
    rng = np.random.default_rng(seed)
    h, w = size
    background = rng.integers(60, 120, size=size).astype(np.float32)
    texture = rng.integers(150, 255, size=(12, 12)).astype(np.float32)
    frames, masks = [], []
    for t in range(n_frames):
        frame = background + rng.normal(0, 2, size=size)
        mask = np.zeros(size, bool)
        x = 2 + (speed * t) % (w - 16)
        frame[h // 3 : h // 3 + 12, x : x + 12] = texture
        mask[h // 3 : h // 3 + 12, x : x + 12] = True
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
        masks.append(mask)
    return np.stack(frames), np.stack(masks)


def write_moving_ucsd(root: Path, n_train: int = 2, n_test: int = 2, n_frames: int = 20, size=(48, 64)) -> Path:
    """UCSD official layout (`Train/Train001/001.tif`, `Test/Test001_gt/001.bmp`, `Test/UCSDped2.m`) of moving
    squares; test video k is anomalous from frame k+1 (1-based) to the end, masked where the square is."""
    from PIL import Image

    ranges = [[(k + 1, n_frames)] for k in range(1, n_test + 1)]
    for split, folder, n in (("train", "Train", n_train), ("test", "Test", n_test)):
        for k in range(1, n + 1):
            frames, masks = moving_scene(n_frames, size, seed=k + (100 if split == "test" else 0))
            video = root / folder / f"{folder}{k:03d}"
            video.mkdir(parents=True)
            for i, frame in enumerate(frames):
                Image.fromarray(frame).save(video / f"{i + 1:03d}.tif")
            if split == "test":
                labels = labels_of(ranges[k - 1], n_frames)
                gt = root / folder / f"{folder}{k:03d}_gt"
                gt.mkdir()
                for i, mask in enumerate(masks):
                    Image.fromarray((mask & bool(labels[i])).astype(np.uint8) * 255).save(gt / f"{i + 1:03d}.bmp")
    write_m_file(root / "Test" / "UCSDped2.m", ranges)
    return root


@pytest.fixture
def tiny_ucsd(tmp_path: Path) -> Path:
    return write_moving_ucsd(tmp_path / "ped2")


@pytest.fixture
def one_thread():
    """Torch on one thread during a test (tests/stores.py `one_torch_thread`); the scoring, evaluation and report
    modules use it for every test (`pytestmark`)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def paths(tmp_path_factory) -> dict[str, Path]:
    """Made once per session: the stores, one-step students and scores file of `tests.stores.scored_stores`."""
    return scored_stores(tmp_path_factory.mktemp("scoring"))


def run_vad(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """`python -m mtvad ARGS` from the repository root, text output captured, OpenMP on one thread (see
    `one_torch_thread`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "mtvad", *args], cwd=kw.pop("cwd", ROOT), capture_output=True,
                          text=True, timeout=timeout, env=env, **kw)


def one_line_error(result) -> str:
    """The one line a refused `vad` command (typer's CliRunner result) prints, checked to be exactly one."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]
