"""Frame-score reductions: from a per-pixel anomaly map to one number per frame, and the teacher-only controls.

Eq. 4 sums the anomaly map over the whole frame, so background noise and the number of objects in view take a
part in every frame's score. `vad score` therefore records every frame under three reductions, each a named
option (`Reduction`), computed in one pass from the same maps:

- `sum`: the map summed over all its pixels (Eq. 4 as written, the paper's).
- `foreground`: the map summed over its FOREGROUND pixels only, the union of
    * the teacher's foreground of the frame the map is about (frame t + target_offset): segmentation class > 0
      OR teacher flow magnitude > `FLOW_FOREGROUND_PX` (1 store pixel per frame), computed at store resolution
      and brought to the map's size by area averaging (a map pixel is foreground when any store pixel under it
      is: small objects are kept);
    * where the STUDENT predicts an object (`Branch.predicted_foreground`: appearance, its most probable class
      is not background; motion, its predicted magnitude exceeds 1 store pixel per frame), so an object the
      student invents where the teacher sees none still counts.
  The teacher-only controls have no student: their foreground is the teacher's alone.
- `patch-max`: the largest of the per-patch sums of the map over a fixed 4 x 4 grid (`PATCH_GRID`; the loss's
  own grid, paper Eq. 6, fixed a priori). Patch edges are `round(linspace(0, n, 5))` along each axis: equal
  patches when the side is a multiple of 4 (the loss requires it), near-equal otherwise.
- `object-mean` and `object-sum`: per object, then the maximum over the frame's objects, as the object-centric
  methods of the field score a frame (AI-VAD takes the max over objects). The objects are the connected regions
  (8-connected) of the same FOREGROUND that share one teacher class (`object_keys`: a bicycle touching a crowd
  of persons is an object of its own; foreground the teacher gives no class, moving or the student's, is class
  UNCLASSIFIED), those smaller than `MIN_OBJECT_SHARE` of the map dropped (the movers teacher's own smallest
  blob, fixed a priori); an object's score is the mean of the map over it (`object-mean`) or its sum
  (`object-sum`). One unusual object among thirty walkers keeps its own score, however many walk beside it. A
  frame with no object scores 0.

Teacher-only controls (rows beside the branches; no student, smoothed and calibrated like the branches, never
fused), each reduced with the SAME reductions as the branches (a control must be reduced as the branch it
controls), from the store's maps at store resolution:

- `raw_flow`: the teacher flow magnitude map (store px/frame); its `sum` is the old `teacher_flow` baseline;
- `masked_flow`: the flow magnitude where the teacher segmentation is > 0 (the motion branch's target);
- `foreground_area`: the map seg > 0 (1 on object pixels): its `sum` counts the object pixels of the frame.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

Reduction = Literal["sum", "foreground", "patch-max", "object-mean", "object-sum"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)
REDUCTION_LABELS = {
    "sum": "sum over the whole map (Eq. 4 as written)",
    "foreground": "sum over foreground pixels (teacher seg > 0 or teacher flow > 1 px/frame, or the student "
                  "predicts an object)",
    "patch-max": "max over a 4x4 grid (Eq. 6's) of the per-patch sums",
    "object-mean": "max over the foreground's objects (connected regions of one teacher class) of the map's mean "
                   "over each",
    "object-sum": "max over the foreground's objects (connected regions of one teacher class) of the map's sum "
                  "over each",
}
PATCH_GRID = 4  # the loss's grid (paper Eq. 6: 16 patches), fixed a priori
MIN_OBJECT_SHARE = 4e-4  # smallest object of the object reductions, a share of the map (motion-shapes' min_area)
UNCLASSIFIED = 255  # object class of foreground the teacher gives no class (seg ids stop at 254)
FLOW_FOREGROUND_PX = 1.0  # teacher flow magnitude (store px/frame) above which a pixel is moving foreground

CONTROLS: tuple[str, ...] = ("raw_flow", "masked_flow", "foreground_area")
CONTROL_TITLES = {"raw_flow": "raw teacher flow (control)", "masked_flow": "masked teacher flow (control)",
                  "foreground_area": "foreground area (control)"}
CONTROL_UNITS = {"raw_flow": "teacher flow magnitude per store pixel, store px/frame",
                 "masked_flow": "teacher flow magnitude where teacher seg > 0, store px/frame",
                 "foreground_area": "1 where teacher seg > 0 (object pixels)"}


def row_key(row: str, reduction: str) -> str:
    """The scores-file array of a row under a reduction: 'motion@patch-max'."""
    return f"{row}@{reduction}"


def check_reduction(reduction: str) -> str:
    from mtvad.errors import ConfigError

    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
    return reduction


def patch_edges(n: int, grid: int = PATCH_GRID) -> list[int]:
    """Patch boundaries along one axis of n pixels: round(linspace(0, n, grid + 1))."""
    return [int(e) for e in np.linspace(0, n, grid + 1).round()]


def patch_sums(maps: torch.Tensor, grid: int = PATCH_GRID) -> torch.Tensor:
    """(B, grid * grid) sums of each patch of (B, h, w) maps, row-major."""
    ys, xs = patch_edges(maps.shape[-2], grid), patch_edges(maps.shape[-1], grid)
    return torch.stack([maps[:, y0:y1, x0:x1].sum(dim=(1, 2)) for y0, y1 in pairwise(ys)
                        for x0, x1 in pairwise(xs)], dim=1)


def object_scores(amap: np.ndarray, keys: np.ndarray) -> tuple[float, float]:
    """(largest object mean, largest object sum) of one (h, w) map over its objects: the 8-connected regions of
    one class of the (h, w) uint8 `keys` (0 = none), those under MIN_OBJECT_SHARE of the map dropped; (0, 0)
    without any."""
    from scipy import ndimage

    labels, n = np.zeros(keys.shape, np.int64), 0
    for key in np.unique(keys[keys > 0]):
        region, found = ndimage.label(keys == key, structure=np.ones((3, 3), bool))
        labels[region > 0] = region[region > 0] + n
        n += found
    if n == 0:
        return 0.0, 0.0
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    total = np.bincount(labels.ravel(), weights=amap.ravel(), minlength=n + 1)[1:]
    keep = area >= max(1, math.ceil(MIN_OBJECT_SHARE * amap.size))
    if not keep.any():
        return 0.0, 0.0
    return float((total[keep] / area[keep]).max()), float(total[keep].max())


def reduce_maps(maps: torch.Tensor, foreground: torch.Tensor, keys: torch.Tensor | None = None
                ) -> dict[str, np.ndarray]:
    """{reduction: float64 (B,)} of (B, h, w) maps; `foreground` a (B, h, w) bool mask (the `foreground`
    reduction sums the map there only), `keys` the (B, h, w) uint8 object class of each foreground pixel (the
    object reductions' objects; default: one class, the foreground). NaN pixels are not expected (valid frames
    only)."""
    m = maps.double()
    keys = foreground.to(torch.uint8) if keys is None else keys
    objects = np.array([object_scores(a, k) for a, k in zip(m.cpu().numpy(), keys.cpu().numpy())],
                       np.float64).reshape(-1, 2)
    return {"sum": m.sum(dim=(1, 2)).cpu().numpy(),
            "foreground": (m * foreground).sum(dim=(1, 2)).cpu().numpy(),
            "patch-max": patch_sums(m).amax(dim=1).cpu().numpy(),
            "object-mean": objects[:, 0], "object-sum": objects[:, 1]}


def object_keys(seg: np.ndarray | torch.Tensor, flow: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(n, H, W) uint8 object class of the teacher foreground: the segmentation's class where it is > 0,
    UNCLASSIFIED where only the flow magnitude exceeds FLOW_FOREGROUND_PX, 0 elsewhere."""
    seg, flow = torch.as_tensor(np.asarray(seg)), torch.as_tensor(np.asarray(flow, np.float32))
    keys = torch.where(flow > FLOW_FOREGROUND_PX, UNCLASSIFIED, 0).to(torch.uint8)
    return torch.where(seg > 0, seg.to(torch.uint8), keys)


