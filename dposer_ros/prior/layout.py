"""The prior's pose vector: [body 63 | left hand 45 | right hand 45 | face 103], with left hands mirrored.

A left hand is stored mirrored into a right hand (y and z of each axis-angle negated), so both hand slots hold
the same kind of data. The face part (jaw 3 + expression 100) is part of the layout, but no face capture exists
in the training data: it is always masked out.
"""

from __future__ import annotations

import numpy as np
import torch

from ..body.skeleton import PART_JOINTS, smplx_neutral

PARTS = ("body", "left_hand", "right_hand", "face")
PART_DIMS = {"body": 63, "left_hand": 45, "right_hand": 45, "face": 103}
NUM_EXPRESSION = 100
DIM = sum(PART_DIMS.values())
_MIRROR_SIGN = torch.tensor([1.0, -1.0, -1.0])


def part_slices() -> dict[str, slice]:
    out, start = {}, 0
    for p in PARTS:
        out[p] = slice(start, start + PART_DIMS[p])
        start += PART_DIMS[p]
    return out


SLICES = part_slices()


def dim_mask(part_mask: torch.Tensor) -> torch.Tensor:
    """(..., 4) part mask -> (..., DIM) mask over the vector's entries."""
    sizes = torch.tensor([PART_DIMS[p] for p in PARTS], device=part_mask.device)
    return torch.repeat_interleave(part_mask.to(torch.float32), sizes, dim=-1)


def to_vector(pose: torch.Tensor, expression: torch.Tensor | None = None) -> torch.Tensor:
    """(..., 55, 3) axis-angle pose [+ (..., 100) expression] -> (..., DIM) prior vector (left hand mirrored)."""
    body = pose[..., list(PART_JOINTS["body"]), :].flatten(-2)
    left = (pose[..., list(PART_JOINTS["left_hand"]), :] * _MIRROR_SIGN.to(pose)).flatten(-2)
    right = pose[..., list(PART_JOINTS["right_hand"]), :].flatten(-2)
    jaw = pose[..., PART_JOINTS["jaw"][0], :]
    expr = pose.new_zeros(*pose.shape[:-2], NUM_EXPRESSION) if expression is None else expression
    return torch.cat([body, left, right, jaw, expr], dim=-1)


def from_vector(vec: torch.Tensor, pose: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., DIM) -> ((..., 55, 3) pose, (..., 100) expression). Joints the vector does not hold (global orientation,
    eyes) come from `pose` when given, else zero."""
    out = vec.new_zeros(*vec.shape[:-1], 55, 3) if pose is None else pose.clone()
    out[..., list(PART_JOINTS["body"]), :] = vec[..., SLICES["body"]].unflatten(-1, (21, 3))
    out[..., list(PART_JOINTS["left_hand"]), :] = vec[..., SLICES["left_hand"]].unflatten(-1, (15, 3)) * _MIRROR_SIGN.to(vec)
    out[..., list(PART_JOINTS["right_hand"]), :] = vec[..., SLICES["right_hand"]].unflatten(-1, (15, 3))
    face = vec[..., SLICES["face"]]
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
    """Swap the left and right hand entries of (..., 4) part masks."""
    return part_mask[..., [0, 2, 1, 3]]


def mirror_vector_map() -> tuple[torch.Tensor, torch.Tensor]:
    """The mirror image as a signed permutation of the prior vector: mirrored = sign * vec[perm] (both hand slots
    swap, body entries swap sides with y and z negated; expression entries stay)."""
    eye = torch.eye(DIM, dtype=torch.float64)
    pose, expr = from_vector(eye)
    mirrored = to_vector(mirror_pose(pose), expr)  # row i: the mirror image of basis vector i
    perm = mirrored.abs().argmax(0)  # output entry o comes from input entry perm[o]
    sign = mirrored[perm, torch.arange(DIM)]
    if not torch.equal(mirrored.abs().sum(0), torch.ones(DIM, dtype=torch.float64)):
        raise AssertionError("the mirror image is not a signed permutation of the prior vector")
    return perm, sign.float()
