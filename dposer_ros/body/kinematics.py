"""Batched, differentiable SMPL-X forward kinematics from axis-angle joint rotations."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import roma
import torch

from .skeleton import NUM_JOINTS, Skeleton, smplx_neutral

# smplx keyword -> joint indices in the full (55, 3) pose.
POSE_KEYS: dict[str, tuple[int, ...]] = {
    "global_orient": (0,),
    "body_pose": tuple(range(1, 22)),
    "jaw_pose": (22,),
    "leye_pose": (23,),
    "reye_pose": (24,),
    "left_hand_pose": tuple(range(25, 40)),
    "right_hand_pose": tuple(range(40, 55)),
}


class Posed(NamedTuple):
    joints: torch.Tensor  # (..., J, 3) world positions, metres
    rotations: torch.Tensor  # (..., J, 3, 3) world rotations of the joint frames


def split_pose(full_pose: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a (..., 55, 3) pose into smplx keyword tensors, each flattened to (..., 3 * n)."""
    if full_pose.shape[-2:] != (NUM_JOINTS, 3):
        raise ValueError(f"expected a (..., {NUM_JOINTS}, 3) pose, got {tuple(full_pose.shape)}")
    return {k: full_pose[..., list(idx), :].flatten(-2) for k, idx in POSE_KEYS.items()}


def join_pose(**parts: torch.Tensor) -> torch.Tensor:
    """Inverse of `split_pose`: smplx keyword tensors (..., 3n) -> (..., 55, 3); missing parts are zero."""
    unknown = set(parts) - set(POSE_KEYS)
    if unknown:
        raise ValueError(f"unknown pose parts {sorted(unknown)}; known: {list(POSE_KEYS)}")
    if not parts:
        raise ValueError("join_pose needs at least one part")
    ref = next(iter(parts.values()))
    full = ref.new_zeros((*ref.shape[:-1], NUM_JOINTS, 3))
    for key, value in parts.items():
        idx = list(POSE_KEYS[key])
        full[..., idx, :] = value.reshape(*ref.shape[:-1], len(idx), 3)
    return full


class ForwardKinematics(torch.nn.Module):
    """Joint positions and rotations of a kinematic tree, posed by per-joint axis-angle rotations.

    Follows SMPL-X: the global orientation (joint 0) rotates about the root joint, then `transl`
    is added. Joints are computed level by level, so a batch costs one matmul per tree depth.
    """

    rest_joints: torch.Tensor  # buffers
    parents: torch.Tensor

    def __init__(self, skeleton: Skeleton | None = None) -> None:
        super().__init__()
        self.skeleton = skeleton or smplx_neutral()
        self.register_buffer("rest_joints", torch.tensor(self.skeleton.rest_joints, dtype=torch.float64))
        self.register_buffer("parents", torch.as_tensor(self.skeleton.parents, dtype=torch.long))
        levels = self.skeleton.depth_levels()
        # level-order traversal: joints sorted by depth, each level's parents found in the level before it
        order = np.concatenate(levels)
        self._order = torch.as_tensor(order, dtype=torch.long)
        self._unorder = torch.as_tensor(np.argsort(order), dtype=torch.long)
        self._level_sizes = [len(level) for level in levels]
        self._parent_slot = [torch.as_tensor([list(levels[d - 1]).index(self.skeleton.parents[j]) for j in levels[d]])
                             for d in range(1, len(levels))]
        self._root_transl = torch.as_tensor(levels[0] == 0, dtype=torch.float64)[:, None]  # transl moves joint 0

    def forward(
        self,
        pose: torch.Tensor,
        transl: torch.Tensor | None = None,
        rest_joints: torch.Tensor | None = None,
    ) -> Posed:
        """Pose (..., J, 3) axis-angle [+ transl (..., 3)] -> `Posed`. `rest_joints` (..., J, 3) overrides the shape."""
        num = self.skeleton.num_joints
        if pose.shape[-2:] != (num, 3):
            raise ValueError(f"pose must have shape (..., {num}, 3), got {tuple(pose.shape)}")
        return self.from_rotmat(roma.rotvec_to_rotmat(pose), transl, rest_joints)

    def from_rotmat(
        self,
        local: torch.Tensor,
        transl: torch.Tensor | None = None,
        rest_joints: torch.Tensor | None = None,
    ) -> Posed:
        """Like `forward`, from local rotation matrices (..., J, 3, 3)."""
        num = self.skeleton.num_joints
        batch = local.shape[:-3]
        rest = self.rest_joints.to(local.dtype) if rest_joints is None else rest_joints
        rest = rest.expand(*batch, num, 3).reshape(-1, num, 3)
        local = local.reshape(-1, num, 3, 3)
        n = local.shape[0]
        offsets = rest - rest[:, self.parents.clamp(min=0)]
        # each joint as a homogeneous [R_local | offset; 0 0 0 1] (level order); a child's world [R | p] (3 x 4) is
        # its parent's world [R | p] times that: one matmul per tree level gives rotations and positions together
        bottom = local.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(n, num, 1, 4)
        homog = torch.cat([torch.cat([local, offsets[..., None]], dim=-1), bottom], dim=-2)[:, self._order]
        per_level = homog.split(self._level_sizes, dim=1)
        roots = self._order[: self._level_sizes[0]]
        root_pos = rest[:, roots]
        if transl is not None:
            root_pos = root_pos + transl.reshape(-1, 1, 3) * self._root_transl.to(local)
        world = [torch.cat([per_level[0][:, :, :3, :3], root_pos[..., None]], dim=-1)]
        for slot, level in zip(self._parent_slot, per_level[1:]):
            world.append(world[-1][:, slot] @ level)
        posed = torch.cat(world, dim=1)[:, self._unorder]
        return Posed(posed[..., 3].reshape(*batch, num, 3), posed[..., :3].reshape(*batch, num, 3, 3))
