"""Patch loss (paper Eq. 6, after [7]): MSE in each cell of a 4 x 4 grid (16 patches), the worst patch counts.

    Patch-loss = max_i Loss_i,   Loss_i = MSE of patch i

Per sample the loss is the largest of its 16 patch MSEs (each averaged over the patch's pixels and channels);
a batch's loss is the mean of its samples' losses. Taking the max per sample (not over the whole batch) keeps
every sample's worst region in the gradient; the paper defines the loss per frame and is silent about batches.

`training_loss` optionally adds `mean_weight` x the plain MSE over the whole map (ours; the motion branch's
`mean_loss_weight`, 1 on the cpu recipe): the max sends gradient only to the worst patch, so patches that are
never the worst (often background) keep whatever offset they have; the mean term reaches every pixel.
"""

from __future__ import annotations

import torch


def patch_errors(pred: torch.Tensor, target: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """MSE of each patch: (B, grid, grid) for (B, C, H, W) inputs; H and W must be multiples of `grid`."""
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred and target must be equal (B, C, H, W) shapes; got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    b, c, h, w = pred.shape
    if h % grid or w % grid:
        raise ValueError(f"a {h}x{w} map does not split into a {grid}x{grid} grid of equal patches")
    sq = (pred.float() - target.float()).square()
    return sq.reshape(b, c, grid, h // grid, grid, w // grid).mean(dim=(1, 3, 5))


def patch_loss(pred: torch.Tensor, target: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """Eq. 6: max over the grid's patch MSEs per sample, then the mean over the batch (a scalar)."""
    return patch_errors(pred, target, grid).flatten(1).amax(dim=1).mean()


def training_loss(pred: torch.Tensor, target: torch.Tensor, grid: int = 4, mean_weight: float = 0.0) -> torch.Tensor:
    """Eq. 6, plus `mean_weight` x the MSE over all pixels when it is above 0."""
    loss = patch_loss(pred, target, grid)
    if mean_weight > 0:
        loss = loss + mean_weight * (pred.float() - target.float()).square().mean()
    return loss
