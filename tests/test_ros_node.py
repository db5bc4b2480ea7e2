"""The refine node with real rclpy across processes, its input adapters, its core (tracks, latest wins, batching).

The node runs in a subprocess (`python -m dposer_ros.ros.refine_node --ros-args --params-file config/refine.yaml`)
on a tiny untrained prior made here, in this module's own DDS domain (localhost discovery). Every wait is bounded.
"""

import gc
import math
import random
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "refine.yaml"
DISCOVERY_TIMEOUT_S = 20.0
ANSWER_TIMEOUT_S = 15.0
FORMAT = "coco17"

import rclpy  # noqa: E402  (never skipped: scripts/bootstrap.sh installs rclpy and builds dposer_msgs)
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import Point  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from dposer_msgs.msg import Keypoints3D, Keypoints3DArray, SmplxPoseArray  # noqa: E402
from dposer_ros.body import ForwardKinematics  # noqa: E402
from dposer_ros.body.shape import rest_joints  # noqa: E402
from dposer_ros.defaults import same  # noqa: E402
from dposer_ros.keypoints import KeypointFormatError, get_format  # noqa: E402
from dposer_ros.prior.layout import DIM  # noqa: E402
from dposer_ros.prior.model import Normalizer, PosePrior  # noqa: E402
from dposer_ros.prior.network import ScoreNet  # noqa: E402
from dposer_ros.prior.sde import SubVPSDE  # noqa: E402
from dposer_ros.ros import adapters, core  # noqa: E402
from dposer_ros.ros.convert import diagnostic_values, pose_from_msg  # noqa: E402
from dposer_ros.ros.core import SOLVER_FIELDS  # noqa: E402
from dposer_ros.ros.params import BY_NAME, PARAMETERS  # noqa: E402
from dposer_ros.ros.process import NodeProcess  # noqa: E402
from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings  # noqa: E402
from dposer_ros.solvers.types import Observation  # noqa: E402

# ----------------------------------------------------------------------------------------------- helpers


def make_prior(path: Path) -> Path:
    torch.manual_seed(0)
    net = ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8)
    mean, std = torch.randn(DIM) * 0.05, torch.rand(DIM) * 0.3 + 0.2
    PosePrior(net, SubVPSDE(), Normalizer(mean, std)).save(path)
    from dposer_ros.prior.motion import LegMotion, MotionNet

    LegMotion(MotionNet(3, hidden=16), (0.1, 0.2, 0.3), 30.0).save(path.with_name("motion.pt"))  # found beside it
    return path


def body_keypoints(seed: int, fmt_name: str = FORMAT, transl=(0.0, 0.0, 1.0)):
    """Keypoints (K, 3) and SMPL-X joints (55, 3) of a random plausible-ish pose."""
    gen = torch.Generator().manual_seed(seed)
    pose = torch.randn(1, 55, 3, generator=gen, dtype=torch.float64) * 0.15
    posed = ForwardKinematics()(pose, torch.tensor([transl], dtype=torch.float64))
    return get_format(fmt_name).from_posed(posed)[0].numpy(), posed.joints[0].numpy()


def keypoints_msg(people, stamp_s: float = 10.0, frame_id: str = "world") -> Keypoints3DArray:
    """people: list of (person_id, format, points (K, 3), confidences or None)."""
    msg = Keypoints3DArray()
    msg.header.frame_id = frame_id
    msg.header.stamp = Time(sec=int(stamp_s), nanosec=int(round((stamp_s % 1) * 1e9)))
    for pid, fmt, pts, conf in people:
        k = Keypoints3D(person_id=pid, format=fmt)
        k.header = msg.header
        k.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in np.asarray(pts).reshape(-1, 3)]
        k.confidences = [] if conf is None else [float(c) for c in conf]
        msg.people.append(k)
    return msg


def library_refine(prior_path: Path, frames, fmt_name: str = FORMAT):
    """The library's FewStepRefiner on the same frames (warm-started like a node track), with the node's settings."""
    params = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    settings = RefineSettings(**{f: params[f] for f in SOLVER_FIELDS})
    fmt = get_format(fmt_name)
    refiner = FewStepRefiner(PosePrior.load(prior_path), fmt, settings)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out, state = [], None
        for pts, conf in frames:
            obs = Observation(torch.tensor(np.asarray(pts, np.float64)[None], dtype=torch.float32),
                              torch.tensor(np.asarray(conf, np.float64)[None], dtype=torch.float32), fmt)
            state = refiner(obs, state)
            out.append(state)
        return out
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def domain_id():
    return random.randint(120, 229)


@pytest.fixture(scope="module")
def prior_path(tmp_path_factory):
    return make_prior(tmp_path_factory.mktemp("ros_node") / "tiny_prior.pt")


@pytest.fixture(scope="module")
def node_process(prior_path, domain_id, tmp_path_factory):
    log = tmp_path_factory.mktemp("ros_node_log") / "refine_node.log"
    node = NodeProcess({"model_path": prior_path, "backend": "torch", "compiled_step": False, "person_timeout": 60.0,
                        "diagnostics_period": 0.25, "log_throttle": 0.0}, log, domain_id, config=CONFIG)
    yield node.proc, log
    node.stop()


class Client:
    """Test-side node: publishes keypoints, stores answers, diagnostics and markers (spun in a thread)."""

    def __init__(self, domain_id: int) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id)
        self.node = rclpy.create_node("test_refine_client", context=self.ctx)
        self.pub = self.node.create_publisher(Keypoints3DArray, "keypoints", QoSProfile(depth=50))
        self.lock = threading.Lock()
        self.poses: list[SmplxPoseArray] = []
        self.diags: list[DiagnosticArray] = []
        self.markers: list[MarkerArray] = []
        self.sub = self.node.create_subscription(SmplxPoseArray, "smplx_poses", self._store(self.poses), 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._store(self.diags), 100)
        self.node.create_subscription(MarkerArray, "skeleton_markers", self._store(self.markers), 100)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown
            pass

    def _store(self, sink):
        def cb(msg):
            with self.lock:
                sink.append(msg)
        return cb

    def wait_for(self, predicate, timeout: float):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                got = predicate()
            if got:
                return got
            time.sleep(0.01)
        return None

    def answer(self, stamp: Time, timeout: float = ANSWER_TIMEOUT_S) -> SmplxPoseArray | None:
        key = (stamp.sec, stamp.nanosec)
        return self.wait_for(lambda: next((m for m in self.poses if (m.header.stamp.sec, m.header.stamp.nanosec) == key),
                                          None), timeout)

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


@pytest.fixture(scope="module")
def client(node_process, domain_id):
    proc, log = node_process
    c = Client(domain_id)
    try:
        connected = c.wait_for(lambda: c.pub.get_subscription_count() > 0 and c.sub.get_publisher_count() > 0,
                               DISCOVERY_TIMEOUT_S + 20.0)  # + the node's start (imports, model load)
        if not connected:
            proc.poll()
            pytest.fail(f"refine_node did not connect (exit code {proc.returncode}); log:\n{log.read_text()[-3000:]}")
        # matched on our side does not mean matched on the node's side yet (best-effort input QoS drops what
        # arrives before): send a warm-up person until the node answers, so the tests' own messages are not lost
        pts, _ = body_keypoints(9)
        for k in range(40):
            msg = keypoints_msg([("warmup", FORMAT, pts, np.ones(len(pts)))], stamp_s=1.0 + 0.01 * k, frame_id="warmup")
            c.pub.publish(msg)
            if c.answer(msg.header.stamp, timeout=0.5) is not None:
                break
        else:
            pytest.fail(f"refine_node never answered a warm-up message; log:\n{log.read_text()[-3000:]}")
        yield c
    finally:
        c.close()


# ----------------------------------------------------------------------------------------------- node tests


