"""Solvers: Gauss-Newton pieces, the few-step refiner, the full optimisation, sampling and completion."""

import numpy as np
import pytest
import roma
import torch

from dposer_ros.body import ForwardKinematics
from dposer_ros.body.jacobian import AttachedPoints
from dposer_ros.body.shape import rest_joints
from dposer_ros.body.skeleton import smplx_neutral
from dposer_ros.evaluation.metrics import hand_joint_errors
from dposer_ros.keypoints import get_format
from dposer_ros.prior.classical import GMMPrior
from dposer_ros.prior.layout import DIM, SLICES
from dposer_ros.prior.model import Normalizer, PosePrior
from dposer_ros.prior.network import ScoreNet
from dposer_ros.prior.sde import SubVPSDE
from dposer_ros.sensors import resolve_format
from dposer_ros.solvers.baselines import GMMRefiner
from dposer_ros.solvers.full import FullOptimizer, FullSettings
from dposer_ros.solvers.gauss_newton import Pull, _blocks, gauss_newton_step, inverse_right_jacobian
from dposer_ros.solvers.generate import average_pairwise_distance, complete, sample
from dposer_ros.solvers.refine import FREE_JOINTS as FREE_JOINTS_OF_REFINER
from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings
from dposer_ros.solvers.scene import SOLE_HEIGHT
from dposer_ros.solvers.types import BodyState, Observation


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    net = ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8, dropout=0.0)
    return PosePrior(net, SubVPSDE(), Normalizer(torch.zeros(DIM), torch.full((DIM,), 0.3))).eval()


def _keypoints(fmt_name: str, batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pose = torch.randn(batch, 55, 3, generator=g) * 0.2
    pose[:, 25:] = 0.0
    transl = torch.randn(batch, 3, generator=g)
    fmt = get_format(fmt_name)
    posed = ForwardKinematics()(pose, transl)
    return fmt, fmt.from_posed(posed).float(), posed.joints


def test_inverse_right_jacobian_matches_finite_differences():
    theta = torch.tensor([[1.5, 0.3, -0.7], [1e-6, 0.0, 0.0], [0.0, 2.8, 0.1]], dtype=torch.float64)
    delta = torch.tensor([1e-7, -2e-7, 1.5e-7], dtype=torch.float64).expand(3, 3)
    exact = roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(theta) @ roma.rotvec_to_rotmat(delta)) - theta
    linear = (inverse_right_jacobian(theta) @ delta[..., None])[..., 0]
    assert (exact - linear).abs().max() < 1e-12


def test_refiner_fits_clean_keypoints_and_counts_network_calls(prior):
    fmt, kp, joints = _keypoints("smplx55")
    settings = RefineSettings(prior_weight=0.0, hand_prior_weight=0.0, cold_prior_steps=0, steps=4)
    out = FewStepRefiner(prior, fmt, settings)(Observation(kp, torch.ones(kp.shape[:2]), fmt))
    assert (out.joints - joints).norm(dim=-1).mean() < 0.01  # metres
    assert out.network_evals == 0  # no prior strength anywhere: the network is not asked
    assert out.part_observed[:, 0].all() and not out.part_completed[:, 0].any()
    with_prior = FewStepRefiner(prior, fmt, RefineSettings(steps=3))
    cold = with_prior(Observation(kp, torch.ones(kp.shape[:2]), fmt))
    warm = with_prior(Observation(kp, torch.ones(kp.shape[:2]), fmt), BodyState(cold.pose, cold.transl))
    assert torch.isfinite(cold.pose).all() and torch.isfinite(warm.pose).all()
    assert cold.network_evals == 3 + RefineSettings().cold_prior_steps and warm.network_evals == 3  # fingertips


def test_a_frame_that_sees_every_joint_does_not_ask_the_prior(prior):
    """A new track's cold phase asks the prior; after it, a frame whose keypoints see every joint the prior could
    pull does not (the data decides there, the prior's pull is zero), and answers as if it had asked."""
    fmt, kp, _ = _keypoints("h36m17")
    refiner = FewStepRefiner(prior, fmt, RefineSettings(steps=3))
    seen = torch.ones(kp.shape[:2])
    cold = refiner(Observation(kp, seen, fmt))
    warm = refiner(Observation(kp, seen, fmt), cold)
    assert cold.network_evals == RefineSettings().cold_prior_steps and warm.network_evals == 0
    asked = FewStepRefiner(prior, fmt, RefineSettings(steps=3))
    asked._pulled_groups = lambda factor: asked.warm_groups  # type: ignore[method-assign]
    forced = asked(Observation(kp, seen, fmt), cold)
    assert forced.network_evals == 3 and torch.allclose(forced.pose, warm.pose, atol=1e-6)
    hidden = seen.clone()
    hidden[0, fmt.keypoint_names.index("left_ankle")] = 0.0  # one person's knee bend unseen: the prior completes it
    assert refiner(Observation(kp, hidden, fmt), cold).network_evals == 3


def test_the_prior_pulls_a_fully_seen_body_by_the_detectors_doubt(prior):
    """With every joint seen, confident keypoints (1) leave the answer to the data (no network call); the same
    keypoints reported with less confidence let the prior pull the joints they see (`doubt_prior_weight`), and with
    the weight at 0 they do not."""
    fmt, kp, _ = _keypoints("h36m17")
    refiner = FewStepRefiner(prior, fmt, RefineSettings(steps=2))
    sure = torch.ones(kp.shape[:2])
    cold = refiner(Observation(kp, sure, fmt))
    assert refiner(Observation(kp, sure, fmt), cold).network_evals == 0
    doubted = refiner(Observation(kp, 0.6 * sure, fmt), cold)
    assert doubted.network_evals == 2
    off = FewStepRefiner(prior, fmt, RefineSettings(steps=2, doubt_prior_weight=0.0))(Observation(kp, 0.6 * sure, fmt), cold)
    assert off.network_evals == 0 and not torch.allclose(doubted.pose, off.pose, atol=1e-4)


def test_completing_the_body_leaves_seen_fingers_to_the_data(prior, monkeypatch):
    """Body and hands are separate queries of the prior: while it completes a hidden leg under a whole-body format,
    the seen body joints are pulled (the completion needs them on its manifold) but the seen fingers are not, and
    the prior is not asked about the hands at all."""
    fmt, kp, _ = _keypoints("coco_wholebody133", batch=2)
    conf = torch.ones(kp.shape[:2])
    leg = [k for k, j in enumerate(fmt.joints) if smplx_neutral().names[int(j)] in ("left_knee", "left_ankle", "left_foot")]
    conf[:, leg] = 0.0
    refiner = FewStepRefiner(prior, fmt, RefineSettings(steps=2, mirror_symmetric=False))
    cold = refiner(Observation(kp, conf, fmt))
    masks = []
    real = refiner.prior.eps
    monkeypatch.setattr(refiner.prior, "eps", lambda x, t, m: masks.append(m.clone()) or real(x, t, m))
    warm = refiner(Observation(kp, conf, fmt), cold)
    assert warm.network_evals == 2 and len(masks) == 2
    assert all(m.shape[0] == 2 and (m[:, 1:3] == 0).all() for m in masks)  # two people, the body group only


