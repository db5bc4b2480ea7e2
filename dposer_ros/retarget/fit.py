"""Fitting joint rotations to target joint positions: damped Gauss-Newton, frame after frame with warm starts.

Unknowns per frame: the local rotation of every free joint of a skeleton (root included) and the translation.
Rotations are updated multiplicatively, R <- R exp(delta), with the analytic Jacobian of joint positions,
dP_m / d delta_j = -[P_m - P_j]_x G_j for each ancestor j of m (G_j the joint's world rotation), so one
Gauss-Newton step solves a small linear system per frame and a warm-started frame needs two or three steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import roma
import torch

from ..body.alignment import kabsch
from ..body.jacobian import AttachedPoints
from ..body.kinematics import ForwardKinematics
from ..body.skeleton import Skeleton


@dataclass(frozen=True)
class FitSettings:
    """Solver settings of the sequence fit (the values used for the dataset live in config/data/build.yaml)."""

    first_frame_iters: int = 30
    iters_per_frame: int = 3
    damping: float = 1e-3  # Levenberg-Marquardt damping, relative to the data term (cm^2)
    pose_weight: float = 0.5  # pulls joint rotations (radians) towards the rest pose, against a data term in cm
    hinge_weight: float = 20.0  # off-axis rotation and hyper-extension of hinge joints (knees, elbows, fingers)
    smooth_weight: float = 2.0  # change of joint rotations from the previous frame
    max_step: float = 0.0  # > 0: trust region, radians of the joint a step turns the most (the whole step is shortened)


def sub_skeleton(full: Skeleton, names: Sequence[str], extra_leaves: Mapping[str, tuple[str, np.ndarray]] = {}) -> Skeleton:
    """The joints `names` of `full` (first is the root; each joint hangs from its nearest listed ancestor) plus leaves.

    `extra_leaves` maps a new leaf name to (parent joint name, rest position in metres), e.g. fingertips.
    """
    index = {n: i for i, n in enumerate(names)}
    parents = []
    for n in names:
        p = full.parents[full.index(n)]
        while p >= 0 and full.names[p] not in index:
            p = full.parents[p]
        parents.append(index[full.names[p]] if p >= 0 else -1)
    if parents.count(-1) != 1 or parents[0] != -1:
        raise ValueError(f"sub-skeleton needs exactly one root, first in the list: {names[0]}")
    rest = [full.rest_joints[full.index(n)] for n in names]
    for parent, pos in extra_leaves.values():
        parents.append(index[parent])
        rest.append(np.asarray(pos, dtype=np.float64))
    return Skeleton(tuple(names) + tuple(extra_leaves), tuple(parents), np.stack(rest))


class SequenceFitter:
    """Fits root orientation, translation and joint rotations of `skeleton` to target points, frame after frame.

    Each frame starts from the previous frame's solution (warm start); the first frame of a sequence starts from
    a rigid (Kabsch) alignment of the rest pose and gets more iterations.
    """

    def __init__(
        self,
        skeleton: Skeleton,
        target_joints: Sequence[str],
        weights: Sequence[float],
        hinges: Mapping[str, tuple[Sequence[float], float]],
        settings: FitSettings,
        frozen: Sequence[str] = (),
    ) -> None:
        self.fk = ForwardKinematics(skeleton)
        self.settings = settings
        num = skeleton.num_joints
        self.target_idx = torch.tensor([skeleton.index(n) for n in target_joints])
        self.sqrt_w = torch.tensor(weights, dtype=torch.float32).sqrt()
        frozen_idx = {skeleton.index(n) for n in frozen}
        self.free = torch.tensor([j for j in range(num) if j not in frozen_idx])
        self.points = AttachedPoints(self.fk, self.target_idx.numpy(), np.zeros((len(self.target_idx), 3)), self.free.numpy())
        free_pos = {j: k for k, j in enumerate(self.free.tolist())}
        self.hinge_k = torch.tensor([free_pos[skeleton.index(n)] for n in hinges], dtype=torch.long)
        axes = np.array([np.asarray(a, float) / np.linalg.norm(a) for a, _ in hinges.values()]).reshape(-1, 3)
        self.hinge_axis = torch.tensor(axes, dtype=torch.float32)
        self.hinge_sign = torch.tensor([s for _, s in hinges.values()], dtype=torch.float32)

    def _residuals(self, local, transl, target, valid, previous):
        """Stacked residuals (B, R) and Jacobian (B, R, 3K + 3) in the local-increment parametrisation."""
        s = self.settings
        batch = local.shape[0]
        posed = self.fk.from_rotmat(local, transl)
        joints = posed.joints[:, self.target_idx]
        w = self.sqrt_w[None, :, None] * valid[:, None, None]
        r_data = ((joints - target) * 100.0 * w).reshape(batch, -1)  # cm
        j_data = self.points.jacobian(posed, joints) * 100.0 * w.expand(-1, -1, 3).reshape(batch, -1, 1)

        theta = roma.rotmat_to_rotvec(local[:, self.free[1:]]) if len(self.free) > 1 else local.new_zeros(batch, 0, 3)
        n_par = 3 * len(self.free) + 3
        eye = torch.eye(n_par)[3:-3]  # d theta / d delta ~ identity for the non-root joints
        rows_r = [np.sqrt(s.pose_weight) * theta.reshape(batch, -1)]
        rows_j = [np.sqrt(s.pose_weight) * eye.expand(batch, -1, -1)]
        if previous is not None:
            rows_r.append(np.sqrt(s.smooth_weight) * (theta - previous).reshape(batch, -1))
            rows_j.append(np.sqrt(s.smooth_weight) * eye.expand(batch, -1, -1))
        if len(self.hinge_k):
            th = roma.rotmat_to_rotvec(local[:, self.free[self.hinge_k]])  # (B, H, 3)
            a = self.hinge_axis
            along = (th * a).sum(-1, keepdim=True)
            proj = torch.eye(3) - a[:, :, None] * a[:, None, :]  # (H, 3, 3)
            sel = torch.zeros(len(self.hinge_k), 3, n_par)
            for h, k in enumerate(self.hinge_k.tolist()):
                sel[h, :, 3 * k : 3 * k + 3] = torch.eye(3)
            wrong = (along * self.hinge_sign[:, None] < 0).float()
            rows_r.append(np.sqrt(s.hinge_weight) * (th - along * a).reshape(batch, -1))
            rows_j.append(np.sqrt(s.hinge_weight) * (proj @ sel).reshape(-1, n_par).expand(batch, -1, -1))
            rows_r.append(np.sqrt(s.hinge_weight) * (wrong * along).reshape(batch, -1))
            rows_j.append(np.sqrt(s.hinge_weight) * (wrong[..., None] * (a[:, None, :] @ sel)).reshape(batch, -1, n_par))
        return torch.cat([r_data, *rows_r], 1), torch.cat([j_data, *rows_j], 1), r_data

    def _step(self, local, transl, target, valid, previous):
        r, jac, _ = self._residuals(local, transl, target, valid, previous)
        jt = jac.transpose(1, 2)
        h = jt @ jac
        h = h + self.settings.damping * torch.diag_embed(h.diagonal(dim1=1, dim2=2) + 1.0)
        delta = -torch.linalg.solve(h, (jt @ r[..., None]))[..., 0]
        k = len(self.free)
        if self.settings.max_step > 0:
            largest = delta[:, : 3 * k].reshape(-1, k, 3).norm(dim=-1).amax(1, keepdim=True)
            delta = delta * (self.settings.max_step / largest.clamp(min=self.settings.max_step))
        update = roma.rotvec_to_rotmat(delta[:, : 3 * k].reshape(-1, k, 3))
        local = local.clone()
        local[:, self.free] = local[:, self.free] @ update
        return local, transl + delta[:, 3 * k :]

    def initial_alignment(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Root rotation matrix and translation that rigidly align the rest pose with the first targets."""
        rest = self.fk.rest_joints.float()[self.target_idx].expand_as(target)
        w = self.sqrt_w.square()
        rot = kabsch(rest, target, w.expand(target.shape[0], -1))
        w = (w / w.sum())[:, None]
        root = self.fk.rest_joints[0].float()
        # joints = R (rest - root) + root + transl  ->  transl matches the weighted centroids
        transl = (w * target).sum(-2) - ((rot @ ((w * rest[0]).sum(-2) - root)[:, None]).squeeze(-1) + root)
        return rot, transl

    @torch.no_grad()
    def fit(
        self, targets: torch.Tensor, valid: torch.Tensor, progress: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """targets (B, T, M, 3) metres, valid (B, T) -> pose (B, T, J, 3), transl (B, T, 3), fitted targets (B, T, M, 3)."""
        s = self.settings
        batch, frames = valid.shape
        targets = torch.where(valid[..., None, None], targets.float(), 0.0)  # invalid frames may hold anything
        valid = valid.float()
        num = self.fk.skeleton.num_joints
        local = torch.eye(3).repeat(batch, num, 1, 1)
        local[:, 0], transl = self.initial_alignment(targets[:, 0])
        poses = np.zeros((batch, frames, num, 3), np.float32)
        transls = np.zeros((batch, frames, 3), np.float32)
        fitted = np.zeros((batch, frames, len(self.target_idx), 3), np.float32)
        previous = None
        for t in range(frames):
            for _ in range(s.first_frame_iters if t == 0 else s.iters_per_frame):
                local, transl = self._step(local, transl, targets[:, t], valid[:, t], previous)
            pose = roma.rotmat_to_rotvec(local)
            previous = pose[:, self.free[1:]]
            poses[:, t] = pose.numpy()
            transls[:, t] = transl.numpy()
            fitted[:, t] = self.fk.from_rotmat(local, transl).joints[:, self.target_idx].numpy()
            if progress is not None:
                progress(1)
        return poses, transls, fitted
