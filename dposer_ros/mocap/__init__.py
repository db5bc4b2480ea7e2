"""Readers for the motion-capture takes in shared/data/mocap (BVH, ASF/AMC; plain or ``.xz``).

Every reader returns a :class:`Motion` with world joint positions in the file's units and axes.
"""
from .asf_amc import read_asf, read_asf_amc
from .bvh import read_bvh
from .loader import find_asf, read_motion
from .motion import MocapError, MocapFileNotFoundError, Motion

__all__ = [
    "MocapError", "MocapFileNotFoundError", "Motion", "find_asf", "read_asf", "read_asf_amc",
    "read_bvh", "read_motion",
]
