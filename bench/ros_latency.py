"""End-to-end latency and load of the refine node, across processes with real rclpy.

    source scripts/env.sh
    nice -n 10 python bench/ros_latency.py                      # both phases, shipped prior
    nice -n 10 python bench/ros_latency.py --model /tmp/tinyrun/prior.pt --load-seconds 10

The node runs in a subprocess (`python -m dposer_ros.ros.refine_node` with config/refine.yaml) in a random DDS
domain. This process publishes dposer_msgs/Keypoints3DArray and listens to dposer_msgs/SmplxPoseArray.

Phase 1, latency: one person at 30 Hz: end-to-end latency (publish -> answer received; the header stamp is the
publish time, same machine clock) against the solver's own compute time (`refine_time_ms` of the answer).
Phase 2, load: N people (default 10) in one message at 60 Hz for 30 s: answers, latency per 5 s window (stable?),
the node's resident memory sampled every 0.5 s (bounded?), drops and malformed counts from /diagnostics, crash or not.

Keypoints: random SMPL-X poses (a smooth random walk per person, different places) through the keypoint format.
Writes JSON (default out/bench/ros_latency.json) and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import torch
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile

from dposer_msgs.msg import Keypoints3D, Keypoints3DArray, SmplxPoseArray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dposer_ros.body import ForwardKinematics, smplx_neutral  # noqa: E402
from dposer_ros.keypoints import get_format  # noqa: E402
from dposer_ros.ros.convert import diagnostic_values  # noqa: E402
from dposer_ros.ros.process import NodeProcess  # noqa: E402
from dposer_ros.ros.refine_node import default_model_path  # noqa: E402
from dposer_ros.solvers.refine import RefineSettings  # noqa: E402


def make_people(fmt_name: str, people: int, frames: int, seed: int = 0, hide_leg: bool = False) -> list[list[Keypoints3D]]:
    """people x frames prebuilt Keypoints3D (a smooth random walk of poses per person, 2 m apart); with `hide_leg`
    the left knee, ankle and foot keypoints at confidence 0."""
    fmt = get_format(fmt_name)
    leg = [smplx_neutral().index(n) for n in ("left_knee", "left_ankle", "left_foot")]
    confidences = [0.0 if hide_leg and int(j) in leg else 1.0 for j in fmt.joints]
    fk = ForwardKinematics()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for p in range(people):
        steps = torch.randn(frames, 55, 3, generator=gen, dtype=torch.float64) * 0.01
        pose = (torch.randn(1, 55, 3, generator=gen, dtype=torch.float64) * 0.1 + steps.cumsum(0)).clamp(-0.6, 0.6)
        pose[:, 0] = torch.tensor([1.2092, 1.2092, 1.2092], dtype=torch.float64)  # y-up body -> z-up frame
        transl = torch.tensor([[2.0 * (p % 5), 2.0 * (p // 5), 0.0]], dtype=torch.float64).expand(frames, 3)
        pts = fmt.from_posed(fk(pose, transl)).numpy()
        out.append([Keypoints3D(person_id=f"p{p}", format=fmt_name,
                                points=[Point(x=float(x), y=float(y), z=float(z)) for x, y, z in pts[f]],
                                confidences=confidences) for f in range(frames)])
    return out


def rss_mb(pid: int) -> float | None:
    """Resident memory of the process and its children (the node's solver process), MB."""
    try:
        total = 0.0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total = int(line.split()[1]) / 1024.0
        for listing in Path(f"/proc/{pid}/task").glob("*/children"):
            total += sum(rss_mb(int(child)) or 0.0 for child in listing.read_text().split())
        return total
    except OSError:
        return None


class Bench:
    def __init__(self, domain: int) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("ros_latency_bench", context=self.ctx)
        self.pub = self.node.create_publisher(Keypoints3DArray, "keypoints", QoSProfile(depth=10))
        self.lock = threading.Lock()
        self.answers: list[tuple[int, int, float, int, float]] = []  # stamp ns, recv ns, refine ms, people, mono
        self.quality: list[tuple[int, int, int, int]] = []  # per answer: people, failed, insane (NaN / > 100 m), steps
        self.diag: dict = {}
        self.sub = self.node.create_subscription(SmplxPoseArray, "smplx_poses", self._on_poses, QoSProfile(depth=1000))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        threading.Thread(target=self._spin, daemon=True).start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001
            pass

    def _on_poses(self, msg: SmplxPoseArray) -> None:
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        refine = msg.people[0].refine_time_ms if msg.people else float("nan")
        failed = sum(p.failed for p in msg.people)
        insane = 0
        for p in msg.people:
            j = np.array([(q.x, q.y, q.z) for q in p.joints]).reshape(-1, 3)
            values = np.concatenate([j.ravel(), np.asarray(p.translation), np.asarray(p.body_pose)])
            insane += int(not np.isfinite(values).all() or (np.abs(j).max(initial=0.0) > 100.0))
        steps = sum(int(p.refine_steps) for p in msg.people)
        with self.lock:
            self.answers.append((stamp, now, refine, len(msg.people), time.monotonic()))
            self.quality.append((len(msg.people), failed, insane, steps))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diag = diagnostic_values(msg)

    def wait_connected(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.pub.get_subscription_count() and self.sub.get_publisher_count():
                return True
            time.sleep(0.05)
        return False

    def run(self, frames: list[list[Keypoints3D]], rate_hz: float, seconds: float, pid: int) -> dict:
        with self.lock:
            self.answers.clear()
            self.quality.clear()
        diag0 = dict(self.diag)
        sent: list[int] = []
        rss: list[tuple[float, float]] = []
        n_frames = len(frames[0])
        start = time.monotonic()
        next_rss = start
        i = 0
        while True:
            t = start + i / rate_hz
            now = time.monotonic()
            if t - start >= seconds:
                break
            if t > now:
                time.sleep(t - now)
            stamp = time.time_ns()
            msg = Keypoints3DArray()
            msg.header.frame_id = "world"
            msg.header.stamp = Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000)
            msg.people = [person[i % n_frames] for person in frames]
            self.pub.publish(msg)
            sent.append(stamp)
            i += 1
            if time.monotonic() >= next_rss:
                rss.append((time.monotonic() - start, rss_mb(pid) or float("nan")))
                next_rss += 0.5
        time.sleep(2.0)  # answers in flight, one more diagnostics period
        with self.lock:
            answers = list(self.answers)
            quality = list(self.quality)
            diag1 = dict(self.diag)
        sent_set = set(sent)
        keep = [a[0] in sent_set for a in answers]
        answers = [a for a, k in zip(answers, keep) if k]
        quality = [q for q, k in zip(quality, keep) if k]
        lat = np.array([(a[1] - a[0]) / 1e6 for a in answers])
        refine = np.array([a[2] for a in answers])
        t_ans = np.array([(a[0] - sent[0]) / 1e9 for a in answers])
        windows = []
        for lo in np.arange(0, seconds, 5.0):
            sel = (t_ans >= lo) & (t_ans < lo + 5.0)
            if sel.any():
                windows.append({"from_s": float(lo), "answers": int(sel.sum()),
                                "latency_p50_ms": float(np.median(lat[sel])),
                                "latency_p99_ms": float(np.percentile(lat[sel], 99))})
        pct = lambda a, q: float(np.percentile(a, q)) if len(a) else float("nan")  # noqa: E731
        rss_v = np.array([r for _, r in rss])
        return {
            "people": len(frames), "rate_hz": rate_hz, "seconds": seconds, "sent": len(sent),
            "answered": len(answers), "people_answered": int(sum(a[3] for a in answers)),
            "person_frames_sent": len(sent) * len(frames),
            "person_latency_ms": [[round((a[1] - a[0]) / 1e6, 2), a[3]] for a in answers],
            "failed": int(sum(q[1] for q in quality)), "insane": int(sum(q[2] for q in quality)),
            "refine_steps_mean": float(sum(q[3] for q in quality) / max(1, sum(q[0] - q[1] for q in quality))),
            "latency_p50_ms": pct(lat, 50), "latency_p90_ms": pct(lat, 90), "latency_p99_ms": pct(lat, 99),
            "latency_max_ms": float(lat.max()) if len(lat) else float("nan"),
            "solver_p50_ms": pct(refine, 50), "solver_p99_ms": pct(refine, 99),
            "windows": windows,
            "rss_mb_samples": [[round(t, 1), round(r, 1)] for t, r in rss],
            "rss_mb_first": float(rss_v[0]) if len(rss_v) else None,
            "rss_mb_mid": float(rss_v[len(rss_v) // 2]) if len(rss_v) else None,
            "rss_mb_last": float(rss_v[-1]) if len(rss_v) else None,
            "rss_mb_max": float(np.nanmax(rss_v)) if len(rss_v) else None,
            "drops": int(diag1.get("drops", 0)) - int(diag0.get("drops", 0)),
            "malformed": int(diag1.get("malformed_total", 0)) - int(diag0.get("malformed_total", 0)),
            "node_diag": diag1,
        }

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="prior (default: the shipped models/dposer_cpu/prior.pt)")
    ap.add_argument("--format", default="coco_wholebody133", help="keypoint format of the published people")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--latency-rate", type=float, default=30.0)
    ap.add_argument("--load-people", type=int, default=10)
    ap.add_argument("--load-rate", type=float, default=60.0)
    ap.add_argument("--load-seconds", type=float, default=30.0)
    ap.add_argument("--steps", type=int, default=RefineSettings.steps, help="refinement steps per frame")
    ap.add_argument("--threads", type=int, default=1, help="the node's torch threads")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "ros_latency.json")
    args = ap.parse_args()
    model = args.model or default_model_path()
    if not model.is_file():
        print(f"no prior at {model}; pass --model", file=sys.stderr)
        return 2
    domain = random.randint(120, 229)
    log = args.out.with_suffix(".node.log")
    people_lat = make_people(args.format, 1, 90)
    people_load = make_people(args.format, args.load_people, 120, seed=1)
    proc = NodeProcess({"model_path": model, "steps": args.steps, "threads": args.threads, "person_timeout": 5.0},
                       log, domain)
    print(f"frames: {args.format}; node: {' '.join(proc.cmd[2:])}", flush=True)
    bench = Bench(domain)
    result = {"command": "python bench/ros_latency.py " + " ".join(sys.argv[1:]), "model": str(model),
              "format": args.format, "steps": args.steps, "node_threads": args.threads,
              "machine": f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}, Python "
                         f"{platform.python_version()}, torch {torch.__version__}",
              "load_average_start": os.getloadavg()}
    try:
        if not bench.wait_connected(60.0):
            print(f"node did not come up; log {log}", file=sys.stderr)
            return 1
        time.sleep(1.0)
        print(f"phase 1: 1 person at {args.latency_rate:.0f} Hz for {args.latency_seconds:.0f} s", flush=True)
        result["latency"] = bench.run(people_lat, args.latency_rate, args.latency_seconds, proc.pid)
        print(json.dumps({k: v for k, v in result["latency"].items()
                          if k not in ("windows", "node_diag", "rss_mb_samples")}), flush=True)
        print(f"phase 2: {args.load_people} people at {args.load_rate:.0f} Hz for {args.load_seconds:.0f} s", flush=True)
        result["load"] = bench.run(people_load, args.load_rate, args.load_seconds, proc.pid)
        print(json.dumps({k: v for k, v in result["load"].items() if k not in ("node_diag", "rss_mb_samples")}),
              flush=True)
        result["node_alive"] = proc.alive()
        result["load_average_end"] = os.getloadavg()
    finally:
        bench.close()
        proc.stop()
    args.out.write_text(json.dumps(result, indent=2))
    lat, load = result["latency"], result["load"]
    print("\n| phase | people x rate | frames sent / answered | end-to-end p50 / p99 (ms) | solver p50 (ms) |")
    print("|---|---|---:|---:|---:|")
    print(f"| latency | 1 x {lat['rate_hz']:.0f} Hz | {lat['sent']} / {lat['answered']} | "
          f"{lat['latency_p50_ms']:.1f} / {lat['latency_p99_ms']:.1f} | {lat['solver_p50_ms']:.1f} |")
    print(f"| load | {load['people']} x {load['rate_hz']:.0f} Hz | {load['sent']} / {load['answered']} | "
          f"{load['latency_p50_ms']:.1f} / {load['latency_p99_ms']:.1f} | {load['solver_p50_ms']:.1f} |")
    print(f"load: node RSS {load['rss_mb_first']:.0f} -> {load['rss_mb_mid']:.0f} (half-way) -> "
          f"{load['rss_mb_last']:.0f} MB (max {load['rss_mb_max']:.0f}), "
          f"person drops {load['drops']}, malformed {load['malformed']}, node alive: {result['node_alive']}")
    print("load latency per 5 s window (p50 ms): " + ", ".join(f"{w['latency_p50_ms']:.0f}" for w in load["windows"]))
    print(f"json: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
