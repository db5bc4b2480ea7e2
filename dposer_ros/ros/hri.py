"""REP 155 bodies: what HRI stacks (ros4hri's `hri_person_manager`, `pyhri`, `hri_rviz`) read, from refined people.

Per answered body `<id>` (the person_id as a ROS name token, `dposer_ros.body.urdf.body_id_token`; people without a
person_id have no track and no body here):
  /humans/bodies/tracked            hri_msgs/IdsList: the bodies with a track, after every answer
  /tf                               tf2_msgs/TFMessage: `body_<id>` (parent: the output frame, on the input stamp;
                                    REP 155: origin at the mid point of the hips, x forward, z up) and one frame per
                                    SMPL-X joint, `<joint>_<id>`, parented to it (REP 103 axes, aligned at rest)
  /humans/bodies/<id>/joint_states  sensor_msgs/JointState: the 162 angles of the body's URDF
                                    (TF and joint states at most `hri_rate_hz` times a second per body)
  /humans/bodies/<id>/urdf          std_msgs/String, transient local: the body's URDF in its calibrated proportions
                                    (RViz's RobotModel reads it as a description topic), again when the shape changes
Message types are loaded here, at run time: the node runs without them (and says so) when they are not built.
"""

from __future__ import annotations

import time

import numpy as np
import roma
import torch

from ..body import ForwardKinematics
from ..body.shape import rest_joints
from ..body.skeleton import smplx_neutral
from ..body.urdf import body_frames, body_id_token, joint_state, urdf
from .core import PersonResult

TRACKED_TOPIC = "/humans/bodies/tracked"
URDF_SHAPE_CHANGE = 0.05  # republish a body's URDF when a shape coefficient moved this much


def _quaternions(rot: np.ndarray) -> np.ndarray:
    """(N, 3, 3) -> (N, 4) x, y, z, w."""
    return roma.rotmat_to_unitquat(torch.as_tensor(rot, dtype=torch.float64)).numpy()


class HriPublisher:
    """Publishes REP 155 bodies for a node; `publish` per answered frame, `prune` to drop gone bodies."""

    def __init__(self, node, rate_hz: float = 0.0) -> None:
        from hri_msgs.msg import IdsList  # noqa: F401 - raise ImportError here when the interfaces are missing
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from tf2_msgs.msg import TFMessage

        self.node = node
        self.rate_hz = rate_hz  # most TF / joint-state updates per body and second (0: every answer)
        self.pub_tf = node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
        self.pub_tracked = node.create_publisher(IdsList, TRACKED_TOPIC, QoSProfile(depth=10))
        self.latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.bodies: dict[str, dict] = {}  # body id -> {"joints": publisher, "urdf": publisher, "betas": array}
        self.fk = ForwardKinematics()
        self.names = smplx_neutral().names

    def publish(self, people: list[PersonResult], header, tracked: list[str]) -> None:
        """TF frames and joint states of the answered people (each body at most `rate_hz` times a second; nothing is
        built for a topic nobody subscribes to), and the tracked ids."""
        from hri_msgs.msg import IdsList
        from sensor_msgs.msg import JointState
        from tf2_msgs.msg import TFMessage

        now = time.monotonic()
        due = [r for r in people if not r.failed and r.person_id]  # REP 155 bodies need an id that lasts
        if self.rate_hz > 0:
            due = [r for r in due if now - self.bodies.get(body_id_token(r.person_id), {}).get("sent", -1e9)
                   >= 1.0 / self.rate_hz - 1e-3]
        transforms = []
        want_tf = self.pub_tf.get_subscription_count() > 0
        for res in due:
            bid = body_id_token(res.person_id)
            body = self._body(bid, res.betas)
            want_joints = body["joints"].get_subscription_count() > 0
            if not (want_tf or want_joints):
                continue
            body["sent"] = now
            rest = None if res.betas is None else rest_joints(torch.as_tensor(res.betas))[None]
            posed = self.fk(torch.as_tensor(res.pose)[None], torch.as_tensor(res.transl)[None], rest)
            origin, rot, local_pos, local_rot = body_frames(posed.joints[0].numpy(), posed.rotations[0].numpy())
            positions = np.concatenate([origin[None], local_pos]).tolist()
            quats = _quaternions(np.concatenate([rot[None], local_rot])).tolist()  # one batched conversion
            frames = body["frames"]  # made once per body, filled in place (publish serialises at once)
            frames[0].header.frame_id = header.frame_id
            for t, pos, q in zip(frames, positions, quats):
                t.header.stamp = header.stamp
                tr, rq = t.transform.translation, t.transform.rotation
                tr.x, tr.y, tr.z = pos
                rq.x, rq.y, rq.z, rq.w = q
            if want_tf:
                transforms += frames
            if want_joints:
                names, angles = joint_state(res.pose, bid)
                body["joints"].publish(JointState(header=header, name=names, position=angles.tolist()))
        if transforms:
            self.pub_tf.publish(TFMessage(transforms=transforms))
        self.pub_tracked.publish(IdsList(header=header, ids=[body_id_token(p) for p in tracked]))

    def _body(self, bid: str, betas: np.ndarray | None) -> dict:
        from geometry_msgs.msg import TransformStamped
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        body = self.bodies.get(bid)
        if body is None:
            frames = [TransformStamped(child_frame_id=f"body_{bid}")]
            frames += [TransformStamped(child_frame_id=f"{n}_{bid}") for n in self.names]
            for t in frames[1:]:
                t.header.frame_id = f"body_{bid}"
            body = self.bodies[bid] = {
                "joints": self.node.create_publisher(JointState, f"/humans/bodies/{bid}/joint_states", 10),
                "urdf": self.node.create_publisher(String, f"/humans/bodies/{bid}/urdf", self.latched),
                "betas": None,
                "frames": frames,
                "sent": -1e9,
            }
        shape = np.zeros(10) if betas is None else np.asarray(betas)
        if body["betas"] is None or np.abs(shape - body["betas"]).max() > URDF_SHAPE_CHANGE:
            body["betas"] = shape
            body["urdf"].publish(String(data=urdf(bid, shape)))
        return body

    def close(self) -> None:
        """Destroy every publisher this made."""
        self.prune([])
        self.node.destroy_publisher(self.pub_tf)
        self.node.destroy_publisher(self.pub_tracked)

    def prune(self, tracked: list[str]) -> None:
        """Destroy the publishers of bodies that no longer have a track."""
        keep = {body_id_token(p) for p in tracked}
        for bid in [b for b in self.bodies if b not in keep]:
            body = self.bodies.pop(bid)
            self.node.destroy_publisher(body["joints"])
            self.node.destroy_publisher(body["urdf"])
