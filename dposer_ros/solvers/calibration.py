"""Per-track calibration: the body's 10 SMPL-X shape coefficients and each keypoint's offset, estimated online.

Shape.

With the pose of a frame fixed, keypoints are linear in the shape: kp(beta) = kp(beta0) + A (beta - beta0), with
A[k, :, i] = the keypoint's joint under forward kinematics of the shape direction D_i (`body.shape`) and no
translation. Each frame adds its normal equations, centred per frame (the translation is the pose solver's), with
Geman-McClure weights on the residuals and the keypoints' confidences:
    information += phi * sum_k w_k A_k^T A_k / s^2,    rhs += phi * sum_k w_k A_k^T (r_k + A_k beta0) / s^2
(r = y - kp(beta0), centred, in cm; s = `shape_sigma_cm`), and beta = (information + prior I)^-1 rhs: a unit
Gaussian prior on beta. phi is 1 for a track's first `shape_frames` calibrating frames, then `shape_slow`: the
shape converges within about a second and is then held, following slow changes only.

Keypoint offsets. A detector's keypoint is not where this package's format table puts it (every dataset has its
own head, hip and shoulder conventions). What the body cannot explain after a frame's solve, r_k = y_k - kp_k, is
read in the anchor joint's frame and averaged per keypoint over the track (same weights, same full-then-slow
schedule) against a zero-offset prior worth `offset_prior_frames` frames, and bounded by `max_offset_cm`:
    o_k = sum_f w_f R_f^T (r_f + R_f o_k,f) / (sum_f w_f + offset_prior_frames).
The pose is then solved for keypoints at their calibrated place: a few centimetres of convention no longer bend it.

Legs no keypoint sees. The shape the seen upper body implies puts the legs 5-15 cm off the person's; a person
standing upright above a known floor stands on it, so the lower foot joint is `SOLE_HEIGHT` above the floor
(`FloorContact`). That is one more row of the normal equations, its residual in cm along the up direction, its
Jacobian the feet's shape Jacobian less the seen keypoints' mean (the translation follows the seen keypoints), with
scale `floor_contact_sigma_cm` and the same robust weights and schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..body.jacobian import AttachedPoints
from ..body.kinematics import ForwardKinematics
from ..body.shape import NUM_BETAS, shape_tables
from .gauss_newton import robust_weights
from .types import Calibration


@dataclass(frozen=True)
class FloorContact:
    """Where each person's lower foot joint stands if the person stands on the floor: `height` (B,) along `up` (B, 3),
    believed with `weight` (B,) in [0, 1] (0: not standing, legs seen, or no floor)."""

    feet: AttachedPoints  # the two foot joints
    up: torch.Tensor
    height: torch.Tensor
    weight: torch.Tensor


def empty_calibration(batch: int, keypoints: int) -> Calibration:
    return Calibration(torch.zeros(batch, NUM_BETAS), torch.zeros(batch, NUM_BETAS, NUM_BETAS), torch.zeros(batch, NUM_BETAS),
                       torch.zeros(batch), torch.zeros(batch, keypoints, 3), torch.zeros(batch, keypoints))


def shape_jacobian(fk: ForwardKinematics, points: AttachedPoints, posed) -> torch.Tensor:
    """(B, K, 3, 10): how each keypoint moves per unit of each shape coefficient, in the pose of `posed` (its world
    rotations). Forward kinematics is linear in the rest joints: a joint moves with its parent plus the parent's world
    rotation of its bone's change, so the derivative is a sum over each keypoint's chain of rotated bone directions
    (the root's own direction unrotated)."""
    dirs = shape_tables()[1].to(posed.rotations.dtype)  # (J, 3, 10)
    parents = fk.parents
    root = (parents < 0)[:, None, None]
    bone = torch.where(root, dirs, dirs - dirs[parents.clamp(min=0)])
    turn = torch.where(root, torch.eye(3, dtype=dirs.dtype), posed.rotations[:, parents.clamp(min=0)])
    return torch.einsum("kj,bjcn->bkcn", points.lineage.to(dirs), turn @ bone)


def calibrate(fk: ForwardKinematics, points: AttachedPoints, posed, local: torch.Tensor, target: torch.Tensor,
              confidence: torch.Tensor, calib: Calibration, settings, contact: FloorContact | None = None) -> Calibration:
    """One frame's calibration of shape and keypoint offsets (see the module docstring), from the frame's answer
    `posed` / `local` (posed with `calib`) and, for hidden legs, the floor `contact`: -> the track's `Calibration`
    for its next frame."""
    betas = calib.betas
    keypoints = points.positions(posed, calib.offsets)
    r = (target - keypoints) * 100.0  # cm
    w = confidence * (confidence > 0.1) * robust_weights(r.norm(dim=-1), settings.sigma_cm)  # (B, K)
    enough = ((confidence > 0.1).sum(1) >= settings.min_part_points * 2).float()  # a frame with a body in it
    phi = torch.where(calib.frames < settings.shape_frames, 1.0, settings.shape_slow) * enough  # (B,)
    information, rhs = calib.information, calib.rhs
    if settings.calibrate_shape:
        a = shape_jacobian(fk, points, posed) * 100.0  # cm per unit
        total = w.sum(1).clamp(min=1e-9)[:, None]
        mean_a = (w[..., None, None] * a).sum(1, keepdim=True) / total[..., None, None]
        a = a - mean_a
        rc = r - (w[..., None] * r).sum(1, keepdim=True) / total[..., None]
        scale = (phi / settings.shape_sigma_cm**2)[:, None]
        flat = a.reshape(a.shape[0], -1, NUM_BETAS)
        at = flat.transpose(1, 2) * w.repeat_interleave(3, dim=1)[:, None]  # A^T W
        information = information + scale[..., None] * (at @ flat)
        rhs = rhs + scale * (at @ (rc.reshape(rc.shape[0], -1, 1) + flat @ betas[..., None]))[..., 0]
        if contact is not None:
            heights = (contact.feet.positions(posed) * contact.up[:, None]).sum(-1)  # (B, 2)
            lower = heights.argmin(1)
            fa = shape_jacobian(fk, contact.feet, posed) * 100.0 - mean_a  # (B, 2, 3, 10) against the seen keypoints
            fa = torch.einsum("bc,bcn->bn", contact.up.to(fa), fa[torch.arange(len(lower)), lower])  # (B, 10)
            fr = (contact.height - heights.min(1).values) * 100.0  # cm
            fw = contact.weight * phi * robust_weights(fr.abs(), settings.sigma_cm) / settings.floor_contact_sigma_cm**2
            fw = torch.nan_to_num(fw * torch.isfinite(fr), nan=0.0)
            fr = fr.nan_to_num(0.0)
            information = information + fw[:, None, None] * fa[:, :, None] * fa[:, None, :]
            rhs = rhs + fw[:, None] * fa * (fr + (fa * betas).sum(-1))[:, None]
        eye = torch.eye(NUM_BETAS) * settings.shape_prior_weight
        betas = torch.linalg.solve(information + eye, rhs[..., None])[..., 0].clamp(-settings.max_beta, settings.max_beta)
    offsets, weight = calib.offsets, calib.offset_weight
    if settings.calibrate_offsets:
        rot = posed.rotations[:, points.frame]  # (B, K, 3, 3) the offsets' frames
        local_r = (rot.transpose(-1, -2) @ (r / 100.0)[..., None])[..., 0] + offsets  # the offset this frame asks for
        wf = w * phi[:, None]
        prior = settings.offset_prior_frames
        new = (offsets * (weight + prior)[..., None] + wf[..., None] * local_r) / (weight + wf + prior)[..., None]
        norm = new.norm(dim=-1, keepdim=True)
        offsets = new * (settings.max_offset_cm / 100.0 / norm.clamp(min=1e-9)).clamp(max=1.0)
        weight = weight + wf
    return Calibration(betas, information, rhs, calib.frames + enough, offsets, weight)
