"""A tracked person among a flood of new ids, with the node's flood wait and without, phases alternating.

    source scripts/env.sh
    python bench/new_ids_flood.py --rate 2000 --rounds 2

Each phase starts one node (the shipped prior, latency budget 50 ms) and publishes, from this process, COCO-17
messages at `--rate` for 4 s, each with one person of a new id (a tracker that makes up ids, a replayed crowd),
and a tracked person in the next message every 1/30 s; then 2 s of the tracked person alone. Reported: the tracked
person's answers and the longest gap between two of them. Writes JSON (default bench/eval/new_ids_flood.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def phase(rate: float, params: dict, log: Path) -> dict:
    import rclpy
    import torch
    from geometry_msgs.msg import Point
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile

    from dposer_msgs.msg import Keypoints3D, Keypoints3DArray, SmplxPoseArray
    from dposer_ros.body import ForwardKinematics
    from dposer_ros.keypoints import get_format
    from dposer_ros.ros.process import NodeProcess
    from dposer_ros.ros.refine_node import default_model_path

    fmt = get_format("coco17")
    pose = torch.zeros(1, 55, 3, dtype=torch.float64)
    pose[0, 0] = torch.tensor([1.2092, 1.2092, 1.2092])  # a y-up body in a z-up frame
    pts = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in
           fmt.from_posed(ForwardKinematics()(pose, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)))[0].tolist()]
    domain = random.randint(120, 229)
    node = NodeProcess({"model_path": default_model_path(), "latency_budget_ms": 50.0, **params}, log, domain)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    client = rclpy.create_node("new_ids_flood", context=ctx)
    answers: list[float] = []
    client.create_subscription(SmplxPoseArray, "smplx_poses", lambda m: answers.extend(
        time.monotonic() for p in m.people if p.person_id == "tracked"), QoSProfile(depth=1000))
    pub = client.create_publisher(Keypoints3DArray, "keypoints", QoSProfile(depth=5))
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        end = time.monotonic() + 60.0
        while pub.get_subscription_count() == 0 and time.monotonic() < end:
            time.sleep(0.1)
        start, sent, last = time.monotonic(), 0, 0.0
        while (now := time.monotonic()) - start < 6.0:
            if now - start < sent / rate:
                time.sleep(start + sent / rate - now)
                continue
            people = [Keypoints3D(person_id=f"new{sent}", format=fmt.name, points=pts, confidences=[1.0] * len(pts))
                      ] if now - start < 4.0 else []
            if now - last >= 1 / 30:
                people.append(Keypoints3D(person_id="tracked", format=fmt.name, points=pts, confidences=[1.0] * len(pts)))
                last = now
            if people:
                msg = Keypoints3DArray(people=people)
                msg.header.frame_id = "world"
                msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1.0) * 1e9)
                pub.publish(msg)
            sent += 1
        time.sleep(1.0)
        during = [t for t in answers if t < start + 4.0]
        gaps = [b - a for a, b in zip([start, *answers], [*answers, start + 6.0])]
        return {"sent": sent, "tracked_answers": len(answers), "tracked_answers_during_flood": len(during),
                "longest_gap_s": round(max(gaps), 2)}
    finally:
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown(context=ctx)
        node.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=2000.0, help="messages a second of the flood")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "eval" / "new_ids_flood.json")
    args = ap.parse_args()
    rows = []
    for i in range(args.rounds):
        for name, params in (("flood wait (default)", {}), ("flood_replaced=0", {"flood_replaced": 0})):
            row = {"phase": f"{name} ({i + 1})", **phase(args.rate, params, Path(f"/tmp/new_ids_flood_{i}.log"))}
            rows.append(row)
            print(row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": datetime.date.today().isoformat(), "machine": platform.platform(),
                                    "command": "python bench/new_ids_flood.py " + " ".join(sys.argv[1:]),
                                    "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
