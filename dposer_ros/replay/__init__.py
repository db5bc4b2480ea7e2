"""Replaying data into the refine node, library side (no rclpy): held-out takes through the sensor corruption
models of `dposer_ros.sensors` (`takes`), and rosbag2 bags read / written with `rosbags`
(`bags`). The publishing and recording nodes live in `dposer_ros.ros.replay_publisher` / `dposer_ros.ros.recorder`.
"""
