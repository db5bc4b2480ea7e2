"""launch/refine.launch.py: names the installed executable and config file, and every launch argument maps to a
declared node parameter (or a topic the node uses). Checked statically (ast) everywhere; loaded with the real
`launch` / `launch_ros` where they are installed (a full ROS 2 installation; they are not on PyPI).
"""

import ast
import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from dposer_ros.ros.params import BY_NAME

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "refine.launch.py"
NODE_FILE = ROOT / "dposer_ros" / "ros" / "refine_node.py"
KIND = {"str": str, "int": int, "float": float, "bool": bool}


def _constants(tree: ast.Module) -> dict:
    """Module-level NAME = <literal> assignments (dict values' type names kept as strings)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                if isinstance(node.value, ast.Dict):  # {"arg": ("param", str, "help")}: keep type names
                    out[node.targets[0].id] = {
                        ast.literal_eval(k): tuple(e.id if isinstance(e, ast.Name) else ast.literal_eval(e)
                                                   for e in v.elts)
                        for k, v in zip(node.value.keys, node.value.values)
                    }
    return out


@pytest.fixture(scope="module")
def launch_constants():
    return _constants(ast.parse(LAUNCH_FILE.read_text()))


def test_launch_file_names_the_installed_executable_package_and_config(launch_constants):
    c = launch_constants
    package = ET.parse(ROOT / "package.xml").getroot().findtext("name")
    assert c["PACKAGE"] == package == "dposer_ros"
    setup = (ROOT / "setup.py").read_text()
    assert re.search(rf"[\"']{c['EXECUTABLE']}\s*=\s*dposer_ros\.ros\.refine_node:run[\"']", setup), \
        "the launch file's executable is not a console_scripts entry of setup.py"
    assert re.search(rf"[\"']{c['LIFECYCLE_EXECUTABLE']}\s*=\s*dposer_ros\.ros\.refine_node:run_lifecycle[\"']", setup)
    # (that setup.py installs launch/*.py and config/**.yaml to share/dposer_ros is tests/test_ros_build.py's job)
    config = ROOT / "config" / c["CONFIG_FILE"]
    assert config.is_file()
    text = LAUNCH_FILE.read_text()
    assert "get_package_share_directory(PACKAGE)" in text and '"config", CONFIG_FILE' in text
    params = yaml.safe_load(config.read_text())["/**"]["ros__parameters"]
    assert set(params) == set(BY_NAME)


def test_every_launch_argument_maps_to_a_declared_parameter_or_topic(launch_constants):
    c = launch_constants
    for arg, (param, kind, help_text) in c["PARAMETER_ARGUMENTS"].items():
        assert param in BY_NAME, f"launch argument {arg!r} sets unknown node parameter {param!r}"
        default = BY_NAME[param].default
        assert isinstance(default, KIND[kind]) and (kind != "int" or not isinstance(default, bool)), \
            f"launch argument {arg!r}: type {kind} does not match parameter {param!r} = {default!r}"
        assert help_text
    node_strings = {n.value for n in ast.walk(ast.parse(NODE_FILE.read_text()))
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for arg, (topic, help_text) in c["REMAP_ARGUMENTS"].items():
        assert topic in node_strings, f"launch argument {arg!r} remaps {topic!r}, which the node does not use"
    # the arguments declared in generate_launch_description are exactly these plus config/node_name/namespace
    tree = ast.parse(LAUNCH_FILE.read_text())
    literal_args = {ast.literal_eval(call.args[0]) for call in ast.walk(tree)
                    if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "DeclareLaunchArgument"
                    and call.args and isinstance(call.args[0], ast.Constant)}
    assert literal_args == {"config", "node_name", "namespace", "lifecycle", "autostart", "use_sim_time"}
    assert not set(c["PARAMETER_ARGUMENTS"]) & set(c["REMAP_ARGUMENTS"])


def test_launch_description_loads_with_launch_ros():
    launch_ros = pytest.importorskip(
        "launch_ros", reason="launch / launch_ros are not on PyPI: only a full ROS 2 installation can load the file")
    import launch

    if not hasattr(launch, "LaunchDescription"):  # the repository's launch/ folder seen as a namespace package
        pytest.skip("the ROS 2 `launch` package is not installed")
    spec = importlib.util.spec_from_file_location("refine_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from ament_index_python.packages import PackageNotFoundError

    try:
        description = module.generate_launch_description()
    except PackageNotFoundError as err:  # the package must be installed (colcon build) for its share directory
        pytest.skip(f"dposer_ros share directory not found ({err})")
    declared = {e.name for e in description.entities if isinstance(e, launch.actions.DeclareLaunchArgument)}
    own = {"config", "node_name", "namespace", "lifecycle", "autostart", "use_sim_time"}
    assert declared == own | set(module.PARAMETER_ARGUMENTS) | set(module.REMAP_ARGUMENTS)
    context = launch.LaunchContext()
    for e in description.entities:
        if isinstance(e, launch.actions.DeclareLaunchArgument):
            e.visit(context)
    context.launch_configurations["steps"] = "2"
    nodes = [a for e in description.entities if isinstance(e, launch.actions.OpaqueFunction) for a in e.execute(context)]
    assert len(nodes) == 1 and isinstance(nodes[0], launch_ros.actions.Node)
