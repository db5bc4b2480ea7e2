"""A Keypoints3DArray read from its serialized bytes (`dposer_ros.ros.cdr`) reads as rclpy's message does."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from geometry_msgs.msg import Point
from rclpy.serialization import deserialize_message, serialize_message

from dposer_msgs.msg import Keypoints3D, Keypoints3DArray
from dposer_ros.ros import adapters, cdr


def random_message(rng: random.Random) -> Keypoints3DArray:
    """Strings of every length mod 8 and empty sequences: every alignment case of the encoding."""
    msg = Keypoints3DArray()
    msg.header.stamp.sec, msg.header.stamp.nanosec = rng.randint(0, 2**31 - 1), rng.randint(0, 999_999_999)
    msg.header.frame_id = "f" * rng.randint(0, 9)
    for _ in range(rng.randint(0, 4)):
        n = rng.choice([0, 1, 3, 17, 133])
        person = Keypoints3D(person_id="p" * rng.randint(0, 9), format=rng.choice(["", "coco17", "h36m17"]),
                             points=[Point(x=rng.uniform(-5, 5), y=rng.uniform(-5, 5), z=rng.uniform(-5, 5))
                                     for _ in range(n)],
                             confidences=[rng.random() for _ in range(rng.choice([0, n, max(0, n - 1)]))])
        person.header.frame_id = "h" * rng.randint(0, 6)
        msg.people.append(person)
    return msg


@pytest.mark.parametrize("seed", range(4))
def test_the_bytes_read_as_rclpys_message(seed):
    rng = random.Random(seed)
    for _ in range(60):
        data = serialize_message(random_message(rng))
        caps = rng.choice([None, 20, 200]), rng.choice([None, 1, 3])
        sec, nanosec, frame_id, people = cdr.keypoints_array(data, *caps)
        stamp_ns, ref_frame, _, ref = adapters.from_keypoints_array(deserialize_message(data, Keypoints3DArray), *caps)
        assert (sec * 1_000_000_000 + nanosec, frame_id) == (stamp_ns, ref_frame)
        assert len(people) == len(ref)
        for a, b in zip(people, ref):
            assert (a.person_id, a.format_name, a.count) == (b.person_id, b.format_name, b.count)
            assert np.array_equal(a.points, b.points) and np.array_equal(a.confidences, b.confidences)
            assert a.points.flags.writeable


def test_a_cut_message_is_refused_at_every_length():
    data = serialize_message(random_message(random.Random(7)))
    for end in range(len(data) - 3):  # the last bytes may be the end's padding
        with pytest.raises(ValueError):
            cdr.keypoints_array(data[:end])


def test_a_huge_count_is_refused_before_anything_is_made_of_it():
    msg = Keypoints3DArray()
    msg.people = [Keypoints3D(person_id="a", format="coco17", points=[Point()] * 2, confidences=[1.0, 1.0])]
    data = bytearray(serialize_message(msg))
    at = data.index(b"coco17\x00") + 7
    at += -(at - 4) % 4  # the points' count: the next uint32 after the format string
    assert struct.unpack_from("<I", data, at)[0] == 2
    data[at : at + 4] = struct.pack("<I", 2**31)
    with pytest.raises(ValueError, match="ends before its points"):
        cdr.keypoints_array(bytes(data))


def test_another_encapsulation_is_left_to_rclpy():
    data = serialize_message(random_message(random.Random(3)))
    with pytest.raises(cdr.NotPlainCdr):
        cdr.keypoints_array(b"\x00\x00" + data[2:])  # big-endian CDR
    with pytest.raises(cdr.NotPlainCdr):
        cdr.keypoints_array(b"")


def same(a, b) -> bool:
    """Two ROS messages hold the same values, field by field (numpy-backed fields compared as arrays)."""
    if hasattr(a, "get_fields_and_field_types"):
        return type(a) is type(b) and all(same(getattr(a, f), getattr(b, f)) for f in a.get_fields_and_field_types())
    if isinstance(a, list) and a and hasattr(a[0], "get_fields_and_field_types"):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


@pytest.mark.parametrize("seed", range(3))
def test_the_answer_bytes_read_as_the_message_convert_builds(seed):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from dposer_msgs.msg import SmplxPoseArray
    from dposer_ros.ros import convert
    from dposer_ros.ros.core import PersonResult

    rng = np.random.default_rng(seed)
    for _ in range(40):
        people = []
        for _ in range(int(rng.integers(0, 4))):
            failed = bool(rng.random() < 0.2)
            people.append(PersonResult(
                "p" * int(rng.integers(0, 9)), rng.standard_normal((55, 3)), rng.standard_normal(3),
                np.zeros((0, 3)) if failed else rng.standard_normal((55, 3)), rng.random(4).astype(np.float32),
                rng.random(4) < 0.5, float(rng.random() * 30), "coco17", failed=failed,
                betas=None if rng.random() < 0.3 else rng.standard_normal(10), refine_steps=int(rng.integers(0, 9))))
        sec, nanosec, frame_id = int(rng.integers(0, 2**31 - 1)), int(rng.integers(0, 10**9)), "f" * int(rng.integers(0, 9))
        ours = deserialize_message(cdr.pose_array(people, sec, nanosec, frame_id), SmplxPoseArray)
        built = convert.pose_array(people, Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id))
        assert same(ours, deserialize_message(serialize_message(built), SmplxPoseArray))  # as rclpy publishes it
    assert not same(ours, convert.pose_array(people, Header(frame_id=frame_id + "x")))  # the comparison can fail
