"""ROS 2 bags without ROS: read and write MCAP / sqlite3 rosbag2 bags with `rosbags`, dposer_msgs included.

Messages stay in their serialized CDR form (bytes), exactly as rosbag2 and rclpy exchange them: a recorder
writes what a raw subscription received, a player publishes the bytes as they are (rclpy publishers accept
serialized bytes) or deserializes them with `rclpy.serialization` / the typestore here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rosbags.interfaces import Connection

MSG_PACKAGE = "dposer_msgs"


def msg_dir() -> Path:
    """Folder of the dposer_msgs .msg files: the source checkout's, else an installed share/dposer_msgs/msg."""
    here = Path(__file__).resolve().parents[2]
    candidates = [here / "ros_ws" / "src" / MSG_PACKAGE / "msg"]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory(MSG_PACKAGE)) / "msg")
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    candidates.append(Path(sys.prefix) / "share" / MSG_PACKAGE / "msg")
    for c in candidates:
        if c.is_dir() and any(c.glob("*.msg")):
            return c
    raise FileNotFoundError(f"{MSG_PACKAGE} .msg files not found in {', '.join(map(str, candidates))}")


@cache
def typestore():
    """The ROS 2 Kilted typestore of `rosbags` with the dposer_msgs types registered from their .msg files."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for f in sorted(msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(f.read_text(), f"{MSG_PACKAGE}/msg/{f.stem}"))
    store.register(types)
    return store


def bag_paths(out: Path) -> tuple[Path, Path]:
    """`out` (a folder, or a name ending in .mcap) -> (bag folder, its .mcap file): rosbag2 keeps a bag in a folder
    holding <folder name>.mcap and metadata.yaml, so `session.mcap` becomes session/session.mcap."""
    out = Path(out)
    folder = out.with_suffix("") if out.suffix == ".mcap" else out
    return folder, folder / f"{folder.name}.mcap"


class BagWriter:
    """Write serialized messages to a rosbag2 bag (MCAP by default) with `rosbags`."""

    def __init__(self, out: Path, storage: str = "mcap") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.folder, self.file = bag_paths(out)
        if self.folder.exists():
            raise FileExistsError(f"{self.folder} exists: choose another --out or remove it")
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.folder, version=9, storage_plugin=plugin)
        self._writer.open()
        self._connections: dict[str, Connection] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str) -> None:
        """msgtype as 'pkg/msg/Name' (the rclpy graph's spelling)."""
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=typestore())
            self.counts[topic] = 0

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        self._writer.write(self._connections[topic], int(timestamp_ns), bytes(data))
        self.counts[topic] += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class BagMessage:
    topic: str
    msgtype: str  # 'pkg/msg/Name'
    timestamp_ns: int  # log time
    data: bytes  # CDR


def read_bag(path: Path, topics: list[str] | None = None) -> Iterator[BagMessage]:
    """Messages of a rosbag2 bag folder (MCAP or sqlite3) or a bare .mcap file, in log-time order."""
    path = Path(path)
    if path.is_file() and path.suffix == ".mcap" and not (path.parent / "metadata.yaml").is_file():
        yield from _read_bare_mcap(path, topics)
        return
    from rosbags.highlevel import AnyReader

    folder = path.parent if path.is_file() else path
    with AnyReader([folder], default_typestore=typestore()) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        if topics and not conns:
            have = sorted({c.topic for c in reader.connections})
            raise ValueError(f"{folder}: no topic {topics}; the bag has {', '.join(have)}")
        for conn, timestamp, raw in reader.messages(connections=conns):
            yield BagMessage(conn.topic, conn.msgtype, int(timestamp), bytes(raw))


def _read_bare_mcap(path: Path, topics: list[str] | None) -> Iterator[BagMessage]:
    from mcap.reader import make_reader

    with open(path, "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages(topics=topics, log_time_order=True):
            yield BagMessage(channel.topic, schema.name if schema else "", int(message.log_time), bytes(message.data))


def deserialize(msg: BagMessage):
    """A BagMessage as a rosbags message object (attribute access like a ROS message)."""
    return typestore().deserialize_cdr(msg.data, msg.msgtype)