def test_missing_keypoints_are_ignored_and_parts_reported(prior):
    fmt, kp, _ = _keypoints("coco17")
    conf = torch.ones(kp.shape[:2])
    conf[:, fmt.keypoint_names.index("left_wrist")] = 0.0
    kp[:, fmt.keypoint_names.index("left_wrist")] = float("nan")
    out = FewStepRefiner(prior, fmt)(Observation(kp, conf, fmt))
    assert torch.isfinite(out.pose).all()
    # COCO has no finger keypoints: both hands are completed by the prior, the face is neither
    assert out.part_completed[:, 1:3].all() and not out.part_completed[:, 3].any()


def test_bad_observations_and_settings_are_clear_errors(prior):
    fmt = get_format("coco17")
    with pytest.raises(ValueError, match=r"expects points of shape \(B, 17, 3\)"):
        Observation(torch.zeros(1, 18, 3), torch.ones(1, 18), fmt)
    with pytest.raises(ValueError, match="confidence shape"):
        Observation(torch.zeros(2, 17, 3), torch.ones(2, 16), fmt)
    with pytest.raises(ValueError, match="up must be finite"):
        Observation(torch.zeros(2, 17, 3), torch.ones(2, 17), fmt, torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(RuntimeError):  # one direction per person, or one for all
        Observation(torch.zeros(2, 17, 3), torch.ones(2, 17), fmt, torch.zeros(3, 3))
    up = Observation(torch.zeros(2, 17, 3), torch.ones(2, 17), fmt, torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])).up
    assert up is not None and up.tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]  # normalised; zero: unknown
    with pytest.raises(ValueError, match="between 1 and 8"):
        RefineSettings(steps=9)
    with pytest.raises(ValueError, match="schedule"):
        RefineSettings(schedule="cosine")


def test_uniform_schedule_is_seeded_and_differs_from_truncated(prior):
    fmt, kp, _ = _keypoints("coco17")
    conf = torch.ones(kp.shape[:2])
    conf[:, fmt.keypoint_names.index("left_wrist")] = 0.0  # an elbow's bend unseen: the prior has a say
    obs = Observation(kp, conf, fmt)
    a = FewStepRefiner(prior, fmt, RefineSettings(schedule="uniform"))(obs)
    b = FewStepRefiner(prior, fmt, RefineSettings(schedule="uniform"))(obs)
    c = FewStepRefiner(prior, fmt, RefineSettings())(obs)
    assert torch.equal(a.pose, b.pose) and not torch.equal(a.pose, c.pose)


def test_full_optimisation_runs_its_steps(prior):
    fmt, kp, joints = _keypoints("coco17", batch=2)
    out = FullOptimizer(prior, fmt, FullSettings(loops=1, steps=6))(Observation(kp, torch.ones(kp.shape[:2]), fmt))
    assert out.network_evals == 6 and torch.isfinite(out.pose).all()
    assert (out.joints - joints).norm(dim=-1)[:, :22].mean() < 0.15


def test_sampling_and_completion(prior):
    g = torch.Generator().manual_seed(0)
    poses = sample(prior, 4, steps=20, generator=g)
    assert poses.shape == (4, 55, 3) and torch.isfinite(poses).all()
    assert torch.all(poses[:, 0] == 0) and torch.all(poses[:, 22:25] == 0)  # no root, no face
    assert average_pairwise_distance(poses) > 0
    known = torch.ones(4, 55, dtype=torch.bool)
    known[:, [4, 5, 7, 8]] = False
    filled = complete(prior, poses, known, steps=5, generator=g)
    assert torch.equal(filled[known], poses[known]) and torch.isfinite(filled).all()




class GaussianPrior:
    """The exact denoiser of a normal prior (zero mean, per-entry `std`): eps(x_t) = std(t) x_t / (m(t)^2 + std(t)^2)."""

    def __init__(self, std: torch.Tensor) -> None:
        self.sde, self.mean, self.std = SubVPSDE(), torch.zeros(DIM), std

    def eps(self, x_t, t, part_mask):
        m, s = self.sde.mean_std(t)
        return s[:, None] * x_t / (m[:, None] ** 2 + s[:, None] ** 2)


@pytest.mark.parametrize("method", ["diffusion", "gmm"])
def test_observed_hand_releases_its_wrist_from_the_prior(method):
    """Body captures never rotate the wrists, so a prior fitted on them pins the wrists (std ~0); a hand seen on
    its own must still be oriented by its wrist. Without the release the hands here are 56 mm off, with it 2 mm."""
    names = smplx_neutral().names
    std = torch.full((DIM,), 0.3)
    wrist_cols = [SLICES["body"].start + 3 * (names.index(f"{side}_wrist") - 1) + i for side in ("left", "right")
                  for i in range(3)]
    std[wrist_cols] = 1e-3  # as in the shipped prior's normalisation
    prior = GaussianPrior(std)
    g = torch.Generator().manual_seed(0)
    pose = torch.zeros(1, 55, 3)
    pose[0, 25:55] = torch.randn(30, 3, generator=g) * 0.2
    pose[0, names.index("left_wrist")] = torch.tensor([0.3, 1.2, 0.4])
    pose[0, names.index("right_wrist")] = torch.tensor([-0.5, -1.0, 0.6])
    posed = ForwardKinematics()(pose, torch.zeros(1, 3))
    fmt = resolve_format("mediapipe_hand21_left+mediapipe_hand21_right")
    if method == "diffusion":
        refiner = FewStepRefiner(prior, fmt)
    else:  # one Gaussian component per group: the same normal prior, as a GMM
        prec = {"body": torch.diag(1 / std[SLICES["body"]] ** 2), "hand": torch.diag(1 / std[SLICES["right_hand"]] ** 2)}
        gmm = GMMPrior({k: np.ones(1) for k in prec}, {k: np.zeros((1, len(v))) for k, v in prec.items()},
                       {k: v[None].numpy() for k, v in prec.items()})
        refiner = GMMRefiner(prior, fmt, gmm)
    kp = fmt.from_posed(posed).float()
    state = None
    for _ in range(3):  # cold start, then warm-started frames
        out = refiner(Observation(kp, torch.ones(kp.shape[:2]), fmt), state)
        state = BodyState(out.pose, out.transl)
    hand_mm = hand_joint_errors(out.joints, posed.joints.float()).mean() * 1000
    assert hand_mm < 10.0, f"hands {hand_mm:.1f} mm off: the wrists are pinned by the prior"
    # body keypoints only: the wrists stay under the prior (pulled to its mean, zero)
    body = get_format("coco17")
    kpb = body.from_posed(posed).float()
    builder = FewStepRefiner(prior, body) if method == "diffusion" else GMMRefiner(prior, body, gmm)
    outb = builder(Observation(kpb, torch.ones(kpb.shape[:2]), body))
    assert outb.pose[0, names.index("left_wrist")].norm() < 0.01


