"""The refine node's parameters as data: name, default, description, range, whether it may change at run time.

Pure Python (no rclpy): `refine_node.py` turns each entry into a declared ROS parameter with a
`ParameterDescriptor` (description, FloatingPointRange / IntegerRange, read_only). The defaults of solver
parameters come from `RefineSettings`, those of track and input-check parameters from `CoreSettings`;
`config/refine.yaml` and README's table are checked against this table (`dposer_ros.defaults`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

from ..solvers.refine import RefineSettings
from ..solvers.types import MAX_NOISE_M
from .core import CoreSettings

INPUT_TYPES = ("keypoints_array", "marker_array", "pointcloud2", "zed_objects", "yolo_detections")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None  # inclusive (from_value, to_value) for int / float parameters
    step: float = 0  # IntegerRange / FloatingPointRange step (0 = continuous)
    choices: tuple[str, ...] | None = None  # allowed values of a string parameter
    read_only: bool = False  # fixed once the node has started
    constraints: str = ""  # additional_constraints text of the descriptor


def build_parameters(solver: RefineSettings = RefineSettings()) -> tuple[ParamSpec, ...]:
    """The node's parameter table, solver defaults from `solver`, track and check defaults from `CoreSettings`."""
    node = CoreSettings()
    return (
        ParamSpec("input_type", "keypoints_array",
                  "Message type on the `keypoints` topic: keypoints_array (dposer_msgs/Keypoints3DArray), marker_array "
                  "(visualization_msgs/MarkerArray skeletons, Azure Kinect style: id = body_id * 100 + joint_id), "
                  "pointcloud2 (sensor_msgs/PointCloud2 with fields x, y, z, confidence [, person_id]), zed_objects "
                  "(zed_msgs/ObjectsStamped of the ZED wrapper's body tracking: BODY_18 / 34 / 38) or yolo_detections "
                  "(yolo_msgs/DetectionArray of yolo_ros with keypoints3d). The last two are loaded at run time.",
                  choices=INPUT_TYPES, read_only=True, constraints="one of " + ", ".join(INPUT_TYPES)),
        ParamSpec("input_format", "",
                  "Keypoint format name (see `dposer_ros.keypoints.known_formats()`, e.g. coco17, coco_wholebody133, "
                  "h36m17, mediapipe33, radar14, smplx55, azure_kinect32, openpose_body25, halpe26, zed_body18 / 34 / "
                  "38; smplx_55-style spellings accepted). Empty: "
                  "a Keypoints3D's own `format` field; azure_kinect32 for marker_array; the object's body format for "
                  "zed_objects; coco17 for yolo_detections; required for pointcloud2. A "
                  "Keypoints3D with a non-empty `format` always uses that.",
                  constraints="a known keypoint format name or empty"),
        ParamSpec("model_path", "",
                  "Prior checkpoint (.pt). Empty: the shipped models/dposer_cpu/prior.pt from the package share "
                  "directory (or the source checkout).", read_only=True),
        ParamSpec("motion_model_path", "",
                  "Motion model of hidden legs (.pt, `dposer motion`; see motion_legs). Empty: motion.pt beside "
                  "the prior, if there is one (none: the prior alone, logged).", read_only=True),
        ParamSpec("backend", "auto",
                  "Inference backend of the prior (dposer_ros.backends.select_engine): auto = tensorrt (CUDA GPU), "
                  "else onnxruntime (ONNX file beside the prior, or exported once into models/engines/), else torch; "
                  "onnxruntime = onnxruntime, else torch; torch. Fallbacks are logged.",
                  choices=BACKENDS, read_only=True, constraints="one of " + ", ".join(BACKENDS)),
        ParamSpec("compiled_step", True,
                  "Run the solver's Gauss-Newton step compiled ahead of time (torch.export + AOTInductor; "
                  "`dposer compile`): a frame 0.6-0.9x as long. A package missing from the cache is compiled in a "
                  "background process (tens of seconds a keypoint format), eager steps meanwhile.", read_only=True),
        ParamSpec("frame_graph", False,
                  "Run a warm frame's prior steps (the score network, the pulls and the Gauss-Newton steps) as one "
                  "ONNX graph (solvers/warm_frame.py) in ONNX Runtime: on a CUDA GPU through its TensorRT (backend "
                  "tensorrt or auto) or CUDA execution provider, else on the CPU, where it is slower than the compiled "
                  "step (bench/RESULTS.md). Made at start for input_format and the start's settings (exported once "
                  "into models/engines; minutes the first time on a small CPU); other settings take eager steps.",
                  read_only=True),
        ParamSpec("int8", False,
                  "ONNX Runtime on a CPU runs the prior's network with int8 weights (quantized once, cached beside "
                  "the ONNX file): 2-3x faster a call, validation errors within 1.1 % (bench/RESULTS.md). TensorRT and "
                  "torch ignore it.", read_only=True),
        ParamSpec("steps", solver.steps, "Prior evaluations (refinement steps) per frame.", range=(1, 8), step=1),
        ParamSpec("t_max", solver.t_max, "Diffusion time of the first refinement step (truncated schedule).",
                  range=(0.001, 1.0)),
        ParamSpec("t_min", solver.t_min, "Diffusion time of the last refinement step (<= t_max).", range=(0.001, 1.0)),
        ParamSpec("prior_weight", solver.prior_weight,
                  "Strength of the diffusion prior's pull on the body joints (multiplies DPoser's w(t) / sigma^2).",
                  range=(0.0, 100.0)),
        ParamSpec("hand_prior_weight", solver.hand_prior_weight,
                  "Strength of the diffusion prior's pull on the finger joints.", range=(0.0, 100.0)),
        ParamSpec("sigma_cm", solver.sigma_cm,
                  "Robust (Geman-McClure) scale of keypoint residuals [cm]: about the input's noise; larger for radar.",
                  range=(0.1, 100.0)),
        ParamSpec("temporal_weight", solver.temporal_weight,
                  "Pull of every joint towards its previous-frame rotation (per rad^2).", range=(0.0, 1.0e4)),
        ParamSpec("hold_weight", solver.hold_weight,
                  "Extra pull towards the previous frame on a joint no keypoint sees (per rad^2), for short "
                  "occlusions.", range=(0.0, 1.0e4)),
        ParamSpec("hold_decay", solver.hold_decay,
                  "Per 1/30 s a joint or keypoint stays hidden (the time between a person's messages, from their "
                  "stamps), its hold is multiplied by this: a long occlusion is left to the prior.",
                  range=(0.0, 1.0)),
        ParamSpec("weak_hold_weight", solver.weak_hold_weight,
                  "Pull towards the previous frame (per rad^2) on the directions of a seen body joint's rotation that "
                  "move no confident keypoint (a hip's twist while the knee is seen and the ankle not); 0: off.",
                  range=(0.0, 1.0e4)),
        ParamSpec("keypoint_hold_weight", solver.keypoint_hold_weight,
                  "A hidden keypoint is held where it was last seen: an observation of this confidence, fading with "
                  "hold_decay (a foot stands still while the joints above it turn); 0: off. Positions are "
                  "remembered in the frame the node tracks in: on a moving robot set fixed_frame.",
                  range=(0.0, 10.0)),
        ParamSpec("hand_keypoint_hold_weight", solver.hand_keypoint_hold_weight,
                  "The same for the keypoints of the hands.", range=(0.0, 10.0)),
        ParamSpec("keypoint_noise_cm", node.keypoint_noise_cm,
                  "The keypoint noise of the sensor (cm, standard deviation per axis at detector confidence 1; a "
                  "keypoint of confidence c counts as noise^2 / c): each track's keypoints then go through a "
                  "constant-velocity Kalman filter, the solver fits the filtered places and holds a hidden keypoint "
                  "where its velocity carried it. NaN: unknown, no filter. About 2 for a camera pose lifter, 5-10 "
                  "for radar.", constraints="a non-negative number of cm, or NaN: unknown"),
        ParamSpec("keypoint_motion_psd", solver.keypoint_motion_psd,
                  "How fast a keypoint may change its velocity, for that filter: the spectral density of its "
                  "white-noise acceleration [m^2/s^3]. Larger follows fast motion sooner and smooths less.",
                  range=(0.01, 1.0e3)),
        ParamSpec("hidden_prior_weight", solver.hidden_prior_weight,
                  "The prior's pull on a joint no keypoint sees is this many times stronger (it has nothing else).",
                  range=(0.0, 1.0e3)),
        ParamSpec("pelvis_tilt_weight", solver.pelvis_tilt_weight,
                  "While no keypoint below the hips is seen and up_vector is known, pull of the pelvis's tilt "
                  "towards the training data's mean (per rad^2; 0: off), for people who stand or walk: their hip "
                  "keypoints barely say how the pelvis is tilted, and hidden legs come out flexed under it.",
                  range=(0.0, 1.0e4)),
        ParamSpec("pelvis_tilt_min_height", solver.pelvis_tilt_min_height,
                  "The pelvis-tilt pull acts only while the pelvis is at least this share of the person's standing "
                  "pelvis height above the floor (floor_height): someone sitting, kneeling or lying is not tilted as "
                  "a standing person. With the floor unknown there is no pull. 0: no height gate (the pull then "
                  "harms people on the floor).", range=(0.0, 2.0)),
        ParamSpec("floor_contact_weight", solver.floor_contact_weight,
                  "A person standing upright whose legs no keypoint sees stands on the floor (floor_height or "
                  "learn_floor): the body-shape calibration gives the legs the length that puts the lower foot on "
                  "it (0: off; the legs then get the length the upper body implies, 5-15 cm off for many people).",
                  range=(0.0, 100.0)),
        ParamSpec("motion_legs", solver.motion_legs,
                  "Hidden legs of a moving person (motion_min_speed) get their target from the motion model "
                  "(motion_model_path): the legs' rotations regressed from the track's last second of answers, in "
                  "place of the single-frame prior's guess. Off: the prior alone."),
        ParamSpec("motion_min_speed", solver.motion_min_speed,
                  "... for a person whose root moves at least this fast (m/s, horizontally, over the last half "
                  "second): a standing person keeps the prior's legs.", range=(0.0, 10.0)),
        ParamSpec("motion_min_vertical_speed", solver.motion_min_vertical_speed,
                  "... or whose root moves up or down at least this fast (m/s: squatting, sitting down, standing "
                  "up).", range=(0.0, 1.0e9)),
        ParamSpec("calibrate_shape", solver.calibrate_shape,
                  "Estimate each track's body shape (10 SMPL-X betas, published in SmplxPose.betas) from its keypoints "
                  "in its first second, then hold it. Off: everyone is the mean SMPL-X body."),
        ParamSpec("calibrate_offsets", solver.calibrate_offsets,
                  "Calibrate each track's keypoint offsets from their SMPL-X anchors (a detector's own conventions: "
                  "head, hip, shoulder placement); the largest is reported in /diagnostics (keypoint_bias_*)."),
        ParamSpec("person_timeout", node.person_timeout,
                  "Seconds without input after which a person's track (warm start, stamp order) is dropped.",
                  range=(0.05, 60.0)),
        ParamSpec("max_batch", node.max_batch, "Most people refined in one batched solver call.", range=(1, 128),
                  step=1),
        ParamSpec("fixed_frame", "",
                  "Frame the node tracks people in, fixed in the world (odom, map). Empty: each message's own frame. "
                  "A camera that moves with the robot moves its frame, and with it what a track remembers (hidden "
                  "keypoints' last seen places, the hold of hidden joints, the warm start): turning at 30 deg/s, "
                  "hidden keypoints come out about 1.3x worse (bench/RESULTS.md). Set, each message's keypoints are "
                  "transformed into it at the message's stamp (tf2 when tf2_ros is installed, else "
                  "`fixed_transform`); up_vector and floor_height are then this frame's, and the outputs are in it "
                  "(or in output_frame).", read_only=True),
        ParamSpec("fixed_transform", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                  "Static transform input frame -> fixed_frame as [x, y, z, qx, qy, qz, qw] (metres, unit "
                  "quaternion), used when fixed_frame is set and tf2_ros is not available: a camera that does not "
                  "move, e.g. its optical frame into a frame whose up and floor are known.",
                  read_only=True, constraints="7 numbers"),
        ParamSpec("output_frame", "",
                  "Frame of the outputs. Empty: keep the input's frame_id (or fixed_frame). Otherwise the "
                  "input (or fixed_frame) -> output transform is looked up with tf2 when tf2_ros is installed, "
                  "else `output_transform` is used.",),
        ParamSpec("tf_timeout", 0.05,
                  "Longest wait [s] for a transform (into fixed_frame, or to output_frame) at a message's stamp; a "
                  "message or answer whose transform is not there is dropped and counted (error.transform), never "
                  "relabelled.", range=(0.0, 5.0)),
        ParamSpec("output_transform", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                  "Static transform input frame (or fixed_frame) -> output_frame as [x, y, z, qx, qy, qz, qw] "
                  "(metres, unit quaternion), used when output_frame is set and tf2_ros is not available.",
                  constraints="7 numbers"),
        ParamSpec("up_vector", list(node.up_vector),
                  "The up direction (against gravity) of the input frames (of fixed_frame when set), told to the "
                  "prior so that it can tell standing from sitting when the legs are hidden. REP 103 body and world "
                  "frames: [0, 0, 1]. [0, 0, 0]: unknown (the prior is not told). Frames named *_optical_frame "
                  "(camera optical frames, z forward) count as unknown.", constraints="3 finite numbers"),
        ParamSpec("floor_height", node.floor_height,
                  "Height of the floor along up_vector in the input frames (in fixed_frame when set; metres; a REP "
                  "103 base_footprint, odom or map frame: 0). NaN: unknown. The pelvis-tilt pull needs it to tell a "
                  "standing person from one sitting, kneeling or lying on the floor.",
                  constraints="a finite height, or NaN: unknown"),
        ParamSpec("learn_floor", node.learn_floor,
                  "Where floor_height is NaN and the up direction known: learn each input frame's floor from the "
                  "answered people whose ankles or feet were seen (a low quantile of the lower foot joint, less its "
                  "height above the sole), given once 30 such answers were seen and reported in /diagnostics "
                  "(floor_learnt_m.<frame>). Off: an unknown floor stays unknown."),
        ParamSpec("learn_up", node.learn_up,
                  "Where the up direction is unknown (a camera optical frame, up_vector [0, 0, 0]): learn each input "
                  "frame's up direction as the normal of the plane the seen feet of answered people stand on, once "
                  "they have covered an area, and report it in /diagnostics (up_learnt.<frame>); with learn_floor, "
                  "the floor along it too. Off: an unknown up direction stays unknown."),
        ParamSpec("hri_output", True,
                  "Publish REP 155 bodies: /humans/bodies/tracked, TF frames body_<id> and <joint>_<id> on /tf, "
                  "/humans/bodies/<id>/joint_states and the body's URDF on /humans/bodies/<id>/urdf.",
                  read_only=True),
        ParamSpec("hri_rate_hz", 30.0,
                  "Most TF / joint-state updates per body and second of the REP 155 output (0: every answer); each "
                  "body's 56 frames cost about 1 ms to publish.", range=(0.0, 1000.0), read_only=True),
        ParamSpec("publish_markers", True, "Publish the refined skeletons on `skeleton_markers` (MarkerArray)."),
        ParamSpec("publish_mesh", False, "Publish the mannequin body mesh on `mesh_markers` (TRIANGLE_LIST, heavy)."),
        ParamSpec("mesh_stride", 4, "Draw every n-th mesh triangle (1 = full mesh, ~48k triangles).", range=(1, 64),
                  step=1),
        ParamSpec("marker_lifetime", 0.5, "Lifetime of published markers [s] (0 = forever).", range=(0.0, 60.0)),
        ParamSpec("publish_overlay", False,
                  "Subscribe to `image` + `camera_info` and publish `overlay`: the refined joints projected into the "
                  "image (the joints must be in the camera's optical frame)."),
        ParamSpec("diagnostics_period", 1.0, "Period of the /diagnostics status [s].", range=(0.1, 60.0)),
        ParamSpec("max_coordinate_m", node.max_coordinate_m,
                  "Reject a person whose median |coordinate| exceeds this [m] (millimetres sent as metres).",
                  range=(1.0, 1.0e6)),
        ParamSpec("max_bone_ratio", node.max_bone_ratio,
                  "Reject a person whose median bone length exceeds this multiple of the format's rest lengths.",
                  range=(1.5, 1.0e6)),
        ParamSpec("max_keypoint_spread_m", node.max_keypoint_spread_m,
                  "A confident keypoint farther than this from the person's median keypoint is an outlier: treated as "
                  "missing and counted (outlier_points in /diagnostics). Answers with a joint farther than this from "
                  "it are published as failed and the track restarts.", range=(0.5, 100.0)),
        ParamSpec("max_people", node.max_people,
                  "Most people refined from one message; the rest are dropped and counted as malformed "
                  "(too_many_people).", range=(1, 10000), step=1),
        ParamSpec("max_points", node.max_points,
                  "Most keypoints per person; a person with more is dropped before conversion and counted "
                  "(too_many_points).", range=(1, 100000), step=1),
        ParamSpec("latency_budget_ms", node.latency_budget_ms,
                  "Time from a message's arrival to its answer that the node aims for [ms]: under load it uses fewer "
                  "prior steps per person (down to 1; SmplxPose.refine_steps, /diagnostics degraded_fraction), "
                  "and no more than fit between two frames of a person, so that a fast stream is answered frame by "
                  "frame instead of dropped. 0: always `steps`.", range=(0.0, 1.0e4)),
        ParamSpec("flood_replaced", node.flood_replaced,
                  "A person's pending frame replaced this many times before it was refined, or this many batches "
                  "(max_batch) of people pending, is a flood (input far faster than refinement): the input callback "
                  "then waits, without Python's interpreter lock, until "
                  "the worker takes what is pending (at most 0.1 s; /diagnostics intake_waits), and the middleware "
                  "keeps the newest messages. 0: never wait (a flood can starve the refinement).", range=(0, 1000),
                  step=1),
        ParamSpec("log_throttle", 5.0, "Seconds between repeated warnings of the same kind (malformed input).",
                  range=(0.0, 3600.0)),
        ParamSpec("solver_process", False,
                  "Refine in a child process (dposer_ros.backends.solver_process), so that the solver never waits "
                  "for Python's interpreter lock while the executor handles messages. Under heavy load (10 "
                  "whole-body people at 60 Hz) it answers about a third more person-frames, sooner; for a few "
                  "people it adds a few ms of latency and ~300 MB of memory (bench/RESULTS.md). false: refine in "
                  "the node's worker thread.", read_only=True),
        ParamSpec("threads", 1,
                  "Torch intra-op threads for the solver (0 = torch's default). The solver's tensors are small: one "
                  "thread is fastest on a loaded CPU (measured 13 ms vs 570 ms per frame with 2 threads on a busy "
                  "2-core machine).", range=(0, 64), step=1, read_only=True),
    )