def keys_to_size(keys: torch.Tensor, size) -> torch.Tensor:
    """(n, H, W) object classes -> (n, h, w): the nearest pixel's class, UNCLASSIFIED where that is 0 but some
    foreground pixel lies under the map pixel (the foreground keeps small objects, as `to_size`)."""
    size = tuple(int(s) for s in size)
    if tuple(keys.shape[-2:]) == size:
        return keys
    nearest = F.interpolate(keys[:, None].float(), size=size, mode="nearest")[:, 0].to(torch.uint8)
    return torch.where((nearest == 0) & to_size(keys > 0, size), UNCLASSIFIED, nearest).to(torch.uint8)


def teacher_foreground(seg: np.ndarray | torch.Tensor, flow: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(n, H, W) bool: teacher segmentation class > 0 OR teacher flow magnitude > FLOW_FOREGROUND_PX."""
    return object_keys(seg, flow) > 0


def to_size(mask: torch.Tensor, size) -> torch.Tensor:
    """(n, H, W) bool -> (n, h, w) bool: a pixel is set when any pixel under it is (area averaging > 0)."""
    size = tuple(int(s) for s in size)
    if tuple(mask.shape[-2:]) == size:
        return mask
    return F.interpolate(mask.float()[:, None], size=size, mode="area")[:, 0] > 0


def control_maps(seg: np.ndarray, flow: np.ndarray) -> dict[str, torch.Tensor]:
    """The teacher-only control maps (n, H, W) of frames with segmentation `seg` and flow magnitude `flow`."""
    seg, flow = torch.as_tensor(np.asarray(seg)), torch.as_tensor(np.asarray(flow, np.float32))
    objects = seg > 0
    return {"raw_flow": flow, "masked_flow": flow * objects, "foreground_area": objects.float()}


def control_scores(seg: np.ndarray, flow: np.ndarray, flow_valid_from: int = 1, first: int = 0
                   ) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """{control: ({reduction: float64 (n,)}, valid bool (n,))} of frames first .. first + n - 1 of a video;
    flow rows are invalid before `flow_valid_from` (NaN), the foreground area is valid on every frame."""
    n = len(seg)
    keys = object_keys(seg, flow)
    fg = keys > 0
    flow_ok = np.arange(first, first + n) >= flow_valid_from
    out = {}
    for name, m in control_maps(seg, flow).items():
        reduced = reduce_maps(m, fg, keys)
        valid = np.ones(n, bool) if name == "foreground_area" else flow_ok
        for values in reduced.values():
            values[~valid] = np.nan
        out[name] = (reduced, valid)
    return out