def test_hand_prior_weight_moves_the_fingers_only():
    """Whole-body keypoints with the hands hidden, curled fingers from the last frame: the finger prior's strength
    decides how far the unseen fingers go towards the prior's mean (zero), and leaves the body joints exactly as they
    were. A format with no hand keypoint does not ask the prior about the hands after a track's first frame."""
    prior = GaussianPrior(torch.full((DIM,), 0.3))
    fmt, kp, _ = _keypoints("coco_wholebody133", batch=1)
    conf = torch.ones(kp.shape[:2])
    conf[0, [k for k, part in enumerate(fmt.parts) if part in ("left_hand", "right_hand")]] = 0.0
    init = torch.zeros(1, 55, 3)
    init[0, 25:55] = torch.randn(30, 3, generator=torch.Generator().manual_seed(1)) * 0.4
    state = BodyState(init, torch.zeros(1, 3))
    obs = Observation(kp.float(), conf, fmt)
    # a high first t, where the prior's denoised fingers are near its mean, whatever the shipped schedule
    weak, strong = (FewStepRefiner(prior, fmt, RefineSettings(hand_prior_weight=w, t_max=0.9))(obs, state)
                    for w in (0.0, 100.0))
    fingers = slice(25, 55)
    assert strong.pose[0, fingers].norm(dim=-1).mean() < 0.3 * weak.pose[0, fingers].norm(dim=-1).mean()
    assert torch.allclose(strong.pose[0, :22], weak.pose[0, :22], atol=1e-4)
    rows = []
    counting = type("Counting", (), {"sde": prior.sde, "mean": prior.mean, "std": prior.std,
                                     "eps": lambda self, x, t, m: rows.append(len(x)) or prior.eps(x, t, m)})()
    fmt, kp, _ = _keypoints("coco17", batch=1)
    body_only = FewStepRefiner(counting, fmt, RefineSettings(hand_prior_weight=100.0, t_max=0.9, mirror_symmetric=False))
    seen = torch.ones(kp.shape[:2])
    seen[0, fmt.keypoint_names.index("left_ankle")] = 0.0  # a knee's bend unseen: the prior is asked
    held = body_only(Observation(kp.float(), seen, fmt), state)
    assert rows == [1] * 4  # the body group alone, every step
    assert torch.allclose(held.pose[0, fingers], init[0, fingers], atol=0.02)  # the fingers kept (rest pull only)


def test_spine_from_prior_leaves_the_bend_to_the_prior():
    """Keypoints see the three spine rotations only together: with `spine_from_prior` the spine does not count as
    seen when the torso is, so the prior's pull (`spine_prior_weight`, while the prior completes something: here a
    hidden ankle) splits the bend (a zero-mean prior straightens the spine, the pelvis takes the bend) while the
    keypoints stay fitted."""
    names = smplx_neutral().names
    spine = [names.index(n) for n in ("spine1", "spine2", "spine3")]
    pose = torch.zeros(1, 55, 3)
    pose[0, spine, 0] = 0.35  # bent forwards at the spine, pelvis upright
    fmt = get_format("coco17")
    kp = fmt.from_posed(ForwardKinematics()(pose, torch.zeros(1, 3))).float()
    conf = torch.ones(kp.shape[:2])
    conf[0, fmt.index("left_ankle")] = 0.0
    obs = Observation(kp, conf, fmt)
    state = BodyState(pose, torch.zeros(1, 3))
    prior = GaussianPrior(torch.full((DIM,), 0.3))
    runs = {}
    for flag in (False, True):
        refiner = FewStepRefiner(prior, fmt, RefineSettings(spine_from_prior=flag, spine_prior_weight=100.0, t_max=0.9,
                                                            hidden_prior_ramp=False, temporal_weight=0.0, hold_weight=0.0))
        free = list(refiner.free)
        seen = refiner.seen_joints(obs.confidence)[0]
        assert seen[[free.index(j) for j in spine]].eq(not flag).all()
        assert seen[free.index(names.index("neck"))]  # the other seen joints stay seen
        runs[flag] = refiner(obs, state)
    hands = resolve_format("mediapipe_hand21_left+mediapipe_hand21_right")  # no torso seen: the spine stays seen
    refiner = FewStepRefiner(prior, hands, RefineSettings(spine_from_prior=True))
    assert refiner.seen_joints(torch.ones(1, len(hands.keypoint_names)))[0, [list(refiner.free).index(j) for j in spine]].all()
    def bend(out):
        return out.pose[0, spine].norm(dim=-1).sum()
    assert bend(runs[True]) < 0.5 * bend(runs[False])
    assert runs[True].pose[0, 0, 0] > runs[False].pose[0, 0, 0] + 0.1  # the pelvis took part of it
    def fit(out):
        return (fmt.from_posed(ForwardKinematics()(out.pose, out.transl)) - kp).norm(dim=-1).mean()
    assert fit(runs[True]) < 0.03


