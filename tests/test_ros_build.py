"""The ROS 2 side of the build: package manifests, setup.py, the generated dposer_msgs
interfaces, and publish/subscribe of them in one process and across processes.

These tests never skip: scripts/bootstrap.sh (run by scripts/test.sh) installs rclpy from
PyPI and builds ros_ws/, so a missing rclpy or dposer_msgs is a broken set-up.
"""
import json
import os
import random
import subprocess
import sys
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WS = ROOT / "ros_ws"

ROS_PACKAGES = {"rclpy", "tf2_ros", "launch", "launch_ros", "ament_index_python"}  # besides every *_msgs / *_interfaces


def ros_imports() -> set[str]:
    """ROS packages the node and the launch file import (every import, also those inside functions)."""
    import ast

    found = set()
    for path in [*(ROOT / "dposer_ros" / "ros").glob("*.py"), *(ROOT / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                root = name.split(".")[0]
                if root in ROS_PACKAGES or root.endswith(("_msgs", "_interfaces")):
                    found.add(root)
    return found


DISCOVERY_TIMEOUT_S = 20.0
MESSAGE_TIMEOUT_S = 20.0


def _ros():
    """Import rclpy and the generated dposer_msgs, or fail with a clear message."""
    try:
        import rclpy  # noqa: F401

        from dposer_msgs import msg  # noqa: F401
    except ImportError as exc:  # pragma: no cover - only on a broken set-up
        pytest.fail(
            "rclpy / dposer_msgs are not importable (%s). They come from scripts/bootstrap.sh: "
            "run ./scripts/test.sh, or `bash scripts/bootstrap.sh && source scripts/env.sh` "
            "before pytest." % exc
        )
    import rclpy

    from dposer_msgs import msg

    return rclpy, msg


def _make_keypoints_array(msg, token, n_people=2, n_points=5):
    from geometry_msgs.msg import Point

    arr = msg.Keypoints3DArray()
    arr.header.frame_id = "world_" + token
    arr.header.stamp.sec = 1234
    arr.header.stamp.nanosec = 567
    for p in range(n_people):
        k = msg.Keypoints3D()
        k.header = arr.header
        k.person_id = "%s_%d" % (token, p)
        k.format = "smplx_55"
        k.points = [Point(x=0.1 * i + p, y=-0.2 * i, z=1.0 + 0.01 * i) for i in range(n_points)]
        k.confidences = [0.5 + 0.1 * i for i in range(n_points)]
        arr.people.append(k)
    return arr


def _check_keypoints_array(received, token, n_people=2, n_points=5):
    assert received.header.frame_id == "world_" + token
    assert (received.header.stamp.sec, received.header.stamp.nanosec) == (1234, 567)
    assert len(received.people) == n_people
    for p, k in enumerate(received.people):
        assert k.person_id == "%s_%d" % (token, p)
        assert k.format == "smplx_55"
        assert len(k.points) == n_points
        for i, pt in enumerate(k.points):
            assert (pt.x, pt.y, pt.z) == pytest.approx((0.1 * i + p, -0.2 * i, 1.0 + 0.01 * i))
        assert list(k.confidences) == pytest.approx([0.5 + 0.1 * i for i in range(n_points)], abs=1e-6)


def _make_smplx_array(msg, token):
    from geometry_msgs.msg import Point

    arr = msg.SmplxPoseArray()
    arr.header.frame_id = "world_" + token
    pose = msg.SmplxPose()
    pose.header = arr.header
    pose.person_id = token
    pose.global_orient = [0.1, 0.2, 0.3]
    pose.translation = [1.0, 2.0, 3.0]
    pose.body_pose = [0.01 * i for i in range(63)]
    pose.left_hand_pose = [-0.01 * i for i in range(45)]
    pose.right_hand_pose = [0.02 * i for i in range(45)]
    pose.jaw_pose = [0.3, 0.0, 0.0]
    pose.expression = [0.5] * 10
    pose.betas = [0.25] * 10
    pose.joints = [Point(x=float(i), y=0.0, z=0.0) for i in range(55)]
    pose.part_confidence = [0.9, 0.8, 0.7, 0.0]
    pose.part_completed = [False, False, False, True]
    pose.refine_time_ms = 3.5
    arr.people.append(pose)
    return arr


def _check_smplx_array(received, token):
    assert received.header.frame_id == "world_" + token
    assert len(received.people) == 1
    pose = received.people[0]
    assert pose.person_id == token
    assert list(pose.global_orient) == pytest.approx([0.1, 0.2, 0.3])
    assert list(pose.translation) == pytest.approx([1.0, 2.0, 3.0])
    assert list(pose.body_pose) == pytest.approx([0.01 * i for i in range(63)])
    assert list(pose.left_hand_pose) == pytest.approx([-0.01 * i for i in range(45)])
    assert list(pose.right_hand_pose) == pytest.approx([0.02 * i for i in range(45)])
    assert list(pose.jaw_pose) == pytest.approx([0.3, 0.0, 0.0])
    assert list(pose.expression) == pytest.approx([0.5] * 10)
    assert list(pose.betas) == pytest.approx([0.25] * 10)
    assert [p.x for p in pose.joints] == pytest.approx(list(range(55)))
    assert list(pose.part_confidence) == pytest.approx([0.9, 0.8, 0.7, 0.0], abs=1e-6)
    assert list(pose.part_completed) == [False, False, False, True]
    assert pose.refine_time_ms == pytest.approx(3.5)


@pytest.fixture
def domain_id(monkeypatch):
    """A random DDS domain for this test, set in the environment before rclpy.init
    (subprocesses inherit it) and passed to rclpy.init as well."""
    did = random.randint(1, 100)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(did))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return did


@pytest.fixture
def ros_context(domain_id):
    rclpy, _ = _ros()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    try:
        yield ctx
    finally:
        ctx.try_shutdown()


def _spin_until(executor, predicate, timeout_s, what, on_tick=None, tick_s=0.2):
    deadline = time.monotonic() + timeout_s
    next_tick = 0.0
    while not predicate():
        now = time.monotonic()
        if now > deadline:
            pytest.fail("timed out after %.0f s waiting for %s" % (timeout_s, what))
        if on_tick is not None and now >= next_tick:
            on_tick()
            next_tick = now + tick_s
        executor.spin_once(timeout_sec=0.05)


# --------------------------------------------------------------------------------------------
# manifests and setup.py
# --------------------------------------------------------------------------------------------
def test_package_xml_lists_required_dependencies():
    tree = ET.parse(ROOT / "package.xml")
    pkg = tree.getroot()
    assert pkg.tag == "package" and pkg.get("format") == "3"
    assert pkg.findtext("name") == "dposer_ros"
    assert pkg.findtext("license") == "Apache-2.0"
    assert [e.text for e in pkg.findall("buildtool_depend")] == ["ament_python"]
    exec_depends = {e.text for e in pkg.findall("exec_depend")} | {e.text for e in pkg.findall("depend")}
    required = ros_imports()
    assert {"rclpy", "dposer_msgs", "tf2_msgs", "hri_msgs"} <= required  # the scan sees the node's imports
    missing = required - exec_depends
    assert not missing, "package.xml lacks exec_depend on %s (imported by the node or launch file)" % sorted(missing)
    assert "python3-pytest" in {e.text for e in pkg.findall("test_depend")}
    assert pkg.find("export/build_type").text == "ament_python"
    assert (ROOT / "resource" / "dposer_ros").is_file()


def test_dposer_msgs_package_is_an_interface_package():
    pkg_dir = WS / "src" / "dposer_msgs"
    pkg = ET.parse(pkg_dir / "package.xml").getroot()
    assert pkg.get("format") == "3"
    assert pkg.findtext("name") == "dposer_msgs"
    assert pkg.findtext("member_of_group") == "rosidl_interface_packages"
    assert "rosidl_default_generators" in {e.text for e in pkg.findall("buildtool_depend")}
    assert pkg.find("export/build_type").text == "ament_cmake"
    cmake = (pkg_dir / "CMakeLists.txt").read_text()
    for name in ("Keypoints3D", "Keypoints3DArray", "SmplxPose", "SmplxPoseArray"):
        assert (pkg_dir / "msg" / (name + ".msg")).is_file()
        assert '"msg/%s.msg"' % name in cmake
    # the workspace sees the ament_python package through a relative symlink to the repo root
    link = WS / "src" / "dposer_ros"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == ROOT


def _setup_info():
    code = textwrap.dedent(
        """
        import json
        import setuptools  # noqa: F401  (provides distutils)
        from distutils.core import run_setup
        d = run_setup("setup.py", stop_after="init")
        print(json.dumps({"name": d.get_name(), "data_files": d.data_files,
                          "entry_points": d.entry_points, "packages": d.packages,
                          "package_data": d.package_data}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_setup_py_installs_launch_config_models_and_entry_points():
    info = _setup_info()
    assert info["name"] == "dposer_ros"
    data = {dest: list(files) for dest, files in info["data_files"]}
    assert data["share/ament_index/resource_index/packages"] == ["resource/dposer_ros"]
    assert data["share/dposer_ros"] == ["package.xml"]
    for dest in ("share/dposer_ros/launch", "share/dposer_ros/config", "share/dposer_ros/models"):
        assert dest in data, "setup.py data_files has no %s entry" % dest

    listed = {f for files in data.values() for f in files}
    for f in listed:
        assert (ROOT / f).is_file(), "data_files names a missing file %s" % f
    # every launch file, every config yaml (sub-folders kept) and every model file is installed
    for p in sorted(ROOT.glob("launch/*.py")):
        assert str(p.relative_to(ROOT)) in data["share/dposer_ros/launch"]
    for p in sorted(ROOT.glob("config/**/*.yaml")):
        rel = p.relative_to(ROOT)
        assert str(rel) in data.get(str(Path("share/dposer_ros") / rel.parent), []), rel
    for p in sorted(ROOT.glob("models/*")):
        if p.is_file():
            assert str(p.relative_to(ROOT)) in data["share/dposer_ros/models"]
    assert not any(f.startswith("models/engines") for f in listed), "models/engines must not be installed"

    scripts = set(info["entry_points"]["console_scripts"])
    assert {"dposer = dposer_ros.cli:main", "refine_node = dposer_ros.ros.refine_node:run"} <= {
        " ".join(s.split()) for s in scripts
    }
    assert "dposer_ros" in info["packages"]
    assert not any(p == "tests" or p.startswith("tests.") for p in info["packages"])
    assert "*.json" in info["package_data"][""] and "*.yaml" in info["package_data"][""]


def test_ament_index_finds_both_packages():
    _ros()
    from ament_index_python.packages import get_package_share_directory

    for name in ("dposer_msgs", "dposer_ros"):
        share = Path(get_package_share_directory(name))
        assert (share / "package.xml").is_file(), share


# --------------------------------------------------------------------------------------------
# generated messages
# --------------------------------------------------------------------------------------------
def test_generated_messages_have_the_specified_fields():
    _, msg = _ros()
    fields = msg.SmplxPose.get_fields_and_field_types()
    expected = {
        "header": "std_msgs/Header",
        "person_id": "string",
        "global_orient": "double[3]",
        "translation": "double[3]",
        "body_pose": "double[63]",
        "left_hand_pose": "double[45]",
        "right_hand_pose": "double[45]",
        "jaw_pose": "double[3]",
        "leye_pose": "double[3]",
        "reye_pose": "double[3]",
        "expression": "sequence<double>",
        "betas": "sequence<double>",
        "joints": "sequence<geometry_msgs/Point>",
        "part_confidence": "float[4]",
        "part_completed": "boolean[4]",
        "refine_time_ms": "float",
        "refine_steps": "uint8",
        "failed": "boolean",
    }
    assert fields == expected
    assert msg.Keypoints3D.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "person_id": "string",
        "format": "string",
        "points": "sequence<geometry_msgs/Point>",
        "confidences": "sequence<float>",
    }
    assert msg.Keypoints3DArray.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "people": "sequence<dposer_msgs/Keypoints3D>",
    }
    assert msg.SmplxPoseArray.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "people": "sequence<dposer_msgs/SmplxPose>",
    }


def test_smplx_pose_fixed_size_arrays():
    _, msg = _ros()
    pose = msg.SmplxPose()
    sizes = {
        "global_orient": 3,
        "translation": 3,
        "body_pose": 63,
        "left_hand_pose": 45,
        "right_hand_pose": 45,
        "jaw_pose": 3,
        "leye_pose": 3,
        "reye_pose": 3,
        "part_confidence": 4,
        "part_completed": 4,
    }
    for name, n in sizes.items():
        assert len(getattr(pose, name)) == n, name
    assert not any(pose.part_completed)
    assert len(pose.joints) == 0 and len(pose.betas) == 0 and len(pose.expression) == 0
    assert (pose.PART_BODY, pose.PART_LEFT_HAND, pose.PART_RIGHT_HAND, pose.PART_FACE) == (0, 1, 2, 3)
    assert pose.NUM_JOINTS == 55
    # The generated setters check lengths only with check_fields=True (or ROS_PYTHON_CHECK_FIELDS=1
    # at import); unchecked, a wrong-length fixed array serializes silently with garbage/truncation.
    checked = msg.SmplxPose(check_fields=True)
    with pytest.raises(AssertionError):
        checked.body_pose = [0.0] * 62
    with pytest.raises(AssertionError):
        checked.left_hand_pose = [0.0] * 46
    with pytest.raises(AssertionError):
        checked.part_completed = [True] * 3
    checked.body_pose = [1.0] * 63
    assert float(sum(checked.body_pose)) == 63.0


def test_serialization_round_trip():
    _, msg = _ros()
    from rclpy.serialization import deserialize_message, serialize_message

    token = uuid.uuid4().hex[:8]
    kp = _make_keypoints_array(msg, token)
    _check_keypoints_array(deserialize_message(serialize_message(kp), msg.Keypoints3DArray), token)
    sp = _make_smplx_array(msg, token)
    _check_smplx_array(deserialize_message(serialize_message(sp), msg.SmplxPoseArray), token)


# --------------------------------------------------------------------------------------------
# publish / subscribe
# --------------------------------------------------------------------------------------------
def test_pub_sub_in_one_process(ros_context):
    rclpy, msg = _ros()
    from rclpy.executors import SingleThreadedExecutor

    token = uuid.uuid4().hex[:8]
    topic = "/dposer_test_%s/keypoints" % token
    pub_node = rclpy.create_node("dposer_test_pub_" + token, context=ros_context)
    sub_node = rclpy.create_node("dposer_test_sub_" + token, context=ros_context)
    received = []
    pub = pub_node.create_publisher(msg.Keypoints3DArray, topic, 10)
    sub_node.create_subscription(msg.Keypoints3DArray, topic, received.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(pub_node)
    executor.add_node(sub_node)
    try:
        _spin_until(
            executor,
            lambda: pub.get_subscription_count() >= 1 and sub_node.count_publishers(topic) >= 1,
            DISCOVERY_TIMEOUT_S,
            "the in-process subscription to match",
        )
        out = _make_keypoints_array(msg, token)
        # re-sent every 0.2 s until it arrives (a match on one side may precede the other's)
        _spin_until(executor, lambda: received, MESSAGE_TIMEOUT_S, "the message", on_tick=lambda: pub.publish(out))
        _check_keypoints_array(received[0], token)
    finally:
        executor.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()


PUBLISHER_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[3])
    import rclpy
    from dposer_msgs import msg
    from test_ros_build import _make_keypoints_array, _make_smplx_array

    token, domain_id = sys.argv[1], int(sys.argv[2])
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = rclpy.create_node("dposer_test_child_" + token, context=ctx)
    kp_pub = node.create_publisher(msg.Keypoints3DArray, "/dposer_test_%s/keypoints" % token, 10)
    sp_pub = node.create_publisher(msg.SmplxPoseArray, "/dposer_test_%s/smplx" % token, 10)
    kp, sp = _make_keypoints_array(msg, token), _make_smplx_array(msg, token)
    print("child: publishing", flush=True)
    deadline = time.monotonic() + float(sys.argv[4])
    matched_at = None
    while time.monotonic() < deadline:
        if kp_pub.get_subscription_count() >= 1 and sp_pub.get_subscription_count() >= 1:
            if matched_at is None:
                matched_at = time.monotonic()
                print("child: matched", flush=True)
            kp_pub.publish(kp)
            sp_pub.publish(sp)
        time.sleep(0.1)
    print("child: deadline reached, matched=%s" % (matched_at is not None), flush=True)
    node.destroy_node()
    ctx.try_shutdown()
    """
)


def test_pub_sub_across_processes(ros_context, domain_id):
    rclpy, msg = _ros()
    from rclpy.executors import SingleThreadedExecutor

    token = uuid.uuid4().hex[:8]
    node = rclpy.create_node("dposer_test_parent_" + token, context=ros_context)
    got_kp, got_sp = [], []
    node.create_subscription(msg.Keypoints3DArray, "/dposer_test_%s/keypoints" % token, got_kp.append, 10)
    node.create_subscription(msg.SmplxPoseArray, "/dposer_test_%s/smplx" % token, got_sp.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)

    child_life_s = DISCOVERY_TIMEOUT_S + MESSAGE_TIMEOUT_S + 15
    child = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER_CHILD, token, str(domain_id), str(Path(__file__).parent), str(child_life_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, ROS_DOMAIN_ID=str(domain_id)),
    )
    try:
        def child_alive_or_fail():
            if child.poll() is not None:
                pytest.fail("publisher process exited early (rc=%s):\n%s" % (child.returncode, child.stdout.read()))
            return False

        # both directions of discovery: the child only publishes once it sees our subscriptions
        _spin_until(
            executor,
            lambda: (node.count_publishers("/dposer_test_%s/keypoints" % token) >= 1
                     and node.count_publishers("/dposer_test_%s/smplx" % token) >= 1)
            or child_alive_or_fail(),
            DISCOVERY_TIMEOUT_S + 10,  # includes the child's interpreter start and rclpy import
            "the publisher process to be discovered",
        )
        _spin_until(
            executor,
            lambda: (got_kp and got_sp) or child_alive_or_fail(),
            MESSAGE_TIMEOUT_S,
            "messages from the publisher process",
        )
        _check_keypoints_array(got_kp[0], token)
        _check_smplx_array(got_sp[0], token)
    finally:
        executor.shutdown()
        node.destroy_node()
        if child.poll() is None:
            child.terminate()
        try:
            child.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()


def test_the_library_reports_the_version_of_package_xml():
    """One version, in package.xml: setup.py reads it there and `dposer_ros.__version__` from the install."""
    import dposer_ros

    assert dposer_ros.__version__ == ET.parse(ROOT / "package.xml").getroot().findtext("version")
