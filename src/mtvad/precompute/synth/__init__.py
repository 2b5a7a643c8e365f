"""Synthetic Ped2-like dataset generator: the data a fresh clone runs on (`vad synth OUT --seed 0`).

A fixed camera looks down on a paved walkway crossing a lawn. Pedestrians walk along the walkway in four
directions, in crowds whose density differs between videos; the test videos add anomalies of nine kinds (fast
and slow cyclists, skateboarders, carts pushed at two speeds, cars, runners, erratic movers, people cutting across
the lawn) and some recording glitches that are *not* anomalies. The output is written in the official UCSD layout
so that the project's UCSD reader (`open_dataset("synth", OUT)`) reads it:

    OUT/Train/Train001/001.tif            OUT/Test/Test001/001.tif
    OUT/Test/Test001_gt/001.bmp           OUT/Test/UCSDsynth.m
    OUT/Test/anomaly_kinds.json           OUT/README.txt

    from mtvad.precompute.synth import generate
    summary = generate("data/synth", seed=0)             # 16 train / 12 test videos, 240x360
    summary = generate(tmp_path / "s", seed=1, small=True)  # 3 / 5 videos of 40 frames, 60x90
"""

from .dataset import GENERATOR_VERSION, KINDS_FILE, M_FILE, PROFILES, Profile, SynthOutputExists, generate
from .motion import KIND_INFO, KINDS

__all__ = [
    "GENERATOR_VERSION",
    "KINDS",
    "KINDS_FILE",
    "KIND_INFO",
    "M_FILE",
    "PROFILES",
    "Profile",
    "SynthOutputExists",
    "generate",
]