def test_hidden_prior_pull_ramps_up_as_the_hold_fades():
    """With `hidden_prior_ramp`, a joint hidden for one frame is pulled by the prior like a seen one (its hold does
    the work), one hidden for many frames hidden_prior_weight times harder; without it, from the first frame."""
    names = smplx_neutral().names
    elbow = names.index("left_elbow")
    fmt = get_format("coco17")
    pose = torch.zeros(1, 55, 3)
    pose[0, elbow] = torch.tensor([0.0, 0.0, 1.2])
    kp = fmt.from_posed(ForwardKinematics()(pose, torch.zeros(1, 3))).float()
    conf = torch.ones(kp.shape[:2])
    conf[0, fmt.keypoint_names.index("left_wrist")] = 0.0  # nothing sees the elbow turn
    obs = Observation(kp, conf, fmt)
    prior = GaussianPrior(torch.full((DIM,), 0.3))
    # t from 0.9: the Gaussian prior's denoised elbow is near its mean (straight), whatever the shipped schedule
    base = dict(hidden_prior_weight=100.0, temporal_weight=0.0, hold_weight=50.0, hold_decay=0.5, t_max=0.9)
    free = list(FREE_JOINTS_OF_REFINER)
    turned = {}
    for ramp in (False, True):
        refiner = FewStepRefiner(prior, fmt, RefineSettings(hidden_prior_ramp=ramp, **base))
        for frames_hidden in (0, 30):
            hidden = torch.zeros(1, len(free))
            hidden[0, free.index(elbow)] = frames_hidden
            out = refiner(obs, BodyState(pose, torch.zeros(1, 3), hidden_frames=hidden))
            turned[ramp, frames_hidden] = out.pose[0, elbow].norm()
    assert turned[True, 0] > 0.8 > 0.3 > turned[False, 0]  # first hidden frame: with the ramp the hold wins
    assert torch.isclose(turned[True, 30], turned[False, 30], atol=1e-3)  # a long gap: the same full pull


def test_rest_pull_has_its_own_strength_on_the_fingers(prior):
    """`hand_rest_weight` pulls the unseen fingers towards the rest pose and leaves the body as it was."""
    fmt, kp, _ = _keypoints("coco17", batch=1)
    init = torch.zeros(1, 55, 3)
    init[0, 25:55] = torch.randn(30, 3, generator=torch.Generator().manual_seed(1)) * 0.4
    state = BodyState(init, torch.zeros(1, 3))
    obs = Observation(kp.float(), torch.ones(kp.shape[:2]), fmt)
    base = dict(prior_weight=0.0, hand_prior_weight=0.0, temporal_weight=0.0, hold_weight=0.0)
    weak, strong = (FewStepRefiner(prior, fmt, RefineSettings(hand_rest_weight=w, **base))(obs, state) for w in (0.0, 100.0))
    fingers = slice(25, 55)
    assert torch.allclose(weak.pose[0, fingers], init[0, fingers], atol=1e-3)
    assert strong.pose[0, fingers].norm(dim=-1).mean() < 0.1 * init[0, fingers].norm(dim=-1).mean()
    assert torch.allclose(strong.pose[0, :22], weak.pose[0, :22], atol=1e-4)


def test_hidden_joints_are_counted_and_held(prior):
    """A joint no keypoint sees counts its hidden frames in the state and is held near its last pose."""
    fmt, kp, _ = _keypoints("coco17", batch=2)
    names = smplx_neutral().names
    refiner = FewStepRefiner(prior, fmt)
    free = list(refiner.free)
    elbow = free.index(names.index("left_elbow"))
    first = refiner(Observation(kp, torch.ones(kp.shape[:2]), fmt))
    assert first.hidden_frames.shape == (2, len(free)) and first.hidden_frames[:, elbow].eq(0).all()
    conf = torch.ones(kp.shape[:2])
    conf[:, fmt.keypoint_names.index("left_wrist")] = 0.0  # the wrist keypoint is what sees the elbow turn
    state = first.select(0)
    for frame in range(1, 4):
        out = refiner(Observation(kp[:1], conf[:1], fmt), state)
        assert out.hidden_frames[0, elbow] == frame
        state = out.select(0)
    held = FewStepRefiner(prior, fmt, RefineSettings(hold_weight=1e4))(Observation(kp[:1], conf[:1], fmt), first.select(0))
    free_ = FewStepRefiner(prior, fmt, RefineSettings(hold_weight=0.0))(Observation(kp[:1], conf[:1], fmt), first.select(0))
    def moved(o):
        return (o.pose[0, names.index("left_elbow")] - first.pose[0, names.index("left_elbow")]).norm()
    assert moved(held) < 0.01 < moved(free_)
    both = BodyState.cat([first.select(1), state])
    assert both.pose.shape == (2, 55, 3) and torch.equal(both.hidden_frames[1], state.hidden_frames[0])
    assert BodyState.cat([both, BodyState(both.pose, both.transl)]).hidden_frames is None


def test_holds_fade_with_time_when_the_interval_is_known(prior):
    """`Observation.interval` (seconds since the person's previous frame) counts hidden time in frames of
    `hold_rate_hz`: a frame at 10 Hz is three at 30 Hz, for the joint hold and the keypoint memory alike; unknown (None
    or NaN): one frame. A negative or infinite interval is a clear error."""
    fmt, kp, _ = _keypoints("coco17", batch=1)
    names = smplx_neutral().names
    refiner = FewStepRefiner(prior, fmt)
    elbow = list(refiner.free).index(names.index("left_elbow"))
    wrist = fmt.keypoint_names.index("left_wrist")
    conf = torch.ones(kp.shape[:2])
    hidden = conf.clone()
    hidden[0, wrist] = 0.0
    first = refiner(Observation(kp, conf, fmt))
    for interval, frames in ((None, 1.0), (float("nan"), 1.0), (1 / 30, 1.0), (0.1, 3.0), (0.5, 15.0)):
        out = refiner(Observation(kp, hidden, fmt, interval=None if interval is None else torch.tensor(interval)),
                      first.select(0))
        assert float(out.hidden_frames[0, elbow]) == pytest.approx(frames)
        assert float(out.keypoint_age[0, wrist]) == pytest.approx(frames)
    slow = refiner(Observation(kp, hidden, fmt, interval=torch.tensor(0.1)), first.select(0))
    fast = refiner(Observation(kp, hidden, fmt, interval=torch.tensor(1 / 30)), first.select(0))
    assert torch.allclose(slow.pose, fast.pose, atol=1e-6)  # a joint's first hidden frame: the full hold either way
    again = {dt: refiner(Observation(kp, hidden, fmt, interval=torch.tensor(dt)), out.select(0)).pose
             for dt, out in ((0.1, slow), (1 / 30, fast))}
    assert not torch.allclose(again[0.1], again[1 / 30], atol=1e-6)  # then it has faded further at 10 Hz
    for bad in (-0.1, 0.0, float("inf")):
        with pytest.raises(ValueError, match="interval"):
            Observation(kp, conf, fmt, interval=torch.tensor(bad))


