"""Motion branch (paper 3.3-3.5, Fig. 3): a vgg16-UNet that maps frame t to its optical-flow magnitude map
(the teacher's flow t-1 -> t, masked by the segmentation), with two attention mechanisms:

- SCSE on the feature maps of the encoder's mid layers (3.4): VGG conv blocks 2, 3, 4 by default (128, 256
  and 512 channels at 1/2, 1/4 and 1/8 of the input), applied to each block's output before its max-pool, so
  both the deeper encoder and the skip connection see the re-weighted maps. `scse='decoder'` uses smp's
  decoder SCSE instead (on each decoder block's input and output); `scse='off'` has none.
- The context attention map of Fig. 4 (|cos|, |sin| of the flow direction and the depth of frame t), applied
  at one position (Table 4):
    encoder: each VGG conv block's output (blocks 1-5, before pooling: modulates the encoder path and skips)
    skip:    only the four skip connections the decoder receives (the encoder path itself is unchanged)
    decoder: each of the five decoder blocks' outputs (the paper's best, the default)
    final:   the predicted magnitude map itself (a per-pixel gain on the output)

The UNet is smp's (`smp.Unet('vgg16')`, with smp's centre block for VGG encoders); its parts are run here stage
by stage so the maps can be injected. With both attentions off, `forward` equals `self.unet(frame)` exactly
(tests check it). Output: (B, 1, H, W) magnitude in input pixels per frame, linear (no activation: a ReLU
output would stop gradients wherever an untrained net predicts below zero; the anomaly score compares values).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

from mtvad.students.models.attention import ContextAttention, apply_attention, scse

VGG_BLOCKS = 5


def vgg_unet(encoder: str = "vgg16", decoder_attention_type: str | None = None) -> smp.Unet:
    """smp's VGG UNet with random weights, built without torchvision's 100M-parameter VGG classifier init.

    torchvision's VGG constructor initialises its fully-connected classifier (deleted at once by smp) and that
    takes ~2 s and ~800 MB; we build on the meta device and initialise what remains the way torchvision
    (encoder convs: Kaiming normal, fan-out) and smp (decoder, head) do.
    """
    with torch.device("meta"):
        unet = smp.Unet(encoder, encoder_weights=None, in_channels=3, classes=1,
                        decoder_attention_type=decoder_attention_type)
    unet.to_empty(device="cpu")
    for module in unet.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()  # BatchNorm: also its running statistics
    for module in unet.encoder.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    unet.initialize()  # smp: decoder and segmentation head
    return unet


class MotionStudent(nn.Module):
    def __init__(self, encoder: str = "vgg16", scse_placement: str = "encoder-mid",
                 scse_stages: tuple[int, ...] | list[int] = (2, 3, 4), scse_reduction: int = 16,
                 attention: str = "decoder", attention_form: str = "residual", attention_hidden: int = 16):
        super().__init__()
        if scse_placement not in ("encoder-mid", "decoder", "off"):
            raise ValueError(f"scse placement {scse_placement!r}")
        if attention not in ("off", "encoder", "decoder", "skip", "final"):
            raise ValueError(f"attention position {attention!r}")
        self.encoder_name, self.scse_placement, self.attention = encoder, scse_placement, attention
        self.attention_form = attention_form
        self.unet = vgg_unet(encoder, "scse" if scse_placement == "decoder" else None)
        enc = self.unet.encoder
        ends = list(enc._out_indexes)  # last module of each stage: conv blocks 1-5 (their ReLU), then pool 5
        starts = [0] + [e + 1 for e in ends[:-1]]
        self.stage_ranges = list(zip(starts, [e + 1 for e in ends]))
        channels = enc.out_channels  # for vgg16: 64, 128, 256, 512, 512, 512
        self.encoder_scse = nn.ModuleDict()
        if scse_placement == "encoder-mid":
            for block in sorted(set(scse_stages)):
                self.encoder_scse[str(block)] = scse(channels[block - 1], scse_reduction)
        self.context_attention = ContextAttention(attention_hidden) if attention != "off" else None

    @property
    def encoder(self) -> nn.Module:
        return self.unet.encoder

    def attention_map(self, context: torch.Tensor) -> torch.Tensor:
        if self.context_attention is None:
            raise RuntimeError("this motion student has no context attention (attention='off')")
        return self.context_attention(context)

    def encode(self, frame: torch.Tensor, a: torch.Tensor | None = None) -> list[torch.Tensor]:
        """smp's VGG encoder, one stage at a time: SCSE and (position 'encoder') the attention map after
        each conv block. Returns the 6 feature maps smp's decoder expects."""
        features = []
        x = frame
        layers = self.unet.encoder.features
        for stage, (lo, hi) in enumerate(self.stage_ranges):
            for i in range(lo, hi):
                x = layers[i](x)
            block = stage + 1
            if block <= VGG_BLOCKS:
                if str(block) in self.encoder_scse:
                    x = self.encoder_scse[str(block)](x)
                if self.attention == "encoder":
                    x = apply_attention(x, a, self.attention_form)
            features.append(x)
        return features

    def decode(self, features: list[torch.Tensor], a: torch.Tensor | None = None) -> torch.Tensor:
        """smp's UnetDecoder.forward (smp 0.6), with the map on the skips or on each block's output."""
        decoder = self.unet.decoder
        shapes = [f.shape[2:] for f in features][::-1]
        feats = features[1:][::-1]  # drop the full-resolution map, start from the deepest
        head, skips = feats[0], list(feats[1:])
        if self.attention == "skip":
            skips = [apply_attention(s, a, self.attention_form) for s in skips]
        x = decoder.center(head)
        for i, block in enumerate(decoder.blocks):
            h, w = shapes[i + 1]
            x = block(x, h, w, skip_connection=skips[i] if i < len(skips) else None)
            if self.attention == "decoder":
                x = apply_attention(x, a, self.attention_form)
        return x

    def forward(self, frame: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) normalised frame t [+ (B, 3, H, W) context] -> (B, 1, H, W) flow magnitude."""
        a = None
        if self.context_attention is not None:
            if context is None:
                raise ValueError(f"the motion student with attention at '{self.attention}' needs the context "
                                 "(|cos|, |sin|, depth) of the frame")
            a = self.attention_map(context)
        out = self.unet.segmentation_head(self.decode(self.encode(frame, a), a))
        if self.attention == "final":
            out = apply_attention(out, a, self.attention_form)
        return out
