"""Input adapters: a ROS message -> the people in it as `PersonInput` (person id, points (K, 3), confidences (K,)).

Pure functions over message objects (attribute access only; no rclpy import), one per input type:

- `from_keypoints_array`: dposer_msgs/Keypoints3DArray. An empty `confidences` means all 1; a person's own
  `format` is kept (empty: the node's `input_format`).
- `from_marker_array`: visualization_msgs/MarkerArray body-tracking skeletons as the Azure Kinect ROS driver
  publishes them: one marker per joint, id = body_id * 100 + joint_id, joints in the K4A 32-joint order
  (keypoint format `azure_kinect32`), pose.position in metres. Joints without a marker get confidence 0.
  DELETE / DELETEALL markers are ignored. Marker colour alpha is not a confidence (the driver colours by
  body), so present joints get confidence 1.
- `from_pointcloud2`: sensor_msgs/PointCloud2 with float fields x, y, z[, confidence][, person_id | id |
  body_id]; points ordered per the keypoint format, people one after the other (or grouped by the id field).

- `from_zed_objects`: zed_msgs (or zed_interfaces) ObjectsStamped of the ZED ROS 2 wrapper's body tracking: per
  object with `skeleton_available`, the 3D keypoints of its `body_format` (0 BODY_18, 1 BODY_34, 2 BODY_38:
  formats zed_body18 / 34 / 38), NaN for a missing keypoint (confidence 0), the object's `confidence` (0-100)
  scaled to [0, 1] for the others; person id = `label_id` (the tracking id).
- `from_yolo_detections`: yolo_msgs (yolo_ros) DetectionArray: per detection with `keypoints3d`, each KeyPoint3D's
  `id` is 1 + the keypoint's index in the pose model's layout (COCO-17 for YOLO pose models), its `score` the
  confidence; keypoints below yolo_ros' threshold are absent (confidence 0). Person id = the detection's tracking
  `id` (empty without tracking: no warm start).

Each returns `(stamp_ns, frame_id, stamp, people)`; a message that cannot be read at all raises
`MalformedInput` (reason `bad_message` or `wrong_count`).
"""

from __future__ import annotations

import numpy as np

from .core import MalformedInput, PersonInput, resolve_format

AZURE_KINECT_FORMAT = "azure_kinect32"
AZURE_KINECT_JOINTS = 32
MARKER_ID_STRIDE = 100  # Azure Kinect ROS driver: marker id = body_id * 100 + joint_id

# sensor_msgs/PointField datatypes -> numpy
_POINTFIELD_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_ID_FIELDS = ("person_id", "id", "body_id", "track_id")


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def check_size(msg, max_people: int, max_points: int) -> None:
    """Refuse a message too big to convert (MalformedInput `too_many_points`) before any work: a PointCloud2 or
    MarkerArray of more than max_people * max_points points. A Keypoints3DArray is capped per person instead."""
    limit = max_people * max_points
    if hasattr(msg, "point_step"):
        n = int(msg.width) * int(msg.height)
    elif hasattr(msg, "markers"):
        n = len(msg.markers)
    else:
        return
    if n > limit:
        raise MalformedInput("too_many_points", f"message holds {n} points, more than max_people x max_points "
                                                f"({max_people} x {max_points})")


def from_keypoints_array(msg, max_points: int | None = None,
                         max_people: int | None = None) -> tuple[int, str, object, list[PersonInput]]:
    """dposer_msgs/Keypoints3DArray -> people (person's own format, confidences defaulting to 1). A person with more
    than `max_points` keypoints, and every person after the first `max_people`, is left unconverted (empty points;
    `PersonInput.count` says how many it had): the core refuses them without the cost of reading them."""
    people = []
    for i, person in enumerate(msg.people):
        n = len(person.points)
        if (max_points is not None and max(n, len(person.confidences)) > max_points) or \
                (max_people is not None and i >= max_people):
            people.append(PersonInput(person.person_id, np.zeros((0, 3)), np.zeros(0), person.format,
                                      count=max(n, len(person.confidences))))
            continue
        pts = np.fromiter((c for p in person.points for c in (p.x, p.y, p.z)), dtype=np.float64, count=3 * n)
        conf = np.asarray(person.confidences, dtype=np.float64)
        if conf.size == 0:
            conf = np.ones(n)
        people.append(PersonInput(person.person_id, pts.reshape(n, 3), conf, person.format))
    return stamp_ns(msg.header.stamp), msg.header.frame_id, msg.header.stamp, people


def from_marker_array(msg, fmt_name: str = AZURE_KINECT_FORMAT) -> tuple[int, str, object, list[PersonInput]]:
    """Azure Kinect style MarkerArray skeletons -> people in `fmt_name` (default azure_kinect32)."""
    k = resolve_format(fmt_name).num_keypoints
    bodies: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    header = None
    bad = []
    for m in msg.markers:
        if m.action not in (0,):  # ADD/MODIFY = 0; DELETE = 2, DELETEALL = 3
            continue
        if header is None:
            header = m.header
        body, joint = divmod(int(m.id), MARKER_ID_STRIDE)
        if joint >= k or m.id < 0:
            bad.append(int(m.id))
            continue
        pts, conf = bodies.setdefault(body, (np.full((k, 3), np.nan), np.zeros(k)))
        p = m.pose.position
        pts[joint] = (p.x, p.y, p.z)
        conf[joint] = 1.0
    if bad:
        raise MalformedInput("wrong_count", f"marker ids {bad[:5]} name joints beyond the {k} of format {fmt_name!r} "
                                            f"(id = body_id * {MARKER_ID_STRIDE} + joint_id)")
    people = [PersonInput(str(b), pts, conf, fmt_name) for b, (pts, conf) in sorted(bodies.items())]
    if header is None:
        return 0, "", None, people
    return stamp_ns(header.stamp), header.frame_id, header.stamp, people