def test_a_hidden_keypoint_is_held_where_it_was_last_seen(prior):
    """The track remembers each keypoint's last seen place and frames since; a hidden one is an observation there
    (`keypoint_hold_weight`, decaying with `hold_decay`), which does not count as seeing its joint."""
    fmt, kp, _ = _keypoints("coco17", batch=1)
    names = smplx_neutral().names
    ankle = fmt.keypoint_names.index("left_ankle")
    conf = torch.ones(kp.shape[:2])
    conf[0, fmt.keypoint_names.index("left_eye")] = 0.0  # never seen
    hidden = conf.clone()
    hidden[0, ankle] = 0.0
    moved = kp + torch.tensor([0.3, 0.0, 0.0])  # the person steps 30 cm aside with the ankle hidden

    def run(**settings):
        refiner = FewStepRefiner(prior, fmt, RefineSettings(**settings))
        first = refiner(Observation(kp, conf, fmt))
        second = refiner(Observation(moved, hidden, fmt), first.select(0))
        return refiner, first, second

    refiner, first, second = run(keypoint_hold_weight=5.0, hold_weight=0.0)
    assert torch.equal(first.keypoint_memory[0, ankle], kp[0, ankle]) and first.keypoint_age.eq(0).sum() == 16
    assert first.keypoint_memory[0, fmt.keypoint_names.index("left_eye")].isnan().all()
    assert torch.equal(second.keypoint_memory[0, ankle], kp[0, ankle]) and second.keypoint_age[0, ankle] == 1
    assert torch.equal(second.keypoint_memory[0, 0], moved[0, 0]) and second.keypoint_age[0, 0] == 0
    knee = list(refiner.free).index(names.index("left_knee"))
    assert second.hidden_frames[0, knee] == 1  # held, not seen: the prior still completes it

    def ankle_from_last_seen(out, refiner):
        posed = ForwardKinematics().from_rotmat(roma.rotvec_to_rotmat(out.pose), out.transl, out.rest_joints)
        return float((refiner.points.positions(posed, out.keypoint_offsets)[0, ankle] - kp[0, ankle]).norm())

    doubtful = hidden.clone()
    doubtful[0, ankle] = 0.05  # a detection this doubtful is not remembered: the last confident place is kept
    third = refiner(Observation(moved, doubtful, fmt), second.select(0))
    assert torch.equal(third.keypoint_memory[0, ankle], kp[0, ankle]) and third.keypoint_age[0, ankle] == 2

    off_refiner, _, off = run(keypoint_hold_weight=0.0, hold_weight=0.0)
    assert off.keypoint_memory is None
    assert ankle_from_last_seen(second, refiner) < ankle_from_last_seen(off, off_refiner) - 0.05


@pytest.mark.parametrize("carry_noise", [True, False])
def test_steps_renoise_with_the_predicted_noise(prior, monkeypatch, carry_noise):
    """DDIM-style re-noising: within a frame each step's x_t re-uses the noise the prior predicted at the step
    before; a frame's first step, and the first step after the cold start's schedule, start without it."""
    import dposer_ros.solvers.refine as refine

    calls = []

    def spy(prior, pose, t, generator, noise, eps=None, up=None, groups=refine.PRIOR_GROUPS, root=None):
        target, eps_hat = real(prior, pose, t, generator, noise, eps, up, groups, root)
        calls.append((t, eps, eps_hat))
        return target, eps_hat

    real = refine.prior_targets
    monkeypatch.setattr(refine, "prior_targets", spy)
    fmt, kp, _ = _keypoints("coco17", batch=1)
    settings = RefineSettings(steps=3, cold_prior_steps=2, carry_noise=carry_noise)
    seen = torch.ones(kp.shape[:2])
    seen[0, fmt.keypoint_names.index("left_ankle")] = 0.0  # a knee's bend unseen: the prior is asked every step
    out = FewStepRefiner(prior, fmt, settings)(Observation(kp, seen, fmt))
    assert len(calls) == 5
    for k, (t, eps, _) in enumerate(calls):
        if carry_noise and k not in (0, 2):  # 0: the frame's first step, 2: t rises from the cold schedule
            assert calls[k - 1][0] >= t and eps is calls[k - 1][2]
        else:
            assert eps is None
    calls.clear()
    FewStepRefiner(prior, fmt, settings)(Observation(kp, seen, fmt), BodyState(out.pose, out.transl))
    assert [eps is None for _, eps, _ in calls] == [True, not carry_noise, not carry_noise]


def test_weakly_seen_rotation_directions_are_held(prior):
    """With the knee seen and the ankle hidden, the hip's twist moves no keypoint: `weak_hold_weight` holds that
    direction at its last pose (round 10 of the foreign validation); a direction keypoints see stays free."""
    fmt = get_format("h36m17")
    names = smplx_neutral().names
    pose = torch.zeros(1, 55, 3)
    pose[0, names.index("left_hip")] = torch.tensor([-0.6, 0.2, 0.1])
    pose[0, names.index("left_knee")] = torch.tensor([1.2, 0.0, 0.0])  # bent: the ankle sees the hip's twist
    kp = fmt.from_posed(ForwardKinematics()(pose, torch.zeros(1, 3))).float()
    conf = torch.ones(1, fmt.num_keypoints)
    first = FewStepRefiner(prior, fmt)(Observation(kp, conf, fmt))
    conf[0, fmt.keypoint_names.index("left_ankle")] = 0.0
    moved = kp.clone()
    moved[0, fmt.keypoint_names.index("left_knee"), 2] += 0.05  # the knee moves: the hip's seen directions follow
    rest = ForwardKinematics().rest_joints
    axis = rest[names.index("left_knee")] - rest[names.index("left_hip")]

    def hip_change(out) -> tuple[float, float]:  # the hip's rotation since the first frame: (twist, swing) radians
        rel = roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(first.pose[0, names.index("left_hip")]).T @ roma.rotvec_to_rotmat(
            out.pose[0, names.index("left_hip")]))
        twist = float(rel @ (axis / axis.norm()).to(rel))
        return abs(twist), float((rel - twist * axis / axis.norm()).norm())

    held = FewStepRefiner(prior, fmt, RefineSettings(rest_weight=50.0, weak_hold_weight=1e4))(
        Observation(moved, conf, fmt), first.select(0))
    loose = FewStepRefiner(prior, fmt, RefineSettings(weak_hold_weight=0.0, rest_weight=50.0))(
        Observation(moved, conf, fmt), first.select(0))
    assert hip_change(held)[0] < 0.01 < hip_change(loose)[0]

    def knee_miss(out) -> float:  # the seen directions are not held: the moved knee is reached as without the hold
        posed = ForwardKinematics()(out.pose, out.transl, out.rest_joints)
        return float((posed.joints[0, names.index("left_knee")] - moved[0, fmt.keypoint_names.index("left_knee")]).norm())

    assert knee_miss(held) < knee_miss(loose) + 0.005


