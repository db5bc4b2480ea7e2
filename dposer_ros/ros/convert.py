"""Results -> ROS messages (SmplxPoseArray, skeleton / mesh MarkerArrays, DiagnosticArray) and Image <-> numpy.

Message packages only (dposer_msgs, geometry_msgs, std_msgs, sensor_msgs, visualization_msgs, diagnostic_msgs);
no rclpy. cv_bridge is not used (the PyPI one is broken with numpy 2): images are converted by hand.
"""

from __future__ import annotations

import zlib

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from sensor_msgs.msg import Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker

from dposer_msgs.msg import SmplxPose, SmplxPoseArray

from ..body import smplx_neutral
from .core import PersonResult, format_edges

NUM_EXPRESSION = 10
NUM_BETAS = 10
PALETTE = np.array([
    [0.90, 0.30, 0.25], [0.25, 0.55, 0.90], [0.30, 0.75, 0.35], [0.95, 0.70, 0.20],
    [0.65, 0.40, 0.85], [0.20, 0.80, 0.80], [0.90, 0.45, 0.70], [0.55, 0.55, 0.55],
])
COMPLETED_COLOR = (1.0, 1.0, 1.0)  # joints of parts the prior completed are drawn lighter


def _points(arr: np.ndarray) -> list[Point]:
    return [Point(x=x, y=y, z=z) for x, y, z in np.asarray(arr, dtype=np.float64).reshape(-1, 3).tolist()]


def header(stamp, frame_id: str) -> Header:
    h = Header(frame_id=frame_id)
    if stamp is not None:
        h.stamp = stamp
    return h


def pose_msg(res: PersonResult, hdr: Header) -> SmplxPose:
    """Every field of SmplxPose from one person's result (expression: 10 zeros; betas: the track's calibrated
    shape, zeros before it has one)."""
    pose = np.asarray(res.pose, dtype=np.float64)
    m = SmplxPose()
    m.header = hdr
    m.person_id = res.person_id
    m.global_orient = pose[0].copy()
    m.translation = np.asarray(res.transl, dtype=np.float64).copy()
    m.body_pose = pose[1:22].reshape(-1).copy()
    m.jaw_pose = pose[22].copy()
    m.leye_pose = pose[23].copy()
    m.reye_pose = pose[24].copy()
    m.left_hand_pose = pose[25:40].reshape(-1).copy()
    m.right_hand_pose = pose[40:55].reshape(-1).copy()
    m.expression = [0.0] * NUM_EXPRESSION
    m.betas = [0.0] * NUM_BETAS if res.betas is None else [float(b) for b in res.betas]
    m.joints = [] if res.failed else _points(res.joints)
    m.part_confidence = np.asarray(res.part_confidence, dtype=np.float32).copy()
    m.part_completed = [bool(b) for b in res.part_completed]
    m.refine_time_ms = float(res.refine_ms)
    m.failed = bool(res.failed)
    m.refine_steps = int(res.refine_steps)
    return m


def pose_array(people: list[PersonResult], hdr: Header) -> SmplxPoseArray:
    return SmplxPoseArray(header=hdr, people=[pose_msg(p, hdr) for p in people])


def pose_from_msg(m: SmplxPose) -> dict[str, np.ndarray]:
    """Inverse of `pose_msg` (for clients and tests): pose (55, 3), transl (3,), joints (55, 3)."""
    pose = np.concatenate([
        np.asarray(m.global_orient).reshape(1, 3), np.asarray(m.body_pose).reshape(21, 3),
        np.asarray(m.jaw_pose).reshape(1, 3), np.asarray(m.leye_pose).reshape(1, 3),
        np.asarray(m.reye_pose).reshape(1, 3), np.asarray(m.left_hand_pose).reshape(15, 3),
        np.asarray(m.right_hand_pose).reshape(15, 3),
    ])
    joints = np.array([(p.x, p.y, p.z) for p in m.joints]).reshape(-1, 3)
    return {"pose": pose, "transl": np.asarray(m.translation, dtype=np.float64), "joints": joints}


def marker_id(person_id: str) -> int:
    """A stable marker id per person (positive int32)."""
    return zlib.crc32(person_id.encode()) & 0x3FFFFFFF


def _color(rgb, a: float = 1.0) -> ColorRGBA:
    return ColorRGBA(r=float(rgb[0]), g=float(rgb[1]), b=float(rgb[2]), a=float(a))


def _lifetime(seconds: float) -> Duration:
    sec = int(seconds)
    return Duration(sec=sec, nanosec=int(round((seconds - sec) * 1e9)))


