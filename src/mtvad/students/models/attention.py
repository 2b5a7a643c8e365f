"""The motion branch's two attention mechanisms (paper 3.4 and 3.5).

SCSE (3.4): concurrent spatial and channel squeeze-and-excitation [2], smp's `SCSEModule`:
`x * cSE(x) + x * sSE(x)`. The paper puts it on the feature maps of the encoder's mid layers (they respond to
object parts); smp's own `decoder_attention_type='scse'` puts it in the decoder blocks instead. Both are
selectable (`MotionConfig.scse`: 'encoder-mid' | 'decoder' | 'off') so the placement is explicit.

Context attention (3.5, Fig. 4): the teacher's flow direction of frame t as X = |cos(Ang)|, Y = |sin(Ang)|
(Eqs. 2-3) and the teacher's relative depth of frame t, three channels at input resolution, go through a small
conv network to a one-channel sigmoid map `a` in (0, 1). The map is resized to each feature map it modulates
(area-averaged when smaller, bilinear when larger) and applied as

    residual (default):  x * (1 + a)     gate:  x * a

We use the residual form (as in Residual Attention Networks, Wang et al. 2017): the paper does not give the
formula; `x * a` can only shrink features, so where the map is near 0 it cuts the gradient to everything
below it and, stacked over several decoder blocks, shrinks the signal geometrically (0.5^5 at a = 0.5 after 5
blocks); `x * (1 + a)` keeps the identity path and still lets depth and direction scale features up to 2x,
which is what a perceived-motion model needs (a nearer object or a motion parallel to the image plane gives a
larger flow magnitude). 'gate' is there for the ablation.

The network is ours as well (the figure is not in the text we implement from): three 3x3 conv + BN + ReLU
layers with dilations 1, 2, 4 (a 15-pixel receptive field: depth and direction are smooth, a wider view helps
little), then a 1x1 conv to one channel and a sigmoid. Its last bias starts at 0 (a = 0.5 everywhere).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base.modules import SCSEModule
from torch import nn

CONTEXT_CHANNELS = 3  # |cos(angle)|, |sin(angle)|, depth


class ContextAttention(nn.Module):
    """(B, 3, H, W) context (|cos|, |sin|, depth) -> (B, 1, H, W) attention map in (0, 1)."""

    def __init__(self, hidden: int = 16, in_channels: int = CONTEXT_CHANNELS):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for dilation in (1, 2, 4):
            layers += [nn.Conv2d(channels, hidden, 3, padding=dilation, dilation=dilation, bias=False),
                       nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
            channels = hidden
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(hidden, 1, 1)
        nn.init.zeros_(self.head.bias)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.features(context)))


def resize_map(a: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Resize an attention map to a feature map's (H, W): area average down, bilinear up."""
    size = tuple(size)
    if tuple(a.shape[-2:]) == size:
        return a
    if a.shape[-2] >= size[0] and a.shape[-1] >= size[1]:
        return F.interpolate(a, size=size, mode="area")
    return F.interpolate(a, size=size, mode="bilinear", align_corners=False)


def apply_attention(x: torch.Tensor, a: torch.Tensor, form: str = "residual") -> torch.Tensor:
    """Modulate feature maps x (B, C, h, w) by an attention map a (B, 1, H, W), resized to (h, w)."""
    a = resize_map(a, x.shape[-2:]).to(x.dtype)
    return x * (1 + a) if form == "residual" else x * a


def scse(channels: int, reduction: int = 16) -> SCSEModule:
    """smp's SCSE block for `channels` feature maps (channel squeeze to channels // reduction, at least 1)."""
    return SCSEModule(channels, reduction=min(reduction, channels))