def test_joints_no_point_moves_are_solved_apart(prior):
    """Under a body format the fingers move no keypoint: their update is solved per joint, outside the joint system
    (20 of 52 free joints stay in it for COCO-17), and the step is the full system's to float precision."""
    fmt, kp, _ = _keypoints("coco17", batch=2)
    split = FewStepRefiner(prior, fmt)
    full = FewStepRefiner(prior, fmt)
    full.points.unmoved = full.points.unmoved[:0]  # every joint in one factorisation
    assert len(split.points.moved) == 20 and len(split.points.moved_columns) == 3 * 20 + 3
    conf = torch.ones(kp.shape[:2])
    conf[:, fmt.keypoint_names.index("left_wrist")] = 0.0
    a, b = split(Observation(kp, conf, fmt)), full(Observation(kp, conf, fmt))
    a, b = split(Observation(kp, conf, fmt), a), full(Observation(kp, conf, fmt), b)
    assert (a.pose - b.pose).abs().max() < 1e-4 and (a.joints - b.joints).abs().max() < 1e-5  # fingers included


def test_diagonal_pulls_act_as_their_sum():
    """A step sums its diagonal pulls into one term: two pulls act as one with precision s1^2 + s2^2 towards the
    precision-weighted mean of their targets (and a pull of scale 0 as none)."""
    fmt = get_format("coco17")
    fk = ForwardKinematics()
    points = AttachedPoints(fk, fmt.joints, fmt.offsets, FREE_JOINTS_OF_REFINER)
    gen = torch.Generator().manual_seed(3)
    local = roma.rotvec_to_rotmat(0.3 * torch.randn(2, 55, 3, generator=gen))
    transl = torch.randn(2, 3, generator=gen)
    target = fmt.from_posed(fk(0.3 * torch.randn(2, 55, 3, generator=gen), transl)).float()
    weight = torch.ones(2, fmt.num_keypoints)
    free = len(FREE_JOINTS_OF_REFINER)
    t1, t2 = (0.5 * torch.randn(2, free, 3, generator=gen) for _ in range(2))
    s1, s2 = (torch.rand(2, free, 1, generator=gen) for _ in range(2))
    both = gauss_newton_step(fk, points, local, transl, target, weight, [Pull(t1, s1), Pull(t2, s2)], 1e-2, 10.0)
    precision = s1.square() + s2.square()
    one = Pull((s1.square() * t1 + s2.square() * t2) / precision, precision.sqrt())
    merged = gauss_newton_step(fk, points, local, transl, target, weight, [one, Pull(t1, torch.zeros_like(s1))], 1e-2,
                               10.0)
    assert (both[0] - merged[0]).abs().max() < 1e-5 and (both[1] - merged[1]).abs().max() < 1e-5


def test_the_upright_gate_reads_the_trunk_from_the_spine_chain(prior):
    """`Upright.trunk` (pelvis, and pelvis -> neck, from the spine's chain alone) is forward kinematics' answer."""
    refiner = FewStepRefiner(prior, get_format("h36m17"))
    gen = torch.Generator().manual_seed(4)
    local = roma.rotvec_to_rotmat(0.5 * torch.randn(3, 55, 3, generator=gen))
    transl = torch.randn(3, 3, generator=gen)
    rest = rest_joints(torch.randn(3, 10, generator=gen))
    joints = refiner.fk.from_rotmat(local, transl, rest).joints
    pelvis, trunk = refiner.upright.trunk(local, transl, rest)
    neck = smplx_neutral().index("neck")
    assert torch.allclose(pelvis, joints[:, 0], atol=1e-6) and torch.allclose(trunk, joints[:, neck] - joints[:, 0], atol=1e-6)


def test_a_hidden_pelvis_is_tilted_as_in_the_training_data():
    """With nothing below the hips seen, the pelvis's tilt is barely seen (the hip keypoints sit 9 cm below the
    pelvis joint): `pelvis_tilt_weight` pulls it towards the training data's mean (the prior's mean gravity
    condition), against a tilted warm start and the keypoints' weak say; with a knee seen, the torso unseen (hands
    alone), the trunk far from upright (lying) or the up direction unknown, it does nothing."""
    torch.manual_seed(0)
    mean = torch.zeros(DIM)
    mean[SLICES["gravity"]] = torch.tensor([0.0, 0.98, 0.2])  # the pelvis tilted back a little, on average
    prior = PosePrior(ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8, dropout=0.0), SubVPSDE(),
                      Normalizer(mean, torch.full((DIM,), 0.3))).eval()
    fmt, names = get_format("h36m17"), smplx_neutral().names
    pose = torch.zeros(1, 55, 3)
    pose[0, 0, 0] = 0.4  # the pelvis tilted forward, the trunk upright and the legs straight down all the same
    pose[0, names.index("spine1"), 0] = -0.4
    pose[0, names.index("left_hip"), 0] = pose[0, names.index("right_hip"), 0] = -0.4
    legs = torch.ones(1, fmt.num_keypoints)
    for side in ("left", "right"):
        for part in ("knee", "ankle"):
            legs[0, fmt.keypoint_names.index(f"{side}_{part}")] = 0.0
    up, mean_up = torch.tensor([0.0, 1.0, 0.0]), mean[SLICES["gravity"]] / mean[SLICES["gravity"]].norm()

    def tilt_off_mean(weight: float, conf: torch.Tensor, known: bool = True, start: torch.Tensor = pose) -> float:
        refiner = FewStepRefiner(prior, fmt, RefineSettings(pelvis_tilt_weight=weight, pelvis_tilt_min_height=0.0, prior_weight=0.0,
                                                            calibrate_shape=False, calibrate_offsets=False))
        kp = fmt.from_posed(ForwardKinematics()(start, torch.zeros(1, 3))).float()
        state = BodyState(start.clone(), torch.zeros(1, 3))
        for _ in range(5):  # a few frames: the hold of the last frame's pose gives way
            state = refiner(Observation(kp, conf, fmt, up if known else None), state).select(0)
        u = roma.rotvec_to_rotmat(state.pose[0, 0]).T @ up
        return float(torch.arccos((u @ mean_up).clamp(max=1.0)))

    start = float(torch.arccos(roma.rotvec_to_rotmat(pose[0, 0]).T @ up @ mean_up))
    assert tilt_off_mean(300.0, legs) < 0.3 < 0.5 < tilt_off_mean(0.0, legs) and start > 0.55
    assert tilt_off_mean(300.0, legs, known=False) == pytest.approx(tilt_off_mean(0.0, legs, known=False), abs=1e-6)
    knee = legs.clone()
    knee[0, fmt.keypoint_names.index("left_knee")] = 1.0
    assert tilt_off_mean(300.0, knee) == pytest.approx(tilt_off_mean(0.0, knee), abs=1e-6)
    arms_only = torch.zeros_like(legs)  # no torso (as hand-only input): the root is the keypoints' to place
    for name in ("left_elbow", "left_wrist", "right_elbow", "right_wrist"):
        arms_only[0, fmt.keypoint_names.index(name)] = 1.0
    assert tilt_off_mean(300.0, arms_only) == pytest.approx(tilt_off_mean(0.0, arms_only), abs=1e-6)
    lying = torch.zeros(1, 55, 3)
    lying[0, 0, 0] = 1.5  # lying on the back: the trunk across the up direction, nothing to pull towards standing
    assert tilt_off_mean(300.0, legs, start=lying) == pytest.approx(tilt_off_mean(0.0, legs, start=lying), abs=1e-6)


