"""The score network: a time-conditioned residual MLP over the masked multi-part pose vector (predicts the noise)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layout import DIFFUSED, DIM, PARTS, dim_mask


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 999.0) -> torch.Tensor:
    """Sinusoidal embedding of `scale * t` (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = scale * t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class ResidualBlock(nn.Module):
    """[Linear + time projection, GroupNorm, SiLU, dropout] x 2 with a skip connection."""

    def __init__(self, hidden: int, time_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(2))
        self.time = nn.ModuleList(nn.Linear(time_dim, hidden) for _ in range(2))
        self.norms = nn.ModuleList(nn.GroupNorm(groups, hidden) for _ in range(2))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = h
        for layer, time, norm in zip(self.layers, self.time, self.norms):
            x = self.dropout(nn.functional.silu(norm(layer(x) + time(temb))))
        return h + x


class ScoreNet(nn.Module):
    """eps_theta(x_t, t, part mask): parts masked out are zeroed at the input and announced by the mask; condition
    parts (layout.CONDITION_PARTS) are inputs only."""

    def __init__(self, hidden: int = 512, blocks: int = 3, time_dim: int = 128, groups: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.config = {"hidden": hidden, "blocks": blocks, "time_dim": time_dim, "groups": groups, "dropout": dropout}
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU())
        self.inp = nn.Linear(DIM + len(PARTS), hidden)
        self.inp_time = nn.Linear(time_dim, hidden)
        self.inp_norm = nn.GroupNorm(groups, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, time_dim, groups, dropout) for _ in range(blocks))
        self.out = nn.Linear(hidden, DIM)

    def forward(self, x: torch.Tensor, t: torch.Tensor, part_mask: torch.Tensor) -> torch.Tensor:
        """x (B, DIM) normalised, t (B,), part_mask (B, len(PARTS)) -> predicted noise (B, DIM), zero on masked and
        condition parts."""
        m = dim_mask(part_mask)
        temb = self.time_mlp(timestep_embedding(t, self.time_dim))
        h = self.inp(torch.cat([x * m, part_mask.to(x.dtype)], dim=-1)) + self.inp_time(temb)
        h = nn.functional.silu(self.inp_norm(h))
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h) * (m * DIFFUSED.to(m))
