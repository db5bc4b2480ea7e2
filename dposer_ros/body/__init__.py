"""SMPL-X body: the joint tree, forward kinematics, the optional exact `smplx` model and pictures."""

from .kinematics import POSE_KEYS, ForwardKinematics, Posed, join_pose, split_pose
from .skeleton import NUM_JOINTS, PART_JOINTS, Skeleton, smplx_neutral

__all__ = [
    "NUM_JOINTS",
    "PART_JOINTS",
    "POSE_KEYS",
    "ForwardKinematics",
    "Posed",
    "Skeleton",
    "join_pose",
    "smplx_neutral",
    "split_pose",
]
