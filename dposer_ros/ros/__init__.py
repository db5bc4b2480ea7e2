"""The ROS 2 side of dposer_ros: the refine node, its input adapters and message conversions, replay/record nodes.

The only package that imports rclpy. `core` (checks, tracks, batched refinement) and `params` are plain Python;
`adapters` and `convert` use message classes only; `refine_node`, `replay_publisher` and `recorder` are nodes.
Nothing is imported here, so `import dposer_ros.ros.core` works without a ROS installation sourced.
"""
