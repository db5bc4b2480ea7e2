"""Timestep schedules for optimisation with the prior: a schedule is an object that yields the t of each step."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TruncatedSchedule:
    """DPoser's truncated schedule: t falls linearly from t_max to t_min over the steps,
    t_s = t_min + (S - s - 1) / S * (t_max - t_min)."""

    t_max: float = 0.15
    t_min: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 < self.t_min <= self.t_max <= 1.0:
            raise ValueError(f"need 0 < t_min <= t_max <= 1, got t_min={self.t_min}, t_max={self.t_max}")

    def timesteps(self, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        s = torch.arange(steps, dtype=torch.float32)
        return self.t_min + (steps - s - 1) / steps * (self.t_max - self.t_min)


@dataclass(frozen=True)
class UniformSchedule:
    """The image-diffusion habit: t drawn uniformly in [t_min, t_max] at every step (the ablation baseline)."""

    t_min: float = 1e-3
    t_max: float = 1.0

    def timesteps(self, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.t_min + torch.rand(steps, generator=generator) * (self.t_max - self.t_min)
