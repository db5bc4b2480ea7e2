"""Few-step truncated refinement for streams: a handful of prior evaluations per frame, warm-started.

Each step s takes t_s from the truncated schedule, noises the current pose to x_t = mean(t_s) x + std(t_s) eps,
with eps the noise the prior predicted at the step before (zero at a frame's first step: DDIM with eta = 0, the
deterministic re-noising of DiffPIR), asks the prior (no gradient, so any inference engine serves) for the
denoised pose x0_hat, and takes a Gauss-Newton step on
    sum_k c_k rho(||kp_k(theta) - y_k||)  +  w(t_s) ||(theta - theta0_hat) / sigma||^2  +  temporal pull,
where kp_k are the format's keypoints through SMPL-X kinematics, c_k their confidences, rho a robust
(Geman-McClure) loss, and sigma the prior's per-entry scale. The root rotation and translation are not
pulled by the prior: a new track starts from a rigid alignment of the rest pose and prior steps from t = 1, later
frames from the last. The prior pulls by evidence: a joint no keypoint sees is held at its last pose while the hold
fades, and pulled by the prior `hidden_prior_weight` times harder as it does; a joint keypoints see is pulled with
`seen_prior_weight` while some body joint is hidden (the completion must fit the seen body), and while the whole
body is seen by the detector's doubt only (`doubt_prior_weight` x (1 - the confidence of the keypoints that see it):
confident keypoints decide alone). When
the torso is seen the spine, whose three rotations keypoints see only together, gets `spine_prior_weight`. While no
keypoint below the hips is seen (the hip keypoints barely say how the pelvis is tilted), the pelvis's tilt against
the up direction is pulled towards the training data's mean (`pelvis_tilt_weight`, `solvers.upright`; every method
alike).
A hidden keypoint the track has seen is an observation at its last seen place (`keypoint_hold_weight`); the holds
fade with the time the person has been hidden (`hold_decay` per 1/`hold_rate_hz` s, `Observation.interval`).
Where the observation tells the sensor's noise (`Observation.noise`), the keypoints first go through the track's
Kalman filter (`solvers.keypoint_filter`): the fit and the memory use the filtered places.
The prior is queried mirror-symmetrically (`prior.symmetric`), and keypoints come through the track's calibrated
body shape and keypoint offsets (`solvers.calibration`). With a motion model (`prior.motion`), the hidden legs of a
moving person are pulled towards the model's answer from the track's last second of answers (`solvers.history`)
instead of the prior's denoised pose (`motion_legs`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import cast

import roma
import torch

from ..body.alignment import kabsch
from ..body.jacobian import AttachedPoints
from ..body.kinematics import ForwardKinematics
from ..body.shape import rest_joints as shape_rest_joints
from ..body.skeleton import NUM_JOINTS, PART_JOINTS, smplx_neutral
from ..keypoints import KeypointFormat
from ..prior.engine import Engine
from ..prior.layout import DIFFUSED, DIM, PARTS, POSE_PARTS, SLICES, dim_mask, from_vector, mirror_pose, to_vector, with_conditions
from ..prior.motion import LEGS as MOTION_LEGS
from ..prior.motion import LegMotion
from ..prior.schedule import TruncatedSchedule, UniformSchedule
from ..prior.symmetric import MirrorSymmetric
from .calibration import calibrate, empty_calibration
from .compiled_step import CompiledStep
from .gauss_newton import Pull, gauss_newton_step
from .history import History, at_lags
from .history import capacity as history_capacity
from .keypoint_filter import KeypointFilter, filter_keypoints
from .types import BodyState, Observation, Refined
from .upright import Upright

FREE_JOINTS = (0, *PART_JOINTS["body"], *PART_JOINTS["left_hand"], *PART_JOINTS["right_hand"])
# the prior is asked about body and hands separately: no capture here holds both at once (see README); the body
# group also gets the gravity condition where the up direction is known
PRIOR_GROUPS = (with_conditions(torch.tensor([1.0, 0.0, 0.0, 0.0]), False).tolist(),
                with_conditions(torch.tensor([0.0, 1.0, 1.0, 0.0]), False).tolist())


@dataclass(frozen=True)
class RefineSettings:
    """Settings of the few-step refiner (defaults: config/solvers/refine.yaml)."""

    steps: int = 4  # prior evaluations per frame (at most 8)
    t_max: float = 0.5
    t_min: float = 0.4
    prior_weight: float = 2.5  # strength of the prior on the body joints, chosen on the validation split
    hand_prior_weight: float = 0.1  # ... and on the finger joints (bench/eval/tuning*.md)
    temporal_weight: float = 2.0  # pull towards the previous frame (per radian^2), 0 for none
    hold_weight: float = 50.0  # extra pull towards the previous frame on a joint no keypoint sees (per radian^2) ...
    seen_prior_weight: float = 1.0  # the prior's pull on joints confident keypoints see, while some joint is hidden
    # (the completion needs a seen body on the prior's manifold); none while the whole body is seen: the data decides
    spine_prior_weight: float = 1.0  # ... and on the spine joints when the torso is seen (spine_from_prior)
    doubt_prior_weight: float = 3.0  # ... and on a seen joint of a fully seen group, times 1 - the mean confidence of
    # the keypoints that see it (0: the data decides whatever the detector's doubt)
    unobservable_prior_weight: float = 0.0  # ... on a body joint no keypoint of the format can see (COCO's ankles:
    # the prior's guess put the feet 150-180 mm off where the rest pose is 67 mm, in-house validation 2026-11-29)
    hidden_prior_weight: float = 10.0  # the prior's pull on a joint no keypoint sees is this many times stronger
    hold_decay: float = 0.98  # ... times hold_decay^(frames it has been hidden - 1): the prior takes over a long gap
    hold_rate_hz: float = 30.0  # ... frames of this rate: with `Observation.interval` the holds fade with time
    hidden_prior_ramp: bool = True  # ... growing as the hold fades: 1 + (w - 1)(1 - hold_decay^(frames hidden - 1))
    weak_hold_weight: float = 200.0  # pull towards the previous frame (per radian^2) on the directions of a seen body
    weak_dof_cm: float = 10.0  # joint's rotation that move no confident keypoint by more than this per radian
    rest_weight: float = 1.0  # pull of the body joints towards the rest target (per radian^2) ...
    rest_target: str = "zero"  # ... "zero": the SMPL-X rest pose; "mean": the training data's mean pose (mirrored)
    hand_rest_weight: float = 0.01  # ... and of the finger joints
    spine_from_prior: bool = True  # when the torso is seen, the spine joints do not count as seen: keypoints see the
    # three spine rotations only together, so the prior (with hidden_prior_weight) splits the bend, pelvis included
    sigma_cm: float = 10.0  # robust scale of the keypoint residuals
    damping: float = 1e-2
    cold_start_iters: int = 6  # data-only Gauss-Newton steps for a new track, after the rigid alignment
    cold_prior_steps: int = 4  # then prior steps on their own schedule, so that a new track starts on the pose
    cold_t_max: float = 1.0  # manifold: from t = 1, where the prior knows nothing of the pose, it proposes a typical one
    cold_t_min: float = 0.3
    cold_samples: int = 1  # ... from this many noise draws, averaged (1: one deterministic path from zero noise)
    min_part_points: int = 3  # keypoints with confidence > 0.1 needed to call a part observed
    schedule: str = "truncated"  # "truncated" (t_max -> t_min) or "uniform" (t ~ U(1e-3, 1) per step: the ablation)
    min_prior_std: float = 1e-3  # floor (radians) of the per-entry scale that weights the prior pull
    noise: bool = False  # True: a frame's first x_t gets fresh Gaussian noise as in DPoser (measured worse here)
    carry_noise: bool = True  # later steps re-use the noise the prior predicted (DDIM eta = 0); False: as the first
    seed: int = 0
    gravity: bool = True  # tell the prior the up direction where the observation knows it (Observation.up)
    mirror_symmetric: bool = True  # ask the prior about the pose and its mirror image (prior/symmetric.py)
    calibrate_shape: bool = True  # estimate each track's 10 SMPL-X shape coefficients (solvers/calibration.py)
    shape_sigma_cm: float = 2.0  # expected keypoint error that the shape may not explain (pose and detector error)
    shape_frames: int = 30  # frames of a track that calibrate its shape at full weight (1 s at 30 Hz) ...
    shape_slow: float = 0.02  # ... each later frame counts this much: the shape is held, following slow changes
    shape_prior_weight: float = 1.0  # unit Gaussian prior on the shape coefficients, times this
    max_beta: float = 4.0  # shape coefficients are clamped to +-max_beta standard deviations
    calibrate_offsets: bool = True  # calibrate each keypoint's offset from its anchor per track (same schedule)
    calibration_prior_weight: float = 0.0  # the prior's pull on seen joints while offsets calibrate (shape_frames)
    offset_prior_frames: float = 10.0  # a zero-offset prior worth this many frames of evidence
    max_offset_cm: float = 6.0  # bound of a calibrated keypoint offset
    pelvis_tilt_weight: float = 300.0  # where the up direction is known, the torso seen and no keypoint below either
    # hip, the pelvis's tilt is pulled towards the training data's mean (the prior's mean gravity condition), per radian^2: the
    # trunk's lean then goes to the spine instead of tilting the pelvis (and flexing the hidden legs under it)
    pelvis_tilt_max_lean_deg: float = 60.0  # ... at full strength for an upright trunk (pelvis -> neck along up), fading
    # to none at this lean: someone lying or bending down to the floor is not tilted as the data's standing people
    keypoint_hold_weight: float = 0.2  # a hidden keypoint is held where it was last seen, as an observation of this
    # confidence times hold_decay^(frames hidden - 1) (0: no memory): feet stand still while the joints above them turn
    hand_keypoint_hold_weight: float = 1.0  # ... and a hidden hand keypoint (fingers move little in a frame or two)
    keypoint_filter: bool = True  # where the observation tells the sensor's noise (`Observation.noise`), each track's
    # keypoints go through a Kalman filter (solvers/keypoint_filter.py): the data term fits the filtered places, and
    # the keypoint memory holds a hidden keypoint at its last filtered place
    keypoint_motion_psd: float = 3.0  # ... the keypoints' white-noise acceleration, spectral density (m^2/s^3)
    keypoint_velocity_s: float = 0.5  # ... and how long a keypoint keeps its velocity (s)
    keypoint_carry_frames: float = 1.0  # ... a body keypoint hidden for less than this many frames (of hold_rate_hz)
    # is held where the filter's velocity carries it, later at its last filtered place (0: always there; hand
    # keypoints always there: carried, hidden fingers drifted, validation round 63)
    floor_contact_weight: float = 0.3  # a person standing upright (as for the tilt pull, with
    # `floor_contact_min_height`) with legs no keypoint sees stands on a known floor: the shape calibration lengthens
    # or shortens the legs so that the lower foot joint is SOLE_HEIGHT above it (solvers/calibration.py; 0: off;
    # bench/experiments/2026-12-07-foreign-floor-contact*)
    floor_contact_sigma_cm: float = 3.0  # ... believed to this many cm per frame
    floor_contact_min_height: float = 0.9  # ... for a pelvis at least this share of its standing height above the floor
    motion_legs: bool = True  # with a motion model (prior/motion.py, `FewStepRefiner(..., motion=...)`), the target of
    # hidden legs of a moving person is the model's answer from the track's last second of answers, in place of the
    # prior's denoised pose (bench/experiments/2026-12-07-foreign-leg-motion*)
    motion_min_speed: float = 0.15  # ... moving: the root's horizontal speed at least this (m/s) over ...
    motion_min_vertical_speed: float = 0.3  # ... or its vertical speed at least this (m/s: someone squatting, sitting
    # down, standing up), over ...
    motion_speed_window_s: float = 0.5  # ... the last this many seconds (or as much of them as the track has):
    # someone standing keeps the prior's legs, which stand better than the model's average ones
    pelvis_tilt_min_height: float = 0.8  # ... and only for a pelvis at least this share of the person's standing
    # pelvis height (rest pose, calibrated shape) above a known floor (Observation.floor), fading in over the 0.1 below:
    # someone sitting, kneeling or lying has an upright trunk over a pelvis tilted nothing like a standing one's. Where
    # the floor is unknown: no pull

    def __post_init__(self) -> None:
        for f in fields(self):  # a number written as text (YAML 1.1 reads 1.0e9 as a string), a number for a flag
            value, kind = getattr(self, f.name), type(f.default)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = {bool: isinstance(value, bool), int: number and isinstance(value, int), float: number}.get(kind, True)
            if not ok:
                raise ValueError(f"{f.name} must be a {kind.__name__}, got {value!r}")
        if self.rest_target not in ("zero", "mean"):
            raise ValueError(f"rest_target must be 'zero' or 'mean', got {self.rest_target!r}")
        if self.schedule not in ("truncated", "uniform"):
            raise ValueError(f"schedule must be 'truncated' or 'uniform', got {self.schedule!r}")
        if not 1 <= self.steps <= 8:
            raise ValueError(f"steps must be between 1 and 8 network evaluations per frame, got {self.steps}")


def prior_targets(prior, pose: torch.Tensor, t: float, generator: torch.Generator | None, noise: bool,
                  eps: torch.Tensor | None = None, up: torch.Tensor | None = None,
                  groups: tuple = PRIOR_GROUPS, root: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoised pose (B, 55, 3) and the predicted noise (G B, DIM): each of the G `groups` (body, then hands) through
    the prior once (one batched call); joints of no group keep their pose. x_t = mean(t) x + std(t) z with z = `eps`
    when given, else Gaussian noise or zero (`noise`). `up` (B, 3): the world's up direction in the pose's frame (a
    zero row: unknown), the body's gravity condition; `root` (B, 3, 3) the root's rotation matrix where the caller
    has it."""
    batch = pose.shape[0]
    known = torch.zeros(batch) if up is None else (up.norm(dim=-1) > 0).float()
    x = (to_vector(pose, up=up, root=root) - prior.mean) / prior.std
    masks = torch.tensor(groups).repeat_interleave(batch, dim=0)
    masks[:batch, PARTS.index("gravity")] = known
    x = x.repeat(len(groups), 1)
    tt = torch.full((x.shape[0],), t)
    mean, std = prior.sde.mean_std(tt)
    if eps is None:
        eps = torch.randn(x.shape, generator=generator) if noise else torch.zeros_like(x)
    x_t = torch.where(_DIFFUSED, mean[:, None] * x + std[:, None] * eps, x)  # condition entries go in as they are
    eps_hat = torch.as_tensor(prior.eps(x_t, tt, masks))
    x0 = torch.where(_DIFFUSED, (x_t - std[:, None] * eps_hat) / mean[:, None], x)
    entries = dim_mask(masks).reshape(len(groups), batch, -1)
    x0 = (x0.reshape(len(groups), batch, -1) * entries).sum(0)
    x0 = torch.where(entries.sum(0) > 0, x0, x[:batch])  # others: as they are
    return from_vector(x0 * prior.std + prior.mean, pose)[0], eps_hat