PARAMETERS: tuple[ParamSpec, ...] = build_parameters()
BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMETERS}


def defaults() -> dict[str, Any]:
    """{name: default} of every parameter."""
    return {p.name: p.default for p in PARAMETERS}


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """None if `value` is acceptable for `spec`, else the reason."""
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if spec.range is not None and not (spec.range[0] <= value <= spec.range[1]):
        return f"{spec.name} must lie in [{spec.range[0]}, {spec.range[1]}], got {value!r}"
    if spec.name == "keypoint_noise_cm" and not (math.isnan(value) or 0 <= value <= 100 * MAX_NOISE_M):
        return f"keypoint_noise_cm must be a non-negative noise in cm, at most {100 * MAX_NOISE_M:g} (NaN: unknown), got {value!r}"
    if spec.name == "floor_height" and math.isinf(value):
        return f"floor_height must be a finite height in metres (NaN: unknown), got {value!r}"
    if spec.name == "up_vector" and (len(value) != 3 or not all(math.isfinite(v) for v in value)):
        return f"up_vector needs 3 finite numbers (the input frame's up direction; [0, 0, 0]: unknown), got {list(value)}"
    if spec.name in ("output_transform", "fixed_transform"):
        if len(value) != 7:
            return f"{spec.name} needs 7 numbers [x, y, z, qx, qy, qz, qw], got {len(value)}"
        if not all(math.isfinite(v) for v in value) or math.hypot(*value[3:]) < 1e-6:
            return f"{spec.name} needs finite numbers and a non-zero quaternion, got {list(value)}"
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "double array" if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) else "array"
    return type(value).__name__


def check_command_line(args: list[str]) -> list[str]:
    """Problems with `-p name:=value` overrides of the node's parameters on a command line: a value of the wrong type
    (`steps:=abc`, `steps:=2.5`), which a parameters file naming the node would otherwise silently replace."""
    problems = []
    items = list(args)
    for i, arg in enumerate(items[:-1]):
        if arg not in ("-p", "--param") or ":=" not in items[i + 1]:
            continue
        name, text = items[i + 1].split(":=", 1)
        spec = BY_NAME.get(name.split(".")[-1].split(":")[-1])
        if spec is None:
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        want, got = _kind(spec.default), _kind(value)
        if want == "double" and got == "integer":
            value, got = float(value), "double"
        if want != got:
            problems.append(f"parameter {name} must be {want}, got {text!r} ({got})")
            continue
        problem = check_value(spec, value)
        if problem:
            problems.append(problem)
    return problems