def test_round_trip_matches_the_library_and_fills_every_field(client, prior_path, node_process):
    pts1, gt1 = body_keypoints(1)
    pts2, gt2 = body_keypoints(2)
    conf = np.ones(len(pts1))
    conf[[0, 3]] = 0.0  # nose and right ear missing (NaN, confidence 0)
    pts1[[0, 3]] = np.nan
    frames = [(pts1, conf), (pts2, conf)]
    answers = []
    for i, (pts, c) in enumerate(frames):
        msg = keypoints_msg([("rt", FORMAT, pts, c)], stamp_s=20.0 + i, frame_id="map_rt")
        client.pub.publish(msg)
        answer = client.answer(msg.header.stamp)
        assert answer is not None, f"no answer to frame {i}; node log:\n{node_process[1].read_text()[-3000:]}"
        answers.append(answer)
    expected = library_refine(prior_path, frames)
    for i, (answer, ref, gt) in enumerate(zip(answers, expected, (gt1, gt2))):
        assert answer.header.frame_id == "map_rt" and answer.header.stamp.sec == 20 + i
        assert len(answer.people) == 1
        p = answer.people[0]
        assert p.person_id == "rt" and p.header.frame_id == "map_rt"
        got = pose_from_msg(p)
        assert got["joints"].shape == (55, 3) and len(p.joints) == p.NUM_JOINTS
        for field, n in (("global_orient", 3), ("translation", 3), ("body_pose", 63), ("left_hand_pose", 45),
                         ("right_hand_pose", 45), ("jaw_pose", 3), ("leye_pose", 3), ("reye_pose", 3)):
            v = np.asarray(getattr(p, field))
            assert v.shape == (n,) and np.isfinite(v).all(), field
        assert list(p.expression) == [0.0] * 10
        np.testing.assert_allclose(np.asarray(p.betas), ref.betas[0].numpy(), atol=1e-5)  # the shape it is posed with
        assert np.allclose(np.asarray(p.global_orient), 0) is False  # a real rotation was estimated
        assert p.refine_time_ms > 0
        assert not p.failed and p.refine_steps == BY_NAME["steps"].default  # an idle node: no degradation
        conf_parts = np.asarray(p.part_confidence)
        assert conf_parts.shape == (4,) and ((conf_parts >= 0) & (conf_parts <= 1)).all()
        # COCO-17 sees the body; the hands are completed by the prior; no face prior
        assert list(p.part_completed) == [False, True, True, False]
        assert conf_parts[0] == pytest.approx(1.0) and conf_parts[1] == pytest.approx(core.COMPLETED_PART_CONFIDENCE)
        # the same numbers as the library's FewStepRefiner on the same input (cold start, then warm start)
        np.testing.assert_allclose(got["joints"], ref.joints[0].numpy(), atol=2e-4)
        np.testing.assert_allclose(got["pose"], ref.pose[0].numpy(), atol=2e-3)
        np.testing.assert_allclose(got["transl"], ref.transl[0].numpy(), atol=2e-4)
        node_err = np.linalg.norm(got["joints"][:22] - gt[:22], axis=-1).mean()
        lib_err = np.linalg.norm(ref.joints[0].numpy()[:22] - gt[:22], axis=-1).mean()
        assert node_err == pytest.approx(lib_err, abs=2e-4)
    # markers: a LINE_LIST and a SPHERE_LIST for the person, in the input's frame
    markers = client.wait_for(lambda: [m for arr in client.markers for m in arr.markers if m.header.frame_id == "map_rt"],
                              5.0)
    assert markers and {m.type for m in markers} >= {Marker.LINE_LIST, Marker.SPHERE_LIST}
    lines = next(m for m in markers if m.type == Marker.LINE_LIST)
    assert len(lines.points) == 2 * 54 and lines.lifetime.nanosec + lines.lifetime.sec > 0


def test_rep155_bodies_tf_joint_states_and_urdf(client, node_process):
    """One person "7": listed in /humans/bodies/tracked as b7; TF frames body_b7 (parent: the input frame) and one
    per SMPL-X joint reproduce the answer's joints; the joint states drive the published URDF to the same frames."""
    import xml.etree.ElementTree as ET

    from hri_msgs.msg import IdsList
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from test_hri import urdf_link_poses
    from tf2_msgs.msg import TFMessage

    from dposer_ros.body.skeleton import smplx_neutral

    got: dict = {"tf": [], "tracked": [], "joints": [], "urdf": []}
    store = lambda key: (lambda m: got[key].append(m))  # noqa: E731
    latched = QoSProfile(depth=1, durability=rclpy.qos.DurabilityPolicy.TRANSIENT_LOCAL)
    subs = [client.node.create_subscription(TFMessage, "/tf", store("tf"), 100),
            client.node.create_subscription(IdsList, "/humans/bodies/tracked", store("tracked"), 10),
            client.node.create_subscription(JointState, "/humans/bodies/b7/joint_states", store("joints"), 10),
            client.node.create_subscription(String, "/humans/bodies/b7/urdf", store("urdf"), latched)]
    pts, _ = body_keypoints(4)
    answer = None
    for k in range(20):  # until our subscriptions are matched and one frame went through
        msg = keypoints_msg([("7", FORMAT, pts, None)], stamp_s=30.0 + 0.1 * k, frame_id="hri_frame")
        client.pub.publish(msg)
        answer = client.answer(msg.header.stamp, timeout=2.0)
        if answer is not None and client.wait_for(lambda: got["joints"] and got["urdf"], 1.0):
            break
    assert answer is not None and got["joints"] and got["urdf"], node_process[1].read_text()[-2000:]
    stamp = (answer.header.stamp.sec, answer.header.stamp.nanosec)
    at_stamp = lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == stamp  # noqa: E731
    # published right after the answer: wait for this stamp's TF and joint states too
    assert client.wait_for(lambda: any(at_stamp(t) for m in got["tf"] for t in m.transforms)
                           and any(at_stamp(m) for m in got["joints"]) and got["tracked"], 5.0)
    assert any("b7" in m.ids for m in got["tracked"])
    tfs = {t.child_frame_id: t for m in got["tf"] for t in m.transforms if at_stamp(t)}
    names = smplx_neutral().names
    assert tfs["body_b7"].header.frame_id == "hri_frame" and all(tfs[f"{n}_b7"].header.frame_id == "body_b7" for n in names)

    def matrix(t):
        m = np.eye(4)
        q = t.transform.rotation
        m[:3, :3] = core.quat_to_matrix([q.x, q.y, q.z, q.w])
        m[:3, 3] = [t.transform.translation.x, t.transform.translation.y, t.transform.translation.z]
        return m

    body = matrix(tfs["body_b7"])
    world = np.array([(body @ matrix(tfs[f"{n}_b7"]))[:3, 3] for n in names])
    np.testing.assert_allclose(world, pose_from_msg(answer.people[0])["joints"], atol=1e-5)
    js = next(m for m in got["joints"] if at_stamp(m))
    assert len(js.name) == 3 * 54 and ET.fromstring(got["urdf"][-1].data).get("name") == "human_b7"
    links = urdf_link_poses(got["urdf"][-1].data, list(js.name), np.asarray(js.position))
    for n in names:
        np.testing.assert_allclose(links[f"{n}_b7"], matrix(tfs[f"{n}_b7"]), atol=1e-4, err_msg=n)
    for sub in subs:
        client.node.destroy_subscription(sub)


