"""What the refine node does, without ROS: input checks, per-person tracks, latest-wins queue, batched refinement.

`RefineCore.submit` is called from subscription callbacks: it checks each person (the library's
`KeypointFormat.validate` plus unit / stamp checks), and stores the person as pending (latest wins: a pending
person that is overwritten before it was refined counts as a drop). `RefineCore.refine_pending` is called
from the worker thread: it takes everything pending, refines it in as few solver calls as possible
(one per keypoint format and warm/cold start, at most `max_batch` people each), updates the tracks (warm
start from the last `Refined`) and returns one `OutputFrame` per input frame, in the input order. The solver is
the few-step refiner in this process (`RefinerCache`) or in a child process (`SolverProcess`, which the node uses). Where input
arrives far faster than it is refined (a flood), `RefineCore.yield_to_worker` holds the submitting thread until the
worker takes what is pending: the excess stays in the middleware's queue, which keeps the newest messages.

No rclpy here: the node (`refine_node.py`), the tests and the benchmarks share this code.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np
import torch

from ..backends.solver_process import RefinerCache, Solver
from ..body import NUM_JOINTS, ForwardKinematics, smplx_neutral
from ..body.shape import rest_joints
from ..keypoints import KeypointFormat, KeypointFormatError, get_format, known_formats
from ..prior.motion import LegMotion
from ..solvers.compiled_step import BackgroundCompiler
from ..solvers.refine import RefineSettings, keypoint_parts
from ..solvers.scene import FEET, SceneEstimate, feet_seen
from ..solvers.types import BodyState, Observation
from ..solvers.warm_frame import FrameGraphs

# part_confidence of a part the prior completed (it was not observed): plausible, not measured
COMPLETED_PART_CONFIDENCE = 0.25
MIN_CONFIDENT_POINTS = 3  # a rigid start needs three points
CONFIDENT = 0.1

MALFORMED_REASONS = (
    "unknown_format",
    "empty",
    "wrong_count",
    "non_finite",
    "bad_confidence",
    "too_few_points",
    "millimetres",
    "stamp_backwards",
    "bad_message",
    "too_many_people",
    "too_many_points",
)


class MalformedInput(ValueError):
    """A person (or a whole message) that cannot be refined; `reason` is one of MALFORMED_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ----------------------------------------------------------------------------------------------- formats


