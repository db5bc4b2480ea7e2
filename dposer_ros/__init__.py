"""dposer_ros: a DPoser-X style diffusion pose prior over SMPL-X, its solvers, and a ROS 2 refine node.

The library (everything except `dposer_ros.ros`) works without ROS.
"""

__version__ = "0.1.0"
