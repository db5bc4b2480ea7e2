"""The refine node as a child process: started with config/refine.yaml and overrides, stopped by a signal.

One helper for everything that runs the node out of process (the demo, the tests, the benchmarks), so all of them
start it the same way (own DDS domain, unbuffered log file) and stop it the same way (SIGINT, then a bounded wait,
then SIGKILL, and say so).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..paths import config_path


class NodeProcess:
    """`python -m dposer_ros.ros.refine_node --ros-args --params-file <config> -p name:=value ...` in a child."""

    def __init__(self, params: dict[str, object], log_path: Path, domain_id: int,
                 config: Path | None = None, localhost_only: bool = True, source: Path | None = None) -> None:
        """`source`: a checkout whose `dposer_ros` runs instead of this one (another revision, side by side)."""
        self.log_path = Path(log_path)
        self.domain_id = domain_id
        self.cmd = [sys.executable, "-m", "dposer_ros.ros.refine_node", "--ros-args",
                    "--params-file", str(config or config_path("refine.yaml"))]
        for name, value in params.items():
            self.cmd += ["-p", f"{name}:={_text(value)}"]
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1")
        if source is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(source), env.get("PYTHONPATH", "")) if p)
        if localhost_only:
            env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=source)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:] if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> tuple[int, float]:
        """Send `sig`, wait up to `timeout` s (then SIGKILL); returns (exit code, seconds to exit). A negative code
        is the signal that ended it (-9: it had to be killed)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5.0)
        return self.proc.returncode, time.monotonic() - t0

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def stop_under_load(params: dict[str, object], sig: int, log_path: Path, domain_id: int, keypoints, fmt: str,
                    people: int = 800, rate_hz: float = 10.0, seconds: float = 2.0) -> tuple[int, float, str]:
    """Start the node, load it with `people`-person messages (each person `keypoints` (K, 3) in format `fmt`) at
    `rate_hz` for `seconds`, so that it is refining when `sig` comes; returns (exit code, seconds to exit, log)."""
    import rclpy
    from geometry_msgs.msg import Point
    from rclpy.qos import QoSProfile

    from dposer_msgs.msg import Keypoints3D, Keypoints3DArray

    node = NodeProcess(params, log_path, domain_id)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    client = rclpy.create_node("dposer_load", context=ctx)
    pub = client.create_publisher(Keypoints3DArray, "keypoints", QoSProfile(depth=5))
    pts = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in keypoints]
    msg = Keypoints3DArray()
    msg.header.frame_id = "load"
    msg.people = [Keypoints3D(person_id=str(i), format=fmt, points=pts, confidences=[1.0] * len(pts))
                  for i in range(people)]
    try:
        end = time.monotonic() + 60.0
        while pub.get_subscription_count() == 0 and time.monotonic() < end and node.alive():
            time.sleep(0.1)
        if not node.alive() or pub.get_subscription_count() == 0:
            raise RuntimeError(f"the node did not come up:\n{node.log()}")
        for i in range(int(seconds * rate_hz)):
            msg.header.stamp.sec = 10 + i
            pub.publish(msg)
            time.sleep(1.0 / rate_hz)
        code, took = node.stop(sig, timeout=10.0)
    finally:
        client.destroy_node()
        rclpy.try_shutdown(context=ctx)
        node.stop()
    return code, took, node.log(1_000_000)
