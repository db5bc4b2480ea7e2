"""dposer_msgs/Keypoints3DArray read straight from its serialized bytes (a raw subscription), and
dposer_msgs/SmplxPoseArray written straight to them (a raw publication).

rclpy turns a message into Python objects: one `geometry_msgs/Point` per keypoint, 1,330 for 10 whole-body people,
about 2.6 ms a message on the executor's thread, which shares Python's interpreter lock with the solver. Here the
points become one numpy view of the CDR buffer (0.065 ms). The layout is the OMG CDR (XCDR1) encoding that the ROS 2
middlewares use: a 4-byte encapsulation header, then every primitive aligned to its size counted from the end of
that header; strings as a uint32 length (with the terminating NUL) and the bytes, sequences as a uint32 count and
the elements. Only little-endian plain CDR is read here (`NotPlainCdr` otherwise: the caller deserialises with
rclpy instead). rosbags' CDR reader would build the same per-point objects, hence this reader. The answers go the
other way: `pose_array` writes the bytes rclpy would publish for `convert.pose_array`'s message (1.2 ms of message
objects and serialisation for 10 people otherwise).
"""

from __future__ import annotations

import struct

import numpy as np

from .convert import NUM_BETAS, NUM_EXPRESSION
from .core import PersonInput, PersonResult

PLAIN_CDR_LE = b"\x00\x01"  # encapsulation kind CDR_LE (two bytes of options follow)
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


class NotPlainCdr(ValueError):
    """The bytes are not little-endian plain CDR (another encapsulation): deserialise them with rclpy."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        if len(data) < 4 or data[:2] != PLAIN_CDR_LE:
            raise NotPlainCdr(f"encapsulation {data[:2].hex() or 'missing'} is not little-endian plain CDR")
        self.data, self.pos = data, 4

    def _need(self, size: int, what: str) -> None:
        if size < 0 or self.pos + size > len(self.data):
            raise ValueError(f"message ends before its {what} ({len(self.data)} bytes)")

    def align(self, size: int) -> None:
        self.pos += -(self.pos - 4) % size

    def _int(self, kind: struct.Struct, what: str) -> int:
        self.align(4)
        self._need(4, what)
        value = kind.unpack_from(self.data, self.pos)[0]
        self.pos += 4
        return value

    def u32(self, what: str) -> int:
        return self._int(_U32, what)

    def i32(self, what: str) -> int:
        return self._int(_I32, what)

    def string(self, what: str) -> str:
        n = self.u32(what)
        self._need(n, what)
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw[:-1].decode("utf-8") if n else ""  # the length counts the terminating NUL

    def array(self, dtype: str, count: int, what: str, skip: bool = False) -> np.ndarray | None:
        size = np.dtype(dtype).itemsize
        if count:
            self.align(size)
        self._need(count * size, what)  # before anything is made of a count the bytes cannot hold
        out = None if skip else np.frombuffer(self.data, dtype, count, self.pos)
        self.pos += count * size
        return out


def keypoints_array(data: bytes, max_points: int | None = None,
                    max_people: int | None = None) -> tuple[int, int, str, list[PersonInput]]:
    """(stamp sec, stamp nanosec, frame_id, people) of a serialized Keypoints3DArray, as
    `adapters.from_keypoints_array` reads the message: the person's own format, confidences defaulting to 1, and a
    person with more than `max_points` keypoints (or after the first `max_people`) skipped unread, with its count.
    Raises `NotPlainCdr`, or ValueError for bytes that do not hold a whole message."""
    r = _Reader(data)
    sec, nanosec, frame_id = r.i32("stamp"), r.u32("stamp"), r.string("frame_id")
    people = []
    for i in range(r.u32("people")):
        r.i32("person stamp")  # each person's header: unused (the message's header stamps the frame)
        r.u32("person stamp")
        r.string("person frame_id")
        person_id, fmt = r.string("person_id"), r.string("format")
        n = r.u32("points")
        skip = (max_people is not None and i >= max_people) or (max_points is not None and n > max_points)
        points = r.array("<f8", 3 * n, "points", skip)
        m = r.u32("confidences")
        skip = skip or (max_points is not None and m > max_points)
        conf = r.array("<f4", m, "confidences", skip)
        if skip or points is None or conf is None:
            people.append(PersonInput(person_id, np.zeros((0, 3)), np.zeros(0), fmt, count=max(n, m)))
            continue
        people.append(PersonInput(person_id, points.reshape(n, 3).copy(),
                                  conf.astype(np.float64) if m else np.ones(n), fmt))
    if r.pos + 3 < len(data):  # the serializer pads the end to 4 bytes at most
        raise ValueError(f"{len(data) - r.pos} bytes after the message's end: not a Keypoints3DArray")
    return sec, nanosec, frame_id, people


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray(b"\x00\x01\x00\x00")  # little-endian plain CDR, no options

    def align(self, size: int) -> None:
        self.out += bytes(-(len(self.out) - 4) % size)

    def u32(self, value: int) -> None:
        self.align(4)
        self.out += _U32.pack(value)

    def i32(self, value: int) -> None:
        self.align(4)
        self.out += _I32.pack(value)

    def string(self, text: str) -> None:
        raw = text.encode("utf-8") + b"\x00"
        self.u32(len(raw))
        self.out += raw

    def array(self, values, dtype: str, count: int | None = None) -> None:
        """A fixed-size array (`count` given: checked) or a sequence (its count first)."""
        a = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
        if count is None:
            self.u32(a.size)
        elif a.size != count:
            raise ValueError(f"expected {count} values, got {a.size}")
        if a.size:
            self.align(a.dtype.itemsize)
            self.out += a.tobytes()


def pose_array(people: list[PersonResult], sec: int, nanosec: int, frame_id: str) -> bytes:
    """The serialized SmplxPoseArray of `convert.pose_array(people, header)`: every field as `convert.pose_msg`
    fills it (each person's header is the array's)."""
    w = _Writer()
    w.i32(sec)
    w.u32(nanosec)
    w.string(frame_id)
    w.u32(len(people))
    for res in people:
        pose = np.asarray(res.pose, dtype=np.float64).reshape(55, 3)
        w.i32(sec)
        w.u32(nanosec)
        w.string(frame_id)
        w.string(res.person_id)
        w.array(pose[0], "<f8", 3)
        w.array(res.transl, "<f8", 3)
        w.array(pose[1:22], "<f8", 63)
        w.array(pose[25:40], "<f8", 45)
        w.array(pose[40:55], "<f8", 45)
        for row in (22, 23, 24):  # jaw, left eye, right eye
            w.array(pose[row], "<f8", 3)
        w.array(np.zeros(NUM_EXPRESSION), "<f8")
        w.array(np.zeros(NUM_BETAS) if res.betas is None else res.betas, "<f8")
        joints = np.zeros((0, 3)) if res.failed else np.asarray(res.joints).reshape(-1, 3)
        w.u32(len(joints))  # geometry_msgs/Point[]: the count of points, then x, y, z of each
        w.array(joints, "<f8", joints.size)
        w.array(res.part_confidence, "<f4", 4)
        w.array(np.asarray(res.part_completed, dtype=bool), "u1", 4)
        w.array([res.refine_ms], "<f4", 1)
        w.array([res.refine_steps, res.failed], "u1", 2)
    return bytes(w.out)
