"""mtvad: multi-task video anomaly detection with attention (teachers precomputed into a store, students on top)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mtvad")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
