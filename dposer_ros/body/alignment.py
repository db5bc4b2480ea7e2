"""Rigid alignment of point sets (weighted Kabsch through `roma`'s special Procrustes)."""

from __future__ import annotations

import roma
import torch


def kabsch(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Rotations (B, 3, 3) that best map centred `source` (B, M, 3) onto centred `target` (weights (B, M))."""
    w = (weights / weights.sum(-1, keepdim=True))[..., None]
    src = source - (w * source).sum(-2, keepdim=True)
    tgt = target - (w * target).sum(-2, keepdim=True)
    return roma.special_procrustes((w * tgt).transpose(-1, -2) @ src)
