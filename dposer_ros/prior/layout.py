"""The prior's pose vector: [body 63 | left hand 45 | right hand 45 | face 103 | gravity 3], left hands mirrored.

A left hand is stored mirrored into a right hand (y and z of each axis-angle negated), so both hand slots hold
the same kind of data. The face part (jaw 3 + expression 100) is part of the layout, but no face capture exists
in the training data: it is always masked out. The gravity part is the world's up direction in the pelvis frame
(R_root^T up): a condition, not a diffused part. It is given to the network as it is (never noised, never
predicted), so the prior can tell standing from sitting under an upright torso; its mask bit is off where the up
direction is unknown.
"""

from __future__ import annotations

import numpy as np
import roma
import torch

from ..body.skeleton import PART_JOINTS, smplx_neutral
from ..dataset.poses import PARTS as POSE_PARTS  # the parts of the body, in the dataset's masks and in results

CONDITION_PARTS = ("gravity",)  # given to the network as they are: never noised, never predicted
PARTS = (*POSE_PARTS, *CONDITION_PARTS)
PART_DIMS = {"body": 63, "left_hand": 45, "right_hand": 45, "face": 103, "gravity": 3}
NUM_EXPRESSION = 100
DIM = sum(PART_DIMS.values())
_MIRROR_SIGN = torch.tensor([1.0, -1.0, -1.0])
_MIRROR_VECTOR = torch.tensor([-1.0, 1.0, 1.0])  # a direction under the left-right mirror (x -> -x)


def part_slices() -> dict[str, slice]:
    out, start = {}, 0
    for p in PARTS:
        out[p] = slice(start, start + PART_DIMS[p])
        start += PART_DIMS[p]
    return out


SLICES = part_slices()


_PART_INDEX: dict[torch.device, torch.Tensor] = {}


def part_index(device: torch.device | str = "cpu") -> torch.Tensor:
    """(DIM,) long: the part of each entry of the vector (cached per device: made before a trace or a CUDA graph
    capture, it is one plain constant there)."""
    device = torch.device(device)
    if device not in _PART_INDEX:
        sizes = torch.tensor([PART_DIMS[p] for p in PARTS])
        _PART_INDEX[device] = torch.repeat_interleave(torch.arange(len(PARTS)), sizes).to(device)
    return _PART_INDEX[device]


def dim_mask(part_mask: torch.Tensor) -> torch.Tensor:
    """(..., len(PARTS)) part mask -> (..., DIM) mask over the vector's entries: one gather with a constant index (no
    host sync, which CUDA graph capture forbids; one Gather in ONNX)."""
    return part_mask.to(torch.float32).index_select(-1, part_index(part_mask.device))


DIFFUSED = dim_mask(torch.tensor([p not in CONDITION_PARTS for p in PARTS]))  # (DIM,) 1 where the prior diffuses
_BODY, _LEFT, _RIGHT = (torch.tensor(PART_JOINTS[p]) for p in ("body", "left_hand", "right_hand"))


def with_conditions(pose_mask: torch.Tensor, up_known: torch.Tensor | bool) -> torch.Tensor:
    """(..., len(POSE_PARTS)) mask of the pose parts -> (..., len(PARTS)) with the gravity bit: set where the body
    is in the mask and the up direction is known."""
    known = torch.as_tensor(up_known, dtype=pose_mask.dtype, device=pose_mask.device).expand(pose_mask.shape[:-1])
    return torch.cat([pose_mask, (pose_mask[..., :1] * known[..., None]).to(pose_mask.dtype)], dim=-1)


def gravity(pose: torch.Tensor, up: torch.Tensor, root: torch.Tensor | None = None) -> torch.Tensor:
    """The up direction `up` (..., 3) of the pose's frame in its pelvis frame: R_root^T up (..., 3). `root`
    (..., 3, 3): R_root where the caller has it (saves a conversion)."""
    root = roma.rotvec_to_rotmat(pose[..., 0, :]) if root is None else root.to(pose)
    return (root.transpose(-1, -2) @ up.to(pose)[..., None]).squeeze(-1)


