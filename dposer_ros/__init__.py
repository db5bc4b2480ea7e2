"""dposer_ros: a DPoser-X style diffusion pose prior over SMPL-X, its solvers, and a ROS 2 refine node.

The library (everything except `dposer_ros.ros`) works without ROS.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dposer_ros")  # from package.xml, where the version lives (setup.py reads it there)
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "unknown"