def from_pointcloud2(msg, fmt_name: str) -> tuple[int, str, object, list[PersonInput]]:
    """PointCloud2 of keypoints (x, y, z[, confidence][, person id]) -> people in `fmt_name`."""
    if not fmt_name:
        raise MalformedInput("unknown_format", "pointcloud2 input needs the input_format parameter")
    k = resolve_format(fmt_name).num_keypoints
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in ("x", "y", "z") if n not in fields]
    if missing:
        raise MalformedInput("bad_message", f"PointCloud2 lacks fields {missing}")
    endian = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in _POINTFIELD_DTYPES or (f.count or 1) != 1:
            continue
        names.append(f.name)
        formats.append(endian + _POINTFIELD_DTYPES[f.datatype])
        offsets.append(f.offset)
    n = int(msg.width) * int(msg.height)
    data = bytes(msg.data)
    if msg.point_step <= 0 or len(data) < n * msg.point_step:
        raise MalformedInput("bad_message", f"PointCloud2 data has {len(data)} bytes for {n} points of "
                                            f"{msg.point_step} bytes")
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step})
    if msg.height > 1 and msg.row_step != msg.width * msg.point_step:
        rows = [np.frombuffer(data, dtype=dtype, count=msg.width, offset=r * msg.row_step) for r in range(msg.height)]
        arr = np.concatenate(rows)
    else:
        arr = np.frombuffer(data, dtype=dtype, count=n)
    pts = np.stack([arr["x"], arr["y"], arr["z"]], -1).astype(np.float64)
    if "confidence" in fields:
        conf = arr["confidence"].astype(np.float64)
    else:
        conf = np.isfinite(pts).all(-1).astype(np.float64)
    id_field = next((f for f in _ID_FIELDS if f in names), None)
    people = []
    if id_field is None:
        if n == 0:
            return stamp_ns(msg.header.stamp), msg.header.frame_id, msg.header.stamp, []
        if n % k:
            raise MalformedInput("wrong_count", f"PointCloud2 has {n} points, not a multiple of format "
                                                f"{fmt_name!r}'s {k}")
        for i in range(n // k):
            people.append(PersonInput(str(i), pts[i * k:(i + 1) * k], conf[i * k:(i + 1) * k], fmt_name))
    else:
        ids = arr[id_field]
        for pid in dict.fromkeys(ids.tolist()):  # first-appearance order
            sel = ids == pid
            label = str(int(pid)) if float(pid).is_integer() else str(pid)
            people.append(PersonInput(label, pts[sel], conf[sel], fmt_name))
    return stamp_ns(msg.header.stamp), msg.header.frame_id, msg.header.stamp, people


ZED_BODY_FORMATS = {0: "zed_body18", 1: "zed_body34", 2: "zed_body38"}  # Object.body_format -> keypoint format
ZED_MESSAGE_PACKAGES = ("zed_msgs", "zed_interfaces")  # ZED ROS 2 wrapper interfaces: new and old package name
YOLO_MESSAGE_PACKAGES = ("yolo_msgs",)


def message_type(packages: tuple[str, ...], name: str):
    """A message class loaded at run time from the first package that has it (none is a hard dependency)."""
    import importlib

    for pkg in packages:
        try:
            return getattr(importlib.import_module(f"{pkg}.msg"), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"no {name} message: install or build one of {', '.join(packages)}")


def from_zed_objects(msg) -> tuple[int, str, object, list[PersonInput]]:
    """ZED ObjectsStamped -> the people whose skeleton is available, in zed_body18 / 34 / 38."""
    people = []
    for obj in msg.objects:
        if not obj.skeleton_available:
            continue
        fmt_name = ZED_BODY_FORMATS.get(int(obj.body_format), f"zed_body_format_{int(obj.body_format)}")
        pid = str(int(obj.label_id))
        if fmt_name not in ZED_BODY_FORMATS.values():  # BODY_70 and later: no table here; the core says so
            people.append(PersonInput(pid, np.zeros((0, 3)), np.zeros(0), fmt_name))
            continue
        k = resolve_format(fmt_name).num_keypoints
        pts = np.array([kp.kp for kp in obj.skeleton_3d.keypoints[:k]], dtype=np.float64).reshape(-1, 3)
        seen = np.isfinite(pts).all(-1)
        conf = np.where(seen, float(np.clip(obj.confidence, 0.0, 100.0)) / 100.0, 0.0)
        people.append(PersonInput(pid, pts, conf, fmt_name))
    return stamp_ns(msg.header.stamp), msg.header.frame_id, msg.header.stamp, people


def from_yolo_detections(msg, fmt_name: str = "coco17") -> tuple[int, str, object, list[PersonInput]]:
    """yolo_ros DetectionArray -> the detections with 3D keypoints, in `fmt_name` (COCO-17 for YOLO pose)."""
    k = resolve_format(fmt_name).num_keypoints
    people = []
    frame_id = msg.header.frame_id
    for i, det in enumerate(msg.detections):
        data = det.keypoints3d.data
        if not data:
            continue
        pts, conf = np.full((k, 3), np.nan), np.zeros(k)
        for kp in data:
            j = int(kp.id) - 1
            if not 0 <= j < k:
                raise MalformedInput("wrong_count", f"yolo keypoint id {kp.id} outside 1..{k} of format {fmt_name!r}")
            pts[j] = (kp.point.x, kp.point.y, kp.point.z)
            conf[j] = float(kp.score)
        frame_id = det.keypoints3d.frame_id or frame_id
        people.append(PersonInput(det.id, pts, conf, fmt_name))
    return stamp_ns(msg.header.stamp), frame_id, msg.header.stamp, people