def _malformed_messages(good_pts):
    k = len(good_pts)
    nan = good_pts.copy()
    nan[5] = np.nan
    return {
        "wrong_count": keypoints_msg([("m_count", FORMAT, good_pts[:-1], None)], 30.0),
        "non_finite": keypoints_msg([("m_nan", FORMAT, nan, np.ones(k))], 30.0),
        "empty": keypoints_msg([("m_empty", FORMAT, np.zeros((0, 3)), None)], 30.0),
        "unknown_format": keypoints_msg([("m_fmt", "no_such_format", good_pts, None)], 30.0),
        "millimetres": keypoints_msg([("m_mm", FORMAT, good_pts * 1000.0, None)], 30.0),
        "bad_confidence": keypoints_msg([("m_conf", FORMAT, good_pts, -np.ones(k))], 30.0),
        "too_few_points": keypoints_msg([("m_few", FORMAT, good_pts, np.r_[np.ones(2), np.zeros(k - 2)])], 30.0),
        # scaled 8x (median |coordinate| stays below 20 m): caught by the bone-length check
        "millimetres_bones": keypoints_msg([("m_bones", FORMAT, (good_pts - good_pts.mean(0)) * 8.0, None)], 30.0),
    }


def test_malformed_input_is_dropped_counted_and_the_node_keeps_serving(client, node_process):
    good, _ = body_keypoints(3)
    bad = _malformed_messages(good)
    # stamps going backwards for one person: a good frame at t = 500 s, then one at t = 400 s
    first = keypoints_msg([("m_back", FORMAT, good, None)], 500.0)
    client.pub.publish(first)
    assert client.answer(first.header.stamp) is not None
    back = keypoints_msg([("m_back", FORMAT, good, None)], 400.0)
    reasons = {"wrong_count", "non_finite", "empty", "unknown_format", "millimetres", "bad_confidence",
               "too_few_points", "stamp_backwards"}

    def counts():
        if not client.diags:
            return None
        values = diagnostic_values(client.diags[-1])
        got = {r: int(values.get(f"malformed.{r}", 0)) for r in reasons}
        return got if all(got.values()) and int(values.get("malformed.millimetres", 0)) >= 2 else None

    found = None
    end = time.monotonic() + ANSWER_TIMEOUT_S  # input is best effort: resend until all are counted
    while found is None and time.monotonic() < end:
        for msg in list(bad.values()) + [back]:
            client.pub.publish(msg)
            time.sleep(0.03)  # sensor-data QoS keeps the last 5 messages: no bursts
        found = client.wait_for(counts, 1.0)
    assert found, f"malformed counts missing: {diagnostic_values(client.diags[-1]) if client.diags else 'no diagnostics'}"
    # no answer for any malformed person; the node is alive and still answers a good message
    with client.lock:
        answered = {p.person_id for m in client.poses for p in m.people}
    assert not answered & {"m_count", "m_nan", "m_empty", "m_fmt", "m_mm", "m_conf", "m_few", "m_bones"}
    assert node_process[0].poll() is None
    ok = keypoints_msg([("after", FORMAT, good, None)], 600.0)
    client.pub.publish(ok)
    answer = client.answer(ok.header.stamp)
    assert answer is not None and answer.people[0].person_id == "after"
    status = client.diags[-1].status[0]
    values = diagnostic_values(client.diags[-1])
    for key in ("input_rate_hz", "latency_p50_ms", "latency_p99_ms", "drops", "malformed_total", "active_tracks",
                "backend"):
        assert key in values, key
    assert values["backend"].startswith("torch") and int(values["active_tracks"]) >= 2
    assert values["motion_model"].endswith("motion.pt")
    assert values["keypoint_filter"].startswith("off")  # keypoint_noise_cm unknown by default
    assert status.name.startswith("dposer_ros")
    assert "malformed" in node_process[1].read_text()  # logged (throttled)


