"""Damped Gauss-Newton on SMPL-X joint rotations: a keypoint data term plus quadratic pulls on the pose.

The unknowns are local increments of the free joints' rotations (R <- R exp(delta)) and the translation.
Pulls are residuals sqrt(w) * S (theta - target) on the axis-angle of chosen entries, linearised with the exact
d theta / d delta = J_r^-1(theta), the inverse right Jacobian of SO(3): with the identity instead, a pull on a joint
bent by more than about two radians spirals away from its target instead of converging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import roma
import torch

from ..body.jacobian import AttachedPoints, skew
from ..body.kinematics import ForwardKinematics, Posed


@dataclass
class Pull:
    """A quadratic pull of the free joints' axis-angle towards `target`.

    Diagonal: sum (scale * (theta - target))^2 per entry. With `precision` (B, 3F, 3F) instead:
    (theta - target)^T precision (theta - target), e.g. a Gaussian's inverse covariance. With `weak_cm`, a hold
    of the directions of each joint's rotation that the keypoints barely see (a hip's twist while the ankle is hidden).
    """

    target: torch.Tensor  # (B, F, 3)
    scale: torch.Tensor | None = None  # (B, F, 3) or broadcastable; zero entries are not pulled
    precision: torch.Tensor | None = None  # (B, 3F, 3F)
    # with `scale`: only along what the step's keypoints barely see, per joint scale^2 lambda (A + lambda I)^-1 with
    # A what the points, weighted by confidence (not the robust weights), tell of the joint's rotation alone
    # (cm^2 per rad^2; `AttachedPoints.joint_information`) and lambda = weak_cm^2
    weak_cm: float | None = None


def _block_index(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the n 3x3 diagonal blocks of a 3n x 3n matrix, block after block, row-major."""
    i = torch.arange(3)
    rows = (3 * torch.arange(n)[:, None, None] + i[None, :, None]).expand(n, 3, 3)
    cols = (3 * torch.arange(n)[:, None, None] + i[None, None, :]).expand(n, 3, 3)
    return rows.reshape(-1), cols.reshape(-1)


def robust_weights(residual_cm: torch.Tensor, sigma_cm: float) -> torch.Tensor:
    """Geman-McClure IRLS weights for per-point residual norms (cm): sigma^4 / (r^2 + sigma^2)^2."""
    r2 = residual_cm.square()
    return sigma_cm**4 / (r2 + sigma_cm**2).square()


