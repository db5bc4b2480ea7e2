"""Retargeting: the Gauss-Newton fitter, re-proportioning, scale, resampling, source tables and real takes."""

from pathlib import Path

import numpy as np
import pytest
import torch

from dposer_ros.body import ForwardKinematics, smplx_neutral
from dposer_ros.dataset.build import BuildConfig
from dposer_ros.mocap import read_motion
from dposer_ros.paths import config_path
from dposer_ros.retarget.fit import FitSettings, SequenceFitter, sub_skeleton
from dposer_ros.retarget.pipeline import BODY_FROZEN, BODY_HINGES, body_skeleton, hand_skeleton, retarget_source
from dposer_ros.retarget.sources import find_takes, load_sources, metric_scale, reproportion, resample, target_points

MOCAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mocap"
needs_mocap = pytest.mark.skipif(not MOCAP.is_dir(), reason=f"{MOCAP} not present (CI keeps shared/ beside the repo)")


def _natural_body_pose(batch: int, seed: int) -> torch.Tensor:
    """Random poses that respect the fitter's hinge model: knees and elbows bend about their axes only."""
    g = torch.Generator().manual_seed(seed)
    skel = body_skeleton()
    pose = torch.randn(batch, skel.num_joints, 3, generator=g) * 0.25
    for name, (axis, sign) in BODY_HINGES.items():
        j = skel.index(name)
        pose[:, j] = torch.tensor(axis, dtype=torch.float32) * sign * torch.rand(batch, 1, generator=g) * 1.5
    for name in BODY_FROZEN:
        pose[:, skel.index(name)] = 0
    pose[:, 0] = torch.randn(batch, 3, generator=g)
    return pose


def _body_fitter(settings=FitSettings()):
    skel = body_skeleton()
    names = skel.names
    return SequenceFitter(skel, names, [1.0] * len(names), BODY_HINGES, settings, BODY_FROZEN), skel


def test_fitter_recovers_known_poses_from_their_joints():
    fitter, skel = _body_fitter(FitSettings(first_frame_iters=25, pose_weight=1e-3, smooth_weight=0.0))
    pose = _natural_body_pose(16, seed=1)
    transl = torch.randn(16, 3) * 0.5
    joints = ForwardKinematics(skel)(pose, transl).joints
    fitted, fitted_transl, fitted_joints = fitter.fit(joints[:, None], torch.ones(16, 1, dtype=torch.bool))
    err = np.linalg.norm(fitted_joints[:, 0] - joints.numpy(), axis=-1)
    assert err.mean() < 2e-3, err.mean()  # metres
    assert np.abs(fitted_transl[:, 0] - transl.numpy()).max() < 0.01


def test_warm_started_tracking_follows_a_moving_pose_with_three_steps_per_frame():
    fitter, skel = _body_fitter()
    start, end = _natural_body_pose(4, seed=2), _natural_body_pose(4, seed=3)
    end[:, 0] = start[:, 0]
    w = torch.linspace(0, 1, 30)[None, :, None, None]
    seq = start[:, None] * (1 - w) + end[:, None] * w  # one second of motion at 30 Hz
    joints = ForwardKinematics(skel)(seq).joints
    _, _, fitted = fitter.fit(joints, torch.ones(4, 30, dtype=torch.bool))
    err = np.linalg.norm(fitted - joints.numpy(), axis=-1)
    assert err.mean() < 5e-3 and err.max() < 0.03, (err.mean(), err.max())


def test_trust_region_caps_each_step_and_still_converges():
    pose = _natural_body_pose(8, seed=5)
    pose[:, 0] = 0.0
    joints = ForwardKinematics(body_skeleton())(pose).joints[:, None]
    valid = torch.ones(8, 1, dtype=torch.bool)
    one, _ = _body_fitter(FitSettings(first_frame_iters=1, max_step=0.1))
    fitted, _, _ = one.fit(joints, valid)
    assert np.linalg.norm(fitted[:, 0, 1:], axis=-1).max() <= 0.1 + 1e-5  # one step from rest turns no joint further
    free, _ = _body_fitter(FitSettings(first_frame_iters=1))
    assert np.linalg.norm(free.fit(joints, valid)[0][:, 0, 1:], axis=-1).max() > 0.3
    many, _ = _body_fitter(FitSettings(first_frame_iters=40, pose_weight=1e-3, smooth_weight=0.0, max_step=0.1))
    _, _, fitted_joints = many.fit(joints, valid)
    assert np.linalg.norm(fitted_joints[:, 0] - joints[:, 0].numpy(), axis=-1).mean() < 2e-3


