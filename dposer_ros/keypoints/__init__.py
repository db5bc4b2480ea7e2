"""Keypoint formats (COCO, COCO-WholeBody, Human3.6M, MediaPipe, radar ...) as data tables over SMPL-X.

Each format is a YAML table in `formats/`: every keypoint is an SMPL-X joint or a landmark from
`landmarks.yaml` (an offset in a joint's frame). `get_format(name).from_posed(posed)` gives the
keypoints of a posed body, differentiably.
"""

from .format import PART_LABELS, KeypointFormat, KeypointFormatError, joint_parts
from .loader import Landmark, get_format, known_formats, load_formats, load_landmarks

__all__ = [
    "PART_LABELS",
    "KeypointFormat",
    "KeypointFormatError",
    "Landmark",
    "get_format",
    "joint_parts",
    "known_formats",
    "load_formats",
    "load_landmarks",
]
