"""A Kalman filter per keypoint: a track's keypoints denoised with their motion.

Each keypoint of a track is a point whose velocity decays with time constant `tau` (s: it keeps its velocity about
that long) under white-noise acceleration (spectral density `psd`, m^2/s^3), observed with the sensor's noise:
standard deviation `noise` (metres per axis) at detector confidence 1, variance noise^2 / confidence below it (the
solvers' weighting of a keypoint by its confidence, read as a variance). The three axes share one 2 x 2 covariance
(position, velocity), so a state is three tensors of (B, K, 3). A keypoint seen for the first time (or again after
its uncertainty has grown past `reset_m`) starts at its observation at rest; a hidden one is predicted on (its
place drifts at most its speed times `tau`). The refiner fits the filtered places of seen keypoints; it holds a
hidden one at its last filtered place (held where its velocity carried it, late legs and hidden finger keypoints
were worse: validation round 51).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class KeypointFilter:
    """Per-keypoint filter state: position (B, K, 3) metres (NaN: never seen), velocity (B, K, 3) m/s, covariance
    (B, K, 3) as (var position, cov position-velocity, var velocity), shared by the three axes."""

    position: torch.Tensor
    velocity: torch.Tensor
    covariance: torch.Tensor

    def select(self, i: int) -> KeypointFilter:
        return KeypointFilter(self.position[i : i + 1].clone(), self.velocity[i : i + 1].clone(),
                              self.covariance[i : i + 1].clone())

    def split(self) -> list[KeypointFilter]:
        """`select(i)` for every i, one copy per field."""
        return [KeypointFilter(*row) for row in zip(self.position.clone().split(1), self.velocity.clone().split(1),
                                                    self.covariance.clone().split(1))]

    @staticmethod
    def cat(items: Sequence[KeypointFilter]) -> KeypointFilter | None:
        """One batched state of several (None unless all hold the same number of keypoints)."""
        if not items or any(f.position.shape[1:] != items[0].position.shape[1:] for f in items):
            return None
        return KeypointFilter(torch.cat([f.position for f in items]), torch.cat([f.velocity for f in items]),
                              torch.cat([f.covariance for f in items]))


# a keypoint's velocity before the filter has seen it move: about a walking hand's (m/s, standard deviation)
START_SPEED = 1.0


def filter_keypoints(state: KeypointFilter | None, points: torch.Tensor, confidence: torch.Tensor,
                     interval: torch.Tensor, noise: torch.Tensor, psd: float, tau: float,
                     reset_m: float = 0.5) -> tuple[torch.Tensor, KeypointFilter]:
    """One frame: `points` (B, K, 3) metres, `confidence` (B, K) the detector's (a keypoint counts as seen above
    0.1), `interval` (B,) seconds since the previous frame, `noise` (B,) metres. Returns the points to fit ((B, K, 3):
    the filtered position of a seen keypoint, the observation elsewhere) and the next state, in which a hidden
    keypoint has moved on with its velocity."""
    seen = confidence > 0.1
    r2 = (noise.square()[:, None] / confidence.clamp(min=0.1))  # (B, K) measurement variance
    if state is None or state.position.shape != points.shape:
        nan = torch.full_like(points, float("nan"))
        state = KeypointFilter(nan, torch.zeros_like(points), torch.zeros(*points.shape[:2], 3))
    dt = interval[:, None]
    p00, p01, p11 = state.covariance.unbind(-1)
    # predict: v <- a v, x <- x + tau (1 - a) v with a = exp(-dt / tau): F = [[1, f], [0, a]],
    # P <- F P F^T + psd [[dt^3/3, dt^2/2], [dt^2/2, dt]]
    a = torch.exp(-dt / tau)
    f = tau * (1 - a)
    position = state.position + state.velocity * f[..., None]
    velocity = state.velocity * a[..., None]
    p00, p01, p11 = (p00 + 2 * f * p01 + f * f * p11 + psd * dt**3 / 3, a * (p01 + f * p11) + psd * dt**2 / 2,
                     a * a * p11 + psd * dt)
    # update the keypoints seen again; (re)start those never seen or lost for long
    fresh = seen & (~torch.isfinite(position).all(-1) | (p00 > reset_m**2))
    update = seen & ~fresh
    s = (p00 + r2).clamp(min=1e-12)
    k0, k1 = p00 / s, p01 / s
    innovation = torch.nan_to_num(points - position)
    position = torch.where(update[..., None], position + k0[..., None] * innovation, position)
    velocity = torch.where(update[..., None], velocity + k1[..., None] * innovation, velocity)
    p00, p01, p11 = (torch.where(update, (1 - k0) * p00, p00), torch.where(update, (1 - k0) * p01, p01),
                     torch.where(update, p11 - k1 * p01, p11))
    position = torch.where(fresh[..., None], points, position)
    velocity = torch.where(fresh[..., None], 0.0, velocity)
    covariance = torch.where(fresh[..., None], torch.stack([r2, torch.zeros_like(r2), torch.full_like(r2, START_SPEED**2)], -1),
                             torch.stack([p00, p01, p11], -1))
    fitted = torch.where(seen[..., None], position, points)
    return fitted, KeypointFilter(position, velocity, covariance)