_DIFFUSED = DIFFUSED.bool()


# joints whose keypoints say where the torso is (spine_from_prior)
TORSO_JOINTS = ("pelvis", "left_hip", "right_hip", "spine1", "spine2", "spine3", "neck", "left_collar", "right_collar",
                "head", "left_shoulder", "right_shoulder", "jaw", "left_eye_smplhf", "right_eye_smplhf")


def cold_start(fk, points: AttachedPoints, obs: Observation, rest_scale: torch.Tensor, s: RefineSettings,
               rest: torch.Tensor | None = None, offsets: torch.Tensor | None = None,
               rest_target: torch.Tensor | None = None, step: Callable | None = None):
    """A new track: rigid (Kabsch) alignment of the rest pose to the keypoints, then data-only Gauss-Newton steps
    with a firm pull towards the rest pose and a wide robust scale. `rest` (B, 55, 3): the people's rest joints (None:
    the mean shape), `offsets` (B, K, 3) their keypoints' calibrated offsets; `step(local, transl, pulls, sigma_cm)`
    takes a step (None: the eager `gauss_newton_step`). Returns local rotations, translation."""
    batch = obs.points.shape[0]
    if rest is None:
        rest = fk.rest_joints.float().expand(batch, -1, -1)
    rest_pts = points.positions(fk(torch.zeros(batch, NUM_JOINTS, 3), rest_joints=rest), offsets)
    w = obs.confidence + 1e-6 * (obs.confidence.sum(1, keepdim=True) == 0)  # unseen points have no say
    rot = kabsch(rest_pts, obs.points, w)
    root = rest[:, 0]
    wn = (w / w.sum(1, keepdim=True))[..., None]
    transl = (wn * obs.points).sum(1) - ((rot @ ((wn * rest_pts).sum(1) - root)[..., None]).squeeze(-1) + root)
    local = torch.eye(3).repeat(batch, NUM_JOINTS, 1, 1)
    local[:, 0] = rot
    target = torch.zeros(len(points.free), 3) if rest_target is None else rest_target
    zero = Pull(target.expand(batch, -1, -1), rest_scale * 10.0)
    if step is None:
        def step(local, transl, pulls, sigma_cm):
            return gauss_newton_step(fk, points, local, transl, obs.points, obs.confidence, pulls, s.damping, sigma_cm,
                                     rest_joints=rest, offsets=offsets)
    for _ in range(s.cold_start_iters):
        local, transl = step(local, transl, [zero], s.sigma_cm * 4)
    return local, transl


