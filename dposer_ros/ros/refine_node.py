"""`refine_node`: 3D keypoints in, refined whole-body SMPL-X poses out (dposer_msgs/SmplxPoseArray).

Topics (relative names: remap or push into a namespace as usual)
  in   keypoints          dposer_msgs/Keypoints3DArray | visualization_msgs/MarkerArray | sensor_msgs/PointCloud2
                          (parameter input_type), sensor-data QoS (best effort, depth 5)
  in   image, camera_info sensor_msgs/Image + CameraInfo (only with publish_overlay)
  out  smplx_poses        dposer_msgs/SmplxPoseArray, the input's header (stamp, frame_id; fixed_frame, output_frame)
  out  skeleton_markers   visualization_msgs/MarkerArray: per person a LINE_LIST (bones) + SPHERE_LIST (joints)
                          + the input keypoints (ns `input`)
  out  mesh_markers       visualization_msgs/MarkerArray: the mannequin mesh (TRIANGLE_LIST), publish_mesh only
  out  overlay            sensor_msgs/Image: joints projected into `image` (publish_overlay only)
  out  /diagnostics       diagnostic_msgs/DiagnosticArray every diagnostics_period s
  out  REP 155 bodies     /humans/bodies/tracked, /tf, /humans/bodies/<id>/joint_states and /urdf (hri_output; hri.py)

Threading: subscription callbacks only convert the message and hand it to `RefineCore.submit` (checks, latest
wins per person); a worker thread refines one bounded batch per cycle and publishes it. The executor is never
blocked by the solver.

Two nodes: `RefineNode` (`refine_node`) is configured and active from its start; `RefineLifecycleNode`
(`refine_lifecycle_node`, launch option lifecycle:=true) is a managed node that loads the prior on configure and
takes input only while active.

Parameters: see `dposer_ros/ros/params.py` (defaults in config/refine.yaml).
Run: `refine_node --ros-args --params-file config/refine.yaml -p input_format:=coco17`
(or `ros2 run dposer_ros refine_node ...`, `ros2 launch dposer_ros refine.launch.py`).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from dposer_msgs.msg import Keypoints3DArray, SmplxPoseArray

from ..backends.base import BackendError
from ..backends.solver_process import SolverProcess, SolverProcessError
from . import adapters, cdr, convert
from .core import (
    CORE_FIELDS,
    SOLVER_FIELDS,
    CoreSettings,
    InputFrame,
    MalformedInput,
    RefineCore,
    quat_to_matrix,
    resolve_format,
    transform_frame,
    transform_result,
)
from .params import BY_NAME, PARAMETERS, check_value

MODEL_RELATIVE = Path("models") / "dposer_cpu" / "prior.pt"
MESH_MAX_RATE_HZ = 5.0
INTAKE_WAIT_S = 0.1  # under a flood the executor waits for the worker this long at most (timers keep running)
NODE_NAME = "refine_node"
# /diagnostics warns when over the last window's answers (at least this many) the median cosine between the torso
# (pelvis -> neck) and up_vector is below this (about 73 degrees): a wrong up_vector for the input frame
UP_CHECK_PEOPLE = 30
UP_CHECK_COSINE = 0.3
# the same for floor_height: WARN when the seen feet of this many answers stand, in the median, this far (metres) off
# it (the ball of the foot sits 2-5 cm above the sole; a wrong floor also switches the pelvis-tilt pull wrongly)
FLOOR_CHECK_PEOPLE = 30
FLOOR_CHECK_M = 0.25


def default_model_path() -> Path:
    """The shipped prior: the package share directory (ament index, then sys.prefix), else the source checkout."""
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory("dposer_ros")) / MODEL_RELATIVE)
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    candidates.append(Path(sys.prefix) / "share" / "dposer_ros" / MODEL_RELATIVE)
    candidates.append(Path(__file__).resolve().parents[2] / MODEL_RELATIVE)
    for c in candidates:
        if c.is_file():
            return c
    return candidates[-1]


def load_engine(model_path: Path, backend: str, threads: int = 0, int8: bool = False):
    """The prior the solver evaluates, and the backend's name. THE single call site of the inference backend.

    `dposer_ros.backends.select_engine`: auto/tensorrt -> TensorRT (CUDA GPU), else ONNX Runtime (the ONNX file
    beside the prior, or exported once into the engine folder), else torch; each fallback is logged by
    `dposer_ros.backends`. onnxruntime -> ONNX Runtime, else torch; torch -> torch. `int8`: ONNX Runtime on a CPU
    with int8 weights.
    """
    from ..backends import select_engine

    engine = select_engine(model_path, backend, threads=threads or None, int8=int8)
    return engine, getattr(engine, "name", type(engine).__name__)


def _forward_backend_log(logger) -> None:
    """Show the `dposer_ros.backends` and `dposer_ros.solvers` messages (chosen backend, fallbacks and why, the
    solver's compiled step) in the node's log."""

    class _ToRos(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:  # rclpy: one severity per call site
                logger.warning(record.getMessage())
            else:
                logger.info(record.getMessage())

    for name in ("dposer_ros.backends", "dposer_ros.solvers"):
        log = logging.getLogger(name)
        if not any(isinstance(h, _ToRos) for h in log.handlers):
            log.addHandler(_ToRos())
            log.setLevel(logging.INFO)


def _descriptor(spec) -> ParameterDescriptor:
    d = ParameterDescriptor(name=spec.name, description=spec.description, read_only=spec.read_only,
                            additional_constraints=spec.constraints)
    if spec.range is not None:
        if isinstance(spec.default, bool):
            pass
        elif isinstance(spec.default, int):
            d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]),
                                            step=int(spec.step))]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                         to_value=float(spec.range[1]), step=float(spec.step))]
    return d


class RefineNodeMixin:
    """What the plain and the lifecycle node share: parameters, then configure (load the prior, build the core,
    create the publishers), activate (subscribe, start the worker), deactivate (unsubscribe, stop the worker, forget
    tracks), clean up (release publishers and the prior). `RefineNode` runs configure and activate at once."""

    core: RefineCore | None

    def _declare(self) -> dict:
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        p = self.params()
        for spec in PARAMETERS:
            problem = check_value(spec, p[spec.name])
            if problem:
                raise ValueError(problem)
        self.input_type = p["input_type"]
        if self.input_type == "pointcloud2" and not p["input_format"]:
            raise ValueError("input_type pointcloud2 needs input_format (a PointCloud2 does not name its keypoint "
                             "format): add -p input_format:=<name>, e.g. coco17")
        self._core_settings(p)  # raises on a bad format or t_min > t_max
        self._input_class = self._input_type_class()  # raises when a run-time message package is missing
        self.core = None
        self._inputs: list = []
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        return p

    def _configure(self) -> None:
        p = self.params()
        if p["threads"] > 0:
            import torch

            torch.set_num_threads(p["threads"])
        self.model_path = Path(p["model_path"]) if p["model_path"] else default_model_path()
        self.motion_path = Path(p["motion_model_path"]) if p["motion_model_path"] else self.model_path.with_name("motion.pt")
        use_motion = bool(p["motion_model_path"]) or self.motion_path.is_file()
        where = "in a solver process" if p["solver_process"] else "in this process"
        self.get_logger().info(f"loading prior {self.model_path} (backend {p['backend']}) {where}")
        if p["solver_process"]:
            known = p["input_format"] or (adapters.AZURE_KINECT_FORMAT if self.input_type == "marker_array" else "")
            self.solver_process = SolverProcess(self.model_path, p["backend"], p["threads"],
                                                self.motion_path if use_motion else None, int8=p["int8"],
                                                compiled_step=p["compiled_step"], frame_graph=p["frame_graph"],
                                                prepare=((known, self._core_settings(p).refine_settings()),)
                                                if known else ())
            for level, text in self.solver_process.messages:
                (self.get_logger().warning if level >= logging.WARNING else self.get_logger().info)(text)
            self.backend, self.motion_loaded = self.solver_process.backend, self.solver_process.motion_loaded
            self.core = RefineCore(None, self._core_settings(p), solver=self.solver_process)
        else:
            self.solver_process = None
            _forward_backend_log(self.get_logger())
            prior, self.backend = load_engine(self.model_path, p["backend"], p["threads"], p["int8"])
            motion = None
            if use_motion:
                from ..prior.motion import LegMotion

                motion = LegMotion.load(self.motion_path)
            self.motion_loaded = motion is not None
            compiler = None
            if p["compiled_step"]:
                from ..solvers.compiled_step import BackgroundCompiler

                compiler = BackgroundCompiler()
            frames = None
            if p["frame_graph"]:
                from ..prior.model import PosePrior
                from ..solvers.warm_frame import FrameGraphs, frame_device

                frames = FrameGraphs(PosePrior.load(self.model_path), frame_device(p["backend"]), max(p["threads"], 1))
            self.core = RefineCore(prior, self._core_settings(p), motion=motion, compiler=compiler, frames=frames)
        if self.motion_loaded:
            self.get_logger().info(f"loaded motion model {self.motion_path} (hidden legs of moving people)")
        else:
            self.get_logger().info(f"no motion model beside the prior ({self.motion_path}): hidden legs from the prior alone")
        if self.input_type == "marker_array" and not p["input_format"]:
            self.core.settings.input_format = adapters.AZURE_KINECT_FORMAT
        if (p["compiled_step"] or p["frame_graph"]) and self.core.settings.input_format and self.solver_process is None:
            # the compiled step loaded now (about 2 s), or its compilation started, and the warm frames' graph
            # loaded (exported first where needed): not at the first message
            from ..keypoints import get_format

            fmt, settings = get_format(self.core.settings.input_format), self.core.refine_settings()
            self.core.solver.refiner(fmt, settings)
            if p["frame_graph"]:
                self.core.solver.prepare_frame(fmt, settings)
        self._loggers: dict[str, object] = {}
        self._errors: dict[str, int] = {}
        self._last_diag = {"malformed_total": 0, "drops": 0, "failed": 0, "intake_waits": 0}
        self._latest: tuple[object, list, tuple[str, np.ndarray, np.ndarray] | None] | None = None
        self._latest_lock = threading.Lock()
        self._last_mesh = 0.0
        self._camera_info: CameraInfo | None = None
        self._tf_buffer = None
        self._tf_listener = None
        self._unplaced: deque[InputFrame] = deque()  # messages waiting for their fixed_frame transform (tf_timeout)
        reliable = QoSProfile(depth=10)
        self.pub_poses = self.create_publisher(SmplxPoseArray, "smplx_poses", reliable)
        self.pub_markers = self.create_publisher(MarkerArray, "skeleton_markers", reliable)
        self.pub_mesh = self.create_publisher(MarkerArray, "mesh_markers", reliable)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", reliable)
        self.pub_overlay = self.create_publisher(Image, "overlay", reliable) if p["publish_overlay"] else None
        if p["output_frame"] or p["fixed_frame"]:
            self._setup_tf()
        self._tf_timer = self.create_timer(0.01, self._place_unplaced) if p["fixed_frame"] else None
        self.hri = None
        if p["hri_output"]:
            try:
                from .hri import HriPublisher

                self.hri = HriPublisher(self, p["hri_rate_hz"])
            except ImportError as err:
                self.get_logger().warning(f"no REP 155 output: {err} (build ros_ws: scripts/bootstrap.sh)")
        self._last_prune = 0.0
        self._diag_timer = self.create_timer(p["diagnostics_period"], self._publish_diagnostics)

    def _input_type_class(self):
        fixed = {"keypoints_array": Keypoints3DArray, "marker_array": MarkerArray, "pointcloud2": PointCloud2}
        if self.input_type in fixed:
            return fixed[self.input_type]
        try:
            if self.input_type == "zed_objects":
                return adapters.message_type(adapters.ZED_MESSAGE_PACKAGES, "ObjectsStamped")
            return adapters.message_type(adapters.YOLO_MESSAGE_PACKAGES, "DetectionArray")
        except ImportError as err:
            raise ValueError(f"input_type {self.input_type}: {err} (source the workspace that has it)") from None

    def _activate(self) -> None:
        p = self.params()
        # inputs: sensor-data QoS (best effort); callbacks only store
        # a Keypoints3DArray is read from its bytes (cdr.py: ~40x faster than rclpy's per-point objects)
        self._inputs = [self.create_subscription(self._input_class, "keypoints", self._on_input, qos_profile_sensor_data,
                                                 raw=self.input_type == "keypoints_array")]
        if self.pub_overlay is not None:
            self._inputs += [self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data),
                             self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data)]
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="dposer_refine_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"refining {self.input_type} on {self.resolve_topic_name('keypoints')} "
            f"(format {self.core.settings.input_format or 'from messages'}, {p['steps']} steps, "
            f"t {p['t_max']}->{p['t_min']}) -> {self.resolve_topic_name('smplx_poses')}")

    def _deactivate(self) -> None:
        """Stop taking input and refining (after the batch in progress); pending people and tracks are dropped."""
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        if self._worker is not None:
            self._stop.set()
            if self.core is not None:
                self.core.wakeup.set()
            if self._worker.is_alive():
                self._worker.join(timeout=5.0)
            self._worker = None
        self._unplaced.clear()
        if self.core is not None:
            self.core.reset()

    def _cleanup(self) -> None:
        """Release what configure made: publishers, timer, the core and the prior."""
        if self.core is None:
            return
        self.destroy_timer(self._diag_timer)
        if self._tf_timer is not None:
            self.destroy_timer(self._tf_timer)
        if self._tf_listener is not None:
            self._tf_listener.unregister()
            self._tf_listener = self._tf_buffer = None
        self._unplaced.clear()
        if self.hri is not None:
            self.hri.close()
            self.hri = None
        for pub in (self.pub_poses, self.pub_markers, self.pub_mesh, self.pub_diag, self.pub_overlay):
            if pub is not None:
                self.destroy_publisher(pub)
        if self.solver_process is not None:
            self.solver_process.close()
            self.solver_process = None
        close = getattr(self.core.solver, "close", None)  # stops a compilation still running
        if close is not None:
            close()
        self.core = None


    # -- parameters ----------------------------------------------------------------------------------
    def params(self) -> dict:
        return {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}

    @staticmethod
    def _core_settings(p: dict) -> CoreSettings:
        if not p["t_min"] <= p["t_max"]:
            raise ValueError(f"t_min ({p['t_min']}) must not exceed t_max ({p['t_max']})")
        if p["input_format"]:
            resolve_format(p["input_format"])  # KeypointFormatError (a ValueError) names the known formats
        core = {f: p[f] for f in SOLVER_FIELDS + CORE_FIELDS}
        core["up_vector"] = tuple(float(v) for v in core["up_vector"])
        return CoreSettings(input_format=p["input_format"], **core)

    def _on_set_parameters(self, changed) -> SetParametersResult:
        p = self.params()
        for param in changed:
            spec = BY_NAME.get(param.name)
            if spec is None:
                continue
            problem = check_value(spec, param.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            p[param.name] = param.value
        try:
            settings = self._core_settings(p)
            if self.input_type == "marker_array" and not settings.input_format:
                settings.input_format = adapters.AZURE_KINECT_FORMAT
            if self.input_type == "pointcloud2" and not settings.input_format:
                raise ValueError("input_type pointcloud2 needs input_format")
            if self.core is not None:
                self.core.update_settings(settings)
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        if self.core is not None and any(param.name == "diagnostics_period" for param in changed):
            self._diag_timer.cancel()
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        return SetParametersResult(successful=True)

    # -- input ---------------------------------------------------------------------------------------
    def _malformed(self, err: MalformedInput) -> None:
        log = self._loggers.get(err.reason)
        if log is None:
            log = self._loggers[err.reason] = self.get_logger().get_child(err.reason)
        log.warning(f"dropped malformed input ({err.reason}): {err}",
                    throttle_duration_sec=float(self.get_parameter("log_throttle").value))

    def _on_input(self, msg) -> None:
        received = time.monotonic()
        s = self.core.settings
        try:
            adapters.check_size(msg, s.max_people, s.max_points)
            if isinstance(msg, bytes):  # a raw Keypoints3DArray
                try:
                    sec, nanosec, frame_id, people = cdr.keypoints_array(msg, s.max_points, s.max_people)
                    stamp = Time(sec=sec, nanosec=nanosec)
                    stamp_ns = adapters.stamp_ns(stamp)
                except cdr.NotPlainCdr:  # another encapsulation: rclpy reads it
                    msg = deserialize_message(msg, Keypoints3DArray)
                    stamp_ns, frame_id, stamp, people = adapters.from_keypoints_array(msg, s.max_points, s.max_people)
                except ValueError as err:
                    raise MalformedInput("bad_message", f"not a whole Keypoints3DArray: {err}") from None
            elif self.input_type == "keypoints_array":
                stamp_ns, frame_id, stamp, people = adapters.from_keypoints_array(msg, s.max_points, s.max_people)
            elif self.input_type == "marker_array":
                stamp_ns, frame_id, stamp, people = adapters.from_marker_array(msg, self.core.settings.input_format)
            elif self.input_type == "pointcloud2":
                stamp_ns, frame_id, stamp, people = adapters.from_pointcloud2(msg, self.core.settings.input_format)
            elif self.input_type == "zed_objects":
                stamp_ns, frame_id, stamp, people = adapters.from_zed_objects(msg)
            else:
                stamp_ns, frame_id, stamp, people = adapters.from_yolo_detections(msg, self.core.settings.input_format
                                                                                  or "coco17")
        except MalformedInput as err:
            self.core.stats.frame_in(0)
            self.core.stats.bad(err.reason)
            self._malformed(err)
            return
        except Exception as err:  # noqa: BLE001 - a broken message must never take the node down
            self.core.stats.frame_in(0)
            self.core.stats.bad("bad_message")
            self._malformed(MalformedInput("bad_message", f"{type(err).__name__}: {err}"))
            return
        frame = InputFrame(stamp_ns, frame_id, people, received, stamp)
        fixed = self.get_parameter("fixed_frame").value
        if fixed and frame_id != fixed:
            self._unplaced.append(frame)
            self._place_unplaced()
        else:
            self._submit(frame)

    def _submit(self, frame: InputFrame) -> None:
        if not frame.people:  # nobody in view: answer at once with an empty array
            self.core.stats.frame_in(0)
            hdr = convert.header(frame.stamp, self._out_frame(frame.frame_id))
            self.pub_poses.publish(SmplxPoseArray(header=hdr))
            return
        for err in self.core.submit(frame):
            self._malformed(err)
        self.core.yield_to_worker(INTAKE_WAIT_S)

    def _place_unplaced(self) -> None:
        """Take waiting messages into fixed_frame in arrival order, as their transforms arrive (tf2's message
        filter): the oldest first, and a message waits no longer than tf_timeout; one whose transform is not
        there by then is dropped and counted (error.transform). Lookups never block the executor."""
        fixed = self.get_parameter("fixed_frame").value
        wait = float(self.get_parameter("tf_timeout").value)
        while self._unplaced:
            frame = self._unplaced[0]
            try:
                rot, trans = self._lookup(fixed, frame.frame_id, frame.stamp_ns, "fixed_transform", wait=False)
            except Exception as err:  # noqa: BLE001 - tf lookups fail in many ways: not there yet, or never
                if time.monotonic() - frame.received <= wait:
                    return  # the younger ones wait behind it: answers never go back in time
                self._unplaced.popleft()
                self.core.stats.frame_in(len(frame.people))
                self.core.stats.drop(len(frame.people))
                self._error("transform", f"no transform from {frame.frame_id!r} to fixed_frame {fixed!r} within "
                                         f"tf_timeout: {err}")
                continue
            self._unplaced.popleft()
            self._submit(transform_frame(frame, rot, trans, fixed))

    # -- worker --------------------------------------------------------------------------------------
    def _work(self) -> None:
        """One bounded batch per cycle (`RefineCore.refine_pending`), its finished frames published at once; stops
        between batches when the node is deactivated or shuts down."""
        core = self.core
        while not self._stop.is_set():
            if self.hri is not None and time.monotonic() - self._last_prune > 1.0:
                self._last_prune = time.monotonic()
                self.hri.prune(core.tracked_ids())
            if not core.wakeup.wait(timeout=0.1):
                core.expire_tracks()
                continue
            try:
                outputs = core.refine_pending()
            except Exception as err:  # noqa: BLE001 - keep serving; count and log
                self._error("solver", f"refinement failed: {type(err).__name__}: {err}")
                continue
            for kind, text in core.stats.take_errors():
                self._error(kind, text)
            for out in outputs:
                if self._stop.is_set() or not self.context.ok():
                    return
                try:
                    self._publish(out)
                except Exception as err:  # noqa: BLE001
                    if self._stop.is_set() or not self.context.ok():
                        return  # shutting down: the publisher went away under us
                    self._error("publish", f"publishing failed: {type(err).__name__}: {err}")
            core.cycle_done()

    def _error(self, kind: str, text: str) -> None:
        self._errors[kind] = self._errors.get(kind, 0) + 1
        self.get_logger().error(text, throttle_duration_sec=float(self.get_parameter("log_throttle").value))

    def _out_frame(self, frame_id: str) -> str:
        out = self.get_parameter("output_frame").value
        return out or frame_id

    def _to_output_frame(self, out) -> list:
        target = self.get_parameter("output_frame").value
        people = out.people
        if not target or target == out.frame.frame_id:
            return people
        rot, trans = self._lookup(target, out.frame.frame_id, out.frame.stamp_ns, "output_transform")
        return [transform_result(r, rot, trans) for r in people]

    def _lookup(self, target: str, source: str, stamp_ns: int, static: str,
                wait: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(rot, trans) taking `source` coordinates into `target` at the stamp: tf2 where installed (with `wait`,
        waiting up to tf_timeout: only off the executor's thread), else the static transform parameter `static`."""
        if self._tf_buffer is None:
            t = np.asarray(self.get_parameter(static).value, dtype=np.float64)
            return quat_to_matrix(t[3:]), t[:3]
        from rclpy.duration import Duration
        from rclpy.time import Time

        timeout = Duration(seconds=float(self.get_parameter("tf_timeout").value) if wait else 0.0)
        tf = self._tf_buffer.lookup_transform(target, source, Time(nanoseconds=stamp_ns), timeout)
        tr, q = tf.transform.translation, tf.transform.rotation
        return quat_to_matrix([q.x, q.y, q.z, q.w]), np.array([tr.x, tr.y, tr.z])

    def _setup_tf(self) -> None:
        """tf2 when installed; else the static transforms, which must then say something (an identity would only
        relabel a frame)."""
        try:
            from tf2_ros import Buffer, TransformListener
        except ImportError:
            for frame, static in (("fixed_frame", "fixed_transform"), ("output_frame", "output_transform")):
                name = self.get_parameter(frame).value
                if name and list(self.get_parameter(static).value) == list(BY_NAME[static].default):
                    source = "input" if frame == "fixed_frame" or not self.get_parameter("fixed_frame").value \
                        else "fixed_frame"
                    raise ValueError(f"{frame} {name!r} cannot be resolved: tf2_ros is not installed and {static} is "
                                     f"the identity; set {static} to the {source} -> {frame} transform, or install "
                                     "tf2_ros") from None
            self.get_logger().info("tf2_ros not installed: the static fixed_transform / output_transform are used")
            return
        self._tf_buffer = Buffer()
        self._tf_listener = TransformListener(self._tf_buffer, self)

    def _publish(self, out) -> None:
        try:
            people = self._to_output_frame(out)
        except Exception as err:  # noqa: BLE001 - tf lookups fail in many ways
            self._error("transform", f"no transform to {self.get_parameter('output_frame').value!r}: {err}")
            return
        hdr = convert.header(out.frame.stamp, self._out_frame(out.frame.frame_id))
        self.pub_poses.publish(cdr.pose_array(people, hdr.stamp.sec, hdr.stamp.nanosec, hdr.frame_id))  # its bytes
        self.core.stats.published(len(people), out.latency_ms)
        if self.hri is not None:
            self.hri.publish(people, hdr, self.core.tracked_ids())
        lifetime = float(self.get_parameter("marker_lifetime").value)
        people = [r for r in people if not r.failed]  # a failed person has no body to draw
        if self.get_parameter("publish_markers").value and self.pub_markers.get_subscription_count():
            markers = convert.skeleton_markers(people, hdr, lifetime) + convert.input_markers(people, hdr, lifetime)
            self.pub_markers.publish(MarkerArray(markers=markers))
        now = time.monotonic()
        if (self.get_parameter("publish_mesh").value and self.pub_mesh.get_subscription_count()
                and now - self._last_mesh >= 1.0 / MESH_MAX_RATE_HZ):
            self._last_mesh = now
            stride = int(self.get_parameter("mesh_stride").value)
            self.pub_mesh.publish(MarkerArray(markers=convert.mesh_markers(people, hdr, lifetime, stride)))
        with self._latest_lock:  # for the overlay: the answers, and how to take them back into the camera's frame
            self._latest = (hdr, people, out.frame.origin if hdr.frame_id == out.frame.frame_id else None)

    # -- overlay -------------------------------------------------------------------------------------
    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_image(self, msg: Image) -> None:
        info = self._camera_info
        with self._latest_lock:
            latest = self._latest
        if info is None or self.pub_overlay is None:
            return
        try:
            img = convert.image_to_numpy(msg)
        except ValueError as err:
            self._malformed(MalformedInput("bad_message", f"overlay: {err}"))
            return
        if latest is not None:
            hdr, people, origin = latest
            back = None  # joints in fixed_frame go back into the frame their keypoints came in
            if origin is not None and origin[0] == msg.header.frame_id:
                back = origin[1:]
            if hdr.frame_id and msg.header.frame_id and hdr.frame_id != msg.header.frame_id and back is None:
                self.get_logger().warning(
                    f"overlay: joints are in {hdr.frame_id!r}, the image in {msg.header.frame_id!r}; publish "
                    "keypoints in the camera's optical frame to draw them",
                    throttle_duration_sec=float(self.get_parameter("log_throttle").value))
            else:
                bones = convert.smplx_bones()
                for res in people:
                    joints = res.joints if back is None else (res.joints - back[1]) @ back[0]  # p = rot^T (p' - t)
                    uv = convert.project(joints, np.asarray(info.k), np.asarray(info.d))
                    convert.draw_overlay(img, uv, bones)
        self.pub_overlay.publish(convert.numpy_to_image(img, msg.encoding, msg.header))

    # -- diagnostics ---------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        snap = self.core.stats.snapshot()
        snap["errors"] = {**snap["errors"], **self._errors}
        new_bad = snap["malformed_total"] - self._last_diag["malformed_total"]
        new_drops = snap["drops"] - self._last_diag["drops"]
        problems = []
        if new_bad:
            problems.append(f"{new_bad} malformed")
        if new_drops:
            problems.append(f"{new_drops} dropped (solver slower than input)")
        new_waits = snap["intake_waits"] - self._last_diag["intake_waits"]
        if new_waits:
            problems.append(f"input far faster than refinement: intake waited for the worker {new_waits} times")
        new_failed = snap["failed"] - self._last_diag["failed"]
        if new_failed:
            problems.append(f"{new_failed} failed answers (tracks restarted)")
        if snap["torso_up_count"] >= UP_CHECK_PEOPLE and snap["torso_up_median"] < UP_CHECK_COSINE:
            problems.append(f"torsos lie across up_vector (median cosine {snap['torso_up_median']:.2f} over "
                            f"{snap['torso_up_count']} answers): is up_vector the input frame's up?")
        if snap["floor_gap_count"] >= FLOOR_CHECK_PEOPLE and abs(snap["floor_gap_median_m"]) > FLOOR_CHECK_M:
            problems.append(f"seen feet stand {snap['floor_gap_median_m']:+.2f} m off floor_height (median over "
                            f"{snap['floor_gap_count']} answers): is floor_height the floor of the input frame?")
        snap["recent_problems"] = ", ".join(problems)
        self._last_diag = {k: snap[k] for k in ("malformed_total", "drops", "failed", "intake_waits")}
        s = self.core.settings
        extra = {
            "active_tracks": self.core.active_tracks,
            "pending": self.core.pending,
            "backend": self.backend,
            "model": str(self.model_path),
            "motion_model": str(self.motion_path) if self.motion_loaded else "none",
            "solver_step": getattr(self.core.solver, "step_status", lambda: "in the solver process")(),
            "solver_process": "none" if self.solver_process is None else
                              f"pid {self.solver_process.pid}, restarted {self.solver_process.restarts} times",
            "input_type": self.input_type,
            "input_format": s.input_format or "from messages",
            **self.core.keypoint_bias(),
            **{f"floor_learnt_m.{frame}": round(h, 3) for frame, (_, h) in self.core.learnt_scenes().items()},
            **{f"up_learnt.{frame}": np.round(up, 3).tolist() for frame, (up, _) in self.core.learnt_scenes().items()
               if up is not None},
            **{f: getattr(s, f) for f in SOLVER_FIELDS},
            "keypoint_filter": "off (keypoint_noise_cm unknown)" if math.isnan(s.keypoint_noise_cm) else
                               f"on, noise {s.keypoint_noise_cm:g} cm",
        }
        self.pub_diag.publish(convert.diagnostic_array(
            self.get_clock().now().to_msg(), snap, name=f"dposer_ros: {self.get_fully_qualified_name()}",
            hardware_id=os.uname().nodename, extra=extra))



class RefineNode(RefineNodeMixin, Node):
    """The ROS 2 node around `RefineCore` (see the module docstring for topics and threading): configured and
    active from its construction."""

    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop("node_name", NODE_NAME), **kwargs)
        self._declare()
        self._configure()
        self._activate()

    def destroy_node(self) -> None:
        if hasattr(self, "_inputs"):  # absent when __init__ failed early
            self._deactivate()
            self._cleanup()
        super().destroy_node()


