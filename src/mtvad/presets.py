"""The default teacher preset's name, for the command line and `vad detect` without importing the heavy half
(the presets themselves are in `mtvad.precompute.teachers`)."""

DEFAULT_PRESET = "cpu-motion"  # needs no download: vad precompute's and vad detect's default