def skeleton_markers(people: list[PersonResult], hdr: Header, lifetime_s: float) -> list[Marker]:
    """Per person: the 54 SMPL-X bones as a LINE_LIST and the 55 joints as a SPHERE_LIST (completed parts pale)."""
    from ..keypoints import joint_parts

    parents = smplx_neutral().parents
    parts = joint_parts()
    part_index = {"body": 0, "left_hand": 1, "right_hand": 2, "face": 3}
    bones = np.array([(p, j) for j, p in enumerate(parents) if p >= 0])
    out = []
    for res in people:
        mid = marker_id(res.person_id)
        base = PALETTE[mid % len(PALETTE)]
        lines = Marker(header=hdr, ns="skeleton", id=mid, type=Marker.LINE_LIST, action=Marker.ADD)
        lines.pose.orientation.w = 1.0
        lines.scale.x = 0.015
        lines.color = _color(base)
        lines.lifetime = _lifetime(lifetime_s)
        lines.points = _points(res.joints[bones.reshape(-1)])
        spheres = Marker(header=hdr, ns="joints", id=mid, type=Marker.SPHERE_LIST, action=Marker.ADD)
        spheres.pose.orientation.w = 1.0
        spheres.scale.x = spheres.scale.y = spheres.scale.z = 0.03
        spheres.color = _color(base)
        spheres.lifetime = _lifetime(lifetime_s)
        spheres.points = _points(res.joints)
        completed = np.asarray(res.part_completed, bool)
        spheres.colors = [
            _color(0.5 * (base + np.array(COMPLETED_COLOR)) if completed[part_index[parts[j]]] else base)
            for j in range(len(res.joints))
        ]
        out += [lines, spheres]
    return out


def input_markers(people: list[PersonResult], hdr: Header, lifetime_s: float) -> list[Marker]:
    """The input keypoints (confidence > 0.1) as grey SPHERE_LISTs, ns `input` (for comparing in RViz)."""
    out = []
    for res in people:
        if res.points is None:
            continue
        keep = (res.confidences > 0.1) & np.isfinite(res.points).all(-1)
        m = Marker(header=hdr, ns="input", id=marker_id(res.person_id), type=Marker.SPHERE_LIST, action=Marker.ADD)
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = 0.02
        m.color = _color((0.3, 0.3, 0.3), 0.8)
        m.lifetime = _lifetime(lifetime_s)
        m.points = _points(res.points[keep])
        out.append(m)
    return out


def mesh_markers(people: list[PersonResult], hdr: Header, lifetime_s: float, stride: int = 4) -> list[Marker]:
    """Per person the skinned mannequin (dposer_ros.body.render.body_mesh) as a TRIANGLE_LIST, every stride-th face.

    body_mesh works in the SMPL-X convention (pelvis at J_pelvis + transl), so the mesh lands on the joints.
    """
    from ..body.render import body_mesh

    out = []
    for res in people:
        verts, faces = body_mesh(res.pose, res.transl, res.betas)
        mid = marker_id(res.person_id)
        m = Marker(header=hdr, ns="mesh", id=mid, type=Marker.TRIANGLE_LIST, action=Marker.ADD)
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = 1.0
        m.color = _color(0.4 + 0.6 * PALETTE[mid % len(PALETTE)], 0.9)
        m.lifetime = _lifetime(lifetime_s)
        m.points = _points(np.asarray(verts)[np.asarray(faces)[::max(1, stride)].reshape(-1)])
        out.append(m)
    return out