def test_the_pelvis_tilt_pull_needs_a_standing_height_above_a_known_floor():
    """`pelvis_tilt_min_height`: the pull acts on a pelvis at a standing height above the floor, not on one as low as
    a seated or kneeling person's (an upright trunk over a pelvis tilted nothing like a standing one's), and not at
    all where the floor (or the up direction) is unknown."""
    mean = torch.zeros(DIM)
    mean[SLICES["gravity"]] = torch.tensor([0.0, 0.98, 0.2])
    prior = PosePrior(ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8, dropout=0.0), SubVPSDE(),
                      Normalizer(mean, torch.full((DIM,), 0.3))).eval()
    fmt, names = get_format("h36m17"), smplx_neutral().names
    pose = torch.zeros(1, 55, 3)
    pose[0, 0, 0] = 0.4  # the pelvis tilted forward under an upright trunk
    pose[0, names.index("spine1"), 0] = -0.4
    pose[0, names.index("left_hip"), 0] = pose[0, names.index("right_hip"), 0] = -0.4
    legs = torch.ones(1, fmt.num_keypoints)
    for side in ("left", "right"):
        for part in ("knee", "ankle"):
            legs[0, fmt.keypoint_names.index(f"{side}_{part}")] = 0.0
    up = torch.tensor([0.0, 1.0, 0.0])
    posed = ForwardKinematics()(pose, torch.zeros(1, 3))
    feet = posed.joints[0, [names.index("left_foot"), names.index("right_foot")], 1].min()
    standing_floor = float(feet) - 0.03  # the soles, a little below the foot joints

    def tilt(floor: float | None, min_height: float = 0.8) -> float:
        refiner = FewStepRefiner(prior, fmt, RefineSettings(pelvis_tilt_weight=300.0, pelvis_tilt_min_height=min_height,
                                                            prior_weight=0.0, calibrate_shape=False, calibrate_offsets=False))
        kp = fmt.from_posed(posed).float()
        state = BodyState(pose.clone(), torch.zeros(1, 3))
        for _ in range(5):
            state = refiner(Observation(kp, legs, fmt, up, None if floor is None else torch.tensor(floor)), state).select(0)
        return float(state.pose[0, 0, 0])

    held = tilt(None, min_height=0.0)  # the pull without a gate
    unpulled = tilt(None)  # the floor unknown: no pull
    assert held < 0.25 < 0.35 < unpulled
    assert tilt(standing_floor) == pytest.approx(held, abs=0.02)  # standing on the floor: pulled
    low = float(posed.joints[0, 0, 1]) - 0.5  # the pelvis 0.5 m above the floor: seated or kneeling
    assert tilt(low) == pytest.approx(unpulled, abs=1e-6)
    assert tilt(float("nan")) == pytest.approx(unpulled, abs=1e-6)


def test_an_observation_knows_the_floor_only_where_it_knows_up():
    fmt = get_format("h36m17")
    kp, conf = torch.zeros(2, fmt.num_keypoints, 3), torch.ones(2, fmt.num_keypoints)
    obs = Observation(kp, conf, fmt, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]), torch.tensor(0.1))
    assert obs.floor is not None and obs.floor[0] == pytest.approx(0.1) and torch.isnan(obs.floor[1])
    assert torch.isnan(Observation(kp, conf, fmt, None, torch.tensor(0.1)).floor).all()
    with pytest.raises(ValueError, match="floor must be finite"):
        Observation(kp, conf, fmt, torch.tensor([0.0, 0.0, 1.0]), torch.tensor(float("inf")))


def test_floor_estimate_learns_the_floor_from_seen_feet():
    """Bodies standing on a floor 1.3 m below the origin (z up), each with its lower foot joint `sole_height` above
    it: the learnt floor is that floor; nothing before 30 answers; the window keeps the newest ones."""
    from dposer_ros.solvers.scene import FEET, SceneEstimate, feet_seen

    gen = torch.Generator().manual_seed(3)
    pose = 0.1 * torch.randn(60, 55, 3, generator=gen, dtype=torch.float64)
    pose[:, 0] = torch.tensor([1.5708, 0.0, 0.0], dtype=torch.float64)  # SMPL-X y up -> z up
    joints = ForwardKinematics()(pose, torch.zeros(60, 3, dtype=torch.float64)).joints
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    est = SceneEstimate(sole_height=0.03, window=40)
    joints = joints - (joints[:, FEET] @ up).min(1).values[:, None, None] * up + (-1.3 + 0.03) * up  # feet down
    seen = torch.ones(60, dtype=torch.bool)
    seen[::2] = False  # feet not seen: no evidence
    est.add(joints[:50], seen[:50], up)
    assert np.isnan(est.height)  # 25 answers with seen feet: not enough
    est.add(joints[50:], seen[50:], up)
    assert est.height == pytest.approx(-1.3, abs=1e-6)
    est.add(joints + 0.5 * up, torch.ones(60, dtype=torch.bool), up)  # the room changed: the window follows
    assert est.height == pytest.approx(-0.8, abs=1e-6)
    fmt = get_format("coco17")
    conf = torch.ones(2, fmt.num_keypoints)
    conf[1, [fmt.keypoint_names.index("left_ankle"), fmt.keypoint_names.index("right_ankle")]] = 0.0
    assert feet_seen(fmt, conf).tolist() == [True, False]


