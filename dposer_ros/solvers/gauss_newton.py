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
from .linear import cholesky_solve_unrolled


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


def _blocks(blocks: torch.Tensor, size: int, index: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n, 3, 3) -> (B, size, size): the blocks on the diagonal of the first 3n rows and columns, zero elsewhere:
    copied to their places by `index` (`AttachedPoints.block_index`; compiled, 0.85x the step of a product over the
    whole matrix at 64 people), or without it a broadcast product and a pad (no scatter in an ONNX graph)."""
    if index is not None:
        flat = blocks.new_zeros(blocks.shape[0], size * size)
        return flat.index_copy(1, index.to(blocks.device), blocks.reshape(blocks.shape[0], -1)).unflatten(1, (size, size))
    n = blocks.shape[1]
    eye = torch.eye(n, dtype=blocks.dtype, device=blocks.device)[:, None, :, None]  # (n, 1, n, 1)
    dense = (blocks[:, :, :, None, :] * eye).flatten(1, 2).flatten(2, 3)  # (B, 3n, 3n)
    return torch.nn.functional.pad(dense, (0, size - 3 * n, 0, size - 3 * n))


def _spd_solve(a: torch.Tensor, b: torch.Tensor, exportable: bool, fallback: bool = True) -> torch.Tensor:
    """x with a x = b for symmetric positive definite a (..., n, n), b (..., n, m): LAPACK (Cholesky, LU should it
    fail unless not `fallback`: then NaN, no branch on data; LU at once for the many 3 x 3 systems, one call), or with
    `exportable` the unrolled Cholesky. Without `fallback` (the compiled step) the 3 x 3 systems, damped and never
    singular, take the unrolled Cholesky too: a few fused operations instead of a LAPACK call per system (the
    compiled step at one person 0.40 -> 0.28 ms)."""
    if exportable or (a.shape[-1] == 3 and not fallback):
        return cholesky_solve_unrolled(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])).reshape_as(b)
    if a.shape[-1] == 3:
        return torch.linalg.solve(a, b)
    chol, info = torch.linalg.cholesky_ex(a)  # Cholesky: half the cost of LU
    if not fallback:  # NaN where the factorisation failed (LAPACK leaves the rest of the matrix in its place)
        return torch.where((info == 0)[..., None, None], torch.cholesky_solve(b, chol), float("nan"))
    return torch.cholesky_solve(b, chol) if not info.any() else torch.linalg.solve(a, b)


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
    exportable: bool = False,
    pose: torch.Tensor | None = None,
    fallback: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step for a batch: local (B, J, 3, 3), transl (B, 3), target (B, K, 3) metres, weight (B, K);
    `rest_joints` (B, J, 3) the people's own rest joints (None: the mean shape), `offsets` (B, K, 3) their
    keypoints' calibrated offsets (None: the format's); `pose` (B, J, 3) the axis-angle of `local` where the caller
    has it (saves a conversion).

    A free joint that moves no point (a finger under a body format) meets the others only through pulls; unless a
    pull couples joints (`precision`), its update is solved on its own (a 3 x 3 system) and the joint system keeps
    only the rest: the same step, with a much smaller factorisation. With `exportable`, every linear solve is the
    unrolled Cholesky of `solvers.linear` (no LAPACK call, no branch on data): the step traces into an ONNX graph.
    Without `fallback`, a failed Cholesky factorisation gives NaN instead of an LU solve (no branch on data either:
    the step compiled by `solvers.compiled_step`)."""
    posed = posed or fk.from_rotmat(local, transl, rest_joints)
    kp = points.positions(posed, offsets)
    diff = (kp - target) * 100.0  # cm
    w = weight
    if sigma_cm is not None:
        w = w * robust_weights(diff.norm(dim=-1), sigma_cm)
    sw = w.clamp(min=0).sqrt()[..., None]
    r = (diff * sw).flatten(1)
    block = points.pair_blocks(posed, kp)
    n_free = len(points.free)
    split = len(points.unmoved) > 0 and all(p.precision is None for p in pulls)
    jac = points.jacobian(posed, kp, block, scale=100.0 * sw[..., 0], moved_only=split)
    h = points.gram(jac, split)
    g = (r[:, None, :] @ jac).transpose(1, 2)  # a row times the matrix: BLAS's fast layout for a product with one column
    # per-joint pull blocks (B, F, 3, 3) and gradients (B, F, 3) of the diagonal and weak pulls
    hb = torch.zeros_like(local[:, points.free])  # (B, F, 3, 3); shapes from tensors, not numbers: an exported
    gb = torch.zeros_like(local[:, points.free, 0])  # graph keeps its batch dynamic
    if pulls:
        theta = roma.rotmat_to_rotvec(local[:, points.free]) if pose is None else pose[:, points.free]
        jinv = inverse_right_jacobian(theta)  # (B, F, 3, 3)
        if any(p.weak_cm is not None for p in pulls):  # what the confident points tell of each joint alone
            seen_info = points.joint_information(block, weight.clamp(min=0)) * 1e4  # cm^2 per rad^2
        # the diagonal pulls add up to one: precision sum s_i^2, gradient sum s_i^2 (theta - target_i)
        diagonal = [p for p in pulls if p.precision is None and p.weak_cm is None]
        if diagonal:
            precision = sum(cast(torch.Tensor, p.scale).square().expand_as(theta) for p in diagonal)
            pulled = sum(cast(torch.Tensor, p.scale).square() * (theta - p.target) for p in diagonal)
            jt = jinv.transpose(-1, -2)
            hb = hb + (jt * cast(torch.Tensor, precision)[..., None, :]) @ jinv
            gb = gb + (jt @ cast(torch.Tensor, pulled)[..., None])[..., 0]
        for pull in (p for p in pulls if p.precision is not None or p.weak_cm is not None):
            d = theta - pull.target
            if pull.precision is not None:  # a full precision: only without the split (all joints in h)
                jb = _blocks(jinv, 3 * n_free, None if exportable else points.block_index(n_free, 3 * n_free))
                jbt = jb.transpose(1, 2)
                h[:, : 3 * n_free, : 3 * n_free] += jbt @ pull.precision @ jb
                g[:, : 3 * n_free] += jbt @ (pull.precision @ d.flatten(1)[..., None])
            elif pull.weak_cm is not None:
                lam = pull.weak_cm**2
                inv = _spd_solve(seen_info + lam * torch.eye(3), torch.eye(3).expand_as(seen_info), exportable,
                                 fallback)
                weak = lam * inv * cast(torch.Tensor, pull.scale)[..., None].square()
                jt_p = jinv.transpose(-1, -2) @ weak
                hb = hb + jt_p @ jinv
                gb = gb + (jt_p @ d[..., None])[..., 0]
    if split:
        hb_moved, gb_moved = hb[:, points.moved], gb[:, points.moved]
    else:
        hb_moved, gb_moved = hb, gb
    # out of place from here on: what the ONNX exporter keeps of in-place writes into views is not reliable
    size = h.shape[1]
    h = h + _blocks(hb_moved, size, None if exportable else points.block_index(hb_moved.shape[1], size))
    g = g + torch.cat([gb_moved.flatten(1), torch.zeros_like(g[:, 3 * hb_moved.shape[1] :, 0])], 1)[..., None]
    eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
    h = h + eye * (h.diagonal(dim1=1, dim2=2) * damping + damping)[:, None, :]  # h + damping * diag(diag(h) + 1)
    solved = -_spd_solve(h, g, exportable, fallback)[..., 0]
    delta = solved
    if split:  # the joints no point moves: each its own damped 3 x 3 system
        hd = hb[:, points.unmoved] * (1.0 + damping * torch.eye(3)) + damping * torch.eye(3)
        apart = -_spd_solve(hd, gb[:, points.unmoved, :, None], exportable, fallback)[..., 0]
        zero = torch.zeros_like(torch.cat([gb.flatten(1), transl], 1))  # (B, 3F + 3)
        delta = zero.index_copy(1, points.moved_columns, solved).index_copy(1, points.unmoved_columns, apart.flatten(1))
    turned = local[:, points.free] @ roma.rotvec_to_rotmat(delta[:, : 3 * n_free].unflatten(1, (n_free, 3)))
    local = local.index_copy(1, points.free, turned)
    return local, transl + delta[:, 3 * n_free :]
