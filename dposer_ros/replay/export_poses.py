"""`dposer export-poses`: the refined people of a recorded bag as AMASS-style SMPL-X npz files, one per person.

    dposer record --out out/session.mcap --duration 30      # the node's outputs
    dposer export-poses out/session --out out/poses.npz     # -> out/poses_<person>.npz

Reads dposer_msgs/SmplxPoseArray messages with `rosbags` (no ROS needed), skips failed answers, and writes what
`dposer_ros.body.amass` documents (poses, trans, betas, gender, mocap_framerate, timestamps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..body.amass import PoseSequence, write_sequences
from .bags import read_bag, typestore

MSGTYPE = "dposer_msgs/msg/SmplxPoseArray"
_FIELDS = ("global_orient", "body_pose", "jaw_pose", "leye_pose", "reye_pose", "left_hand_pose", "right_hand_pose")


def pose_of(person) -> np.ndarray:
    """(55, 3) axis-angle pose of one SmplxPose (any object with its fields)."""
    return np.concatenate([np.asarray(getattr(person, f), dtype=np.float64).reshape(-1, 3) for f in _FIELDS])


def collect(bag: Path, topic: str | None = None) -> dict[str, PoseSequence]:
    """Every person's answers in the bag (on `topic`, with or without its leading '/'; None: every
    SmplxPoseArray topic), in stamp order."""
    store = typestore()
    sequences: dict[str, PoseSequence] = {}
    found = False
    for m in read_bag(Path(bag)):
        if m.msgtype != MSGTYPE or (topic is not None and m.topic.lstrip("/") != topic.lstrip("/")):
            continue
        found = True
        msg = store.deserialize_cdr(m.data, m.msgtype)
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        for p in msg.people:
            if getattr(p, "failed", False):
                continue
            seq = sequences.setdefault(p.person_id, PoseSequence(p.person_id))
            seq.add(stamp, pose_of(p), np.asarray(p.translation), np.asarray(p.betas))
    if not found:
        raise ValueError(f"{bag}: no {MSGTYPE} messages" + (f" on topic {topic!r}" if topic else "")
                         + " (record the node's smplx_poses with `dposer record`)")
    for seq in sequences.values():
        order = np.argsort(seq.times, kind="stable")
        for name in ("times", "poses", "trans", "betas"):
            values = getattr(seq, name)
            setattr(seq, name, [values[i] for i in order])
    return sequences


def export_poses(bag: Path, out: Path, topic: str | None = None) -> list[Path]:
    """Write `<out stem>_<person>.npz` per person of the bag; returns the files."""
    return write_sequences(collect(bag, topic), out)