def inverse_right_jacobian(theta: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) J_r^-1: log(R(theta) exp(delta)) = theta + J_r^-1 delta + O(delta^2)."""
    angle = theta.norm(dim=-1, keepdim=True)[..., None]  # (..., 1, 1)
    k = skew(theta)
    small = angle < 1e-3
    safe = torch.where(small, torch.ones_like(angle), angle)
    coef = 1.0 / safe**2 - (1.0 + torch.cos(safe)) / (2.0 * safe * torch.sin(safe))
    coef = torch.where(small, torch.full_like(angle, 1.0 / 12.0), coef)
    return torch.eye(3, dtype=theta.dtype) + 0.5 * k + coef * (k @ k)


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
    rest_joints: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step for a batch: local (B, J, 3, 3), transl (B, 3), target (B, K, 3) metres, weight (B, K);
    `rest_joints` (B, J, 3) the people's own rest joints (None: the mean shape), `offsets` (B, K, 3) their
    keypoints' calibrated offsets (None: the format's).

    A free joint that moves no point (a finger under a body format) meets the others only through pulls; unless a
    pull couples joints (`precision`), its update is solved on its own (a 3 x 3 system) and the joint system keeps
    only the rest: the same step, with a much smaller factorisation."""
    batch = local.shape[0]
    posed = posed or fk.from_rotmat(local, transl, rest_joints)
    kp = points.positions(posed, offsets)
    diff = (kp - target) * 100.0  # cm
    w = weight
    if sigma_cm is not None:
        w = w * robust_weights(diff.norm(dim=-1), sigma_cm)
    sw = w.clamp(min=0).sqrt()[..., None]
    r = (diff * sw).reshape(batch, -1)
    block = points.pair_blocks(posed, kp)
    jac = points.jacobian(posed, kp, block) * 100.0 * sw.expand(-1, -1, 3).reshape(batch, -1, 1)
    n_free = len(points.free)
    split = bool(points.unmoved.any()) and all(p.precision is None for p in pulls)
    if split:
        jac = jac[..., points.moved_columns]
    jt = jac.transpose(1, 2)
    h = jt @ jac
    g = jt @ r[..., None]
    # per-joint pull blocks (B, F, 3, 3) and gradients (B, F, 3) of the diagonal and weak pulls
    hb = local.new_zeros(batch, n_free, 3, 3)
    gb = local.new_zeros(batch, n_free, 3)
    n_data = h.shape[1] // 3 - 1  # joints in the system
    rows, cols_ = _block_index(n_data)
    if pulls:
        theta = roma.rotmat_to_rotvec(local[:, points.free])
        jinv = inverse_right_jacobian(theta)  # (B, F, 3, 3)
        if any(p.weak_cm is not None for p in pulls):  # what the confident points tell of each joint alone
            seen_info = points.joint_information(block, weight.clamp(min=0)) * 1e4  # cm^2 per rad^2
        for pull in pulls:
            d = theta - pull.target
            if pull.precision is not None:  # a full precision: only without the split (all joints in h)
                jb = torch.zeros(batch, 3 * n_free, 3 * n_free, dtype=h.dtype)
                jb[:, rows, cols_] = jinv.reshape(batch, -1)  # without the split the system holds every joint
                jbt = jb.transpose(1, 2)
                h[:, : 3 * n_free, : 3 * n_free] += jbt @ pull.precision @ jb
                g[:, : 3 * n_free] += jbt @ (pull.precision @ d.reshape(batch, -1, 1))
                continue
            if pull.weak_cm is not None:
                lam = pull.weak_cm**2
                weak = lam * torch.linalg.inv(seen_info + lam * torch.eye(3)) * cast(torch.Tensor, pull.scale)[..., None].square()
                jt_p = jinv.transpose(-1, -2) @ weak
            else:  # a diagonal pull: scale is set
                jt_p = jinv.transpose(-1, -2) * cast(torch.Tensor, pull.scale).expand_as(theta).square()[..., None, :]
            hb = hb + jt_p @ jinv
            gb = gb + (jt_p @ d[..., None])[..., 0]
    if split:
        hb_moved, gb_moved = hb[:, points.moved], gb[:, points.moved]
    else:
        hb_moved, gb_moved = hb, gb
    h[:, rows, cols_] += hb_moved.reshape(batch, -1)
    g[:, : 3 * hb_moved.shape[1], 0] += gb_moved.reshape(batch, -1)
    h.diagonal(dim1=1, dim2=2).mul_(1.0 + damping).add_(damping)  # h + damping * diag(diag(h) + 1), in place
    chol, info = torch.linalg.cholesky_ex(h)  # h is symmetric positive definite: Cholesky, half the cost of LU
    solved = -(torch.cholesky_solve(g, chol) if not info.any() else torch.linalg.solve(h, g))[..., 0]
    delta = solved
    if split:  # the joints no point moves: each its own damped 3 x 3 system
        delta = local.new_zeros(batch, 3 * n_free + 3)
        delta[:, points.moved_columns] = solved
        hd = hb[:, points.unmoved] * (1.0 + damping * torch.eye(3)) + damping * torch.eye(3)
        delta[:, : 3 * n_free].view(batch, n_free, 3)[:, points.unmoved] = -torch.linalg.solve(hd, gb[:, points.unmoved])
    local = local.clone()
    local[:, points.free] = local[:, points.free] @ roma.rotvec_to_rotmat(delta[:, : 3 * n_free].reshape(batch, n_free, 3))
    return local, transl + delta[:, 3 * n_free :]