def test_padding_frames_do_not_disturb_the_fit():
    fitter, skel = _body_fitter()
    joints = ForwardKinematics(skel)(_natural_body_pose(2, seed=4)).joints
    targets = joints[:, None].repeat(1, 3, 1, 1)
    targets[1, 1:] = float("nan")  # garbage where invalid
    valid = torch.tensor([[True, True, True], [True, False, False]])
    _, _, fitted = fitter.fit(targets, valid)
    assert np.isfinite(fitted).all()
    assert np.linalg.norm(fitted[1, 0] - joints[1].numpy(), axis=-1).mean() < 5e-3


def test_sub_skeleton_keeps_rest_positions_and_adds_leaves():
    full = smplx_neutral()
    hand = hand_skeleton("left")
    assert hand.names[0] == "left_wrist" and hand.parents[0] == -1
    assert hand.num_joints == 21 and all(n.endswith("_tip") for n in hand.names[16:])
    for n in hand.names[:16]:
        np.testing.assert_allclose(hand.rest_joints[hand.index(n)], full.rest_joints[full.index(n)])
    tip = hand.index("left_index_tip")
    assert hand.names[hand.parents[tip]] == "left_index3"
    with pytest.raises(ValueError, match="one root"):
        sub_skeleton(full, ["left_knee", "right_knee"])


def test_reproportion_keeps_directions_and_takes_skeleton_lengths():
    skel = body_skeleton()
    rng = np.random.default_rng(0)
    # a differently proportioned source: rest joints stretched per axis, then posed by a random rotation
    src = skel.rest_joints * np.array([1.3, 0.8, 1.1]) + rng.normal(0, 0.01, skel.rest_joints.shape)
    points = {n: src[None, i] for i, n in enumerate(skel.names)}
    out = reproportion(points, skel)
    for j, n in enumerate(skel.names):
        p = skel.parents[j]
        if p < 0:
            continue
        got = out[n][0] - out[skel.names[p]][0]
        np.testing.assert_allclose(np.linalg.norm(got), np.linalg.norm(skel.rest_joints[j] - skel.rest_joints[p]), rtol=1e-6)
    lone = skel.index("left_elbow")  # a single child: direction kept exactly
    a = src[lone] - src[skel.index("left_shoulder")]
    b = out["left_elbow"][0] - out["left_shoulder"][0]
    assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) > 1 - 1e-9


def test_metric_scale_and_resampling():
    skel = smplx_neutral()
    rest = dict(zip(skel.names, skel.rest_joints))
    points = {k: v[None] * 100.0 for k, v in rest.items()}  # centimetres
    assert metric_scale(points, rest, [("left_hip", "left_knee"), ("left_elbow", "left_wrist")]) == pytest.approx(0.01)
    x = np.arange(121, dtype=float)[:, None]
    np.testing.assert_array_equal(resample(x, 120.0, 30.0)[:, 0], np.arange(0, 121, 4))
    y = resample(x, 24.0, 30.0)[:, 0]
    assert len(y) == 151 and y[-1] == pytest.approx(120.0) and np.allclose(np.diff(y), 0.8)


@needs_mocap
def test_every_mapped_joint_exists_in_its_rig():
    for spec in load_sources().values():
        takes = find_takes(spec, MOCAP)
        for rig in spec.rigs:
            take = next(t for t in takes if t.rig == rig)
            motion = read_motion(take.files[0], with_rotations=True)
            side = "left" if spec.part == "hands" else None
            points = target_points(rig, motion, side)
            assert len(points) == len(rig.targets)
            assert all(np.isfinite(v).all() for v in points.values())


@needs_mocap
@pytest.mark.parametrize("source", ["bandai", "hdm05", "cmu", "manipnet_hands"])
def test_real_takes_retarget_accurately(source):
    spec = load_sources()[source]
    take = find_takes(spec, MOCAP)[0]
    [result] = retarget_source(spec, [take], FitSettings(), segment=60, max_frames=90)
    assert np.isfinite(result.pose).all()
    assert result.fit_error.mean() < 0.01, result.fit_error.mean()  # metres
    expected = {"body"} if spec.part == "body" else {"left_hand", "right_hand"}
    assert set(result.parts) == expected
    untouched = [22, 23, 24] + ([] if spec.part == "hands" else list(range(25, 55)))
    assert np.all(result.pose[:, untouched] == 0)