def test_bytes_that_are_no_whole_message_are_counted_and_the_node_keeps_serving(client, node_process):
    """The node reads Keypoints3DArray from its bytes (ros/cdr.py): a cut message is a malformed `bad_message`."""
    from rclpy.serialization import serialize_message

    good, _ = body_keypoints(4)
    whole = serialize_message(keypoints_msg([("raw_cut", FORMAT, good, None)], 700.0))

    def counted():
        values = diagnostic_values(client.diags[-1]) if client.diags else {}
        return int(values.get("malformed.bad_message", 0)) > 0

    end = time.monotonic() + ANSWER_TIMEOUT_S
    while not counted() and time.monotonic() < end:
        client.pub.publish(whole[: len(whole) // 2])  # rclpy publishes bytes as they are
        client.wait_for(counted, 0.5)
    assert counted() and node_process[0].poll() is None
    ok = keypoints_msg([("raw_after", FORMAT, good, None)], 701.0)
    client.pub.publish(serialize_message(ok))  # and whole bytes are a message like any other
    answer = client.answer(ok.header.stamp)
    assert answer is not None and answer.people[0].person_id == "raw_after"


def test_a_message_with_nobody_gets_an_empty_answer(client):
    msg = keypoints_msg([], 700.0, frame_id="empty_frame")
    client.pub.publish(msg)
    answer = client.answer(msg.header.stamp)
    assert answer is not None and answer.people == [] and answer.header.frame_id == "empty_frame"


# ----------------------------------------------------------------------------------------------- parameters


def test_config_file_holds_every_declared_parameter_with_its_default():
    params = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    assert set(params) == set(BY_NAME)
    for spec in PARAMETERS:
        assert same(spec.default, params[spec.name]), spec.name  # NaN (unknown) equals NaN
        assert type(params[spec.name]) is type(spec.default) or isinstance(spec.default, list), spec.name
        assert spec.description


def test_node_declares_parameters_with_descriptions_and_ranges(prior_path, domain_id):
    from rclpy.parameter import Parameter

    from dposer_ros.ros.refine_node import RefineNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = None
    try:
        node = RefineNode(context=ctx, node_name="param_probe",
                          parameter_overrides=[Parameter("model_path", value=str(prior_path)),
                                               Parameter("backend", value="torch"),
                                               Parameter("compiled_step", value=False)])
        described = {d.name: d for d in node.describe_parameters([s.name for s in PARAMETERS])}
        assert described["steps"].integer_range[0].from_value == 1 and described["steps"].integer_range[0].to_value == 8
        assert described["t_max"].floating_point_range and described["model_path"].read_only
        assert all(d.description for d in described.values())
        # run-time changes are checked: t_min > t_max is refused, a valid change reaches the solver settings
        bad = node.set_parameters([Parameter("t_min", value=0.95)])[0]  # above the default t_max (BY_NAME["t_max"])
        assert not bad.successful
        assert node.set_parameters([Parameter("steps", value=2)])[0].successful and node.core.settings.steps == 2
        assert not node.set_parameters([Parameter("steps", value=9)])[0].successful  # outside its IntegerRange
        nan_tf = [0.0, 0.0, 0.0, 0.0, 0.0, float("nan"), 1.0]
        assert not node.set_parameters([Parameter("output_transform", value=nan_tf)])[0].successful
        # the diagnostics period changes at run time (it used to keep the start value)
        assert node.set_parameters([Parameter("diagnostics_period", value=0.3)])[0].successful
        assert node._diag_timer.timer_period_ns == 300_000_000
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_the_node_prepares_its_warm_frame_graph_at_start_when_asked(prior_path, domain_id, tmp_path, monkeypatch):
    """`frame_graph`: the in-process node exports and loads the warm frames' graph of its input format and start
    settings before it serves, and says so in its solver status."""
    pytest.importorskip("onnxruntime")
    from rclpy.parameter import Parameter

    from dposer_ros.ros.refine_node import RefineNode

    monkeypatch.setenv("DPOSER_ENGINE_DIR", str(tmp_path))
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = None
    try:
        node = RefineNode(context=ctx, node_name="frame_graph_probe",
                          parameter_overrides=[Parameter("model_path", value=str(prior_path)),
                                               Parameter("backend", value="torch"),
                                               Parameter("compiled_step", value=False),
                                               Parameter("solver_process", value=False),
                                               Parameter("input_format", value="coco17"),
                                               Parameter("steps", value=1),  # a small graph: quick to export and load
                                               Parameter("frame_graph", value=True)])
        assert node.core.solver.step_status() == "eager; warm frames as one graph: coco17 (CPUExecutionProvider)"
        assert list(tmp_path.glob("frame-coco17-*.onnx"))
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=ctx)


@pytest.mark.parametrize("solver_process", [True, False])
def test_lifecycle_node_loads_on_configure_serves_when_active_and_releases_on_cleanup(prior_path, domain_id,
                                                                                     solver_process):
    """The managed node: nothing loaded until configure; keypoints subscribed and answered only while active;
    deactivate stops the worker and forgets tracks; cleanup releases the core and the prior (in this process, or
    the solver process that holds it)."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn as R
    from rclpy.parameter import Parameter

    from dposer_ros.ros.refine_node import RefineLifecycleNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = client = None
    try:
        node = RefineLifecycleNode(context=ctx, node_name="lifecycle_probe", namespace="/lc",
                                   parameter_overrides=[Parameter("model_path", value=str(prior_path)),
                                                        Parameter("backend", value="torch"),
                                                        Parameter("compiled_step", value=False),
                                                        Parameter("solver_process", value=solver_process)])
        client = rclpy.create_node("lifecycle_client", namespace="/lc", context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        executor.add_node(client)
        answers: list = []
        client.create_subscription(SmplxPoseArray, "smplx_poses", answers.append, 10)
        pub = client.create_publisher(Keypoints3DArray, "keypoints", QoSProfile(depth=5))
        assert node.core is None and pub.get_subscription_count() == 0
        assert node.trigger_configure() == R.SUCCESS and node.core is not None
        assert pub.get_subscription_count() == 0  # configured, not active: no input
        assert node.trigger_activate() == R.SUCCESS and node._worker.is_alive()
        pts, _ = body_keypoints(5)
        sent = [0]

        def stream_until(done, seconds: float = ANSWER_TIMEOUT_S) -> None:
            """Publish a frame every spin (input keeps coming, as from a sensor) until `done()`."""
            end = time.monotonic() + seconds
            while not done() and time.monotonic() < end:
                pub.publish(keypoints_msg([("lc", FORMAT, pts, None)], stamp_s=40.0 + 0.01 * sent[0]))
                sent[0] += 1
                executor.spin_once(timeout_sec=0.02)

        stream_until(lambda: answers)
        assert answers and answers[0].people[0].person_id == "lc"
        assert node.trigger_deactivate() == R.SUCCESS
        assert node._worker is None and node.core.active_tracks == 0 and pub.get_subscription_count() == 0
        answers.clear()
        stream_until(lambda: answers, 1.0)  # inactive under input: nothing is answered
        assert answers == []
        assert node.trigger_activate() == R.SUCCESS  # ... and activated again, it answers again
        stream_until(lambda: answers)
        assert answers and node.core.active_tracks == 1
        assert node.trigger_deactivate() == R.SUCCESS
        if solver_process:
            solver = node.solver_process
            assert solver is not None and solver.running
            assert node.trigger_cleanup() == R.SUCCESS and node.core is None
            assert not solver.running  # the solver process (and the prior it holds) is gone
        else:
            engine = weakref.ref(node.core.solver.prior)
            assert node.trigger_cleanup() == R.SUCCESS and node.core is None
            gc.collect()
            assert engine() is None  # the engine (and the prior it holds) is released
        assert node.trigger_configure() == R.SUCCESS and node.core is not None  # and configured again
    finally:
        for n in (client, node):
            if n is not None:
                n.destroy_node()
        rclpy.try_shutdown(context=ctx)


@pytest.mark.parametrize("args, message", [
    (["-p", "input_type:=pointcloud2"], "pointcloud2 needs input_format"),
    (["-p", "steps:=abc"], "steps must be integer"),
    (["-p", "output_frame:=base_link"], "cannot be resolved"),  # no tf2_ros here, identity output_transform
    (["-p", "fixed_frame:=odom"], "fixed_frame 'odom' cannot be resolved"),  # ... identity fixed_transform
])
def test_the_node_refuses_to_start_with_bad_parameters(prior_path, args, message):
    """Exit 1 and a message that says what to fix (both used to start, and then reject every message or ignore
    the value)."""
    cmd = [sys.executable, "-m", "dposer_ros.ros.refine_node", "--ros-args", "--params-file", str(CONFIG),
           "-p", f"model_path:={prior_path}", "-p", "backend:=torch", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and message in done.stderr, done.stderr[-2000:]


# ----------------------------------------------------------------------------------------------- adapters


def test_marker_array_adapter_azure_kinect_ids():
    fmt = get_format("azure_kinect32")
    assert fmt.num_keypoints == 32
    arr = MarkerArray()
    for body in (1, 4):
        for joint in range(32):
            if body == 4 and joint in (20, 21):  # left ankle and foot not tracked
                continue
            m = Marker(id=body * 100 + joint, type=Marker.SPHERE, action=Marker.ADD)
            m.header.frame_id = "depth_camera_link"
            m.header.stamp = Time(sec=5, nanosec=7)
            m.pose.position = Point(x=float(joint), y=float(body), z=1.0)
            arr.markers.append(m)
    arr.markers.append(Marker(action=Marker.DELETEALL))
    stamp_ns, frame_id, _, people = adapters.from_marker_array(arr)
    assert stamp_ns == 5_000_000_007 and frame_id == "depth_camera_link"
    assert [p.person_id for p in people] == ["1", "4"]
    assert people[0].points.shape == (32, 3) and people[0].points[7, 0] == 7.0 and people[1].points[0, 1] == 4.0
    assert people[0].confidences.all() and list(np.flatnonzero(people[1].confidences == 0)) == [20, 21]
    assert people[1].format_name == "azure_kinect32"
    arr.markers.append(Marker(id=140, action=Marker.ADD))  # joint 40 does not exist
    with pytest.raises(core.MalformedInput) as err:
        adapters.from_marker_array(arr)
    assert err.value.reason == "wrong_count"


def _cloud(points, conf, ids=None):
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, n in enumerate(["x", "y", "z", "confidence"] + (["person_id"] if ids is not None else []))]
    cols = [points[:, 0], points[:, 1], points[:, 2], conf] + ([ids] if ids is not None else [])
    data = np.stack(cols, -1).astype("<f4")
    msg = PointCloud2(height=1, width=len(points), fields=fields, is_bigendian=False, point_step=4 * len(fields),
                      row_step=4 * len(fields) * len(points), is_dense=True, data=data.tobytes())
    msg.header.frame_id = "lidar"
    return msg


def _ns(**kw):
    from types import SimpleNamespace

    return SimpleNamespace(**kw)


def test_yolo_ros_adapter_reads_one_based_keypoint_ids_and_scores():
    """yolo_ros DetectionArray: KeyPoint3D.id is 1 + the COCO index, keypoints under its threshold are absent."""
    pts, _ = body_keypoints(3)
    header = _ns(stamp=Time(sec=5, nanosec=0), frame_id="camera_color_optical_frame")
    kps = [_ns(id=j + 1, point=_ns(x=float(pts[j, 0]), y=float(pts[j, 1]), z=float(pts[j, 2])), score=0.8)
           for j in range(17) if j not in (3, 4)]
    det = _ns(id="12", keypoints3d=_ns(frame_id="camera_depth_frame", data=kps))
    no_pose = _ns(id="13", keypoints3d=_ns(frame_id="", data=[]))  # a detection without keypoints: not a person
    stamp_ns, frame_id, _, people = adapters.from_yolo_detections(_ns(header=header, detections=[det, no_pose]))
    assert stamp_ns == 5_000_000_000 and frame_id == "camera_depth_frame" and len(people) == 1
    p = people[0]
    assert p.person_id == "12" and p.format_name == "coco17"
    np.testing.assert_allclose(p.points[[0, 5, 16]], pts[[0, 5, 16]])
    assert list(p.confidences[[3, 4]]) == [0.0, 0.0] and np.isnan(p.points[3]).all() and p.confidences[0] == 0.8
    bad = _ns(header=header, detections=[_ns(id="1", keypoints3d=_ns(frame_id="", data=[_ns(id=18, point=_ns(
        x=0.0, y=0.0, z=0.0), score=1.0)]))])
    with pytest.raises(core.MalformedInput, match="outside 1..17"):
        adapters.from_yolo_detections(bad)


@pytest.mark.parametrize("body_format, fmt_name", [(0, "zed_body18"), (1, "zed_body34"), (2, "zed_body38")])
def test_zed_objects_adapter(body_format, fmt_name):
    """ZED ObjectsStamped as the wrapper publishes it: Skeleton3D has 70 keypoint slots (the format's first K used),
    NaN for a joint the SDK did not find, the object's confidence 0-100, label_id the tracking id."""
    pts, _ = body_keypoints(4, fmt_name)
    k = len(pts)
    slots = np.full((70, 3), np.nan)
    slots[:k] = pts
    slots[2] = np.nan  # a missing joint
    obj = _ns(label_id=5, confidence=80.0, skeleton_available=True, body_format=body_format,
              skeleton_3d=_ns(keypoints=[_ns(kp=slots[i].astype(np.float32)) for i in range(70)]))
    no_skeleton = _ns(label_id=6, confidence=90.0, skeleton_available=False, body_format=body_format,
                      skeleton_3d=_ns(keypoints=[]))
    body70 = _ns(label_id=7, confidence=90.0, skeleton_available=True, body_format=3, skeleton_3d=_ns(keypoints=[]))
    msg = _ns(header=_ns(stamp=Time(sec=3, nanosec=5), frame_id="zed_left_camera_frame"),
              objects=[obj, no_skeleton, body70])
    stamp_ns, frame_id, _, people = adapters.from_zed_objects(msg)
    assert stamp_ns == 3_000_000_005 and frame_id == "zed_left_camera_frame"
    assert [(p.person_id, p.format_name) for p in people] == [("5", fmt_name), ("7", "zed_body_format_3")]
    p = people[0]
    assert p.points.shape == (k, 3) and p.confidences[2] == 0.0 and np.allclose(p.confidences[3:], 0.8)
    np.testing.assert_allclose(p.points[3:], pts[3:], atol=1e-6)
    c = core.RefineCore(None, core.CoreSettings())  # the core's checks: the BODY_70 person is an unknown format
    errors = [e.reason for e in c.submit(core.InputFrame(stamp_ns, frame_id, people))]
    assert errors == ["unknown_format"] and c.pending == 1


@pytest.mark.parametrize("fmt_name", ["openpose_body25", "halpe26"])
def test_openpose_and_halpe_keypoints_with_missing_joints_are_refined(tiny_core, fmt_name):
    """Keypoints3DArray people in OpenPose BODY_25 / Halpe-26 (the format named per person), a missing joint NaN at
    confidence 0: refined, the answer near the keypoints."""
    pts, _ = body_keypoints(2, fmt_name)
    conf = np.ones(len(pts))
    pts[3], conf[3] = np.nan, 0.0
    msg = keypoints_msg([(f"op_{fmt_name}", fmt_name, pts, conf)], stamp_s=7.0, frame_id="op")
    stamp_ns, frame_id, _, people = adapters.from_keypoints_array(msg)
    assert tiny_core.submit(core.InputFrame(stamp_ns, frame_id, people)) == []
    (res,) = tiny_core.refine_pending()[0].people
    assert res.format_name == fmt_name and not res.failed and np.isfinite(res.joints).all()
    assert np.linalg.norm(res.joints[0] - np.nanmean(pts, axis=0)) < 1.0


def test_runtime_message_types_missing_is_a_clear_start_error(prior_path):
    """zed_objects / yolo_detections load their message types at run time: without them the node exits 1 and says
    which package to install."""
    cmd = [sys.executable, "-m", "dposer_ros.ros.refine_node", "--ros-args", "--params-file", str(CONFIG),
           "-p", f"model_path:={prior_path}", "-p", "backend:=torch", "-p", "input_type:=yolo_detections"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "yolo_msgs" in done.stderr, done.stderr[-2000:]


def test_pointcloud2_adapter():
    a, _ = body_keypoints(4)
    b, _ = body_keypoints(5)
    pts = np.concatenate([a, b])
    conf = np.r_[np.ones(17), np.full(17, 0.5)]
    _, frame_id, _, people = adapters.from_pointcloud2(_cloud(pts, conf, np.r_[np.full(17, 3.0), np.full(17, 9.0)]),
                                                       FORMAT)
    assert frame_id == "lidar" and [p.person_id for p in people] == ["3", "9"]
    np.testing.assert_allclose(people[1].points, b, atol=1e-6)
    assert people[1].confidences == pytest.approx(np.full(17, 0.5))
    _, _, _, people = adapters.from_pointcloud2(_cloud(pts, conf), FORMAT)  # no id field: consecutive blocks
    assert [p.person_id for p in people] == ["0", "1"]
    with pytest.raises(core.MalformedInput) as err:
        adapters.from_pointcloud2(_cloud(pts[:-1], conf[:-1]), FORMAT)
    assert err.value.reason == "wrong_count"


# ----------------------------------------------------------------------------------------------- core


@pytest.fixture(scope="module")
def tiny_core(prior_path):
    torch.set_num_threads(1)
    return core.RefineCore(PosePrior.load(prior_path), core.CoreSettings(input_format=FORMAT, person_timeout=60.0))


def _frame(people, stamp_s, frame_id="w"):
    return core.InputFrame(int(stamp_s * 1e9), frame_id, people)


def test_core_latest_wins_batches_people_and_warm_starts(tiny_core):
    c = tiny_core
    a, _ = body_keypoints(6)
    b, _ = body_keypoints(7, transl=(2.0, 0.0, 1.0))
    ones = np.ones(17)
    drops0 = c.stats.drops
    for i in range(3):  # three frames of person A before the worker runs: two are dropped, the latest wins
        c.submit(_frame([core.PersonInput("A", a + 0.01 * i, ones), core.PersonInput("B", b, ones)], 1.0 + i))
    assert c.stats.drops - drops0 == 4  # A twice, B twice
    n_batches = len(c.stats._refine)
    outs = c.refine_pending()
    assert len(outs) == 1 and outs[0].frame.stamp_ns == int(3e9)  # only the latest frame is left
    assert [p.person_id for p in outs[0].people] == ["A", "B"]
    assert len(c.stats._refine) == n_batches + 1 and c.stats._refine[-1][2] == 2  # one solver call for both
    assert c._tracks["A"].state is not None  # warm start stored
    # a frame from another coordinate frame restarts the track (cold); stamps going backwards are refused
    errs = c.submit(_frame([core.PersonInput("A", a, ones)], 0.5))
    assert [e.reason for e in errs] == ["stamp_backwards"]
    c.submit(_frame([core.PersonInput("A", a, ones)], 5.0, frame_id="other"))
    assert c._tracks["A"].state is None and c._tracks["A"].frame_id == "other"
    c.refine_pending()


def test_core_publishes_betas_and_reports_a_persistent_keypoint_bias(tiny_core):
    """Hips 6 cm wider than the format's, frame after frame: the track calibrates the offset and /diagnostics'
    keypoint bias names it; the answer carries the track's calibrated shape."""
    a, _ = body_keypoints(9)
    fmt = get_format(FORMAT)
    a[fmt.index("left_hip"), 0] += 0.06
    a[fmt.index("right_hip"), 0] -= 0.06
    for i in range(25):
        tiny_core.submit(_frame([core.PersonInput("bias", a, np.ones(17))], 100.0 + i / 30, frame_id="bias"))
        res = tiny_core.refine_pending()[0].people[0]
    assert res.betas is not None and res.betas.shape == (10,) and np.isfinite(res.betas).all()
    report = tiny_core.keypoint_bias()
    assert report["calibrated_tracks"] >= 1 and report["keypoint_bias_max_cm"] > 2.0
    assert report["keypoint_bias_at"].endswith("_hip")


def test_output_transform_moves_the_body_rigidly(tiny_core):
    a, _ = body_keypoints(8)
    for i in range(2):  # the second frame is posed with a calibrated (non-zero) shape
        tiny_core.submit(_frame([core.PersonInput("T", a, np.ones(17))], 1.0 + i, frame_id="tf_test"))
        res = tiny_core.refine_pending()[0].people[0]
    assert np.abs(res.betas).max() > 0
    q = np.array([0.1, -0.3, 0.2, 0.9])
    rot, trans = core.quat_to_matrix(q), np.array([1.0, -2.0, 0.5])
    moved = core.transform_result(res, rot, trans)
    fk = ForwardKinematics()
    rest = rest_joints(torch.as_tensor(moved.betas))[None]  # the track's calibrated shape
    joints = fk(torch.tensor(moved.pose)[None], torch.tensor(moved.transl)[None], rest).joints[0].numpy()
    np.testing.assert_allclose(joints, res.joints @ rot.T + trans, atol=1e-5)
    np.testing.assert_allclose(moved.joints, joints, atol=1e-5)
    assert math.isclose(np.linalg.det(rot), 1.0, abs_tol=1e-9)


def test_core_learns_an_unknown_floor_from_seen_feet(prior_path):
    """floor_height NaN (the default) and the up direction known: after 30 answers with their feet seen, the frame's
    floor is learnt (and told to the refiner); with learn_floor off, or a floor given, it is not."""
    from dposer_ros.solvers.scene import SceneEstimate

    c = core.RefineCore(PosePrior.load(prior_path), core.CoreSettings(input_format=FORMAT, person_timeout=60.0))
    fmt = get_format(FORMAT)
    floors = []
    for i in range(36):
        a, joints = body_keypoints(20 + i % 6, transl=(0.0, 0.0, 1.0 + 0.001 * i))
        floors.append(joints[[10, 11]][:, 2].min())  # the lower foot joint along z, the frame's up
        c.submit(_frame([core.PersonInput("floor", a, np.ones(fmt.num_keypoints))], 1.0 + i / 30, frame_id="room"))
        c.refine_pending()
        if i == 20:
            assert math.isnan(c.floor_of("room"))  # not enough answers yet
    learnt = c.floor_of("room")
    assert abs(learnt - (np.quantile(floors, 0.2) - SceneEstimate().sole_height)) < 0.05
    assert c.learnt_scenes() == {"room": (None, learnt)}  # the up direction was told
    assert math.isnan(c.floor_of("elsewhere"))
    for i in range(core.LEARNT_SCENES):  # made-up frames: only the last ones are kept
        c.submit(_frame([core.PersonInput(f"f{i}", a, np.ones(fmt.num_keypoints))], 10.0, frame_id=f"made_up_{i}"))
        c.refine_pending()
    assert len(c.learnt_scenes()) == core.LEARNT_SCENES and "room" not in c.learnt_scenes()
    c.update_settings(replace(c.settings, floor_height=0.0))
    assert c.floor_of("room") == 0.0
    c.update_settings(replace(c.settings, floor_height=math.nan, learn_floor=False))
    assert math.isnan(c.floor_of("room"))


def test_core_learns_the_up_direction_of_an_optical_frame_from_where_feet_stand(prior_path):
    """A camera optical frame (up unknown): once the answered people's feet have covered an area, the frame's up
    direction is the normal of the plane they stand on (SMPL-X's y here), and its floor is learnt along it."""
    c = core.RefineCore(PosePrior.load(prior_path), core.CoreSettings(input_format=FORMAT, person_timeout=60.0))
    fmt = get_format(FORMAT)
    gen = np.random.default_rng(7)
    frame = "head_camera_optical_frame"
    assert not c.up_of(frame).any()
    lower = []
    for i in range(48):
        x, z = gen.uniform(-1.0, 1.0, size=2)
        a, joints = body_keypoints(40 + i, transl=(x, 0.0, 3.0 + z))
        lower.append(joints[[10, 11], 1].min())
        c.submit(_frame([core.PersonInput(f"p{i % 8}", a, np.ones(fmt.num_keypoints))], 1.0 + i, frame_id=frame))
        c.refine_pending()
    up = c.up_of(frame)
    assert np.degrees(np.arccos(np.clip(up @ [0.0, 1.0, 0.0], -1, 1))) < 5.0
    from dposer_ros.solvers.scene import SceneEstimate

    assert abs(c.floor_of(frame) - (np.quantile(lower, 0.2) - SceneEstimate().sole_height)) < 0.05
    assert c.learnt_scenes()[frame][0] is not None
    c.update_settings(replace(c.settings, learn_up=False))
    assert not c.up_of(frame).any() and math.isnan(c.floor_of(frame))


def test_transform_result_keeps_the_failed_flag_and_the_steps(tiny_core):
    a, _ = body_keypoints(8)
    tiny_core.submit(_frame([core.PersonInput("K", a, np.ones(17))], 1.0, frame_id="keep"))
    res = replace(tiny_core.refine_pending()[0].people[0], failed=True, refine_steps=3)
    moved = core.transform_result(res, np.eye(3), np.array([1.0, 0.0, 0.0]))
    assert moved.failed and moved.refine_steps == 3 and moved.person_id == "K"


def _fixed_frame_node(prior_path, domain_id, name: str, transform=None):
    from rclpy.parameter import Parameter

    from dposer_ros.ros.refine_node import RefineNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    overrides = [Parameter("model_path", value=str(prior_path)), Parameter("backend", value="torch"),
                 Parameter("compiled_step", value=False), Parameter("fixed_frame", value="odom"), Parameter("hri_output", value=False),
                 Parameter("publish_overlay", value=True)]
    if transform is not None:
        overrides.append(Parameter("fixed_transform", value=transform))
    return ctx, RefineNode(context=ctx, node_name=name, parameter_overrides=overrides)


def _answer(node, timeout: float = 60.0):
    """The (header, people) the node's worker publishes next."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with node._latest_lock:
            latest, node._latest = node._latest, None
        if latest is not None:
            return latest
        time.sleep(0.01)
    raise TimeoutError("no answer")


def test_fixed_frame_takes_the_keypoints_into_it_and_answers_there(prior_path, domain_id):
    """With fixed_frame (here its static fixed_transform: no tf2_ros on these machines) a message's keypoints are
    taken into that frame before they reach the tracks, and the answers are in it."""
    q = np.array([0.0, 0.0, np.sin(0.3), np.cos(0.3)])  # 0.6 rad about z
    rot, trans = core.quat_to_matrix(q), np.array([1.0, -2.0, 0.0])
    ctx, node = _fixed_frame_node(prior_path, domain_id, "fixed_static", [*trans, *q])
    try:
        a, joints = body_keypoints(5)
        node._on_input(keypoints_msg([("F", FORMAT, a, None)], 3.0, frame_id="camera_link"))
        hdr, people, origin = _answer(node)
        assert hdr.frame_id == "odom" and node.core._tracks["F"].frame_id == "odom"
        np.testing.assert_allclose(people[0].points, a @ rot.T + trans, atol=1e-9)
        assert origin[0] == "camera_link"  # what the overlay needs to draw the answer into that camera's image
        np.testing.assert_allclose((people[0].points - origin[2]) @ origin[1], a, atol=1e-9)
        error = np.linalg.norm(people[0].joints[:22] - (joints[:22] @ rot.T + trans), axis=-1).mean()
        assert error < 0.1  # the body stands where the keypoints went (2.2 m from where they came)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_overlay_draws_answers_made_in_the_fixed_frame_into_the_camera_image(prior_path, domain_id):
    """The answers are in fixed_frame, the image in the camera's optical frame the keypoints came in: the overlay
    takes the joints back into it (and draws them where they belong)."""
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    from dposer_ros.ros import convert

    q = [-0.5, 0.5, -0.5, 0.5]  # REP 103: optical frame (z forward, y down) -> a z-up frame, 1.2 m above its origin
    ctx, node = _fixed_frame_node(prior_path, domain_id, "fixed_overlay", [0.0, 0.0, 1.2, *q])
    try:
        node.set_parameters([Parameter("log_throttle", value=0.0)])
        node.pub_overlay = drawn = type("Sink", (), {"publish": lambda self, m: setattr(self, "msg", m)})()
        k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
        node._on_camera_info(CameraInfo(k=k, width=640, height=480))
        a, joints = body_keypoints(5, transl=(0.0, 0.3, 3.0))  # 3 m in front of the camera, in its optical frame
        node._on_input(keypoints_msg([("O", FORMAT, a, None)], 3.0, frame_id="camera_optical_frame"))
        _, people, origin = _answer(node)
        node._latest = (convert.header(Time(sec=3), "odom"), people, origin)
        image = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=bytes(480 * 640 * 3))
        image.header.frame_id = "camera_optical_frame"
        node._on_image(image)
        img = convert.image_to_numpy(drawn.msg)
        u, v = convert.project(joints[:1], np.array(k))[0].round().astype(int)  # the true pelvis
        assert img[v - 6 : v + 7, u - 6 : u + 7].any()  # drawn where the camera sees the body
        assert img.any(-1).mean() < 0.2  # and not everywhere
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


class _MovingCamera:
    """A tf2 Buffer's lookup_transform as the node calls it: the camera turns 0.1 rad about z per second; there is
    no transform for stamps after `latest` (tf2 raises, e.g. ExtrapolationException)."""

    def __init__(self):
        self.calls = []
        self.latest = 5.0

    def lookup_transform(self, target, source, time, timeout):
        from geometry_msgs.msg import TransformStamped

        assert timeout.nanoseconds == 0  # never blocks the executor
        self.calls.append((target, source, time.nanoseconds))
        seconds = time.nanoseconds * 1e-9
        if seconds > self.latest:
            raise RuntimeError("Lookup would require extrapolation into the future")
        tf = TransformStamped()
        tf.transform.rotation.z, tf.transform.rotation.w = float(np.sin(0.05 * seconds)), float(np.cos(0.05 * seconds))
        return tf


def test_fixed_frame_follows_tf_at_each_stamp_waits_for_late_transforms_and_drops_missing_ones(prior_path, domain_id):
    from rclpy.parameter import Parameter

    ctx, node = _fixed_frame_node(prior_path, domain_id, "fixed_tf", [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    node._tf_buffer = buffer = _MovingCamera()  # tf2_ros's Buffer where it is installed
    node.set_parameters([Parameter("tf_timeout", value=0.2)])
    try:
        a, _ = body_keypoints(6)
        for stamp in (2.0, 4.0):
            node._on_input(keypoints_msg([("M", FORMAT, a, None)], stamp, frame_id="camera_link"))
            rot = core.quat_to_matrix([0.0, 0.0, np.sin(0.05 * stamp), np.cos(0.05 * stamp)])
            np.testing.assert_allclose(_answer(node)[1][0].points, a @ rot.T, atol=1e-9)
        assert buffer.calls == [("odom", "camera_link", 2_000_000_000), ("odom", "camera_link", 4_000_000_000)]
        # a transform that arrives after its message: the message waits for it (in order), then is answered
        node._on_input(keypoints_msg([("M", FORMAT, a, None)], 5.5, frame_id="camera_link"))
        assert len(node._unplaced) == 1 and not node.core._pending
        buffer.latest = 5.6
        node._place_unplaced()  # the node's timer, every 10 ms
        np.testing.assert_allclose(_answer(node)[1][0].points[0], a[0] @ core.quat_to_matrix(
            [0.0, 0.0, np.sin(0.275), np.cos(0.275)]).T, atol=1e-9)
        # one whose transform never comes is dropped after tf_timeout and counted
        drops = node.core.stats.drops
        node._on_input(keypoints_msg([("M", FORMAT, a, None)], 6.0, frame_id="camera_link"))
        time.sleep(0.25)
        node._place_unplaced()
        assert not node._unplaced and node.core.stats.drops == drops + 1 and node._errors["transform"] == 1
        calls = len(buffer.calls)
        node._on_input(keypoints_msg([("M", FORMAT, a, None)], 6.5, frame_id="odom"))  # already in it: no lookup
        np.testing.assert_allclose(_answer(node)[1][0].points, a, atol=1e-9)  # the node keeps serving
        assert len(buffer.calls) == calls
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_format_names_with_underscores_resolve():
    assert core.resolve_format("smplx_55").name == "smplx55"
    assert core.resolve_format("coco_wholebody_133").name == "coco_wholebody133"
    assert core.resolve_format("halpe_26").name == "halpe26"  # the name Keypoints3D.msg gives as an example
    with pytest.raises(KeypointFormatError, match="halpe_27"):
        core.resolve_format("halpe_27")


# ----------------------------------------------------------------------------------------------- bags


def test_bag_round_trip_with_dposer_msgs(tmp_path):
    from rclpy.serialization import deserialize_message, serialize_message

    from dposer_ros.replay.bags import BagWriter, read_bag

    good, _ = body_keypoints(9)
    msg = keypoints_msg([("bag", FORMAT, good, None)], 42.0)
    with BagWriter(tmp_path / "session.mcap") as writer:
        writer.add_topic("/keypoints", "dposer_msgs/msg/Keypoints3DArray")
        for i in range(3):
            writer.write("/keypoints", 1_000 + i, serialize_message(msg))
    assert (tmp_path / "session" / "session.mcap").is_file()
    for path in (tmp_path / "session", tmp_path / "session" / "session.mcap"):
        got = list(read_bag(path, ["/keypoints"]))
        assert [m.timestamp_ns for m in got] == [1000, 1001, 1002]
        back = deserialize_message(got[0].data, Keypoints3DArray)
        assert back.people[0].person_id == "bag" and back.people[0].points[4].x == pytest.approx(good[4, 0])


def test_export_poses_writes_amass_npz_per_person_that_reproduces_the_joints(tmp_path):
    """A bag of answers for two people (one answer failed) -> one AMASS-style npz each; the package's kinematics with
    the file's poses, trans and betas gives the published joints, and `to_smplx_kwargs` feeds an `smplx` model."""
    from rclpy.serialization import serialize_message
    from tiny_smplx import write_tiny_smplx

    from dposer_ros.body.amass import SMPLX_MODEL_KWARGS, to_smplx_kwargs
    from dposer_ros.cli import main as dposer
    from dposer_ros.replay.bags import BagWriter
    from dposer_ros.ros.convert import pose_array

    gen = torch.Generator().manual_seed(11)
    betas = {"alice": torch.randn(10, generator=gen, dtype=torch.float64), "7": torch.zeros(10, dtype=torch.float64)}
    fk = ForwardKinematics()
    truth: dict = {"alice": [], "7": []}
    with BagWriter(tmp_path / "session.mcap") as writer:
        writer.add_topic("/smplx_poses", "dposer_msgs/msg/SmplxPoseArray")
        for i in range(5):
            people = []
            for pid in ("alice", "7"):
                pose = torch.randn(55, 3, generator=gen, dtype=torch.float64) * 0.2
                transl = torch.randn(3, generator=gen, dtype=torch.float64)
                joints = fk(pose[None], transl[None], rest_joints(betas[pid])[None]).joints[0]
                res = core.PersonResult(pid, pose.numpy(), transl.numpy(), joints.numpy(), np.ones(4, np.float32),
                                        np.zeros(4, bool), 1.0, FORMAT, betas=betas[pid].numpy())
                if pid == "7" and i == 2:
                    res.failed = True
                else:
                    truth[pid].append(res)
                people.append(res)
            hdr = keypoints_msg([], stamp_s=100.0 + i / 30).header
            writer.write("/smplx_poses", 1_000 + i, serialize_message(pose_array(people, hdr)))
    assert dposer(["export-poses", str(tmp_path / "session"), "--out", str(tmp_path / "poses.npz")]) == 0
    for pid, name in (("alice", "poses_alice.npz"), ("7", "poses_7.npz")):
        data = np.load(tmp_path / name)
        assert data["poses"].shape == (len(truth[pid]), 165) and str(data["gender"]) == "neutral"
        assert float(data["mocap_framerate"]) == pytest.approx(30.0, rel=1e-3) and bool(data["flat_hand_mean"])
        np.testing.assert_allclose(data["betas"], betas[pid].numpy())
        poses = torch.as_tensor(data["poses"]).reshape(-1, 55, 3)
        rest = rest_joints(torch.as_tensor(data["betas"]))[None]
        joints = fk(poses, torch.as_tensor(data["trans"]), rest).joints.numpy()
        np.testing.assert_allclose(joints, np.stack([r.joints for r in truth[pid]]), atol=1e-6)
    # the `smplx` package, a model made with SMPLX_MODEL_KWARGS (an embedded test model whose joints move with the
    # betas as this package's shape table says): the published joints to within 1 mm
    import smplx

    (tmp_path / "smplx").mkdir()
    write_tiny_smplx(tmp_path / "smplx" / "SMPLX_NEUTRAL.npz", package_shape=True)
    data = np.load(tmp_path / "poses_alice.npz")
    model = smplx.create(str(tmp_path), ext="npz", batch_size=len(data["poses"]), **SMPLX_MODEL_KWARGS)
    joints = model(**to_smplx_kwargs(data)).joints[:, :55].detach().double().numpy()
    assert np.abs(joints - np.stack([r.joints for r in truth["alice"]])).max() < 1e-3
    # a bag without answers: a clear error, exit 1
    with BagWriter(tmp_path / "empty.mcap") as writer:
        writer.add_topic("/keypoints", "dposer_msgs/msg/Keypoints3DArray")
        writer.write("/keypoints", 1, serialize_message(keypoints_msg([], 1.0)))
    assert dposer(["export-poses", str(tmp_path / "empty"), "--out", str(tmp_path / "x.npz")]) == 1


# ----------------------------------------------------------------------------------------------- replay


def _synthetic_take(frames: int = 12):
    from dposer_ros.replay.takes import Take

    gen = torch.Generator().manual_seed(11)
    pose = (torch.randn(1, 55, 3, generator=gen) * 0.1 + torch.randn(frames, 55, 3, generator=gen).cumsum(0) * 0.01)
    transl = torch.zeros(frames, 3)
    transl[:, 1] = 1.0  # pelvis about 1 m above the floor, dataset frame (Y up)
    transl[:, 2] = torch.linspace(0, 0.4, frames)
    return Take(0, "synthetic", "test", "test", pose.numpy(), transl.numpy(), np.arange(frames),
                np.tile([True, False, False, False], (frames, 1)), 30.0)


def test_replay_stream_is_rep103_and_follows_the_corruption():
    from dposer_ros.replay.takes import corrupt_take, get_corruption

    take = _synthetic_take()
    legs = corrupt_take(take, get_corruption("camera_occlusion_legs"))
    assert legs.format_name == "coco17" and legs.rate_hz == 30 and len(legs.frames) == len(take)
    f = legs.frames[3]
    assert f.time_s == pytest.approx(0.1) and f.gt_joints[15, 2] > f.gt_joints[0, 2] + 0.3  # head above pelvis: z up
    hidden = ~f.visible
    assert set(np.flatnonzero(hidden)) == set(range(11, 17)) and np.isnan(f.points[hidden]).all()  # hips..ankles
    assert not f.joint_visible[[1, 2, 4, 5, 7, 8]].any() and f.joint_visible[[16, 17]].all()
    np.testing.assert_allclose(f.points[5], f.gt_joints[16], atol=0.1)  # left shoulder, 2 cm noise
    radar = corrupt_take(take, get_corruption("radar"))
    assert radar.format_name == "radar14" and radar.rate_hz == 10 and [x.frame for x in radar.frames] == [0, 3, 6, 9]


def test_lockstep_sends_a_lost_frame_again():
    """The node's input is best effort: a lockstep replay must not stall on one lost message."""
    from dposer_ros.ros.replay_publisher import _lockstep_answer

    class LossyClient:
        def __init__(self, lost: int):
            self.sent, self.lost = 0, lost
            self.pub = self

        def publish(self, msg):
            self.sent += 1

        def answer(self, stamp, timeout):
            if self.sent <= self.lost:
                time.sleep(timeout)
                return None
            return (time.monotonic(), "answer")

    client = LossyClient(lost=2)
    client.publish("frame")
    assert _lockstep_answer(client, "frame", Time(), timeout=1.0, resend_after=0.05)[1] == "answer"
    assert client.sent == 3
    never = LossyClient(lost=10**6)
    start = time.monotonic()
    assert _lockstep_answer(never, "frame", Time(), timeout=0.3, resend_after=0.05) is None
    assert time.monotonic() - start < 1.0 and never.sent >= 4


def test_replay_stream_through_the_node(node_process, domain_id):
    from rclpy.executors import SingleThreadedExecutor

    from dposer_ros.replay.takes import corrupt_take, get_corruption
    from dposer_ros.ros.replay_publisher import ReplayClient, play_stream

    stream = corrupt_take(_synthetic_take(), get_corruption("cam_occl_legs"))
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    replay = ReplayClient("test_replay", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(replay)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        assert replay.wait_connected(DISCOVERY_TIMEOUT_S)
        results = play_stream(replay, stream, rate="lockstep", person_id="replayed", answer_timeout=ANSWER_TIMEOUT_S)
    finally:
        executor.shutdown(timeout_sec=2.0)
        replay.destroy_node()
        rclpy.try_shutdown(context=ctx)
    assert len(results) == len(stream.frames) and all(r.latency_ms is not None for r in results)
    assert all(r.mpjpe_mm is not None and r.mpjpe_occluded_mm is not None for r in results)
    assert all(r.joints.shape == (55, 3) and r.completed == [False, True, True, False] for r in results)


def test_core_carries_each_tracks_history_for_the_motion_model(prior_path):
    """With a motion model, every track keeps its own time-stamped answers (batched people, one solver call); a
    setting change that switches the model off drops the histories with the refiners."""
    from dposer_ros.prior.motion import LegMotion, MotionNet

    motion = LegMotion(MotionNet(3, hidden=16), (0.1, 0.2, 0.3), 30.0)
    c = core.RefineCore(PosePrior.load(prior_path), core.CoreSettings(input_format=FORMAT, person_timeout=60.0),
                        motion=motion)
    a, _ = body_keypoints(6)
    b, _ = body_keypoints(7, transl=(2.0, 0.0, 1.0))
    for i in range(12):  # A walks 1.5 m/s along x, B stands
        c.submit(_frame([core.PersonInput("A", a + [0.05 * i, 0, 0], np.ones(17)),
                         core.PersonInput("B", b, np.ones(17))], 1.0 + i / 30))
        assert len(c.refine_pending()) == 1
    for pid in ("A", "B"):
        history = c._tracks[pid].state.history
        assert history is not None and torch.isfinite(history.age).sum() == 12
    moved = c._tracks["A"].state.history.transl[0]
    assert 0.5 < float(moved[0, 0] - moved[11, 0]) < 0.6  # newest first: 11 frames of 5 cm
    c.update_settings(replace(c.settings, motion_legs=False))
    c.submit(_frame([core.PersonInput("A", a, np.ones(17))], 2.0))
    c.refine_pending()
    assert c._tracks["A"].state.history is None
