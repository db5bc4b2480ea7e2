"""Record topics (by default the refine node's outputs) to an MCAP rosbag2 bag with `rosbags`.

Raw subscriptions: the recorder stores the serialized bytes it receives, never deserializing them. Topic types
come from the graph (or the defaults below for the node's own topics); a topic whose publishers are all best
effort is recorded with a best-effort subscription.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from ..replay.bags import BagWriter

DEFAULT_TOPICS = ("smplx_poses", "skeleton_markers", "/diagnostics")
KNOWN_TYPES = {
    "smplx_poses": "dposer_msgs/msg/SmplxPoseArray",
    "keypoints": "dposer_msgs/msg/Keypoints3DArray",
    "skeleton_markers": "visualization_msgs/msg/MarkerArray",
    "mesh_markers": "visualization_msgs/msg/MarkerArray",
    "diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    "overlay": "sensor_msgs/msg/Image",
}


def _message_class(msgtype: str):
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class Recorder(Node):
    """Subscribes raw to `topics` and writes every message to `writer` with its receive time."""

    def __init__(self, writer: BagWriter, topics=DEFAULT_TOPICS, name: str = "dposer_record",
                 type_timeout: float = 5.0, **kwargs) -> None:
        super().__init__(name, **kwargs)
        self.writer = writer
        self._subs = []
        for topic in topics:
            full = self.resolve_topic_name(topic)
            msgtype = self._topic_type(full, topic, type_timeout)
            if msgtype is None:
                self.get_logger().warning(f"{full}: type unknown (no publisher seen in {type_timeout:.0f} s); skipped")
                continue
            writer.add_topic(full, msgtype)
            qos = QoSProfile(depth=100)
            infos = self.get_publishers_info_by_topic(full)
            if infos and all(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos):
                qos = qos_profile_sensor_data
            self._subs.append(self.create_subscription(
                _message_class(msgtype), full, self._writer_for(full), qos, raw=True))
            self.get_logger().info(f"recording {full} ({msgtype})")

    def _topic_type(self, full: str, topic: str, timeout: float) -> str | None:
        end = time.monotonic() + timeout
        while True:
            for name, types in self.get_topic_names_and_types():
                if name == full and types:
                    return types[0]
            if time.monotonic() > end:
                return KNOWN_TYPES.get(topic.strip("/").split("/")[-1])
            time.sleep(0.1)

    def _writer_for(self, topic: str):
        def write(data: bytes) -> None:
            self.writer.write(topic, time.time_ns(), data)

        return write


def record(out: Path, topics=DEFAULT_TOPICS, duration: float | None = None, type_timeout: float = 5.0) -> BagWriter:
    """Record until `duration` seconds have passed (None: until Ctrl-C). Needs rclpy initialised."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    writer = BagWriter(out)
    node = None
    try:
        node = Recorder(writer, topics, type_timeout=type_timeout)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        end = None if duration is None else time.monotonic() + duration
        while rclpy.ok() and (end is None or time.monotonic() < end):
            executor.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        if node is not None:
            node.destroy_node()
        writer.close()
    return writer
