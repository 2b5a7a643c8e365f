"""Figures of a store's content: what the teachers said about a few frames, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mtvad.store.access import Store
from mtvad.written import check_replaceable, replacing


def teacher_panels(store: Store, video_key: str, frames: Sequence[int], out: Path) -> Path:
    """PNG with one row per frame: input | segmentation | flow magnitude (masked) | flow direction | depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import hsv_to_rgb

    check_replaceable(out.parent, [out], "--out")  # before the work: a user's picture is never replaced
    split, video_id = video_key.split("/", 1)
    video = store.video(split, video_id)
    bad = [f for f in frames if not 0 <= f < video.n_frames]
    if bad:
        from mtvad.errors import StoreError

        raise StoreError(f"{store.url}: {video_key} has frames 0..{video.n_frames - 1}, not {bad}")
    classes = store.classes
    titles = ["input", "segmentation", "flow magnitude (masked)", "flow direction", "depth (near = bright)"]
    fig, axes = plt.subplots(len(frames), 5, figsize=(15, 3.1 * len(frames)), squeeze=False)
    mag_max = max(float(video.flow_mag(f).max()) for f in frames) or 1.0
    for row, f in zip(axes, frames):
        seg = video.seg(f)
        mag = video.flow_mag(f)
        ang = video.flow_ang(f)
        hsv = np.stack([ang / (2 * np.pi), np.ones_like(ang), np.clip(mag / mag_max, 0, 1)], axis=-1)
        row[0].imshow(video.frames(f))
        if video.has_masks and video.mask(f).any():
            row[0].contour(video.mask(f), levels=[0.5], colors="red", linewidths=1)
        row[1].set_facecolor("black")  # background (class 0) black, classes in tab10 colours
        row[1].imshow(np.ma.masked_equal(seg, 0), cmap="tab10", vmin=1, vmax=10, interpolation="nearest")
        row[2].imshow(video.flow_mag(f, masked=True), cmap="magma", vmin=0, vmax=mag_max)
        row[3].imshow(hsv_to_rgb(hsv))
        row[4].imshow(video.depth(f), cmap="viridis", vmin=0, vmax=1)
        label = video.label()
        tag = "" if label is None else ("  anomalous" if label[f] else "  normal")
        row[0].set_ylabel(f"{video_key} frame {f}{tag}")
        present = [classes.get(int(c), str(c)) for c in np.unique(seg) if c]
        row[1].set_xlabel(", ".join(present) or "nothing found", fontsize=8)
        row[2].set_xlabel(f"max {mag_max:.2f} px/frame", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], titles):
        ax.set_title(title)
    fig.suptitle(f"{store.url}: teachers " + ", ".join(f"{r}={t['name']}" for r, t in store.teachers.items()))
    fig.tight_layout()
    with replacing(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return out
