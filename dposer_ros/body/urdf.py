"""The SMPL-X kinematic tree as REP 155 / REP 120 body frames, a URDF and joint states, with a person's proportions.

Frames: every SMPL-X joint j gets a frame `<name>_<body_id>` at the joint, turned with the joint's world rotation
and re-axed from SMPL-X's canonical axes (y up, x to the body's left, z forward) to REP 103 / REP 155 body axes
(x forward, y left, z up), so that at rest every frame is aligned with the root `body_<body_id>` frame, whose
origin is the mid point of the hips (REP 155 "Body Frames").

URDF: one link per joint frame; each SMPL-X ball joint is three revolute joints about the child's x, y and z axes
(`<name>_<body_id>_rx`, `_ry`, `_rz`, intrinsic XYZ Euler angles) with two intermediate links; joint origins are the
person's rest-pose bone offsets (from its shape coefficients). `joint_state` gives the 162 angles of a pose, so that a
`robot_state_publisher` with this URDF reproduces the same frames.
"""

from __future__ import annotations

import numpy as np
import roma
import torch

from .shape import rest_joints
from .skeleton import NUM_JOINTS, smplx_neutral

# columns: REP body axes (x forward, y left, z up) expressed in SMPL-X canonical axes
REP_FROM_SMPLX = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
AXES = ("rx", "ry", "rz")  # the revolute joints of one ball joint, in this order


def body_id_token(person_id: str) -> str:
    """A person id as a ROS name token (letters, digits, '_'; not starting with a digit): '7' -> 'b7'."""
    token = "".join(c if c.isalnum() or c == "_" else "_" for c in person_id) or "anonymous"
    return token if token[0].isalpha() else "b" + token


def _rest(betas: np.ndarray | None) -> np.ndarray:
    if betas is None:
        return smplx_neutral().rest_joints.astype(np.float64)
    return rest_joints(torch.as_tensor(np.asarray(betas), dtype=torch.float64)).numpy().astype(np.float64)


def body_frames(joints: np.ndarray, rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """World joint positions (55, 3) and rotations (55, 3, 3) of a posed body -> the body frame (origin (3,),
    rotation (3, 3)) in the world, and each joint frame relative to it (positions (55, 3), rotations (55, 3, 3))."""
    frames = rotations @ REP_FROM_SMPLX  # joint frames in REP axes
    origin = 0.5 * (joints[1] + joints[2])  # mid point of the hips
    body = frames[0]
    local_pos = (joints - origin) @ body
    local_rot = np.einsum("ji,njk->nik", body, frames)
    return origin, body, local_pos, local_rot


def joint_state(pose: np.ndarray, body_id: str) -> tuple[list[str], np.ndarray]:
    """The URDF's joint names and angles (162,) for a (55, 3) axis-angle pose; the root's orientation is the body
    frame's, not a joint."""
    local = roma.rotvec_to_rotmat(torch.as_tensor(np.asarray(pose)[1:], dtype=torch.float64)).numpy()
    r = REP_FROM_SMPLX.T @ local @ REP_FROM_SMPLX  # in the link's axes
    # R = Rx(a) Ry(b) Rz(c): R[0, 2] = sin b, R[1, 2] = -sin a cos b, R[2, 2] = cos a cos b, R[0, :2] = cos b (cos c, -sin c)
    euler = np.stack([np.arctan2(-r[:, 1, 2], r[:, 2, 2]), np.arcsin(np.clip(r[:, 0, 2], -1.0, 1.0)),
                      np.arctan2(-r[:, 0, 1], r[:, 0, 0])], axis=-1)
    return _joint_names(body_id), euler.reshape(-1)


def _joint_names(body_id: str) -> list[str]:
    return [f"{n}_{a}_{body_id}" for n in smplx_neutral().names[1:] for a in AXES]


def urdf(body_id: str, betas: np.ndarray | None = None) -> str:
    """The URDF text of one body (links and joints suffixed with `_<body_id>`), in its calibrated proportions."""
    sk = smplx_neutral()
    rest = _rest(betas)
    sfx = f"_{body_id}"
    link = lambda name: f'  <link name="{name}"/>'  # noqa: E731
    lines = ['<?xml version="1.0"?>', f'<robot name="human{sfx}">', link(f"body{sfx}"), link(f"pelvis{sfx}")]
    pelvis = (rest[0] - 0.5 * (rest[1] + rest[2])) @ REP_FROM_SMPLX
    lines += [f'  <joint name="pelvis{sfx}_fixed" type="fixed">', f'    <parent link="body{sfx}"/>',
              f'    <child link="pelvis{sfx}"/>', f'    <origin xyz="{_xyz(pelvis)}" rpy="0 0 0"/>', "  </joint>"]
    for j in range(1, NUM_JOINTS):
        name, parent = sk.names[j], sk.names[sk.parents[j]]
        offset = (rest[j] - rest[sk.parents[j]]) @ REP_FROM_SMPLX
        chain = [f"{parent}{sfx}", f"{name}{sfx}_x", f"{name}{sfx}_xy", f"{name}{sfx}"]
        lines += [link(c) for c in chain[1:]]
        for k, axis in enumerate(AXES):
            xyz = _xyz(offset) if k == 0 else "0 0 0"
            unit = " ".join("1" if i == k else "0" for i in range(3))
            lines += [f'  <joint name="{name}_{axis}{sfx}" type="revolute">', f'    <parent link="{chain[k]}"/>',
                      f'    <child link="{chain[k + 1]}"/>', f'    <origin xyz="{xyz}" rpy="0 0 0"/>',
                      f'    <axis xyz="{unit}"/>', '    <limit lower="-3.1416" upper="3.1416" effort="0" velocity="0"/>',
                      "  </joint>"]
    lines.append("</robot>")
    return "\n".join(lines) + "\n"


def _xyz(v: np.ndarray) -> str:
    return " ".join(f"{float(x):.6f}" for x in v)