def _standing_on(up: torch.Tensor, places: torch.Tensor, floor: float, sole: float, seed: int = 4) -> torch.Tensor:
    """Joints (N, 55, 3) of near-rest bodies standing upright along `up` at `places` (N, 3), the lower foot joint
    `sole` above the plane up . x = floor."""
    gen = torch.Generator().manual_seed(seed)
    n = len(places)
    pose = 0.1 * torch.randn(n, 55, 3, generator=gen, dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    axis = torch.linalg.cross(y, up)
    turn = axis / axis.norm() * torch.acos(y @ up)  # SMPL-X's y up -> `up`
    spin = 0.2 * torch.randn(n, generator=gen, dtype=torch.float64)[:, None] * y  # each turned about their own up
    pose[:, 0] = roma.rotmat_to_rotvec(roma.rotvec_to_rotmat(turn) @ roma.rotvec_to_rotmat(spin))
    joints = ForwardKinematics()(pose, places).joints
    from dposer_ros.solvers.scene import FEET

    lower = (joints[:, FEET] @ up).min(1).values
    return joints + ((floor + sole) - lower)[:, None, None] * up


def test_scene_estimate_learns_the_up_direction_from_the_plane_feet_stand_on():
    """People standing at places spread over a tilted floor: its normal is the up direction (to a fraction of a
    degree) and the floor along it follows; people at one spot make no plane (nothing learnt)."""
    from dposer_ros.solvers.scene import SceneEstimate

    up = torch.tensor([0.3, 0.1, 1.0], dtype=torch.float64)
    up = up / up.norm()
    side = torch.linalg.cross(up, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    side = side / side.norm()
    ahead = torch.linalg.cross(up, side)
    gen = torch.Generator().manual_seed(5)
    spread = 2.0 * (torch.rand(40, 2, generator=gen, dtype=torch.float64) - 0.5)
    places = spread[:, :1] * side + spread[:, 1:] * ahead
    seen = torch.ones(40, dtype=torch.bool)
    scene = SceneEstimate(sole_height=0.02)
    scene.add(_standing_on(up, places, -1.1, 0.02), seen)
    assert scene.up is not None and float(scene.up @ up.numpy()) > np.cos(np.radians(0.5))
    assert scene.height == pytest.approx(-1.1, abs=0.01)
    still = SceneEstimate(sole_height=0.02)
    still.add(_standing_on(up, torch.zeros(40, 3, dtype=torch.float64), -1.1, 0.02), seen)
    assert still.up is None and np.isnan(still.height)


def test_the_sole_height_is_the_one_the_floor_benchmark_measured():
    import json
    from pathlib import Path

    from dposer_ros.solvers.scene import SceneEstimate

    run = json.loads((Path(__file__).resolve().parents[1] / "bench" / "eval" / "floor_estimate.json").read_text())
    assert SceneEstimate().sole_height == round(run["sole_height"], 3)


def test_hidden_legs_of_a_person_standing_on_a_known_floor_reach_it():
    """`floor_contact_weight`: legs no keypoint sees get the length the seen upper body implies; a person whose legs
    are 8 cm longer than that, standing on a known floor, floats above it unless the floor is evidence of the legs'
    length in the shape calibration. Without a floor, with a knee seen or with the pelvis at a seated height, the
    contact does nothing."""
    torch.manual_seed(0)
    prior = PosePrior(ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8, dropout=0.0), SubVPSDE(),
                      Normalizer(torch.zeros(DIM), torch.full((DIM,), 0.3))).eval()
    fmt, names = get_format("h36m17"), smplx_neutral().names
    fk = ForwardKinematics()
    rest = fk.rest_joints.float()[None].clone()
    rest[0, [names.index("left_knee"), names.index("right_knee")], 1] -= 0.04
    rest[0, [names.index(f"{side}_{part}") for side in ("left", "right") for part in ("ankle", "foot")], 1] -= 0.08
    posed = fk(torch.zeros(1, 55, 3), torch.zeros(1, 3), rest)
    feet = [names.index("left_foot"), names.index("right_foot")]
    floor = float(posed.joints[0, feet, 1].min()) - SOLE_HEIGHT
    kp = fmt.from_posed(posed).float()
    legs = torch.ones(1, fmt.num_keypoints)
    for side in ("left", "right"):
        for part in ("knee", "ankle"):
            legs[0, fmt.keypoint_names.index(f"{side}_{part}")] = 0.0
    up = torch.tensor([0.0, 1.0, 0.0])

    def above_floor(weight: float, conf: torch.Tensor = legs, floor: float | None = floor) -> float:
        refiner = FewStepRefiner(prior, fmt, RefineSettings(prior_weight=0.0, floor_contact_weight=weight,
                                                            calibrate_offsets=False))
        state = None
        for _ in range(30):
            out = refiner(Observation(kp, conf, fmt, up, None if floor is None else torch.tensor(floor)), state)
            state = out.select(0)
        return float(out.joints[0, feet, 1].min()) - (floor if floor is not None else 0.0)

    floating = above_floor(0.0)
    assert floating > SOLE_HEIGHT + 0.05  # the upper body's shape: legs too short
    assert abs(above_floor(1.0) - SOLE_HEIGHT) < 0.015
    assert above_floor(1.0, floor=None) == pytest.approx(above_floor(0.0, floor=None), abs=1e-6)
    knee = legs.clone()
    knee[0, fmt.keypoint_names.index("left_knee")] = 1.0
    assert above_floor(1.0, knee) == pytest.approx(above_floor(0.0, knee), abs=1e-6)
    seated = float(posed.joints[0, 0, 1]) - 0.5  # a floor 0.5 m below the pelvis: not standing on it
    assert above_floor(1.0, floor=seated) == pytest.approx(above_floor(0.0, floor=seated), abs=1e-6)


@pytest.mark.parametrize("name", ["coco17", "coco_wholebody133", "mediapipe_hand21_left", "radar14"])
def test_the_jacobian_of_the_moved_joints_and_the_placed_blocks_are_the_full_ones(name):
    fk = ForwardKinematics()
    fmt = get_format(name)
    from dposer_ros.solvers.refine import FREE_JOINTS

    points = AttachedPoints(fk, fmt.joints, fmt.offsets, FREE_JOINTS)
    g = torch.Generator().manual_seed(0)
    posed = fk(torch.randn(4, 55, 3, generator=g) * 0.3, torch.randn(4, 3, generator=g))
    kp = points.positions(posed)
    scale = torch.rand(4, fmt.num_keypoints, generator=g)
    full = points.jacobian(posed, kp, scale=scale)
    assert torch.equal(points.jacobian(posed, kp, scale=scale, moved_only=True), full[..., points.moved_columns])
    blocks = torch.randn(4, len(points.moved), 3, 3, generator=g)
    size = len(points.moved_columns)
    assert torch.equal(_blocks(blocks, size, points.block_index(len(points.moved), size)), _blocks(blocks, size))
    assert _blocks(blocks, size).shape == (4, size, size)
