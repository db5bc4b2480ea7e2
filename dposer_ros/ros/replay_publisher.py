"""Publishing replays to a live refine node, and listening to its answers.

`ReplayClient` is a node with a `keypoints` publisher and a `smplx_poses` subscription. `play_stream` sends a
`dposer_ros.replay.takes.Stream` (a held-out take through a corruption model) at its real rate (or faster, or
in lock step with the answers) and pairs every answer with its frame by header stamp: per-frame end-to-end
latency (publish -> answer received, same clock) and MPJPE against the ground truth. `play_bag` publishes the
serialized messages of a rosbag2 bag (read with `rosbags`) with their recorded timing.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from rclpy.node import Node
from rclpy.qos import QoSProfile

from dposer_msgs.msg import Keypoints3D, Keypoints3DArray, SmplxPoseArray

from ..replay.takes import Stream, StreamFrame
from .convert import pose_from_msg

BODY = list(range(22))
MIN_POINTS = 3  # frames with fewer visible keypoints are sent as "nobody in view"


def stamp_of(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def keypoints_message(frame: StreamFrame, fmt_name: str, person_id: str, stamp: Time, frame_id: str) -> Keypoints3DArray:
    msg = Keypoints3DArray()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    if int(frame.visible.sum()) >= MIN_POINTS:
        person = Keypoints3D(person_id=person_id, format=fmt_name)
        person.header = msg.header
        pts = np.where(frame.visible[:, None], frame.points, np.nan)
        person.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in pts]
        person.confidences = frame.confidence.astype(np.float32).tolist()
        msg.people = [person]
    return msg


@dataclass
class FrameResult:
    seq: int
    frame: int
    sent: float  # time.monotonic()
    received: float | None = None
    latency_ms: float | None = None
    refine_ms: float | None = None
    mpjpe_mm: float | None = None  # 22 body joints
    mpjpe_visible_mm: float | None = None
    mpjpe_occluded_mm: float | None = None
    joints: np.ndarray | None = None  # (55, 3) refined
    pose: np.ndarray | None = None
    transl: np.ndarray | None = None
    completed: list[bool] = field(default_factory=list)
    empty: bool = False  # nobody was sent (too few visible keypoints)


class ReplayClient(Node):
    """Publishes keypoints, collects the refine node's answers (callbacks only store)."""

    def __init__(self, name: str = "dposer_replay", keypoints_topic: str = "keypoints",
                 poses_topic: str = "smplx_poses", **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.pub = self.create_publisher(Keypoints3DArray, keypoints_topic, QoSProfile(depth=10))
        self._answers: dict[tuple[int, int], tuple[float, SmplxPoseArray]] = {}
        self._cond = threading.Condition()
        self.sub = self.create_subscription(SmplxPoseArray, poses_topic, self._on_poses, QoSProfile(depth=100))

    def _on_poses(self, msg: SmplxPoseArray) -> None:
        now = time.monotonic()
        with self._cond:
            self._answers[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = (now, msg)
            self._cond.notify_all()

    def wait_connected(self, timeout: float = 20.0) -> bool:
        """Wait until the refine node subscribes to our keypoints and publishes poses (DDS discovery)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.pub.get_subscription_count() > 0 and self.sub.get_publisher_count() > 0:
                return True
            time.sleep(0.02)
        return False

    def answer(self, stamp: Time, timeout: float) -> tuple[float, SmplxPoseArray] | None:
        key = (stamp.sec, stamp.nanosec)
        end = time.monotonic() + timeout
        with self._cond:
            while key not in self._answers:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._answers.pop(key)

    def take_answer(self, stamp: Time) -> tuple[float, SmplxPoseArray] | None:
        with self._cond:
            return self._answers.pop((stamp.sec, stamp.nanosec), None)


def _score(res: FrameResult, frame: StreamFrame, msg: SmplxPoseArray, received: float) -> None:
    res.received = received
    res.latency_ms = (received - res.sent) * 1000.0
    if not msg.people:
        return
    person = msg.people[0]
    got = pose_from_msg(person)
    res.joints, res.pose, res.transl = got["joints"], got["pose"], got["transl"]
    res.refine_ms = float(person.refine_time_ms)
    res.completed = [bool(b) for b in person.part_completed]
    err = np.linalg.norm(got["joints"][BODY] - frame.gt_joints[BODY], axis=-1) * 1000.0
    vis = frame.joint_visible[BODY]
    res.mpjpe_mm = float(err.mean())
    res.mpjpe_visible_mm = float(err[vis].mean()) if vis.any() else None
    res.mpjpe_occluded_mm = float(err[~vis].mean()) if (~vis).any() else None


def _lockstep_answer(client: ReplayClient, msg, stamp: Time, timeout: float,
                     resend_after: float) -> tuple[float, SmplxPoseArray] | None:
    """Wait for the answer to `msg`, sending it again every `resend_after` s: the node's input is best effort."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        got = client.answer(stamp, min(resend_after, max(0.0, left)))
        if got is not None or left <= resend_after:
            return got
        client.pub.publish(msg)


def play_stream(client: ReplayClient, stream: Stream, rate: str = "realtime", person_id: str = "replay_0",
                on_frame=None, answer_timeout: float = 5.0, resend_after: float = 1.0) -> list[FrameResult]:
    """Send every frame of `stream`; `rate`: realtime, a speed factor (e.g. 2), or lockstep (wait for each answer).

    In lockstep a frame whose answer has not come after `resend_after` s is sent again (same stamp), until
    `answer_timeout`. `on_frame(result, frame)` is called for every answered (or timed-out) frame, in order.
    """
    lockstep = rate == "lockstep"
    speed = 1.0 if rate in ("realtime", "lockstep") else float(rate.rstrip("x"))
    if speed <= 0:
        raise ValueError(f"rate must be realtime, lockstep or a positive speed factor, got {rate!r}")
    results: list[FrameResult] = []
    pending: list[tuple[FrameResult, StreamFrame, Time]] = []

    def collect() -> None:
        while pending:
            res, frame, stamp = pending[0]
            got = client.take_answer(stamp)
            if got is None:
                return
            pending.pop(0)
            _score(res, frame, got[1], got[0])
            if on_frame is not None:
                on_frame(res, frame)

    start = time.monotonic()
    last_ns = 0
    for frame in stream.frames:
        if not lockstep:
            delay = start + frame.time_s / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        ns = max(time.time_ns(), last_ns + 1)  # strictly increasing stamps
        last_ns = ns
        stamp = stamp_of(ns)
        msg = keypoints_message(frame, stream.format_name, person_id, stamp, stream.frame_id)
        res = FrameResult(frame.seq, frame.frame, time.monotonic(), empty=not msg.people)
        client.pub.publish(msg)
        results.append(res)
        if lockstep:
            got = _lockstep_answer(client, msg, stamp, answer_timeout, resend_after)
            if got is not None:
                _score(res, frame, got[1], got[0])
            if on_frame is not None:
                on_frame(res, frame)
            continue
        pending.append((res, frame, stamp))
        collect()
    # answers still in flight: wait for each (later frames may have overtaken: latest wins)
    deadline = time.monotonic() + answer_timeout
    while pending:
        res, frame, stamp = pending.pop(0)
        got = client.answer(stamp, max(0.0, deadline - time.monotonic()))
        if got is not None:
            _score(res, frame, got[1], got[0])
        if on_frame is not None:
            on_frame(res, frame)
    return results


def _message_class(msgtype: str):
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def play_bag(node: Node, messages, remap: dict[str, str] | None = None, speed: float = 1.0,
             log_every: float = 5.0) -> int:
    """Publish the serialized messages of a bag (iterable of `BagMessage`) with their recorded timing."""
    pubs = {}
    count = 0
    t_bag0 = None
    start = time.monotonic()
    last_log = start
    for m in messages:
        topic = (remap or {}).get(m.topic, m.topic)
        if topic not in pubs:
            t_wait = time.monotonic()
            pubs[topic] = node.create_publisher(_message_class(m.msgtype), topic, QoSProfile(depth=10))
            while pubs[topic].get_subscription_count() == 0 and time.monotonic() < t_wait + 5.0:
                time.sleep(0.02)  # give subscribers a moment to match (DDS discovery)
            start += time.monotonic() - t_wait  # the bag's timing resumes after the wait
        if t_bag0 is None:
            t_bag0, start = m.timestamp_ns, time.monotonic()
        if speed > 0:
            delay = start + (m.timestamp_ns - t_bag0) * 1e-9 / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        pubs[topic].publish(m.data)  # serialized CDR bytes, as recorded
        count += 1
        if time.monotonic() - last_log > log_every:
            last_log = time.monotonic()
            node.get_logger().info(f"{count} messages published")
    return count
