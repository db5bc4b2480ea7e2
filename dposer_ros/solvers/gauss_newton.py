"""Damped Gauss-Newton on SMPL-X joint rotations: a keypoint data term plus quadratic pulls on the pose.

The unknowns are local increments of the free joints' rotations (R <- R exp(delta)) and the translation.
Pulls are residuals sqrt(w) * S (theta - target) on the axis-angle of chosen entries, linearised with
d theta / d delta ~ I, which holds well for the small steps taken from a warm start.
"""

from __future__ import annotations

from dataclasses import dataclass

import roma
import torch

from ..body.jacobian import AttachedPoints
from ..body.kinematics import ForwardKinematics, Posed


@dataclass
class Pull:
    """A quadratic pull of the free joints' axis-angle towards `target`.

    Diagonal: sum (scale * (theta - target))^2 per entry. With `precision` (B, 3F, 3F) instead:
    (theta - target)^T precision (theta - target), e.g. a Gaussian's inverse covariance.
    """

    target: torch.Tensor  # (B, F, 3)
    scale: torch.Tensor | None = None  # (B, F, 3) or broadcastable; zero entries are not pulled
    precision: torch.Tensor | None = None  # (B, 3F, 3F)


def robust_weights(residual_cm: torch.Tensor, sigma_cm: float) -> torch.Tensor:
    """Geman-McClure IRLS weights for per-point residual norms (cm): sigma^4 / (r^2 + sigma^2)^2."""
    r2 = residual_cm.square()
    return sigma_cm**4 / (r2 + sigma_cm**2).square()


def gauss_newton_step(
    fk: ForwardKinematics,
    points: AttachedPoints,
    local: torch.Tensor,
    transl: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    pulls: list[Pull],
    damping: float,
    sigma_cm: float | None = None,
    posed: Posed | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step for a batch: local (B, J, 3, 3), transl (B, 3), target (B, K, 3) metres, weight (B, K)."""
    batch = local.shape[0]
    posed = posed or fk.from_rotmat(local, transl)
    kp = points.positions(posed)
    diff = (kp - target) * 100.0  # cm
    w = weight
    if sigma_cm is not None:
        w = w * robust_weights(diff.norm(dim=-1), sigma_cm)
    sw = w.clamp(min=0).sqrt()[..., None]
    r = (diff * sw).reshape(batch, -1)
    jac = points.jacobian(posed, kp) * 100.0 * sw.expand(-1, -1, 3).reshape(batch, -1, 1)
    n_free = len(points.free)
    jt = jac.transpose(1, 2)
    h = jt @ jac
    g = jt @ r[..., None]
    if pulls:
        theta = roma.rotmat_to_rotvec(local[:, points.free])
        idx = torch.arange(3 * n_free)
        for pull in pulls:
            d = (theta - pull.target).reshape(batch, -1)
            if pull.precision is not None:
                h[:, : 3 * n_free, : 3 * n_free] += pull.precision
                g[:, : 3 * n_free, 0] += (pull.precision @ d[..., None])[..., 0]
            else:
                s2 = pull.scale.expand_as(theta).square().reshape(batch, -1)
                h[:, idx, idx] += s2
                g[:, : 3 * n_free, 0] += s2 * d
    diag = h.diagonal(dim1=1, dim2=2)
    h = h + damping * torch.diag_embed(diag + 1.0)
    delta = -torch.linalg.solve(h, g)[..., 0]
    local = local.clone()
    local[:, points.free] = local[:, points.free] @ roma.rotvec_to_rotmat(delta[:, : 3 * n_free].reshape(batch, n_free, 3))
    return local, transl + delta[:, 3 * n_free :]
