"""Dataset readers: each lists the videos of one on-disk layout, lazily, as `base.Video` values.

    from mtvad.precompute.datasets import open_dataset
    for video in open_dataset("ped2", "../shared/data/ped2").videos("test"):
        frames = video.read(0, 16)  # (16, H, W, 3) uint8 RGB
"""

from __future__ import annotations

import inspect
from pathlib import Path

from mtvad.errors import DatasetError

from .avenue import Avenue
from .base import Dataset, DatasetReader, Video
from .folder import Folder
from .shanghaitech import ShanghaiTech
from .ucsd import Synth, UCSDPed1, UCSDPed2

DATASETS: dict[str, type[DatasetReader]] = {
    cls.name: cls for cls in (UCSDPed1, UCSDPed2, Synth, Avenue, ShanghaiTech, Folder)
}


def open_dataset(name: str, root: str | Path, **options) -> Dataset:
    """The reader of dataset `name` over folder `root`; `options` go to the reader (`scene=`, `split=`)."""
    cls = DATASETS.get(name)
    if cls is None:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    try:
        inspect.signature(cls).bind(root, **options)
    except TypeError:
        accepted = [p for p in inspect.signature(cls).parameters if p != "root"]
        raise DatasetError(
            f"dataset {name!r} does not take option(s) {', '.join(sorted(options))}; "
            f"it takes: {', '.join(accepted) or 'none'}"
        ) from None
    return cls(root, **options)


__all__ = ["DATASETS", "Dataset", "DatasetReader", "Video", "open_dataset"]