def to_vector(pose: torch.Tensor, expression: torch.Tensor | None = None, up: torch.Tensor | None = None,
              root: torch.Tensor | None = None) -> torch.Tensor:
    """(..., 55, 3) axis-angle pose [+ (..., 100) expression] [+ (..., 3) up direction in the pose's frame] ->
    (..., DIM) prior vector (left hand mirrored; gravity entries zero without `up`; `root` (..., 3, 3): the root's
    rotation matrix where the caller has it)."""
    body = pose[..., _BODY.to(pose.device), :].flatten(-2)
    left = (pose[..., _LEFT.to(pose.device), :] * _MIRROR_SIGN.to(pose)).flatten(-2)
    right = pose[..., _RIGHT.to(pose.device), :].flatten(-2)
    jaw = pose[..., PART_JOINTS["jaw"][0], :]
    expr = pose.new_zeros(*pose.shape[:-2], NUM_EXPRESSION) if expression is None else expression
    grav = pose.new_zeros(*pose.shape[:-2], 3) if up is None else gravity(pose, up.expand(*pose.shape[:-2], 3), root)
    return torch.cat([body, left, right, jaw, expr, grav], dim=-1)


def from_vector(vec: torch.Tensor, pose: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., DIM) -> ((..., 55, 3) pose, (..., 100) expression). Joints the vector does not hold (global orientation,
    eyes) come from `pose` when given, else zero."""
    out = vec.new_zeros(*vec.shape[:-1], 55, 3) if pose is None else pose.clone()
    out[..., _BODY.to(vec.device), :] = vec[..., SLICES["body"]].unflatten(-1, (21, 3))
    out[..., _LEFT.to(vec.device), :] = vec[..., SLICES["left_hand"]].unflatten(-1, (15, 3)) * _MIRROR_SIGN.to(vec)
    out[..., _RIGHT.to(vec.device), :] = vec[..., SLICES["right_hand"]].unflatten(-1, (15, 3))
    face = vec[..., SLICES["face"]]  # the gravity entries say nothing of the pose
    out[..., PART_JOINTS["jaw"][0], :] = face[..., :3]
    return out, face[..., 3:]


def _mirror_permutation() -> list[int]:
    names = smplx_neutral().names
    swap = {"left": "right", "right": "left"}
    perm = []
    for n in names:
        side = n.split("_")[0]
        other = n.replace(side, swap[side], 1) if side in swap else n
        perm.append(names.index(other))
    return perm


MIRROR_JOINTS = _mirror_permutation()


def mirror_pose(pose: torch.Tensor) -> torch.Tensor:
    """The left-right mirror image of (..., 55, 3) poses (swap sides, negate y and z of each axis-angle)."""
    return pose[..., MIRROR_JOINTS, :] * _MIRROR_SIGN.to(pose)


def mirror_part_mask(part_mask: np.ndarray | torch.Tensor):
    """Swap the left and right hand entries of (..., P) part masks (the layout's or the dataset's parts)."""
    order = list(range(part_mask.shape[-1]))
    order[1], order[2] = 2, 1
    return part_mask[..., order]


def mirror_vector_map() -> tuple[torch.Tensor, torch.Tensor]:
    """The mirror image as a signed permutation of the prior vector: mirrored = sign * vec[perm] (both hand slots
    swap, body entries swap sides with y and z negated; expression entries stay; the up direction's x negated)."""
    eye = torch.eye(DIM, dtype=torch.float64)
    pose, expr = from_vector(eye)
    mirrored = to_vector(mirror_pose(pose), expr)  # row i: the mirror image of basis vector i
    grav = SLICES["gravity"]
    mirrored[grav, grav] = torch.diag(_MIRROR_VECTOR.double())
    perm = mirrored.abs().argmax(0)  # output entry o comes from input entry perm[o]
    sign = mirrored[perm, torch.arange(DIM)]
    if not torch.equal(mirrored.abs().sum(0), torch.ones(DIM, dtype=torch.float64)):
        raise AssertionError("the mirror image is not a signed permutation of the prior vector")
    return perm, sign.float()
