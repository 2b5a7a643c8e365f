"""What `vad store info` shows: videos, frames, per-array bytes, teachers, completeness, provenance."""

from __future__ import annotations

from typing import Any

from mtvad.store.access import Store
from mtvad.store.schema import ARRAYS, PROVENANCE, SPLITS


def store_summary(store: Store) -> dict[str, Any]:
    """What `vad store info` shows: videos, frames, per-array bytes, teachers, completeness, and the
    provenance attributes (`PROVENANCE`)."""
    per_array: dict[str, dict[str, Any]] = {}
    videos = {s: 0 for s in SPLITS}
    frames = {s: 0 for s in SPLITS}
    for video in store.videos():
        videos[video.split] += 1
        frames[video.split] += video.n_frames
        for name in ARRAYS:
            if name not in video.group:
                continue
            arr = video.group[name]
            row = per_array.setdefault(name, {"dtype": str(arr.dtype), "chunks": tuple(arr.chunks),
                                              "stored": 0, "raw": 0, "videos": 0})
            row["stored"] += arr.nbytes_stored()
            row["raw"] += arr.nbytes
            row["videos"] += 1
    missing = store.missing_blocks()
    gaps = [str(g) for g in store.gaps()]
    return {
        "url": store.url,
        "dataset": store.dataset,
        "schema_version": store.attrs["schema_version"],
        "resolution": store.resolution,
        "chunk_frames": store.chunk_frames,
        "videos": videos,
        "frames": frames,
        "arrays": per_array,
        "teachers": store.teachers,
        "fingerprint": store.fingerprint,
        "classes": store.classes,
        "missing_blocks": sum(len(v) for v in missing.values()),
        "missing_data": gaps,  # what should be there and is not (deleted chunks, arrays): `vad store verify`
        **{name: store.attrs.get(name) for name in PROVENANCE},
    }