def diagnostic_array(stamp, snap: dict, *, name: str, hardware_id: str, extra: dict) -> DiagnosticArray:
    """One DiagnosticStatus with the node's counters; WARN while malformed input or drops were seen recently."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    values = {
        "input_rate_hz": f"{snap['input_rate_hz']:.2f}",
        "latency_p50_ms": f"{snap['latency_p50_ms']:.2f}",
        "latency_p99_ms": f"{snap['latency_p99_ms']:.2f}",
        "refine_p50_ms": f"{snap['refine_p50_ms']:.2f}",
        "refine_p99_ms": f"{snap['refine_p99_ms']:.2f}",
        "frames_in": str(snap["frames_in"]),
        "people_in": str(snap["people_in"]),
        "frames_out": str(snap["frames_out"]),
        "people_out": str(snap["people_out"]),
        "drops": str(snap["drops"]),
        "intake_waits": str(snap.get("intake_waits", 0)),
        "malformed_total": str(snap["malformed_total"]),
        "failed": str(snap.get("failed", 0)),
        "outlier_points": str(snap.get("outlier_points", 0)),
        "refine_steps_mean": f"{snap.get('refine_steps_mean', float('nan')):.2f}",
        "degraded_fraction": f"{snap.get('degraded_fraction', 0.0):.3f}",
        "torso_up_median": f"{snap.get('torso_up_median', float('nan')):.2f}",
        "floor_gap_median_m": f"{snap.get('floor_gap_median_m', float('nan')):.3f}",
    }
    for reason, count in sorted(snap["malformed"].items()):
        values[f"malformed.{reason}"] = str(count)
    for kind, count in sorted(snap.get("errors", {}).items()):
        values[f"error.{kind}"] = str(count)
    values.update({k: str(v) for k, v in extra.items()})
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    recent = snap.get("recent_problems", "")
    if snap.get("errors"):
        status.level, status.message = DiagnosticStatus.WARN, "solver errors: " + ", ".join(snap["errors"])
    elif recent:
        status.level, status.message = DiagnosticStatus.WARN, recent
    else:
        status.level, status.message = DiagnosticStatus.OK, "ok"
    arr = DiagnosticArray(status=[status])
    if stamp is not None:
        arr.header.stamp = stamp
    return arr


def diagnostic_values(arr: DiagnosticArray, name: str | None = None) -> dict[str, str]:
    """{key: value} of the (first matching) status: for clients and tests."""
    for st in arr.status:
        if name is None or st.name == name:
            return {kv.key: kv.value for kv in st.values}
    return {}


# ----------------------------------------------------------------------------------------------- images

_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1, "8UC3": 3, "8UC4": 4}


def image_to_numpy(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (8-bit encodings) -> (H, W, C) uint8 array (a copy)."""
    if msg.encoding not in _ENCODINGS:
        raise ValueError(f"image encoding {msg.encoding!r} not supported (8-bit: {', '.join(_ENCODINGS)})")
    ch = _ENCODINGS[msg.encoding]
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    rows = buf[: msg.height * msg.step].reshape(msg.height, msg.step)
    return rows[:, : msg.width * ch].reshape(msg.height, msg.width, ch).copy()


def numpy_to_image(arr: np.ndarray, encoding: str, hdr: Header) -> Image:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w = arr.shape[:2]
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    return Image(header=hdr, height=h, width=w, encoding=encoding, is_bigendian=0, step=w * ch, data=arr.tobytes())


def project(points: np.ndarray, k: np.ndarray, dist: np.ndarray | None = None) -> np.ndarray:
    """Camera-optical-frame points (N, 3) -> pixels (N, 2) (NaN behind the camera); opencv when importable."""
    points = np.asarray(points, dtype=np.float64)
    behind = points[:, 2] <= 1e-6
    try:
        import cv2

        uv, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), np.asarray(k, np.float64).reshape(3, 3),
                                  None if dist is None or not len(dist) else np.asarray(dist, np.float64))
        uv = uv.reshape(-1, 2)
    except ImportError:
        kk = np.asarray(k, np.float64).reshape(3, 3)
        z = np.where(behind, 1.0, points[:, 2])
        uv = np.stack([kk[0, 0] * points[:, 0] / z + kk[0, 2], kk[1, 1] * points[:, 1] / z + kk[1, 2]], -1)
    uv[behind] = np.nan
    return uv


def draw_overlay(img: np.ndarray, uv: np.ndarray, bones: np.ndarray, color=(255, 64, 64)) -> np.ndarray:
    """Draw bones (pairs of indices into uv) and joints on an (H, W, C) uint8 image in place."""
    h, w = img.shape[:2]
    col = np.array(color[: img.shape[2]] if img.shape[2] > 1 else [max(color)], dtype=np.uint8)
    try:
        import cv2

        for a, b in bones:
            if np.isfinite(uv[[a, b]]).all():
                cv2.line(img, tuple(int(v) for v in uv[a]), tuple(int(v) for v in uv[b]), col.tolist(), 2)
        for p in uv:
            if np.isfinite(p).all():
                cv2.circle(img, (int(p[0]), int(p[1])), 3, col.tolist(), -1)
        return img
    except ImportError:
        pass
    for a, b in bones:
        if not np.isfinite(uv[[a, b]]).all():
            continue
        n = int(max(abs(uv[b] - uv[a]).max(), 1)) + 1
        if n > 4 * (h + w):
            continue
        t = np.linspace(0, 1, n)[:, None]
        pts = np.round(uv[a] + t * (uv[b] - uv[a])).astype(int)
        ok = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        img[pts[ok, 1], pts[ok, 0]] = col
    for p in uv:
        if np.isfinite(p).all():
            x, y = int(round(p[0])), int(round(p[1]))
            img[max(y - 2, 0):max(min(y + 3, h), 0), max(x - 2, 0):max(min(x + 3, w), 0)] = col
    return img


def smplx_bones() -> np.ndarray:
    parents = smplx_neutral().parents
    return np.array([(p, j) for j, p in enumerate(parents) if p >= 0])


def keypoint_bones(fmt_name: str) -> np.ndarray:
    return np.array(format_edges(fmt_name), dtype=np.int64).reshape(-1, 2)
