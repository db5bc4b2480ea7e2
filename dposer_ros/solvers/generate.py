"""Sampling poses from the prior (reverse-time SDE, Euler-Maruyama) and completing missing parts of a pose."""

from __future__ import annotations

import torch

from ..body.kinematics import ForwardKinematics
from ..prior.layout import DIM, dim_mask, from_vector, to_vector
from ..prior.schedule import TruncatedSchedule
from .refine import PRIOR_GROUPS


@torch.no_grad()
def sample(prior, n: int, steps: int = 1000, t_end: float = 1e-3, generator: torch.Generator | None = None) -> torch.Tensor:
    """n whole-body poses (n, 55, 3): body and hands each drawn from the prior (root at rest, face zero)."""
    groups = torch.tensor(PRIOR_GROUPS).repeat_interleave(n, dim=0)
    m = dim_mask(groups)
    x = torch.randn(len(groups), DIM, generator=generator) * m
    times = torch.linspace(prior.sde.T, t_end, steps + 1)
    for t0, t1 in zip(times[:-1], times[1:]):
        t = torch.full((len(x),), float(t0))
        _, std = prior.sde.mean_std(t)
        score = -torch.as_tensor(prior.eps(x, t, groups)) / std[:, None]
        drift, diffusion = prior.sde.sde(x, t)
        dt = float(t1 - t0)  # negative: backwards in time
        z = torch.randn(x.shape, generator=generator)
        x = (x + (drift - diffusion**2 * score) * dt + diffusion * abs(dt) ** 0.5 * z) * m
    t = torch.full((len(x),), t_end)
    x = prior.denoise(x, t, groups) * m  # the last step's noise removed (Tweedie)
    return from_vector(x.reshape(len(PRIOR_GROUPS), n, DIM).sum(0) * prior.std + prior.mean)[0]


@torch.no_grad()
def complete(prior, pose: torch.Tensor, known: torch.Tensor, steps: int = 200, t_max: float = 0.15, t_min: float = 0.05,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill in the unknown joints of (B, 55, 3) poses; `known` (B, 55) bool marks joints to keep.

    DPoser's completion with the truncated schedule: at each step the current pose is noised to t, denoised by the
    prior, the unknown entries take the denoised values and the known ones are copied back. Unknown entries start
    at the prior's mean.
    """
    known3 = known[..., None].expand(-1, -1, 3).float()
    mean_pose = from_vector(prior.mean.expand(pose.shape[0], -1))[0]
    current = pose * known3 + mean_pose * (1 - known3)
    body_or_hands = torch.tensor(PRIOR_GROUPS)
    schedule = TruncatedSchedule(t_max, t_min)
    batch = pose.shape[0]
    masks = body_or_hands.repeat_interleave(batch, dim=0)
    for t in schedule.timesteps(steps).tolist():
        x = ((to_vector(current) - prior.mean) / prior.std).repeat(len(PRIOR_GROUPS), 1)
        tt = torch.full((len(x),), t)
        mean, std = prior.sde.mean_std(tt)
        x_t = mean[:, None] * x + std[:, None] * torch.randn(x.shape, generator=generator)
        x0 = (x_t - std[:, None] * torch.as_tensor(prior.eps(x_t, tt, masks))) / mean[:, None]
        x0 = (x0 * dim_mask(masks)).reshape(len(PRIOR_GROUPS), batch, DIM).sum(0)
        denoised = from_vector(x0 * prior.std + prior.mean, current)[0]
        current = pose * known3 + denoised * (1 - known3)
    return current


def body_joints(pose: torch.Tensor) -> torch.Tensor:
    """Root-relative body joints (N, 22, 3) of poses with the global orientation removed."""
    pose = pose.clone()
    pose[:, 0] = 0.0
    return ForwardKinematics()(pose).joints[:, :22]


def average_pairwise_distance(pose: torch.Tensor) -> float:
    """APD (diversity): mean distance in metres between the body joints of every pair of poses."""
    j = body_joints(pose).flatten(1)
    d = torch.cdist(j[None], j[None])[0] / 22**0.5  # root-mean-square per joint
    n = len(j)
    return float(d.sum() / (n * (n - 1)))


def nearest_neighbour_mpjpe(pose: torch.Tensor, reference: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """For each pose: the MPJPE (metres, body joints) to its nearest reference pose (realism)."""
    a = body_joints(pose)
    best = torch.full((len(a),), float("inf"))
    for start in range(0, len(reference), chunk):
        b = body_joints(reference[start : start + chunk])
        d = (a[:, None] - b[None]).norm(dim=-1).mean(-1)
        best = torch.minimum(best, d.min(1).values)
    return best
