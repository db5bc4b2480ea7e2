"""The sub-VP SDE of score-based diffusion (Song et al. 2021), as used by DPoser-X."""

from __future__ import annotations

import torch


class SubVPSDE:
    """dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw, with linear beta(t)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, num_steps: int = 1000, T: float = 1.0) -> None:
        self.beta_min, self.beta_max, self.N, self.T = beta_min, beta_max, num_steps, T

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal_prob(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of x_t given x_0 (t broadcast over the last dimension)."""
        lmc = self.log_mean_coeff(t)[..., None]
        return torch.exp(lmc) * x0, 1.0 - torch.exp(2.0 * lmc)

    def mean_std(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scalars of `marginal_prob`: x_t = mean * x_0 + std * z."""
        lmc = self.log_mean_coeff(t)
        return torch.exp(lmc), 1.0 - torch.exp(2.0 * lmc)

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift and diffusion coefficient at (x, t)."""
        beta = (self.beta_min + t * (self.beta_max - self.beta_min))[..., None]
        discount = 1.0 - torch.exp(-2.0 * self.beta_min * t - (self.beta_max - self.beta_min) * t**2)
        return -0.5 * beta * x, torch.sqrt(beta * discount[..., None])

    def prior_sampling(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(shape, generator=generator)
