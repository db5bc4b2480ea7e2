"""Launch the dposer_ros refine node with the package's config/refine.yaml and optional overrides.

    ros2 launch dposer_ros refine.launch.py
    ros2 launch dposer_ros refine.launch.py format:=coco_wholebody133 steps:=2 keypoints_topic:=/camera/keypoints
    ros2 launch dposer_ros refine.launch.py format:=h36m17 keypoint_noise_cm:=2.0   # a camera lifter's 2 cm noise
    ros2 launch dposer_ros refine.launch.py input_type:=marker_array keypoints_topic:=/body_tracking_data
    ros2 launch dposer_ros refine.launch.py lifecycle:=true                 # managed node, configured + activated
    ros2 launch dposer_ros refine.launch.py lifecycle:=true autostart:=false  # ... left unconfigured for a manager

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
LIFECYCLE_EXECUTABLE = "refine_lifecycle_node"
CONFIG_FILE = "refine.yaml"

# launch argument -> (node parameter, type, help). Empty = keep the parameters file's value.
PARAMETER_ARGUMENTS = {
    "format": ("input_format", str, "keypoint format name (coco17, coco_wholebody133, h36m17, radar14, azure_kinect32 ...)"),
    "input_type": ("input_type", str, "keypoints_array | marker_array | pointcloud2"),
    "model_path": ("model_path", str, "prior checkpoint (.pt); empty: the shipped models/dposer_cpu/prior.pt"),
    "backend": ("backend", str, "auto | torch | onnxruntime | tensorrt"),
    "compiled_step": ("compiled_step", bool, "the solver's step compiled ahead of time (true/false)"),
    "frame_graph": ("frame_graph", bool, "a warm frame's prior steps as one ONNX graph: TensorRT on a GPU (true/false)"),
    "int8": ("int8", bool, "ONNX Runtime on a CPU runs the prior with int8 weights (true/false)"),
    "steps": ("steps", int, "refinement steps per frame (1-8)"),
    "t_max": ("t_max", float, "diffusion time of the first step"),
    "t_min": ("t_min", float, "diffusion time of the last step"),
    "prior_weight": ("prior_weight", float, "strength of the prior's pull on the body"),
    "hand_prior_weight": ("hand_prior_weight", float, "strength of the prior's pull on the fingers"),
    "sigma_cm": ("sigma_cm", float, "robust scale of keypoint residuals [cm], about the sensor's noise"),
    "keypoint_noise_cm": ("keypoint_noise_cm", float, "the sensor's keypoint noise [cm per axis] (empty: the parameters "
                          "file's, unknown by default): each track's keypoints are then Kalman-filtered"),
    "person_timeout": ("person_timeout", float, "seconds before an unseen person's track is dropped"),
    "fixed_frame": ("fixed_frame", str, "frame fixed in the world to track people in, e.g. odom for a camera on a "
                    "moving robot (empty: each message's own frame)"),
    "output_frame": ("output_frame", str, "output frame (empty: keep the input's frame_id or fixed_frame)"),
    "floor_height": ("floor_height", float, "the floor's height along up_vector in the input frames or fixed_frame "
                     "[m] (empty: unknown; it lets the refiner stand people with hidden legs upright)"),
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
    common = dict(package=PACKAGE, name=value("node_name"), namespace=value("namespace"),
                  parameters=[value("config"), overrides, {"use_sim_time": value("use_sim_time").lower() in _TRUE}],
                  remappings=remappings, output="screen", emulate_tty=True)
    if value("lifecycle").lower() not in _TRUE:
        return [Node(executable=EXECUTABLE, **common)]
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    node = LifecycleNode(executable=LIFECYCLE_EXECUTABLE, **common)
    if value("autostart").lower() not in _TRUE:
        return [node]
    change = lambda transition: EmitEvent(event=ChangeState(  # noqa: E731
        lifecycle_node_matcher=matches_action(node), transition_id=transition))
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, goal_state="inactive", entities=[change(Transition.TRANSITION_ACTIVATE)]))
    return [activate, node, change(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", CONFIG_FILE)
    args = [
        DeclareLaunchArgument("config", default_value=default_config, description="parameters file (ros__parameters)"),
        DeclareLaunchArgument("node_name", default_value=EXECUTABLE, description="node name"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="run the managed (lifecycle) node refine_lifecycle_node"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with lifecycle: configure and activate it at once"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replays)"),
    ]
    args += [DeclareLaunchArgument(a, default_value="", description=h) for a, (_, _, h) in PARAMETER_ARGUMENTS.items()]
    args += [DeclareLaunchArgument(a, default_value=t, description=h) for a, (t, h) in REMAP_ARGUMENTS.items()]
    return LaunchDescription(args + [OpaqueFunction(function=_node)])
