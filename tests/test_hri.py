"""The REP 155 body: frames, URDF and joint states reproduce the refined SMPL-X body (library side, no ROS)."""

import xml.etree.ElementTree as ET

import numpy as np
import roma
import torch

from dposer_ros.body import ForwardKinematics
from dposer_ros.body.shape import rest_joints
from dposer_ros.body.skeleton import smplx_neutral
from dposer_ros.body.urdf import body_frames, body_id_token, joint_state, urdf


def _rot(axis: str, angle: float) -> np.ndarray:
    v = np.zeros(3)
    v["xyz".index(axis)] = angle
    return roma.rotvec_to_rotmat(torch.as_tensor(v)).numpy()


def urdf_link_poses(text: str, names: list[str], angles: np.ndarray) -> dict[str, np.ndarray]:
    """Forward kinematics of a URDF (revolute and fixed joints, rpy 0): 4x4 pose of every link in the root link."""
    root = ET.fromstring(text)
    value = dict(zip(names, angles))
    joints = {j.find("child").get("link"): j for j in root.findall("joint")}
    poses: dict[str, np.ndarray] = {}

    def pose(link: str) -> np.ndarray:
        if link in poses:
            return poses[link]
        j = joints.get(link)
        if j is None:
            poses[link] = np.eye(4)
            return poses[link]
        t = np.eye(4)
        t[:3, 3] = [float(x) for x in j.find("origin").get("xyz").split()]
        if j.get("type") == "revolute":
            axis = "xyz"[[float(x) for x in j.find("axis").get("xyz").split()].index(1.0)]
            t[:3, :3] = _rot(axis, value[j.get("name")])
        poses[link] = pose(j.find("parent").get("link")) @ t
        return poses[link]

    for link in root.findall("link"):
        pose(link.get("name"))
    return poses


def test_urdf_and_joint_states_reproduce_the_body_frames():
    """A posed body with a calibrated shape: the URDF driven by the joint states gives every joint frame exactly
    where `body_frames` puts it, and the frames' positions are the SMPL-X joints."""
    gen = torch.Generator().manual_seed(3)
    pose = torch.randn(55, 3, generator=gen, dtype=torch.float64) * 0.4
    betas = torch.randn(10, generator=gen, dtype=torch.float64)
    rest = rest_joints(betas)
    posed = ForwardKinematics()(pose[None], torch.tensor([[0.3, -0.2, 2.0]], dtype=torch.float64), rest[None])
    joints, rotations = posed.joints[0].numpy(), posed.rotations[0].numpy()
    origin, body, local_pos, local_rot = body_frames(joints, rotations)
    np.testing.assert_allclose(origin + local_pos @ body.T, joints, atol=1e-9)  # frames sit on the joints
    np.testing.assert_allclose(origin, 0.5 * (joints[1] + joints[2]))  # REP 155: mid point of the hips
    bid = body_id_token("7")
    names, angles = joint_state(pose.numpy(), bid)
    links = urdf_link_poses(urdf(bid, betas.numpy()), names, angles)
    for j, name in enumerate(smplx_neutral().names):
        link = links[f"{name}_{bid}"]
        np.testing.assert_allclose(link[:3, 3], local_pos[j], atol=1e-5, err_msg=name)  # URDF: micrometres
        np.testing.assert_allclose(link[:3, :3], local_rot[j], atol=1e-6, err_msg=name)


def test_rest_frames_are_rep_axes():
    """At rest (an upright body in SMPL-X's y-up axes) the body frame has x forward (SMPL-X z), z up (SMPL-X y)."""
    posed = ForwardKinematics()(torch.zeros(1, 55, 3, dtype=torch.float64))
    _, body, _, local_rot = body_frames(posed.joints[0].numpy(), posed.rotations[0].numpy())
    np.testing.assert_allclose(body[:, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(body[:, 2], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(local_rot, np.broadcast_to(np.eye(3), local_rot.shape), atol=1e-12)


def test_body_ids_are_ros_name_tokens():
    assert body_id_token("7") == "b7" and body_id_token("alice") == "alice" and body_id_token("a-b/c") == "a_b_c"
    assert body_id_token("") == "anonymous"
