"""Launch the dposer_ros refine node with the package's config/refine.yaml and optional overrides.

    ros2 launch dposer_ros refine.launch.py
    ros2 launch dposer_ros refine.launch.py format:=coco_wholebody133 steps:=2 keypoints_topic:=/camera/keypoints
    ros2 launch dposer_ros refine.launch.py input_type:=marker_array keypoints_topic:=/body_tracking_data

Every override is optional: an argument left empty keeps the value of the parameters file (`config`, default
share/dposer_ros/config/refine.yaml), so the defaults live in one place.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "dposer_ros"
EXECUTABLE = "refine_node"
CONFIG_FILE = "refine.yaml"

# launch argument -> (node parameter, type, help). Empty = keep the parameters file's value.
PARAMETER_ARGUMENTS = {
    "format": ("input_format", str, "keypoint format name (coco17, coco_wholebody133, h36m17, radar14, azure_kinect32 ...)"),
    "input_type": ("input_type", str, "keypoints_array | marker_array | pointcloud2"),
    "model_path": ("model_path", str, "prior checkpoint (.pt); empty: the shipped models/dposer_cpu/prior.pt"),
    "backend": ("backend", str, "auto | torch | onnxruntime | tensorrt"),
    "steps": ("steps", int, "refinement steps per frame (1-8)"),
    "t_max": ("t_max", float, "diffusion time of the first step"),
    "t_min": ("t_min", float, "diffusion time of the last step"),
    "prior_weight": ("prior_weight", float, "strength of the prior's pull on the body"),
    "hand_prior_weight": ("hand_prior_weight", float, "strength of the prior's pull on the fingers"),
    "sigma_cm": ("sigma_cm", float, "robust scale of keypoint residuals [cm], about the sensor's noise"),
    "person_timeout": ("person_timeout", float, "seconds before an unseen person's track is dropped"),
    "output_frame": ("output_frame", str, "output frame (empty: keep the input's frame_id)"),
    "publish_mesh": ("publish_mesh", bool, "publish the mannequin mesh markers (true/false)"),
}

# launch argument -> (topic the node uses, help): remappings
REMAP_ARGUMENTS = {
    "keypoints_topic": ("keypoints", "input topic (type set by input_type)"),
    "poses_topic": ("smplx_poses", "output dposer_msgs/SmplxPoseArray topic"),
    "markers_topic": ("skeleton_markers", "output skeleton MarkerArray topic"),
}

_TRUE = {"true", "1", "yes", "on"}


def _node(context, *args, **kwargs):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {}
    for arg, (param, kind, _) in PARAMETER_ARGUMENTS.items():
        text = value(arg)
        if text == "":
            continue
        overrides[param] = text.lower() in _TRUE if kind is bool else kind(text)
    remappings = [(topic, value(arg)) for arg, (topic, _) in REMAP_ARGUMENTS.items() if value(arg) not in ("", topic)]
    return [Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=value("node_name"),
        namespace=value("namespace"),
        parameters=[value("config"), overrides],
        remappings=remappings,
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", CONFIG_FILE)
    args = [
        DeclareLaunchArgument("config", default_value=default_config, description="parameters file (ros__parameters)"),
        DeclareLaunchArgument("node_name", default_value=EXECUTABLE, description="node name"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
    ]
    args += [DeclareLaunchArgument(a, default_value="", description=h) for a, (_, _, h) in PARAMETER_ARGUMENTS.items()]
    args += [DeclareLaunchArgument(a, default_value=t, description=h) for a, (t, h) in REMAP_ARGUMENTS.items()]
    return LaunchDescription(args + [OpaqueFunction(function=_node)])