@needs_mocap
def test_no_spine_wound_a_full_turn_at_the_start_of_real_takes():
    """The build (config/data/build.yaml, v2: trust region 0.5 rad). Without the trust region (build_v1.yaml,
    dataset v1) the first frame's fit wound the three spine joints about 2.2 rad each (a full turn together: the same
    joint positions, absurd rotations) in 17 of the first 200 Bandai takes."""
    spec = load_sources()["bandai"]
    takes = find_takes(spec, MOCAP)[:200]
    spine = [smplx_neutral().index(n) for n in ("spine1", "spine2", "spine3")]
    results = retarget_source(spec, takes, BuildConfig.from_yaml(config_path("data/build.yaml")).fit, max_frames=3)
    turned = np.concatenate([np.linalg.norm(r.pose[:, spine], axis=-1) for r in results])
    assert turned.max() < 1.5, f"{int((turned.max(1) > 1.5).sum())} frames with a spine joint turned > 1.5 rad"


@needs_mocap
@pytest.mark.parametrize("source,prefix,stride", [("hdm05", "hdm05/", 6), ("cmu", "cmu/16/", 1)])
def test_asf_chest_is_not_twisted_in_the_build(source, prefix, stride):
    """The ASF rig (HDM05, CMU subject 16) starts both clavicles on the midline where the thorax ends, so with the
    neck its chest targets lie on one line and cannot fix the turn about the spine: with them (build_v1.yaml) 59 %
    of the HDM05 frames and 60 % of subject 16's have the spine twisted by more than 1 rad in total; build.yaml
    leaves them out."""
    config = BuildConfig.from_yaml(config_path("data/build.yaml"))
    spec = load_sources()[source].without_targets(config.drop_targets[source])
    spine = [smplx_neutral().index(n) for n in ("spine1", "spine2", "spine3")]
    takes = [t for t in find_takes(spec, MOCAP) if t.take_id.startswith(prefix)][::stride]
    assert takes, f"no {prefix} takes under {MOCAP}"
    results = retarget_source(spec, takes, config.fit, max_frames=40)
    twist = np.concatenate([np.abs(r.pose[:, spine, 1]).sum(1) for r in results])
    assert (twist > 1.0).mean() < 0.05, f"{(twist > 1.0).mean():.1%} of frames with the spine twisted by > 1 rad"
    assert max(r.fit_error.mean() for r in results) < 0.01



@needs_mocap
def test_a_take_retargeted_alone_follows_the_build():
    """`dposer demo` without a built dataset retargets its one take with the build's rules: this HDM05 take's spine
    is twisted by 2.8 rad in total with the collars mapped (build_v1.yaml), 0.3 rad with them left out."""
    from dposer_ros.replay.takes import retarget_take

    take = retarget_take("HDM_tr_depositFloorR_028_120", MOCAP, max_frames=10)
    spine = [smplx_neutral().index(n) for n in ("spine1", "spine2", "spine3")]
    assert take.source == "hdm05" and len(take.pose) == 10
    assert np.abs(take.pose[:, spine, 1]).sum(1).max() < 1.0


@needs_mocap
def test_the_spec_passed_in_decides_the_targets():
    """A take remembers the rig it was found with; retargeting it with a spec whose targets were dropped afterwards
    must still leave them out (here HDM05's collars: 2.8 rad of spine twist with them)."""
    config = BuildConfig.from_yaml(config_path("data/build.yaml"))
    spec = load_sources()["hdm05"]
    [take] = [t for t in find_takes(spec, MOCAP) if t.take_id.endswith("HDM_tr_depositFloorR_028_120")]
    spine = [smplx_neutral().index(n) for n in ("spine1", "spine2", "spine3")]
    twist = {}
    for name, s in (("mapped", spec), ("dropped", spec.without_targets(config.drop_targets["hdm05"]))):
        [res] = retarget_source(s, [take], config.fit, max_frames=10)
        twist[name] = np.abs(res.pose[:, spine, 1]).sum(1).max()
    assert twist["mapped"] > 2.0 and twist["dropped"] < 1.0, twist
    with pytest.raises(ValueError, match="not found with a rig"):
        retarget_source(load_sources()["cmu"], [take], config.fit, max_frames=2)
