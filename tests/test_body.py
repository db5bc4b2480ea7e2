"""SMPL-X kinematics: rest pose facts, locality of joint rotations, gradients, and agreement with `smplx`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_smplx import write_tiny_smplx

from dposer_ros.body import NUM_JOINTS, ForwardKinematics, join_pose, smplx_neutral, split_pose
from dposer_ros.body.smplx_model import SmplxModel

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def test_embedded_skeleton_matches_shared_facts():
    facts_path = SHARED / "data" / "smplx_neutral_skeleton.json"
    if not facts_path.exists():
        pytest.skip(f"{facts_path} not present (CI keeps shared/ beside the repository)")
    facts = json.loads(facts_path.read_text())
    skel = smplx_neutral()
    assert list(skel.names) == facts["names"]
    assert list(skel.parents) == facts["parents"]
    np.testing.assert_allclose(skel.rest_joints, facts["J"], atol=0)


def test_rest_pose_reproduces_rest_joints():
    fk = ForwardKinematics()
    out = fk(torch.zeros(3, NUM_JOINTS, 3, dtype=torch.float64))
    np.testing.assert_allclose(out.joints[1].numpy(), smplx_neutral().rest_joints, atol=1e-12)
    assert torch.allclose(out.rotations, torch.eye(3, dtype=torch.float64).expand_as(out.rotations))


def test_translation_moves_every_joint():
    fk = ForwardKinematics()
    pose = torch.zeros(1, NUM_JOINTS, 3)
    shift = torch.tensor([[0.5, -1.0, 2.0]])
    delta = fk(pose, shift).joints - fk(pose).joints
    assert torch.allclose(delta, shift[:, None].expand_as(delta), atol=1e-6)


@pytest.mark.parametrize("joint", ["left_knee", "spine3", "right_wrist", "left_index2", "pelvis"])
def test_rotating_a_joint_moves_only_its_descendants(joint):
    skel = smplx_neutral()
    fk = ForwardKinematics()
    j = skel.index(joint)
    pose = torch.zeros(1, NUM_JOINTS, 3, dtype=torch.float64)
    pose[0, j] = torch.tensor([0.3, -0.5, 0.7])
    moved = (fk(pose).joints[0] - fk(torch.zeros_like(pose)).joints[0]).norm(dim=-1) > 1e-9
    expected = np.zeros(NUM_JOINTS, dtype=bool)
    expected[list(skel.descendants(j))] = True
    assert moved.numpy().tolist() == expected.tolist()


def test_rotation_preserves_bone_lengths_and_matches_axis_angle():
    skel = smplx_neutral()
    fk = ForwardKinematics()
    pose = torch.randn(8, NUM_JOINTS, 3, dtype=torch.float64)
    out = fk(pose)
    par = np.array(skel.parents[1:])
    rest_len = np.linalg.norm(skel.rest_joints[1:] - skel.rest_joints[par], axis=-1)
    posed_len = (out.joints[:, 1:] - out.joints[:, par]).norm(dim=-1)
    np.testing.assert_allclose(posed_len.numpy(), np.broadcast_to(rest_len, posed_len.shape), atol=1e-9)
    # elbow bent 90 degrees about +Y: the left wrist swings from +X to -Z of the elbow
    pose = torch.zeros(1, NUM_JOINTS, 3, dtype=torch.float64)
    elbow, wrist = skel.index("left_elbow"), skel.index("left_wrist")
    pose[0, elbow, 1] = np.pi / 2
    bone = skel.rest_joints[wrist] - skel.rest_joints[elbow]
    got = (fk(pose).joints[0, wrist] - fk(pose).joints[0, elbow]).numpy()
    np.testing.assert_allclose(got, [bone[2], bone[1], -bone[0]], atol=1e-9)


def test_gradients_are_finite_even_at_zero_rotation():
    fk = ForwardKinematics()
    pose = torch.zeros(2, NUM_JOINTS, 3, requires_grad=True)
    transl = torch.zeros(2, 3, requires_grad=True)
    fk(pose, transl).joints.square().sum().backward()
    assert torch.isfinite(pose.grad).all() and torch.isfinite(transl.grad).all()
    assert pose.grad.abs().sum() > 0
    pose = (torch.randn(2, NUM_JOINTS, 3) * 2).requires_grad_()
    fk(pose).joints.sum().backward()
    assert torch.isfinite(pose.grad).all()


def test_bad_pose_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(\.\.\., 55, 3\)"):
        ForwardKinematics()(torch.zeros(2, 54, 3))


def test_split_and_join_round_trip():
    pose = torch.randn(4, NUM_JOINTS, 3)
    parts = split_pose(pose)
    assert parts["body_pose"].shape == (4, 63) and parts["right_hand_pose"].shape == (4, 45)
    assert torch.equal(join_pose(**parts), pose)
    with pytest.raises(ValueError, match="unknown pose parts"):
        join_pose(hand=torch.zeros(1, 3))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return SmplxModel(write_tiny_smplx(tmp_path_factory.mktemp("smplx") / "SMPLX_NEUTRAL.npz"))


def test_smplx_path_agrees_with_embedded_fk(tiny_model):
    torch.manual_seed(0)
    betas = torch.randn(4, 10) * 2
    pose = torch.randn(4, NUM_JOINTS, 3) * 0.5
    transl = torch.randn(4, 3)
    exact = tiny_model(pose, transl=transl, betas=betas)
    ours = ForwardKinematics()(pose, transl, rest_joints=tiny_model.rest_joints(betas))
    assert (ours.joints - exact.joints).abs().max() < 1e-5
    assert exact.vertices.shape == (4, 9930, 3)
    # shape changes the joints; the mean shape reproduces the embedded neutral skeleton
    assert (tiny_model.rest_joints(betas) - tiny_model.rest_joints()).abs().max() > 1e-3
    np.testing.assert_allclose(tiny_model.rest_joints()[0].numpy(), smplx_neutral().rest_joints, atol=1e-6)


def test_smplx_missing_or_corrupt_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="SMPLX_NEUTRAL.npz"):
        SmplxModel(tmp_path / "nope.npz")
    bad = tmp_path / "SMPLX_NEUTRAL.npz"
    np.savez(bad, v_template=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not a valid SMPL-X model file"):
        SmplxModel(bad)


@pytest.mark.parametrize("name", ["coco_wholebody133", "mediapipe_hand21_left", "coco17"])
def test_normal_matrix_by_blocks_is_the_dense_product(name):
    """`AttachedPoints.gram` skips the zero blocks of a hand's fingers against the other hand and against the rows
    they do not move; it must equal J^T J, with all columns and with the moved ones only."""
    import roma

    from dposer_ros.body.jacobian import AttachedPoints
    from dposer_ros.keypoints import get_format
    from dposer_ros.solvers.refine import FREE_JOINTS

    fk, fmt = ForwardKinematics(), get_format(name)
    points = AttachedPoints(fk, fmt.joints, fmt.offsets, FREE_JOINTS)
    g = torch.Generator().manual_seed(3)
    posed = fk.from_rotmat(roma.rotvec_to_rotmat(0.4 * torch.randn(2, 55, 3, generator=g)), torch.randn(2, 3, generator=g))
    jac = points.jacobian(posed, points.positions(posed)) * torch.rand(2, 3 * fmt.num_keypoints, 1, generator=g)
    for moved in (False, True):
        j = jac[..., points.moved_columns] if moved else jac
        dense = j.transpose(1, 2) @ j
        assert torch.allclose(points.gram(j, moved), dense, atol=1e-5 * float(dense.abs().max()))
    if name == "coco_wholebody133":  # the hands' blocks are what is skipped there
        assert points._gram_plans[False] is not None
