"""Signals under load: the refine node is sent SIGINT or SIGTERM while refining 800-person messages.

    source scripts/env.sh
    python bench/shutdown.py --trials 20            # 20 x SIGINT and 20 x SIGTERM, shipped prior

Each trial starts a node (config/refine.yaml, max_people 1000 so that every person is refined), publishes 800
people at 10 Hz for 2 s, then signals it. Reported: exit codes, seconds to exit, and log lines that say ERROR,
Traceback or terminate. Writes JSON (default out/bench/shutdown.json).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dposer_ros.body import ForwardKinematics  # noqa: E402
from dposer_ros.keypoints import get_format  # noqa: E402
from dposer_ros.ros.process import stop_under_load  # noqa: E402
from dposer_ros.ros.refine_node import default_model_path  # noqa: E402


def table(result: dict) -> str:
    """The markdown table of a run (scripts/gen_results_tables.py quotes it)."""
    lines = ["| signal | trials | exit code 0 | slowest exit (s) | median exit (s) | runs with error lines |",
             "|---|---:|---:|---:|---:|---:|"]
    for sig, v in result["summary"].items():
        times = sorted(t["seconds"] for t in result["trials"] if t["signal"] == sig)
        lines.append(f"| {sig} | {v['trials']} | {v['exit_0']} | {v['max_seconds']:.2f} | "
                     f"{times[len(times) // 2]:.2f} | {v['with_error_lines']} |")
    lines += ["", f"Run {result.get('date', 'on an unrecorded date')} (`{result['command']}`)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20, help="per signal")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--format", default="coco17")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "shutdown.json")
    ap.add_argument("--node-param", action="append", default=[], metavar="NAME=VALUE",
                    help="another node parameter for every trial (e.g. solver_process=true)")
    args = ap.parse_args()
    extra = dict(p.split("=", 1) for p in args.node_param)
    model = args.model or default_model_path()
    fmt = get_format(args.format)
    pts = fmt.from_posed(ForwardKinematics()(torch.zeros(1, 55, 3, dtype=torch.float64)))[0].numpy()
    trials = []
    for i in range(args.trials):
        for sig in (signal.SIGINT, signal.SIGTERM):
            code, took, log = stop_under_load({"model_path": model, "max_people": 1000, **extra}, sig,
                                              ROOT / "out" / "bench" / "shutdown.node.log", random.randint(120, 229),
                                              pts, fmt.name)
            bad = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line or "terminate" in line]
            trials.append({"signal": sig.name, "exit_code": code, "seconds": round(took, 3), "error_lines": bad})
            print(f"{i + 1:2d} {sig.name}: exit {code} after {took:.2f} s, {len(bad)} error lines", flush=True)
    summary = {s: {"trials": len(t), "exit_0": sum(x["exit_code"] == 0 for x in t),
                   "max_seconds": max(x["seconds"] for x in t), "with_error_lines": sum(bool(x["error_lines"]) for x in t)}
               for s in ("SIGINT", "SIGTERM") for t in [[x for x in trials if x["signal"] == s]]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python bench/shutdown.py " + " ".join(sys.argv[1:]),
                                    "date": time.strftime("%Y-%m-%d"), "summary": summary, "trials": trials}, indent=1))
    for s, v in summary.items():
        print(f"{s}: {v['exit_0']}/{v['trials']} exit 0, slowest {v['max_seconds']:.2f} s, "
              f"{v['with_error_lines']} with error lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