def keypoint_parts(fmt: KeypointFormat) -> torch.Tensor:
    """(K, 4) one-hot: the part (body, left hand, right hand, face) each keypoint of the format sees (a keypoint at a
    joint without offset belongs to the joint's parent's part: a wrist keypoint sees the arm)."""
    part_of = {j: p for p, js in PART_JOINTS.items() for j in js}
    parents = smplx_neutral().parents
    kp_part = []
    for j, off in zip(fmt.joints, fmt.offsets):
        j = int(j) if (abs(off).sum() > 0 or parents[j] < 0) else parents[j]
        name = part_of.get(j, "body")
        kp_part.append(POSE_PARTS.index({"jaw": "face", "eyes": "face"}.get(name, name)))
    return torch.nn.functional.one_hot(torch.tensor(kp_part), len(POSE_PARTS)).float()


def _scaled(pull: Pull, factor: torch.Tensor) -> Pull:
    """The pull with each joint's residual multiplied by `factor` (B, F, 1), diagonal or full precision alike."""
    if pull.precision is None:
        return Pull(pull.target, cast(torch.Tensor, pull.scale) * factor)  # a diagonal pull: scale is set
    r = factor.expand(-1, -1, 3).reshape(factor.shape[0], -1)
    return Pull(pull.target, precision=pull.precision * r[:, :, None] * r[:, None, :])