def _squash(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def resolve_format(name: str) -> KeypointFormat:
    """A keypoint format by name; also accepts spellings with extra underscores (`smplx_55`, `coco_wholebody_133`)."""
    try:
        return get_format(name)
    except KeypointFormatError:
        matches = [k for k in known_formats() if _squash(k) == _squash(name)]
        if len(matches) == 1:
            return get_format(matches[0])
        raise


@cache
def rest_keypoints(fmt_name: str) -> np.ndarray:
    """(K, 3) keypoints of the rest pose (SMPL-X canonical frame, metres)."""
    fmt = get_format(fmt_name)
    posed = ForwardKinematics()(torch.zeros(NUM_JOINTS, 3, dtype=torch.float64))
    return fmt.from_posed(posed).numpy()


@cache
def format_edges(fmt_name: str) -> tuple[tuple[int, int], ...]:
    """Bones between the keypoints of a format: each keypoint joins the nearest keypoint up the SMPL-X tree.

    A keypoint on joint j links to another keypoint sitting exactly on j (for landmarks with an offset), else to
    the first keypoint found on j's ancestors (one sitting on the joint preferred). Roots get no edge.
    """
    fmt = get_format(fmt_name)
    parents = smplx_neutral().parents
    on_joint: dict[int, list[int]] = {}
    for k, (j, off) in enumerate(zip(fmt.joints, fmt.offsets)):
        on_joint.setdefault(int(j), []).append(k)

    def pick(cands: list[int], exclude: int) -> int | None:
        cands = [c for c in cands if c != exclude]
        exact = [c for c in cands if not fmt.offsets[c].any()]
        return (exact or cands or [None])[0]

    edges = []
    for k, j in enumerate(fmt.joints):
        j = int(j)
        parent = None
        if fmt.offsets[k].any():
            exact = [c for c in on_joint.get(j, []) if c != k and not fmt.offsets[c].any()]
            parent = exact[0] if exact else None
        a = parents[j]
        while parent is None and a >= 0:
            parent = pick(on_joint.get(a, []), k)
            a = parents[a]
        if parent is not None:
            edges.append((parent, k))
    return tuple(edges)


def _median(a: np.ndarray) -> np.ndarray:
    """np.median along the first axis, the same numbers for finite input, without its generic machinery (a fifth of
    the time for a person's keypoints: it runs three times for every person of every message)."""
    s = np.sort(a, axis=0)
    n = s.shape[0]
    return (s[(n - 1) // 2] + s[n // 2]) / 2


@cache
def _keypoint_parts(fmt_name: str) -> np.ndarray:
    return keypoint_parts(get_format(fmt_name)).numpy()


@cache
def _scale_edges(fmt_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Edges (E, 2) at least 5 cm long at rest, and their rest lengths (E,): the scale check's yardstick."""
    edges = np.array(format_edges(fmt_name), dtype=np.int64).reshape(-1, 2)
    rest = rest_keypoints(fmt_name)
    length = np.linalg.norm(rest[edges[:, 0]] - rest[edges[:, 1]], axis=-1) if len(edges) else np.zeros(0)
    keep = length >= 0.05
    return edges[keep], length[keep]


# ----------------------------------------------------------------------------------------------- data


@dataclass
class PersonInput:
    """One person of one input message, as the adapters return it."""

    person_id: str
    points: np.ndarray  # (K, 3) metres, in the frame's frame_id
    confidences: np.ndarray  # (K,) in [0, 1]
    format_name: str = ""  # empty: the node's input_format
    count: int | None = None  # keypoints the message held when they were too many to convert (max_points)


@dataclass
class InputFrame:
    """One input message: header, people, and when it arrived (time.monotonic)."""

    stamp_ns: int
    frame_id: str
    people: list[PersonInput]
    received: float = field(default_factory=time.monotonic)
    stamp: object = None  # the message's builtin_interfaces/Time, passed through to the outputs
    seq: int = 0
    # where fixed_frame moved the message: the frame it came in and the transform into frame_id (p' = rot p + trans)
    origin: tuple[str, np.ndarray, np.ndarray] | None = None


@dataclass
class PersonResult:
    person_id: str
    pose: np.ndarray  # (55, 3) axis-angle
    transl: np.ndarray  # (3,)
    joints: np.ndarray  # (55, 3)
    part_confidence: np.ndarray  # (4,) float
    part_completed: np.ndarray  # (4,) bool
    refine_ms: float
    format_name: str = ""
    points: np.ndarray | None = None  # the input keypoints (K, 3), for pictures / overlays
    confidences: np.ndarray | None = None
    betas: np.ndarray | None = None  # (10,) the track's calibrated SMPL-X shape (None: the mean shape)
    failed: bool = False  # the solver gave no usable body (non-finite or far from the keypoints): the track restarts
    refine_steps: int = 0  # prior steps this answer used (fewer than `steps` when the latency budget is short)


@dataclass
class OutputFrame:
    """Results for the people of one input frame (in input order, people dropped or rejected left out)."""

    frame: InputFrame
    people: list[PersonResult]

    @property
    def latency_ms(self) -> float:
        return (time.monotonic() - self.frame.received) * 1000.0


@dataclass
class _Pending:
    frame: InputFrame
    index: int  # position in frame.people
    person: PersonInput
    fmt: KeypointFormat
    track_key: str | None  # None: untracked (no warm start)
    replaced: int = 0  # earlier frames of this person it replaced while pending (latest wins)


@dataclass
class Track:
    last_stamp_ns: int
    last_seen: float  # monotonic
    frame_id: str
    format_name: str
    state: BodyState | None = None
    state_stamp_ns: int = 0  # the stamp of the frame `state` answered
    period: float | None = None  # seconds between the person's frames (moving average): the time a batch may take


_SOLVER = RefineSettings()
SOLVER_FIELDS = ("steps", "t_max", "t_min", "prior_weight", "hand_prior_weight", "sigma_cm", "temporal_weight",
                 "hold_weight", "hold_decay", "weak_hold_weight", "keypoint_hold_weight", "hand_keypoint_hold_weight",
                 "hidden_prior_weight", "pelvis_tilt_weight", "pelvis_tilt_min_height", "floor_contact_weight",
                 "calibrate_shape", "calibrate_offsets", "motion_legs", "motion_min_speed",
                 "motion_min_vertical_speed", "keypoint_motion_psd")
# node parameters of the core (tracks, checks, bounded work)
CORE_FIELDS = ("person_timeout", "max_batch", "max_coordinate_m", "max_bone_ratio", "max_keypoint_spread_m",
               "max_people", "max_points", "latency_budget_ms", "flood_replaced", "up_vector", "floor_height", "learn_floor",
               "learn_up", "keypoint_noise_cm")
TORSO_TOP = smplx_neutral().index("neck")  # the torso direction: pelvis -> neck
OPTICAL_SUFFIXES = ("_optical_frame", "_optical")  # REP 103 camera optical frames: z forward, y down, up unknown
# a cycle (solver, then building and publishing its answers) may fill this share of the frame interval of its
# fastest person under a latency budget: the rest absorbs the cycle's jitter and the executor's own work (measured,
# 10 COCO-17 people at 60 Hz: cycles that filled the whole interval dropped 14 % of the frames)
FRAME_SHARE = 0.8
LEARNT_SCENES = 16  # input frames whose floor and up direction are learnt at once (a robot has a few cameras)
OVERHEAD_CYCLES = 32  # cycles whose cost beyond the solver is remembered (their median is used)
COST_CALLS = 8  # solver calls whose cost per person and step is remembered (their median is used)


@dataclass
class CoreSettings:
    input_format: str = ""
    steps: int = _SOLVER.steps
    t_max: float = _SOLVER.t_max
    t_min: float = _SOLVER.t_min
    prior_weight: float = _SOLVER.prior_weight
    hand_prior_weight: float = _SOLVER.hand_prior_weight
    sigma_cm: float = _SOLVER.sigma_cm
    temporal_weight: float = _SOLVER.temporal_weight
    hold_weight: float = _SOLVER.hold_weight
    hold_decay: float = _SOLVER.hold_decay
    weak_hold_weight: float = _SOLVER.weak_hold_weight
    keypoint_hold_weight: float = _SOLVER.keypoint_hold_weight
    hand_keypoint_hold_weight: float = _SOLVER.hand_keypoint_hold_weight
    hidden_prior_weight: float = _SOLVER.hidden_prior_weight
    pelvis_tilt_weight: float = _SOLVER.pelvis_tilt_weight
    pelvis_tilt_min_height: float = _SOLVER.pelvis_tilt_min_height
    floor_contact_weight: float = _SOLVER.floor_contact_weight
    calibrate_shape: bool = _SOLVER.calibrate_shape
    calibrate_offsets: bool = _SOLVER.calibrate_offsets
    motion_legs: bool = _SOLVER.motion_legs
    motion_min_speed: float = _SOLVER.motion_min_speed
    motion_min_vertical_speed: float = _SOLVER.motion_min_vertical_speed
    keypoint_motion_psd: float = _SOLVER.keypoint_motion_psd
    person_timeout: float = 1.0
    max_batch: int = 16
    max_coordinate_m: float = 20.0
    max_bone_ratio: float = 5.0
    max_keypoint_spread_m: float = 2.5  # a keypoint this far from the person's median keypoint is an outlier
    max_people: int = 64  # people per message; more are rejected (too_many_people)
    max_points: int = 512  # keypoints per person; more are rejected (too_many_points)
    latency_budget_ms: float = 100.0  # arrival to answer; under load fewer prior steps (down to 1); 0: off
    flood_replaced: int = 3  # a person's pending frame replaced this many times before the worker took it, or this
    # many batches (max_batch) of people pending: a flood, and the submitting thread waits for the worker
    # (`RefineCore.yield_to_worker`); 0: never
    up_vector: tuple[float, ...] = (0.0, 0.0, 1.0)  # the input frames' up direction (REP 103: z); zero: unknown
    floor_height: float = math.nan  # the floor's height along up_vector in the input frames (metres); NaN: unknown
    learn_floor: bool = True  # where floor_height is NaN: learn each frame's floor from the seen feet of answers
    learn_up: bool = True  # where the up direction is unknown: learn it as the plane the seen feet stand on
    keypoint_noise_cm: float = math.nan  # the sensor's keypoint noise (cm per axis at confidence 1): each track's
    # keypoints are Kalman-filtered (solvers/keypoint_filter.py); NaN: unknown, no filter

    def up_of(self, frame_id: str) -> np.ndarray:
        """The up direction of an input frame for the prior; zero (unknown) for a camera optical frame."""
        if frame_id.endswith(OPTICAL_SUFFIXES):
            return np.zeros(3)
        return np.asarray(self.up_vector, dtype=np.float64)

    def floor_of(self, frame_id: str) -> float:
        """The floor's height along the up direction of an input frame; NaN (unknown) where the up direction is."""
        return self.floor_height if self.up_of(frame_id).any() else math.nan

    def refine_settings(self) -> RefineSettings:
        return RefineSettings(**{f: getattr(self, f) for f in SOLVER_FIELDS})


# ----------------------------------------------------------------------------------------------- stats


class Stats:
    """Thread-safe counters and sliding windows for /diagnostics."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self.malformed: Counter[str] = Counter()
        self.drops = 0
        self.intake_waits = 0  # times the submitting thread yielded to the worker under a flood
        self.failed = 0
        self.outlier_points = 0
        self.errors: Counter[str] = Counter()
        self._messages: list[tuple[str, str]] = []
        self._steps: deque[tuple[float, int, int, int]] = deque()
        self.frames_in = 0
        self.people_in = 0
        self.frames_out = 0
        self.people_out = 0
        self._arrivals: deque[float] = deque()
        self._latency: deque[tuple[float, float]] = deque()
        self._refine: deque[tuple[float, float, int]] = deque()
        self._torso_up: deque[tuple[float, float]] = deque()  # cosine of the torso (pelvis -> neck) and up
        self._floor_gap: deque[tuple[float, float]] = deque()  # seen feet's height above floor_height (metres)

    def _trim(self, now: float) -> None:
        for q in (self._arrivals, self._latency, self._refine, self._steps, self._torso_up, self._floor_gap):
            while q and (q[0] if isinstance(q[0], float) else q[0][0]) < now - self.window_s:
                q.popleft()

    def frame_in(self, people: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames_in += 1
            self.people_in += people
            self._arrivals.append(now)
            self._trim(now)

    def bad(self, reason: str) -> None:
        with self._lock:
            self.malformed[reason] += 1

    def drop(self, n: int = 1) -> None:
        with self._lock:
            self.drops += n

    def intake_wait(self) -> None:
        with self._lock:
            self.intake_waits += 1

    def fail(self, n: int = 1) -> None:
        with self._lock:
            self.failed += n

    def outliers(self, n: int) -> None:
        with self._lock:
            self.outlier_points += n

    def error(self, kind: str, text: str) -> None:
        """An internal failure (the solver raised): counted by kind, kept for the node to log."""
        with self._lock:
            self.errors[kind] += 1
            self._messages.append((kind, text))

    def take_errors(self) -> list[tuple[str, str]]:
        with self._lock:
            out, self._messages = self._messages, []
            return out

    def steps(self, used: int, of: int, people: int) -> None:
        with self._lock:
            self._steps.append((time.monotonic(), used, of, people))

    def published(self, people: int, latency_ms: float) -> None:
        now = time.monotonic()
        with self._lock:
            self.frames_out += 1
            self.people_out += people
            self._latency.append((now, latency_ms))

    def torso_up(self, cosines: np.ndarray) -> None:
        """Answered people's torso direction against their frame's up direction (only where it is known)."""
        now = time.monotonic()
        with self._lock:
            self._torso_up.extend((now, float(c)) for c in cosines)

    def floor_gap(self, heights: np.ndarray) -> None:
        """Answered people's lower foot (SMPL-X foot joint) above their frame's floor, where their feet are seen."""
        now = time.monotonic()
        with self._lock:
            self._floor_gap.extend((now, float(h)) for h in heights)

    def refined(self, ms: float, batch: int) -> None:
        with self._lock:
            self._refine.append((time.monotonic(), ms, batch))

    def snapshot(self) -> dict:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            lat = np.array([v for _, v in self._latency]) if self._latency else np.zeros(0)
            ref = np.array([v for _, v, _ in self._refine]) if self._refine else np.zeros(0)
            span = min(self.window_s, now - self._arrivals[0]) if len(self._arrivals) > 1 else 0.0
            rate = (len(self._arrivals) - 1) / span if span > 0 else 0.0
            pct = lambda a, q: float(np.percentile(a, q)) if len(a) else float("nan")  # noqa: E731
            people = sum(n for *_, n in self._steps)
            steps = sum(u * n for _, u, _, n in self._steps) / people if people else float("nan")
            degraded = sum(n for _, u, of, n in self._steps if u < of) / people if people else 0.0
            return {
                "input_rate_hz": rate,
                "latency_p50_ms": pct(lat, 50),
                "latency_p99_ms": pct(lat, 99),
                "refine_p50_ms": pct(ref, 50),
                "refine_p99_ms": pct(ref, 99),
                "frames_in": self.frames_in,
                "people_in": self.people_in,
                "frames_out": self.frames_out,
                "people_out": self.people_out,
                "drops": self.drops,
                "intake_waits": self.intake_waits,
                "failed": self.failed,
                "outlier_points": self.outlier_points,
                "errors": dict(self.errors),
                "refine_steps_mean": steps,
                "degraded_fraction": degraded,
                "torso_up_median": float(np.median([c for _, c in self._torso_up])) if self._torso_up else float("nan"),
                "torso_up_count": len(self._torso_up),
                "floor_gap_median_m": float(np.median([h for _, h in self._floor_gap])) if self._floor_gap else float("nan"),
                "floor_gap_count": len(self._floor_gap),
                "malformed": dict(self.malformed),
                "malformed_total": sum(self.malformed.values()),
            }


# ----------------------------------------------------------------------------------------------- core


class RefineCore:
    """Tracks, checks and batched refinement; thread-safe between one submitter and one refining thread."""

    def __init__(self, prior, settings: CoreSettings = CoreSettings(), stats: Stats | None = None,
                 motion: LegMotion | None = None, solver: Solver | None = None,
                 compiler: BackgroundCompiler | None = None, frames: FrameGraphs | None = None) -> None:
        """`prior` and `motion` (the motion model of hidden legs, prior/motion.py, used with `motion_legs`) make the
        in-process solver, with the solver's step compiled ahead of time by `compiler` and warm frames as one graph
        from `frames` where given; or `solver` is given (then the four are ignored)."""
        self.solver: Solver = solver if solver is not None else RefinerCache(prior, motion, compiler, frames)
        self.settings = settings
        self.stats = stats or Stats()
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._tracks: dict[str, Track] = {}
        # ms per person and prior step of the last solver calls, by (format, warm start); their median counts: one
        # slow call (a first call's warm-up, a pause of the machine) must not cost the next batches their steps
        self._cost: dict[tuple[str, bool], deque[float]] = {}
        # ms per person the last cycles spent beyond the solver (their median counts: a one-off cost, such as a new
        # body's URDF, must not starve the next cycles of steps)
        self._overhead: dict[tuple[str, bool], deque[float]] = {}
        self._cycle: tuple[tuple[str, bool], float, int, float] | None = None  # (group, start, people, solver ms)
        self._seq = 0
        # frame_id -> its floor and up direction learnt from answers, the `LEARNT_SCENES` frames last answered
        self._scenes: OrderedDict[str, SceneEstimate] = OrderedDict()
        self.wakeup = threading.Event()
        self._taken = threading.Event()  # the worker took pending people since the last flood
        self._flood = False

    # -- settings ------------------------------------------------------------------------------------
    def update_settings(self, settings: CoreSettings) -> None:
        settings.refine_settings()  # raises if invalid
        if not 0.0 < settings.t_min <= settings.t_max <= 1.0:
            raise ValueError(f"need 0 < t_min <= t_max <= 1, got t_min={settings.t_min}, t_max={settings.t_max}")
        with self._lock:
            self.settings = settings

    def refine_settings(self, steps: int | None = None) -> RefineSettings:
        """The solver's settings, with `steps` prior steps per frame (None: the `steps` setting)."""
        with self._lock:
            settings = self.settings.refine_settings()
        return settings if steps is None or steps == settings.steps else replace(settings, steps=steps)

    def reset(self) -> None:
        """Forget pending people, tracks and what was measured of them (the node was deactivated)."""
        with self._lock:
            self._pending.clear()
            self._tracks.clear()
            self._cost.clear()
            self._overhead.clear()
            self._scenes.clear()

    def tracked_ids(self) -> list[str]:
        """Person ids whose track has a body (answered at least once since it started)."""
        with self._lock:
            return [k for k, t in self._tracks.items() if t.state is not None]

    @property
    def active_tracks(self) -> int:
        with self._lock:
            return len(self._tracks)

    def up_of(self, frame_id: str) -> np.ndarray:
        """The up direction of an input frame: up_vector (zero for an optical frame), else (learn_up) the one learnt
        there; zero: unknown."""
        told = self.settings.up_of(frame_id)
        if told.any() or not self.settings.learn_up:
            return told
        with self._lock:
            scene = self._scenes.get(frame_id)
            return told if scene is None or scene.up is None else scene.up

    def floor_of(self, frame_id: str) -> float:
        """The floor of an input frame: floor_height (along up_vector), else (learn_floor) the one learnt there
        along its up direction; NaN: unknown."""
        told = self.settings.floor_of(frame_id)
        if not math.isnan(told) or not self.settings.learn_floor or not self.up_of(frame_id).any():
            return told
        with self._lock:
            scene = self._scenes.get(frame_id)
            return math.nan if scene is None else scene.height

    def learnt_scenes(self) -> dict[str, tuple[np.ndarray | None, float]]:
        """What was learnt so far, by frame: (the up direction where it was not told, else None; the floor, NaN:
        not yet)."""
        with self._lock:
            return {frame: (scene.up, scene.height) for frame, scene in self._scenes.items()}

    def keypoint_bias(self) -> dict[str, float | str]:
        """The largest calibrated keypoint offset over the tracks (a detector convention this body format does not
        share: a persistent bias), once a track has more evidence for it than the zero-offset prior."""
        worst, where, calibrated = 0.0, "", 0
        with self._lock:
            tracks = [(k, t) for k, t in self._tracks.items() if t.state is not None and t.state.calibration is not None]
        for key, track in tracks:
            calib = track.state.calibration
            settled = calib.offset_weight[0] > self.settings.refine_settings().offset_prior_frames
            if not settled.any():
                continue
            calibrated += 1
            norm = calib.offsets[0].norm(dim=-1) * settled
            k = int(norm.argmax())
            if float(norm[k]) * 100.0 > worst:
                worst, where = float(norm[k]) * 100.0, f"{key}: {get_format(track.format_name).keypoint_names[k]}"
        return {"calibrated_tracks": calibrated, "keypoint_bias_max_cm": round(worst, 1), "keypoint_bias_at": where}

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- checks --------------------------------------------------------------------------------------
    def format_for(self, person: PersonInput) -> KeypointFormat:
        name = person.format_name or self.settings.input_format
        if not name:
            raise MalformedInput("unknown_format", f"person {person.person_id!r}: no keypoint format (message field and "
                                                   "input_format parameter are both empty)")
        try:
            return resolve_format(name)
        except KeypointFormatError as err:
            raise MalformedInput("unknown_format", str(err)) from None

    def check_person(self, person: PersonInput) -> tuple[KeypointFormat, PersonInput, int]:
        """The person's format, the person as the solver may see it, and how many keypoints were outliers; raises
        MalformedInput if the person cannot be refined (stamp order aside).

        A keypoint with confidence 0 is missing whatever its value (NaN, Inf, 1e30): it becomes NaN at confidence 0.
        A confident keypoint farther than `max_keypoint_spread_m` from the person's median keypoint (one glitch at
        1e30 m) is an outlier: missing too, and counted."""
        fmt = self.format_for(person)
        s = self.settings
        pts = np.asarray(person.points, dtype=np.float64)
        conf = np.asarray(person.confidences, dtype=np.float64)
        k = fmt.num_keypoints
        n = max(len(pts), conf.size, person.count or 0)
        if n > s.max_points:
            raise MalformedInput("too_many_points", f"person {person.person_id!r}: {n} keypoints, more than "
                                                    f"max_points ({s.max_points})")
        if pts.size == 0:
            raise MalformedInput("empty", f"person {person.person_id!r}: no keypoints")
        if pts.ndim != 2 or pts.shape != (k, 3) or conf.shape != (k,):
            raise MalformedInput("wrong_count", f"person {person.person_id!r}: format {fmt.name!r} expects {k} points "
                                                f"and confidences, got {len(pts)} points, {conf.size} confidences")
        try:
            fmt.validate(pts, conf)
        except KeypointFormatError as err:
            bad_conf = not np.isfinite(conf).all() or (conf < 0).any()
            raise MalformedInput("bad_confidence" if bad_conf else "non_finite",
                                 f"person {person.person_id!r}: {err}") from None
        good = (conf > CONFIDENT) & np.isfinite(pts).all(-1)
        self._enough(person, good)
        med = float(_median(np.abs(pts[good]).reshape(-1)))
        if med > self.settings.max_coordinate_m:
            raise MalformedInput("millimetres", f"person {person.person_id!r}: median |coordinate| {med:.1f} m > "
                                                f"{self.settings.max_coordinate_m} m (millimetres sent as metres?)")
        edges, rest = _scale_edges(fmt.name)
        ok = good[edges[:, 0]] & good[edges[:, 1]] if len(edges) else np.zeros(0, bool)
        if ok.sum() >= 2:
            seen = np.linalg.norm(pts[edges[ok, 0]] - pts[edges[ok, 1]], axis=-1)
            ratio = float(_median(seen / rest[ok]))
            if ratio > self.settings.max_bone_ratio:
                raise MalformedInput("millimetres", f"person {person.person_id!r}: bones {ratio:.0f}x longer than "
                                                    f"expected (> {self.settings.max_bone_ratio}x; millimetres?)")
        usable = (conf > 0) & np.isfinite(pts).all(-1)
        center = _median(pts[good])
        far = usable & (np.linalg.norm(np.where(usable[:, None], pts, 0.0) - center, axis=-1) > s.max_keypoint_spread_m)
        usable &= ~far
        self._enough(person, good & usable)
        clean = PersonInput(person.person_id, np.where(usable[:, None], pts, np.nan), np.where(usable, conf, 0.0),
                            person.format_name)
        return fmt, clean, int(far.sum())

    @staticmethod
    def _enough(person: PersonInput, good: np.ndarray) -> None:
        if good.sum() < MIN_CONFIDENT_POINTS:
            raise MalformedInput("too_few_points", f"person {person.person_id!r}: {int(good.sum())} keypoints with "
                                                   f"confidence > {CONFIDENT}, need {MIN_CONFIDENT_POINTS}")

    # -- submit (callbacks) --------------------------------------------------------------------------
    def submit(self, frame: InputFrame) -> list[MalformedInput]:
        """Check and queue the people of a frame; returns the rejected ones' errors (already counted)."""
        now = frame.received
        errors: list[MalformedInput] = []
        self.stats.frame_in(len(frame.people))
        accepted: list[_Pending] = []
        outliers = 0
        people = frame.people
        if len(people) > self.settings.max_people:
            errors += [MalformedInput("too_many_people", f"person {p.person_id!r}: message has {len(people)} people, "
                                                         f"more than max_people ({self.settings.max_people})")
                       for p in people[self.settings.max_people:]]
            people = people[: self.settings.max_people]
        for i, person in enumerate(people):
            try:
                fmt, person, far = self.check_person(person)
            except MalformedInput as err:
                errors.append(err)
                continue
            outliers += far
            accepted.append(_Pending(frame, i, person, fmt, person.person_id or None))
        if outliers:
            self.stats.outliers(outliers)
        dropped = 0
        with self._lock:
            self._seq += 1
            frame.seq = self._seq
            kept = []
            for p in accepted:
                key = p.track_key
                if key is not None:
                    track = self._tracks.get(key)
                    if track is not None and now - track.last_seen > self.settings.person_timeout:
                        track = None
                    if track is not None and frame.stamp_ns < track.last_stamp_ns:
                        errors.append(MalformedInput(
                            "stamp_backwards", f"person {key!r}: stamp {frame.stamp_ns * 1e-9:.3f} s is older than "
                                               f"the last one, {track.last_stamp_ns * 1e-9:.3f} s"))
                        continue
                    if track is None or track.frame_id != frame.frame_id or track.format_name != p.fmt.name:
                        track = Track(frame.stamp_ns, now, frame.frame_id, p.fmt.name)  # new track: cold start
                        self._tracks[key] = track
                    elif now > track.last_seen:
                        gap = now - track.last_seen
                        track.period = gap if track.period is None else 0.8 * track.period + 0.2 * gap
                    track.last_stamp_ns, track.last_seen = frame.stamp_ns, now
                    qkey = "id:" + key
                else:  # no person_id: no track (cold start); latest wins per position in the message
                    qkey = f"untracked:{frame.frame_id}:{p.index}"
                old = self._pending.pop(qkey, None)
                if old is not None:  # latest wins
                    dropped += 1
                    p.replaced = old.replaced + 1
                    if 0 < self.settings.flood_replaced <= p.replaced:
                        self._flood = True
                        self._taken.clear()
                self._pending[qkey] = p
                kept.append(p)
        for err in errors:
            self.stats.bad(err.reason)
        if dropped:
            self.stats.drop(dropped)
        if kept:
            self.wakeup.set()
        return errors

    def yield_to_worker(self, timeout: float) -> bool:
        """Under a flood (a person's pending frame replaced `flood_replaced` times before the worker took it, or more
        than `flood_replaced` x `max_batch` people pending: new ids faster than they are refined), wait, without the
        interpreter lock, until the worker takes pending people or `timeout` s pass. Checking messages that are only
        replaced again, or queued ever deeper, would otherwise keep the worker from the interpreter (one person's
        COCO-17 at 5 kHz: 1-2 answers a second, bench/RESULTS.md). Returns whether it waited."""
        s = self.settings
        with self._lock:
            backlog = 0 < s.flood_replaced and len(self._pending) > s.flood_replaced * s.max_batch
            if backlog:
                self._taken.clear()
            flood = self._flood or backlog
        if flood:
            self.stats.intake_wait()
            self._taken.wait(timeout)
        return flood

    # -- refine (worker) -----------------------------------------------------------------------------
    def expire_tracks(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [k for k, t in self._tracks.items() if now - t.last_seen > self.settings.person_timeout]
            for k in old:
                del self._tracks[k]
            return len(old)

    def refine_pending(self) -> list[OutputFrame]:
        """One bounded cycle: refine at most `max_batch` pending people in one solver call and return their answers,
        one OutputFrame per input frame they came from, in arrival order. A message whose people need several
        cycles is answered in several parts (each person once); a person's answers never go back in time.

        Who goes first: tracked people (warm start) before new ones, the longest waiting first; a new person is
        served before tracked ones once it has waited `latency_budget_ms` (or 100 ms) longer than they have, so
        a stream of new ids cannot starve a tracked person and tracked people cannot starve a new one. A pending
        person older than `person_timeout` is dropped. With a latency budget the cycle uses as many prior steps
        (1 to `steps`) as the budget left to its oldest person allows, by the measured cost per person-step."""
        now, start = time.monotonic(), time.perf_counter()
        with self._lock:
            stale = [k for k, p in self._pending.items() if now - p.frame.received > self.settings.person_timeout]
            for k in stale:
                del self._pending[k]
            chunk, warm, steps = self._take(now)
            if not self._pending:
                self.wakeup.clear()
        if stale:
            self.stats.drop(len(stale))
        self.expire_tracks(now)
        if not chunk:
            return []
        init = BodyState.cat([s for _, s in chunk]) if warm else None
        members = [p for p, _ in chunk]
        frames: dict[int, OutputFrame] = {}
        results = self._refine_chunk(members, init, steps)
        self._cycle = ((members[0].fmt.name, warm), start, len(members), results[0].refine_ms if results else 0.0)
        for p, res in sorted(zip(members, results), key=lambda r: (r[0].frame.seq, r[0].index)):
            frames.setdefault(p.frame.seq, OutputFrame(p.frame, [])).people.append(res)
        return list(frames.values())

    def cycle_done(self) -> None:
        """The worker has published the last cycle's answers: what the cycle took beyond the solver (building and
        publishing messages, waiting for the executor) is measured per person and kept out of the next cycles' step
        budget."""
        if self._cycle is None:
            return
        group, start, people, solver_ms = self._cycle
        self._cycle = None
        over = max(0.0, (time.perf_counter() - start) * 1000.0 - solver_ms) / people
        with self._lock:
            self._overhead.setdefault(group, deque(maxlen=OVERHEAD_CYCLES)).append(over)

    def _take(self, now: float) -> tuple[list[tuple[_Pending, BodyState | None]], bool, int | None]:
        """(under the lock) The next batch: one format and kind of start, by priority; and its steps."""
        if not self._pending:
            return [], False, None
        head_start = (self.settings.latency_budget_ms or 100.0) / 1000.0
        ranked = []
        for key, p in self._pending.items():
            track = self._tracks.get(p.track_key) if p.track_key is not None else None
            state = track.state if track is not None else None
            ranked.append((p.frame.received - (head_start if state is not None else 0.0), key, p, state))
        ranked.sort(key=lambda r: r[0])
        first = ranked[0]
        group = (first[2].fmt.name, first[3] is not None)
        taken = [(k, p, st) for _, k, p, st in ranked if (p.fmt.name, st is not None) == group][: self.settings.max_batch]
        for key, _, _ in taken:
            del self._pending[key]
        self._flood = False
        self._taken.set()
        chunk = [(p, st) for _, p, st in taken]
        return chunk, group[1], self._budget_steps(group, chunk, now)

    def _budget_steps(self, group: tuple[str, bool], chunk: list, now: float) -> int | None:
        """(under the lock) Prior steps for this batch under the latency budget (None: the `steps` setting): what the
        budget left to its oldest person allows, and no more than a cycle fits into `FRAME_SHARE` of the interval
        between two frames of its most frequent person (a stream faster than the refinement gets fewer steps, not
        dropped frames), the cycle's measured cost beyond the solver included."""
        budget, full = self.settings.latency_budget_ms, self.settings.steps
        costs = self._cost.get(group)
        if budget <= 0 or not costs:
            return None
        cost = float(_median(np.fromiter(costs, float)))
        left = budget - (now - min(p.frame.received for p, _ in chunk)) * 1000.0
        periods = [t.period for p, _ in chunk if p.track_key is not None
                   and (t := self._tracks.get(p.track_key)) is not None and t.period is not None]
        if periods:
            left = min(left, FRAME_SHARE * 1000.0 * min(periods))
        recent = self._overhead.get(group, ())
        if len(recent) >= 3:
            left -= float(np.median(recent)) * len(chunk)
        return int(min(full, max(1, left // (cost * len(chunk)))))

    def _intervals(self, chunk: list[_Pending]) -> torch.Tensor:
        """(B,) seconds from each person's last answered frame to this one, by the messages' stamps (NaN where
        unknown: a new track, or stamps that do not advance); the solver's holds fade with it."""
        with self._lock:
            stamps = [t.state_stamp_ns if p.track_key is not None and (t := self._tracks.get(p.track_key)) is not None
                      and t.state is not None else 0 for p in chunk]
        gaps = [(p.frame.stamp_ns - s) * 1e-9 if s > 0 and p.frame.stamp_ns > s else math.nan
                for p, s in zip(chunk, stamps)]
        return torch.tensor(gaps, dtype=torch.float32)

    def _refine_chunk(self, chunk: list[_Pending], init: BodyState | None, steps: int | None = None) -> list[PersonResult]:
        """Refine one batch; every person is answered: with a body, or as failed (the solver raised, or gave a body
        that is not finite or lies far from the person's keypoints), and a failed person's track restarts cold."""
        fmt = chunk[0].fmt
        settings = self.refine_settings(steps)
        points = torch.from_numpy(np.stack([p.person.points for p in chunk]).astype(np.float32))
        conf_np = np.stack([p.person.confidences for p in chunk]).astype(np.float32)
        up = torch.from_numpy(np.stack([self.up_of(p.frame.frame_id) for p in chunk]).astype(np.float32))
        floor = torch.tensor([self.floor_of(p.frame.frame_id) for p in chunk], dtype=torch.float32)
        noise = None if math.isnan(self.settings.keypoint_noise_cm) else torch.tensor(self.settings.keypoint_noise_cm / 100)
        obs = Observation(points, torch.from_numpy(conf_np.copy()), fmt, up, floor, self._intervals(chunk), noise)
        t0 = time.perf_counter()
        try:
            refined = self.solver(fmt, settings, obs, init)
        except Exception as err:  # noqa: BLE001 - every person of the batch is answered as failed, and it is logged
            ms = (time.perf_counter() - t0) * 1000.0
            self._restart(chunk)
            self.stats.fail(len(chunk))
            self.stats.error("solver", f"refinement of {len(chunk)} people failed: {type(err).__name__}: {err}")
            return [self._failed(p, fmt, ms) for p in chunk]
        ms = (time.perf_counter() - t0) * 1000.0
        self.stats.refined(ms, len(chunk))
        used = settings.steps
        self.stats.steps(used, self.settings.steps, len(chunk))
        group = (fmt.name, init is not None)
        unit = ms / (len(chunk) * used)
        self._cost.setdefault(group, deque(maxlen=COST_CALLS)).append(unit)
        kp_part = _keypoint_parts(fmt.name)  # (K, 4) one-hot
        conf = np.clip(conf_np, 0, 1)
        confident = conf > CONFIDENT
        sums = (conf * confident) @ kp_part
        counts = confident.astype(np.float32) @ kp_part
        observed = refined.part_observed.numpy()
        completed = refined.part_completed.numpy()
        part_conf = np.where(observed, sums / np.maximum(counts, 1), np.where(completed, COMPLETED_PART_CONFIDENCE, 0.0))
        healthy = self._healthy(refined, chunk)
        if obs.up is not None:  # is the up direction right? People mostly stand or sit: their torsos point up
            torso = refined.joints[:, TORSO_TOP] - refined.joints[:, 0]
            cos = (torso * obs.up).sum(-1) / torso.norm(dim=-1).clamp(min=1e-6)
            known = (obs.up.norm(dim=-1) > 0).numpy() & healthy
            self.stats.torso_up(cos.numpy()[known])
        feet = feet_seen(fmt, obs.confidence).numpy() & healthy
        if obs.floor is not None and obs.up is not None:  # is the floor right? Seen feet stand on it
            height = (refined.joints[:, FEET] * obs.up[:, None]).sum(-1).min(1).values - obs.floor
            self.stats.floor_gap(height.numpy()[torch.isfinite(obs.floor).numpy() & feet])
        if self.settings.learn_floor or self.settings.learn_up:  # learn what nobody told of the frames
            self._learn_scenes(chunk, refined.joints, feet)
        out = []
        states = refined.split()
        with self._lock:
            for i, p in enumerate(chunk):
                track = self._tracks.get(p.track_key) if p.track_key is not None else None
                if track is not None and (track.frame_id != p.frame.frame_id or track.format_name != fmt.name):
                    track = None
                if not healthy[i]:
                    if track is not None:
                        track.state = None  # the next frame starts cold
                    out.append(self._failed(p, fmt, ms))
                    continue
                if track is not None:
                    track.state, track.state_stamp_ns = states[i], p.frame.stamp_ns
                out.append(PersonResult(
                    person_id=p.person.person_id,
                    pose=refined.pose[i].double().numpy(),
                    transl=refined.transl[i].double().numpy(),
                    joints=refined.joints[i].double().numpy(),
                    part_confidence=part_conf[i].astype(np.float32),
                    part_completed=completed[i].astype(bool),
                    refine_ms=ms,
                    format_name=fmt.name,
                    betas=None if refined.betas is None else refined.betas[i].double().numpy(),
                    points=np.asarray(p.person.points, np.float64),
                    confidences=np.asarray(p.person.confidences, np.float64),
                    refine_steps=used,
                ))
        failed = int((~healthy).sum())
        if failed:
            self.stats.fail(failed)
        return out

    def _learn_scenes(self, chunk: list[_Pending], joints: torch.Tensor, feet: np.ndarray) -> None:
        """Answers with seen feet teach their frame's up direction and floor, where the settings do not give them."""
        s = self.settings
        for frame_id in {p.frame.frame_id for p in chunk}:
            told_up = s.up_of(frame_id)
            learn_up = s.learn_up and not told_up.any()
            if not learn_up and not (s.learn_floor and told_up.any() and math.isnan(s.floor_of(frame_id))):
                continue
            rows = torch.tensor([p.frame.frame_id == frame_id and bool(feet[i]) for i, p in enumerate(chunk)])
            if not rows.any():
                continue
            up = None if learn_up else torch.from_numpy(told_up / np.linalg.norm(told_up))
            with self._lock:
                scene = self._scenes.pop(frame_id, None) or SceneEstimate()
                self._scenes[frame_id] = scene  # the most recent last
                while len(self._scenes) > LEARNT_SCENES:  # a stream of made-up frame ids cannot fill memory
                    self._scenes.popitem(last=False)
                scene.add(joints[rows], torch.ones(int(rows.sum()), dtype=torch.bool), up)

    def _healthy(self, refined, chunk: list[_Pending]) -> np.ndarray:
        """(B,) bool: the body is finite and every joint lies within `max_keypoint_spread_m` of the person's median
        confident keypoint (what the input checks allow a keypoint)."""
        values = [refined.pose, refined.transl, refined.joints] + ([] if refined.betas is None else [refined.betas])
        finite = np.stack([torch.isfinite(v.reshape(len(chunk), -1)).all(1).numpy() for v in values]).all(0)
        ok = np.zeros(len(chunk), dtype=bool)
        joints = refined.joints.double().numpy()
        for i, p in enumerate(chunk):
            if not finite[i]:
                continue
            center = _median(p.person.points[p.person.confidences > CONFIDENT])  # checked finite on the way in
            ok[i] = np.linalg.norm(joints[i] - center, axis=-1).max() <= self.settings.max_keypoint_spread_m
        return ok

    def _restart(self, chunk: list[_Pending]) -> None:
        with self._lock:
            for p in chunk:
                track = self._tracks.get(p.track_key) if p.track_key is not None else None
                if track is not None:
                    track.state = None

    @staticmethod
    def _failed(p: _Pending, fmt: KeypointFormat, ms: float) -> PersonResult:
        """The answer for a person the solver could not refine: flagged, no joints, rest pose, zero confidence."""
        return PersonResult(p.person.person_id, np.zeros((NUM_JOINTS, 3)), np.zeros(3), np.zeros((0, 3)),
                            np.zeros(4, np.float32), np.zeros(4, bool), ms, fmt.name, failed=True,
                            points=np.asarray(p.person.points, np.float64),
                            confidences=np.asarray(p.person.confidences, np.float64))


# ----------------------------------------------------------------------------------------------- frames


def quat_to_matrix(q) -> np.ndarray:
    """[qx, qy, qz, qw] (ROS order, also roma's) -> (3, 3) rotation matrix, normalised first."""
    import roma

    q = torch.as_tensor(np.asarray(q, dtype=np.float64))
    return roma.unitquat_to_rotmat(q / q.norm().clamp(min=1e-12)).numpy()


def transform_frame(frame: InputFrame, rot: np.ndarray, trans: np.ndarray, frame_id: str) -> InputFrame:
    """The message's people in another frame, `frame_id` (p' = rot p + trans); a missing keypoint stays missing
    (its confidence is what says so)."""
    people = [replace(p, points=np.asarray(p.points, np.float64) @ rot.T + trans) for p in frame.people]
    return replace(frame, frame_id=frame_id, people=people, origin=(frame.frame_id, rot, trans))


def transform_result(res: PersonResult, rot: np.ndarray, trans: np.ndarray) -> PersonResult:
    """The same body expressed in another frame (p' = rot p + trans): global orientation, translation, joints."""
    import roma

    rest_root = smplx_neutral().rest_joints[0] if res.betas is None else rest_joints(torch.as_tensor(res.betas))[0].numpy()
    g = roma.rotvec_to_rotmat(torch.as_tensor(res.pose[0]))
    pose = res.pose.copy()
    pose[0] = roma.rotmat_to_rotvec(torch.as_tensor(rot) @ g).numpy()
    transl = rot @ (rest_root + res.transl) + trans - rest_root
    joints = res.joints @ rot.T + trans
    pts = None if res.points is None else res.points @ rot.T + trans
    return replace(res, pose=pose, transl=transl, joints=joints, points=pts)
