"""The refine node's parameters as data: name, default, description, range, whether it may change at run time.

Pure Python (no rclpy): `refine_node.py` turns each entry into a declared ROS parameter with a
`ParameterDescriptor` (description, FloatingPointRange / IntegerRange, read_only); `config/refine.yaml`
holds the same defaults, and the launch file and tests check their names against this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INPUT_TYPES = ("keypoints_array", "marker_array", "pointcloud2")
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


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("input_type", "keypoints_array",
              "Message type on the `keypoints` topic: keypoints_array (dposer_msgs/Keypoints3DArray), marker_array "
              "(visualization_msgs/MarkerArray skeletons, Azure Kinect style: id = body_id * 100 + joint_id) or "
              "pointcloud2 (sensor_msgs/PointCloud2 with fields x, y, z, confidence [, person_id]).",
              choices=INPUT_TYPES, read_only=True, constraints="one of " + ", ".join(INPUT_TYPES)),
    ParamSpec("input_format", "",
              "Keypoint format name (see `dposer_ros.keypoints.known_formats()`, e.g. coco17, coco_wholebody133, "
              "h36m17, radar14, azure_kinect32). Empty: a Keypoints3D's own `format` field; azure_kinect32 for "
              "marker_array; required for pointcloud2. A Keypoints3D with a non-empty `format` always uses that.",
              constraints="a known keypoint format name or empty"),
    ParamSpec("model_path", "",
              "Prior checkpoint (.pt). Empty: the shipped models/dposer_cpu/prior.pt from the package share "
              "directory (or the source checkout).", read_only=True),
    ParamSpec("backend", "auto",
              "Inference backend of the prior (dposer_ros.backends.select_engine): auto = tensorrt (CUDA GPU), else "
              "onnxruntime, else torch; onnxruntime = onnxruntime, else torch; torch. Fallbacks are logged.",
              choices=BACKENDS, read_only=True, constraints="one of " + ", ".join(BACKENDS)),
    ParamSpec("steps", 4, "Prior evaluations (refinement steps) per frame.", range=(1, 8), step=1),
    ParamSpec("t_max", 0.35, "Diffusion time of the first refinement step (truncated schedule).", range=(0.001, 1.0)),
    ParamSpec("t_min", 0.3, "Diffusion time of the last refinement step (<= t_max).", range=(0.001, 1.0)),
    ParamSpec("prior_weight", 2.5,
              "Strength of the diffusion prior's pull on the body joints (multiplies DPoser's w(t) / sigma^2).",
              range=(0.0, 100.0)),
    ParamSpec("hand_prior_weight", 0.1, "Strength of the diffusion prior's pull on the finger joints.",
              range=(0.0, 100.0)),
    ParamSpec("sigma_cm", 10.0,
              "Robust (Geman-McClure) scale of keypoint residuals [cm]: about the input's noise; larger for radar.",
              range=(0.1, 100.0)),
    ParamSpec("temporal_weight", 2.0, "Pull of every joint towards its previous-frame rotation (per rad^2).",
              range=(0.0, 1.0e4)),
    ParamSpec("hold_weight", 50.0,
              "Extra pull towards the previous frame on a joint no keypoint sees (per rad^2), for short occlusions.",
              range=(0.0, 1.0e4)),
    ParamSpec("hold_decay", 0.7,
              "Per hidden frame, hold_weight is multiplied by this: a long occlusion is left to the prior.",
              range=(0.0, 1.0)),
    ParamSpec("hidden_prior_weight", 10.0,
              "The prior's pull on a joint no keypoint sees is this many times stronger (it has nothing else).",
              range=(0.0, 1.0e3)),
    ParamSpec("person_timeout", 1.0,
              "Seconds without input after which a person's track (warm start, stamp order) is dropped.",
              range=(0.05, 60.0)),
    ParamSpec("max_batch", 16, "Most people refined in one batched solver call.", range=(1, 128), step=1),
    ParamSpec("output_frame", "",
              "Frame of the outputs. Empty: keep the input's frame_id. Otherwise the input->output transform is "
              "looked up with tf2 when tf2_ros is installed, else `output_transform` is used.",),
    ParamSpec("output_transform", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
              "Static transform input frame -> output_frame as [x, y, z, qx, qy, qz, qw] (metres, unit "
              "quaternion), used when output_frame is set and tf2_ros is not available.",
              constraints="7 numbers"),
    ParamSpec("publish_markers", True, "Publish the refined skeletons on `skeleton_markers` (MarkerArray)."),
    ParamSpec("publish_mesh", False, "Publish the mannequin body mesh on `mesh_markers` (TRIANGLE_LIST, heavy)."),
    ParamSpec("mesh_stride", 4, "Draw every n-th mesh triangle (1 = full mesh, ~48k triangles).", range=(1, 64), step=1),
    ParamSpec("marker_lifetime", 0.5, "Lifetime of published markers [s] (0 = forever).", range=(0.0, 60.0)),
    ParamSpec("publish_overlay", False,
              "Subscribe to `image` + `camera_info` and publish `overlay`: the refined joints projected into the "
              "image (the joints must be in the camera's optical frame)."),
    ParamSpec("diagnostics_period", 1.0, "Period of the /diagnostics status [s].", range=(0.1, 60.0)),
    ParamSpec("max_coordinate_m", 20.0,
              "Reject a person whose median |coordinate| exceeds this [m] (millimetres sent as metres).",
              range=(1.0, 1.0e6)),
    ParamSpec("max_bone_ratio", 5.0,
              "Reject a person whose median bone length exceeds this multiple of the format's rest lengths.",
              range=(1.5, 1.0e6)),
    ParamSpec("log_throttle", 5.0, "Seconds between repeated warnings of the same kind (malformed input).",
              range=(0.0, 3600.0)),
    ParamSpec("threads", 1,
              "Torch intra-op threads for the solver (0 = torch's default). The solver's tensors are small: one "
              "thread is fastest on a loaded CPU (measured 13 ms vs 570 ms per frame with 2 threads on a busy "
              "2-core machine).", range=(0, 64), step=1, read_only=True),
)

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
    if spec.name == "output_transform" and len(value) != 7:
        return f"output_transform needs 7 numbers [x, y, z, qx, qy, qz, qw], got {len(value)}"
    return None