class FewStepRefiner:
    """Refines keypoints of one format into SMPL-X poses with the diffusion prior in a few steps.

    `prior` is a `PosePrior` or any inference engine with the same `eps`, `mean`, `std` and `sde`. Subclasses
    swap the prior term (`prior_pulls`) and keep the rest: the baselines are compared under the same solver.
    """

    def __init__(self, prior: Engine, fmt: KeypointFormat, settings: RefineSettings = RefineSettings(),
                 completion=None, motion: LegMotion | None = None, compiled: CompiledStep | None = None) -> None:
        self.prior = MirrorSymmetric(prior) if settings.mirror_symmetric else prior
        self.format, self.settings = fmt, settings
        self.compiled: CompiledStep | None = None  # the step compiled ahead of time; None: eager torch
        # a warm frame's prior steps as one graph (`solvers.warm_frame.OnnxFrame`); None: step by step
        self.frame: Callable[..., tuple | None] | None = None
        self.use_compiled(compiled)
        self.completion = completion  # a `prior.completion.Completion`: the target of hidden body joints
        self.motion = motion if settings.motion_legs else None  # the target of a moving person's hidden legs
        if self.motion is not None:
            lags = self.motion.lags
            self.motion_lags = torch.tensor(lags)
            self.motion_tolerance = 0.5 * min(b - a for a, b in zip((0.0, *lags), lags))
            self.motion_capacity = history_capacity(lags, self.motion.fps)
        self.legs = [FREE_JOINTS.index(j) for j in MOTION_LEGS]
        names = smplx_neutral().names
        lower = [names.index(f"{side}_{part}") for side in ("left", "right") for part in ("knee", "ankle", "foot")]
        self.leg_keypoints = [k for k, j in enumerate(fmt.joints) if int(j) in lower]  # the keypoints a squat leaves put
        self.fk = ForwardKinematics()
        self.points = AttachedPoints(self.fk, fmt.joints, fmt.offsets, FREE_JOINTS)
        self.schedule = TruncatedSchedule(settings.t_max, settings.t_min) if settings.schedule == "truncated" else UniformSchedule()
        self.free = torch.tensor(FREE_JOINTS)
        # the root and body joints (the weak hold's threshold is for body bones; a finger's 2-3 cm bones are always below it)
        self.body_free = torch.tensor([j in (0, *PART_JOINTS["body"]) for j in FREE_JOINTS])
        # per-entry prior scale of the free joints (1 / std of the prior's normalisation), root not pulled
        std_pose = from_vector(prior.std.float(), torch.zeros(NUM_JOINTS, 3))[0].abs()
        scale = torch.zeros(NUM_JOINTS, 3)
        groups = [j for p in ("body", "left_hand", "right_hand") for j in PART_JOINTS[p]]
        scale[groups] = 1.0 / std_pose[groups].clamp(min=settings.min_prior_std)
        self.prior_scale = scale[self.free]
        self.wrists = [(FREE_JOINTS.index(smplx_neutral().index(f"{side}_wrist")), POSE_PARTS.index(f"{side}_hand"))
                       for side in ("left", "right")]
        hands = set(PART_JOINTS["left_hand"]) | set(PART_JOINTS["right_hand"])
        self.part_weight = torch.tensor([[settings.hand_prior_weight if j in hands else settings.prior_weight]
                                         for j in FREE_JOINTS])  # (F, 1): the prior's strength on each joint
        rest = torch.full((NUM_JOINTS, 3), settings.rest_weight**0.5)
        rest[list(hands)] = settings.hand_rest_weight**0.5
        rest[0] = 0.0
        self.rest_scale = rest[self.free]
        # the rest target: SMPL-X's rest pose, or the training data's mean pose (the prior's normalisation mean,
        # averaged with its mirror image so that it has no side)
        mean_pose = from_vector(prior.mean.float(), torch.zeros(NUM_JOINTS, 3))[0]
        mean_pose = 0.5 * (mean_pose + mirror_pose(mean_pose))
        self.rest_target = mean_pose[self.free] if settings.rest_target == "mean" else torch.zeros(len(FREE_JOINTS), 3)
        self.kp_part = keypoint_parts(fmt)
        # a format with no hand keypoint: the fingers get the prior's typical hands when a track starts (the cold
        # phase asks about both groups), then only their hold; later steps ask the prior about the body alone
        hand_parts = [POSE_PARTS.index("left_hand"), POSE_PARTS.index("right_hand")]
        self.warm_groups = PRIOR_GROUPS if bool(self.kp_part[:, hand_parts].any()) else PRIOR_GROUPS[:1]
        # (K, F): keypoint k moves when free joint f rotates (a keypoint at a joint itself does not turn with it)
        at_joint = torch.tensor([[float(j == f and abs(off).sum() == 0) for f in FREE_JOINTS]
                                 for j, off in zip(fmt.joints, fmt.offsets)])
        self.sees = (self.points.chain - at_joint).clamp(min=0)
        self.kp_weight = torch.tensor(fmt.weights, dtype=torch.float32).clamp(min=1e-6)  # (K,) the format's weights
        in_hand = self.in_hand = self.kp_part[:, hand_parts].sum(1) > 0  # (K,) the hands' keypoints
        self.keypoint_hold = torch.where(in_hand, settings.hand_keypoint_hold_weight,
                                         settings.keypoint_hold_weight) * self.kp_weight  # (K,) the memory's confidence
        names = smplx_neutral().names
        self.spine = [FREE_JOINTS.index(names.index(n)) for n in ("spine1", "spine2", "spine3")]
        self.torso = torch.tensor([float(names[int(j)] in TORSO_JOINTS) for j in fmt.joints])  # (K,)
        # standing upright with hidden legs (the pelvis-tilt pull, the floor contact); the up direction in the pelvis
        # frame on average over the training data (zero for a prior without gravity)
        mean_up = prior.mean.float()[SLICES["gravity"]]
        self.upright = Upright(self.fk, FREE_JOINTS, settings, self.torso,
                               [FREE_JOINTS.index(names.index(n)) for n in ("left_hip", "right_hip")],
                               mean_up / mean_up.norm() if mean_up.norm() > 0.5 else torch.zeros(3))
        body = torch.tensor([0 < j < 22 for j in FREE_JOINTS])
        self.observable = body & (self.sees.sum(0) > 0)  # (F,) body joints some keypoint of the format moves
        self.unobservable = body & ~self.observable  # ... and those none does (COCO's ankles: no foot keypoint)
        # (F, G) the prior group (PRIOR_GROUPS: body, hands) of each free joint, and the joints whose hiding has the
        # prior complete the group with its seen joints pulled too (seen_prior_weight): body joints the format can
        # see. Seen fingers are never pulled (whether a finger completion would gain from it is unmeasured)
        member = torch.stack([torch.tensor([any(j in PART_JOINTS.get(POSE_PARTS[i], ()) for i, on in
                                                enumerate(g[: len(POSE_PARTS)]) if on) for j in FREE_JOINTS])
                              for g in PRIOR_GROUPS], 1)
        self.group_member = member.float()
        self.group_completes = torch.zeros_like(self.group_member)
        self.group_completes[:, 0] = self.observable.float()

    def seen_joints(self, confidence: torch.Tensor) -> torch.Tensor:
        """(B, K) confidences -> (B, F) bool: free joints whose rotation moves a confident keypoint (with
        `spine_from_prior`, the spine joints not when the torso is seen: measured on hand-only input, an unseen spine
        turned the wrists)."""
        seen = ((confidence > 0.1).float() @ self.sees) > 0
        if self.settings.spine_from_prior:
            torso = ((confidence > 0.1).float() @ self.torso) >= self.settings.min_part_points
            seen[:, self.spine] &= ~torso[:, None]
        return seen

    def observed_parts(self, confidence: torch.Tensor) -> torch.Tensor:
        """(B, K) confidences -> (B, 4) bool: parts with at least `min_part_points` confident keypoints."""
        return ((confidence > 0.1).float() @ self.kp_part) >= self.settings.min_part_points

    @torch.no_grad()
    def __call__(self, obs: Observation, init: BodyState | None = None) -> Refined:
        s = self.settings
        batch = obs.points.shape[0]
        obs, kfilter = self._filtered(obs, init)
        gen = torch.Generator().manual_seed(s.seed)
        schedule = self.schedule.timesteps(s.steps, gen).tolist()
        calib = init.calibration if init is not None and init.calibration is not None else None
        if calib is None or calib.offsets.shape[1] != self.format.num_keypoints:
            calib = empty_calibration(batch, self.format.num_keypoints)
        betas = calib.betas.float()
        rest = shape_rest_joints(betas)
        if init is None:
            def step(local, transl, pulls, sigma_cm):
                return self._step(local, transl, None, pulls, None, obs.points, obs.confidence, rest, calib.offsets,
                                  sigma_cm)[:2]
            local, transl = cold_start(self.fk, self.points, obs, self.rest_scale, s, rest, calib.offsets,
                                       self.rest_target, step)
            previous = None
        else:
            local, transl = roma.rotvec_to_rotmat(init.pose.float()), init.transl.float().clone()
            previous = init.pose.float()[:, self.free]
        seen = self.seen_joints(obs.confidence)
        target_points, target_conf = self._held_keypoints(obs, init, kfilter)
        by_data = ((obs.confidence > 0.1).float() @ self.sees) > 0  # seen, the spine included
        hidden = torch.zeros(batch, len(FREE_JOINTS)) if init is None or init.hidden_frames is None else init.hidden_frames
        elapsed = self._elapsed(obs)  # (B, 1) this frame's time, in frames of hold_rate_hz
        hidden = torch.where(by_data, 0.0, hidden.float() + elapsed)
        faded = s.hold_decay ** (hidden - elapsed).clamp(min=0)  # full on a joint's first hidden frame
        hold = (s.temporal_weight + (hidden > 0) * s.hold_weight * faded)[..., None].sqrt()
        observed = self.observed_parts(obs.confidence)
        weak = None  # seen body joints: the directions of their rotation the keypoints barely see are held too
        if previous is not None and s.weak_hold_weight > 0:
            weak = Pull(previous, (s.weak_hold_weight * (by_data & self.body_free))[..., None].sqrt(), weak_cm=s.weak_dof_cm)
        factor = self._prior_factor(obs, seen, by_data, faded, previous is not None, calib.frames, observed)
        use_prior = bool(self.part_weight.any())
        # what a prior term hands from one step to the next within this frame (and which joints keypoints see); the
        # prior is asked only about groups it pulls some joint of: with every joint seen it has no say, no call
        up = obs.up if s.gravity else None
        carry: dict = {"seen": by_data, "up": up, "groups": self._pulled_groups(factor)}
        history = self._history(init, elapsed[:, 0] / s.hold_rate_hz)
        if history is not None and bool((~by_data[:, self.legs]).any()):  # someone's legs are hidden
            carry["motion"] = self._motion_input(history, obs.up, self._legs_remembered(init))
        evals = 0
        if init is None and use_prior and s.cold_prior_steps > 0:
            local, transl = self._cold_prior(obs, local, transl, factor, rest, calib.offsets, by_data, up, gen,
                                             self._tilt_scale(self.upright.tilt_strength(obs, by_data, local, transl, rest)))
            evals += s.cold_prior_steps * s.cold_samples
        zero = self.rest_target.expand(batch, -1, -1)
        use_prior = use_prior and bool(carry["groups"])
        # the tilt pull's strength once a frame: it changes little within one
        tilt = self._tilt_scale(self.upright.tilt_strength(obs, by_data, local, transl, rest))
        held = Pull(previous, hold) if previous is not None and (s.temporal_weight > 0 or s.hold_weight > 0) else None
        steps = (schedule, carry, factor if use_prior else None, zero, obs.up, tilt, held, weak, target_points,
                 target_conf, rest, calib.offsets, gen)
        answer = None
        if self.frame is not None and use_prior and previous is not None:  # the frame's steps as one graph
            answer = self.frame(self, local, transl, *steps)
        local, transl, rotvec = answer if answer is not None else self._prior_steps(local, transl, None, *steps)
        evals += len(schedule) if use_prior else 0
        posed = self.fk.from_rotmat(local, transl, rest)
        # for the next frame: this one is answered with the shape and offsets it was solved with
        used_offsets = calib.offsets
        calib = calibrate(self.fk, self.points, posed, local, obs.points, obs.confidence, calib, s,
                          self.upright.floor_contact(obs, by_data, posed.joints, rest))
        pose = roma.rotmat_to_rotvec(local) if rotvec is None else rotvec
        completed = ~observed
        completed[:, POSE_PARTS.index("face")] = False  # no face prior: the face is neither observed nor completed
        evals *= self.evals_per_step
        memory, age = self._remember(obs, init, elapsed)
        if history is not None:
            history = history.remember(local, transl, 1.0 / cast(LegMotion, self.motion).fps)
        return Refined(pose, transl, posed.joints, observed, completed, network_evals=evals, hidden_frames=hidden,
                       betas=betas, keypoint_memory=memory, keypoint_age=age, calibration=calib, rest_joints=rest,
                       keypoint_offsets=used_offsets, history=history, keypoint_filter=kfilter)

    evals_per_step = 1

    def _prior_steps(self, local: torch.Tensor, transl: torch.Tensor, rotvec: torch.Tensor | None, schedule: list[float],
                     carry: dict, factor: torch.Tensor | None, zero: torch.Tensor, up: torch.Tensor | None,
                     tilt: torch.Tensor | None, held: Pull | None, weak: Pull | None, target: torch.Tensor,
                     weight: torch.Tensor, rest: torch.Tensor, offsets: torch.Tensor, gen: torch.Generator | None,
                     step: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The frame's steps at the `schedule`'s times: the prior's pull (`factor` (B, F, 1) per joint; None: no
        prior), the rest pull (root tilted by `tilt` towards `up`), the hold `held`, the weak hold, then a step
        (`step`, default `_step`) on the keypoints `target` (B, K, 3) with confidences `weight` (B, K). `rotvec`:
        `local` as axis-angle where the caller has it. -> local rotations, translation, their axis-angle (or None)."""
        step = self._step if step is None else step
        for t in schedule:
            # the prior's input, and the pulls' in the step (the compiled step always takes it)
            if rotvec is None and (factor is not None or self.compiled is not None):
                rotvec = roma.rotmat_to_rotvec(local)
            carry["local"] = local  # ... as matrices (the gravity condition, the motion model)
            pulls = [] if factor is None else [_scaled(p, factor) for p in
                                               self.prior_pulls(cast(torch.Tensor, rotvec), t, gen, carry)]
            pulls.append(self._rest_pull(zero, local, up, tilt, rotvec))
            if held is not None:
                pulls.append(held)
            local, transl, rotvec = step(local, transl, rotvec, pulls, weak, target, weight, rest, offsets)
        return local, transl, rotvec

    def _step(self, local: torch.Tensor, transl: torch.Tensor, rotvec: torch.Tensor | None, pulls: list[Pull],
              weak: Pull | None, target: torch.Tensor, weight: torch.Tensor, rest: torch.Tensor,
              offsets: torch.Tensor, sigma_cm: float | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                             torch.Tensor | None]:
        """One Gauss-Newton step (`sigma_cm`: the robust scale, None: the settings'): compiled where it can be (a
        batch size's first compiled answer is checked against the eager one, then trusted or refused), else eager.
        `rotvec`: `local` as axis-angle where the caller has it. -> local rotations, translation, their axis-angle
        (None where the eager step answered)."""
        s, batch = self.settings, local.shape[0]
        sigma = s.sigma_cm if sigma_cm is None else sigma_cm
        stepped = None
        if self.compiled is not None and all(p.precision is None and p.weak_cm is None for p in pulls):
            rotvec = roma.rotmat_to_rotvec(local) if rotvec is None else rotvec
            stepped = self.compiled(local, transl, target, weight, pulls, weak, rest, offsets, rotvec, sigma)
        eager = None
        if stepped is None or batch not in cast(CompiledStep, self.compiled).verified:
            eager = gauss_newton_step(self.fk, self.points, local, transl, target, weight,
                                      pulls + ([weak] if weak is not None else []), s.damping, sigma,
                                      rest_joints=rest, offsets=offsets, pose=rotvec)
        if stepped is not None and (eager is None or cast(CompiledStep, self.compiled).confirm(batch, stepped[0],
                                                                                                eager[0])):
            return stepped
        local, transl = cast(tuple, eager)
        return local, transl, None

    def use_compiled(self, compiled: CompiledStep | None) -> None:
        """Take the step compiled ahead of time (`CompiledStep.for_refiner` of this format and settings), or None."""
        if compiled is not None:
            mine = {"format": self.format.name, "damping": self.settings.damping,
                    "weak_dof_cm": self.settings.weak_dof_cm}
            if compiled.constants != mine:
                raise ValueError(f"the compiled step was made for {compiled.constants}, this refiner needs {mine}")
        self.compiled = compiled

    def _filtered(self, obs: Observation, init: BodyState | None) -> tuple[Observation, KeypointFilter | None]:
        """The observation with its seen keypoints through each track's Kalman filter, and the filter's next state
        (None without `keypoint_filter` or where the observation does not tell the sensor's noise)."""
        if not self.settings.keypoint_filter or obs.noise is None:
            return obs, None
        interval = self._elapsed(obs)[:, 0] / self.settings.hold_rate_hz
        state = None if init is None else init.keypoint_filter
        sure = (obs.confidence / self.kp_weight).clamp(0, 1)  # the detector's confidence (the format's weight out)
        points, state = filter_keypoints(state, obs.points, sure, interval, torch.nan_to_num(obs.noise, nan=0.0),
                                         self.settings.keypoint_motion_psd, self.settings.keypoint_velocity_s)
        obs = copy.copy(obs)  # (not dataclasses.replace: the checks, which scale the confidences, ran once)
        obs.points = points
        return obs, state

    def _prior_factor(self, obs: Observation, seen: torch.Tensor, by_data: torch.Tensor, faded: torch.Tensor,
                      warm: bool, calibrated_frames: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """(B, F, 1) the square root of the prior's strength on each free joint this frame: `seen` / `by_data` (B, F)
        the joints confident keypoints see (without / with the spine), `faded` (B, F) what is left of each hidden
        joint's hold, `warm` whether the track has a previous frame, `calibrated_frames` (B,) the frames each track's
        calibration has counted, `observed` (B, 4) the parts with enough keypoints."""
        s = self.settings
        # a joint no keypoint sees has only the prior to go by: its pull is hidden_prior_weight times stronger
        boost = torch.full_like(faded, s.hidden_prior_weight)
        if s.hidden_prior_ramp and warm:  # ... once the hold has faded (a new track has no hold)
            boost = 1.0 + (s.hidden_prior_weight - 1.0) * (1.0 - faded)
        # seen joints: off while their group (body, hands) is fully seen (the data decides), on while the prior
        # completes a hidden joint of the group (the group is one query of the prior: the completion needs the
        # group's seen joints on the prior's manifold; the other group's joints play no part in it)
        completing = ((~by_data).float() @ self.group_completes) > 0  # (B, G)
        complete = (completing.float() @ self.group_member.T) > 0  # (B, F): the joint's group is being completed
        # ... and, while nothing of it is hidden, by the doubt the detector has of the keypoints that see the joint
        sure = (obs.confidence / self.kp_weight).clamp(0, 1)  # the detector's confidence (the format's weight out)
        doubt = 1.0 - (sure @ self.sees) / (((obs.confidence > 0.1).float() @ self.sees).clamp(min=1))
        seen_weight = torch.where(complete, s.seen_prior_weight, s.doubt_prior_weight * doubt.clamp(0, 1))
        # ... and while the track calibrates its keypoint offsets: a persistent residual then goes into the offsets
        # instead of bending the body towards another detector's keypoints
        calibrating = (calibrated_frames < s.shape_frames)[:, None] & torch.tensor(s.calibrate_offsets)
        seen_weight = torch.maximum(seen_weight, calibrating * s.calibration_prior_weight)
        weight = torch.where(seen, seen_weight, torch.where(by_data, s.spine_prior_weight * complete, boost))
        weight = torch.where(self.unobservable, s.unobservable_prior_weight, weight)
        factor = weight.sqrt()[..., None] * self.part_weight.sqrt()
        # the body captures never rotate the wrists, so the prior pins them at zero; when a hand is seen, its
        # orientation comes from the wrist: release that wrist from the prior (measured: hands 86 -> 6 mm)
        for k, part in self.wrists:
            factor[:, k, 0] *= (~observed[:, part]).float()
        return factor

    def _memory(self, init: BodyState | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The track's keypoint memory for this format: (B, K, 3) last seen places, (B, K) frames since; or None."""
        if not bool(self.keypoint_hold.any()) or init is None or init.keypoint_memory is None \
                or init.keypoint_age is None or init.keypoint_memory.shape[1] != self.format.num_keypoints:
            return None
        return init.keypoint_memory, init.keypoint_age

    def _held_keypoints(self, obs: Observation, init: BodyState | None,
                        kfilter: KeypointFilter | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The keypoints the data term fits: the observation's, and each hidden keypoint the track has seen at its
        last seen place (hidden for less than `keypoint_carry_frames`: where the filter `kfilter` carries it), with
        confidence `keypoint_hold_weight` (hands: `hand_...`) x hold_decay^(frames it was hidden before this one)."""
        memory = self._memory(init)
        if memory is None:
            return obs.points, obs.confidence
        last, age = memory
        held = (obs.confidence == 0) & torch.isfinite(last).all(-1)
        weight = self.keypoint_hold * self.settings.hold_decay ** age  # full on its first hidden frame
        if kfilter is not None and self.settings.keypoint_carry_frames > 0:  # a body keypoint's first hidden frames
            carried = ~self.in_hand & (age < self.settings.keypoint_carry_frames) & torch.isfinite(kfilter.position).all(-1)
            last = torch.where(carried[..., None], kfilter.position, last)
        return torch.where(held[..., None], last.nan_to_num(), obs.points), torch.where(held, weight, obs.confidence)

    def _elapsed(self, obs: Observation) -> torch.Tensor:
        """(B, 1) the time since each person's previous frame in frames of `hold_rate_hz` (unknown: one frame)."""
        if obs.interval is None:
            return torch.ones(obs.points.shape[0], 1)
        return torch.nan_to_num(obs.interval * self.settings.hold_rate_hz, nan=1.0)[:, None]

    def _remember(self, obs: Observation, init: BodyState | None,
                  elapsed: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The keypoint memory for the next frame: (B, K, 3) last seen places (confidence > 0.1; NaN: never), (B, K)
        time since in frames of `hold_rate_hz` (this frame's `elapsed` (B, 1) added where it is hidden)."""
        if not bool(self.keypoint_hold.any()):
            return None, None
        memory = self._memory(init)
        last, age = memory if memory is not None else (torch.full_like(obs.points, float("nan")),
                                                       torch.zeros_like(obs.confidence))
        seen = obs.confidence > 0.1  # as everywhere here: a doubtful detection is not remembered, nor held stronger
        return torch.where(seen[..., None], obs.points, last), torch.where(seen, 0.0, age + elapsed)

    def _history(self, init: BodyState | None, seconds: torch.Tensor) -> History | None:
        """The track's history of answers `seconds` (B,) after the last one (empty for a new track); None without a
        motion model."""
        if self.motion is None:
            return None
        if init is None or init.history is None or init.history.age.shape[1] != self.motion_capacity:
            return History.empty(init.pose.shape[0] if init is not None else seconds.shape[0], self.motion_capacity)
        return init.history.aged(seconds)

    def _legs_remembered(self, init: BodyState | None) -> torch.Tensor | None:
        """(B,) bool: the track holds a leg keypoint (knee, ankle, foot) it has seen at more than half strength."""
        memory = self._memory(init)
        if memory is None or not self.leg_keypoints:
            return None
        last, age = memory[0][:, self.leg_keypoints], memory[1][:, self.leg_keypoints]
        return (torch.isfinite(last).all(-1) & (self.settings.hold_decay ** age > 0.5)).any(1)

    def _motion_input(self, history: History, up: torch.Tensor | None,
                      remembered: torch.Tensor | None = None) -> dict | None:
        """What the motion model reads this frame, and who moves fast enough to use it: the root's horizontal speed
        above `motion_min_speed` or, for a track that holds no leg keypoint it has seen (`remembered`: the held feet
        of someone squatting stand better than the model's), its vertical speed above `motion_min_vertical_speed`,
        over the longest lag within `motion_speed_window_s`. None where no one moves."""
        s = self.settings
        if up is None:
            return None
        lagged = at_lags(history, self.motion_lags, self.motion_tolerance)
        within = (lagged.available & (self.motion_lags <= s.motion_speed_window_s + 1e-6)).sum(1)  # a prefix
        v = lagged.velocity[torch.arange(len(within)), (within - 1).clamp(min=0)]
        vertical = (v * up).sum(-1, keepdim=True)
        rising = vertical[:, 0].abs() > s.motion_min_vertical_speed
        if remembered is not None:
            rising &= ~remembered
        fast = ((v - vertical * up).norm(dim=-1) > s.motion_min_speed) | rising
        moving = (within > 0) & fast & (up.norm(dim=-1) > 0)
        if not bool(moving.any()):
            return None
        return {"lagged": lagged, "up": up, "moving": moving}

    def motion_legs(self, motion: dict, seen: torch.Tensor, now: torch.Tensor) -> dict:
        """The motion model's legs for this frame: {"hidden": (B, L) bool, the legs it sets (hidden and moving), or
        None where none is; "legs": (B, L, 3) its answer, or None}, from `motion` (`_motion_input`), the joints
        keypoints see `seen` (B, F) and the frame's first pose `now` (B, 22, 3, 3)."""
        hidden = ~seen[:, self.legs] & motion["moving"][:, None]
        if not bool(hidden.any()):
            return {"hidden": None, "legs": None}
        lagged = motion["lagged"]
        legs = cast(LegMotion, self.motion)(now, lagged.past, lagged.velocity, lagged.available, motion["up"])
        return {"hidden": hidden, "legs": legs}

    def _rest_pull(self, zero: torch.Tensor, local: torch.Tensor, up: torch.Tensor | None,
                   tilt: torch.Tensor | None, rotvec: torch.Tensor | None = None) -> Pull:
        """The rest pull (`zero` (B, F, 3) its target), with the root, which it does not pull, pulled to its tilted
        rotation where `tilt` (`_tilt_scale`: (B, F, 1)) gives it a strength: one pull term, the same sum as two.
        `rotvec`: `local` as axis-angle where the caller has it."""
        if tilt is None:
            return Pull(zero, self.rest_scale)
        theta = roma.rotmat_to_rotvec(local[:, 0]) if rotvec is None else rotvec[:, 0]
        target = zero.clone()
        target[:, 0] = self.upright.tilted_root(local, theta, cast(torch.Tensor, up))
        return Pull(target, tilt)

    def _tilt_scale(self, strength: torch.Tensor | None) -> torch.Tensor | None:
        """The rest pull's scale (B, F, 1) with the root's row the tilt pull's, at `strength` (B,) per radian^2 (the
        rest pull's root scale is zero: no overlap); None where no one's tilt is pulled."""
        if strength is None:
            return None
        root = (torch.arange(len(FREE_JOINTS)) == 0)[:, None]
        return torch.where(root, strength.sqrt()[:, None, None], self.rest_scale)

    def _pulled_groups(self, factor: torch.Tensor) -> tuple:
        """The groups of `warm_groups` with a joint the prior pulls (`factor` (B, F, 1) not zero) in some person."""
        pulled = ((factor[..., 0] > 0) & (self.prior_scale.abs().sum(-1) > 0)).any(0)  # (F,)
        return tuple(g for i, g in enumerate(self.warm_groups) if bool(pulled[self.group_member[:, i] > 0].any()))

    def _cold_prior(self, obs: Observation, local, transl, factor, rest, offsets, seen, up, gen, tilt):
        """A new track's prior phase: `cold_prior_steps` steps from t = `cold_t_max`, where the prior knows nothing
        of the pose, down to `cold_t_min`. With `cold_samples` > 1 each person is solved from that many noise draws
        at once and the answers are averaged: one deterministic path from the origin of the latent space lands on
        one mode of the prior (measured: knees folded 2.2-2.7 rad under an upright idle body, legs hidden), the
        average of several is the body the seen keypoints make likely."""
        s, n = self.settings, self.settings.cold_samples
        rep = (lambda x: x.repeat_interleave(n, dim=0)) if n > 1 else (lambda x: x)
        local, transl, points, conf, factor, rest, offsets = map(rep, (local, transl, obs.points, obs.confidence,
                                                                      factor, rest, offsets))
        tilt_up = None if tilt is None else rep(cast(torch.Tensor, obs.up))
        zero = self.rest_target.expand(local.shape[0], -1, -1)
        carry: dict = {"seen": rep(seen), "up": None if up is None else rep(up), "groups": PRIOR_GROUPS}
        if n > 1:
            carry.update(eps=torch.randn(2 * local.shape[0], DIM, generator=gen), t=float("inf"))
        pose: torch.Tensor | None = None
        for t in TruncatedSchedule(s.cold_t_max, s.cold_t_min).timesteps(s.cold_prior_steps).tolist():
            pose = roma.rotmat_to_rotvec(local) if pose is None else pose
            carry["local"] = local
            pulls = [_scaled(p, factor) for p in self.prior_pulls(pose, t, gen, carry)]
            pulls.append(self._rest_pull(zero, local, tilt_up, None if tilt is None else rep(tilt), pose))
            local, transl, pose = self._step(local, transl, pose, pulls, None, points, conf, rest, offsets)
        if n == 1:
            return local, transl
        mean = roma.rotmat_to_rotvec(local).reshape(-1, n, *local.shape[1:-2], 3).mean(1)
        return roma.rotvec_to_rotmat(mean), transl.reshape(-1, n, 3).mean(1)

    def prior_pulls(self, pose: torch.Tensor, t: float, generator: torch.Generator | None, carry: dict) -> list[Pull]:
        """The prior's term at step time t at unit strength (the solver scales it per joint): here a pull towards
        the denoised pose, weighted by DPoser's w(t) / sigma^2. `carry` holds the predicted noise between steps."""
        s = self.settings
        descending = carry.get("t", float("inf")) >= t  # the cold start's schedule ends below the next one's start
        target, eps = prior_targets(self.prior, pose, t, generator, s.noise, carry.get("eps") if descending else None,
                                    carry.get("up"), carry.get("groups", self.warm_groups),
                                    carry["local"][:, 0] if "local" in carry else None)
        if s.carry_noise:
            carry.update(eps=eps, t=t)
        target = target[:, self.free]
        if self.completion is not None:  # hidden body joints: their mean given the seen ones
            hidden = ~carry["seen"][:, 1 : 1 + len(PART_JOINTS["body"])]
            body = target[:, 1 : 1 + len(PART_JOINTS["body"])]
            body[hidden] = self.completion(pose, hidden)[hidden]
        motion = carry.get("motion")
        if motion is not None:  # hidden legs of a moving person: the motion model's, from the track's history and
            if "legs" not in motion:  # the frame's first pose, once a frame
                now = carry["local"][:, :22] if "local" in carry else roma.rotvec_to_rotmat(pose[:, :22])
                motion.update(self.motion_legs(motion, carry["seen"], now))
            if motion["hidden"] is not None:
                target[:, self.legs] = torch.where(motion["hidden"][..., None], motion["legs"], target[:, self.legs])
        mean, std = self.prior.sde.mean_std(torch.tensor(t))
        w_t = 0.5 * torch.sqrt(1.0 + mean / std)
        return [Pull(target, self.prior_scale * w_t.sqrt())]
