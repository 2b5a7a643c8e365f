"""Appearance-motion branch (paper 3.2): a resnet34-UNet that sees frames t-1 and t and predicts the teacher's
semantic segmentation of frame t+1 (future segmentation = segmentation + future frame prediction in one task).

Input: the two frames stacked as 6 channels (t-1 first), ImageNet-normalised (`mtvad.students.data.normalise_frames`).
Output: per-class logits (B, n_classes, H, W) over the store's class vocabulary (0 = background); the loss and
the anomaly score use their softmax against the teacher's one-hot map (the branch's prediction,
`mtvad.students.branches.AppearanceBranch.prediction`).
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

IN_FRAMES = 2  # frames t-1 and t


class AppearanceStudent(nn.Module):
    def __init__(self, n_classes: int, encoder: str = "resnet34", in_frames: int = IN_FRAMES):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a segmentation needs at least 2 classes (background and one more); got {n_classes}")
        self.n_classes, self.in_frames, self.encoder_name = n_classes, in_frames, encoder
        # encoder_weights=None always: ImageNet weights come from a local file (mtvad.students.models.load_encoder_weights)
        self.unet = smp.Unet(encoder, encoder_weights=None, in_channels=3 * in_frames, classes=n_classes)

    @property
    def encoder(self) -> nn.Module:
        return self.unet.encoder

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3 * in_frames, H, W) normalised frames -> (B, n_classes, H, W) logits."""
        return self.unet(frames)

    def probabilities(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, n_classes, H, W) class probabilities: the appearance branch's prediction."""
        from mtvad.students.branches import APPEARANCE  # the branch builds this student

        return APPEARANCE.prediction(self(frames))