class RefineLifecycleNode(RefineNodeMixin, LifecycleNode):
    """The refine node as a managed (lifecycle) node: configure loads the prior and builds the engine, activate
    subscribes and starts the worker, deactivate stops both and forgets tracks, cleanup releases the engine.
    Parameters are declared (and checked) at construction, as with the plain node."""

    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop("node_name", NODE_NAME), **kwargs)
        self._declare()

    def _step(self, name: str, action) -> TransitionCallbackReturn:
        try:
            action()
        except (ValueError, OSError, BackendError, SolverProcessError) as err:
            self.get_logger().error(f"{name} failed: {err}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._step("configure", self._configure)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._step("activate", self._activate)
        return super().on_activate(state) if result == TransitionCallbackReturn.SUCCESS else result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        if hasattr(self, "_inputs"):
            self._deactivate()
            self._cleanup()
        super().destroy_node()


def main(args: list[str] | None = None, node_class: type[Node] = RefineNode) -> int:
    """Run the node until SIGINT / SIGTERM. The signals only set a flag (rclpy's own handlers would raise inside a
    message conversion and end the process with an error): the executor stops between callbacks, the worker
    between batches, and the process exits 0."""
    from rclpy.signals import SignalHandlerOptions

    from .params import check_command_line

    problems = check_command_line(sys.argv if args is None else args)
    if problems:
        print(f"[{NODE_NAME}] error: " + "; ".join(problems), file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        try:
            node = node_class()
        except (ValueError, OSError, BackendError, ParameterException, SolverProcessError) as err:  # bad parameters,
            # model or backend
            print(f"[{NODE_NAME}] error: {err}", file=sys.stderr)
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.get_logger().info("shutting down")
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def run(node_class: type[Node] = RefineNode) -> None:
    """Console entry point: `main`, then leave at once. Everything the node owns is released by then; what is left
    is the interpreter's own teardown of torch, ONNX Runtime and DDS modules (about 1 s measured), which would
    only delay a launch system's restart or shutdown."""
    code = main(node_class=node_class)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_lifecycle() -> None:
    """Console entry point of the managed node (`refine_lifecycle_node`): waits for configure / activate."""
    run(RefineLifecycleNode)


if __name__ == "__main__":
    run(RefineLifecycleNode if "--lifecycle" in sys.argv else RefineNode)
