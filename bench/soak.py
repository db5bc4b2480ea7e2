"""The refine node under load, with and without its latency budget, side by side; and a long soak.

    source scripts/env.sh
    python bench/soak.py budget --people 10 --rate 60 --seconds 20 --rounds 2     # budget 50 ms vs off (ABAB)
    python bench/soak.py soak --people 10 --rate 30 --seconds 600                 # 10 minutes, budget on
    python bench/soak.py ab --param weak_hold_weight=0.0 --rounds 6 --seconds 15  # a node parameter, ABAB
    python bench/soak.py ab --against v0.6.2                                      # another revision's node, ABAB

`budget`: the node is started once per phase (same machine, one after the other, alternating: off, on, off, on)
and loaded with N people in one message at R Hz. Reported per phase: the fraction of person-frames answered within
the budget, end-to-end latency percentiles (publish -> answer received), the mean prior steps of the answers
(SmplxPose.refine_steps), failed answers and answers with NaN or joints beyond 100 m.
`soak`: one node, budget on, for `--seconds`: the same figures, and the node's resident memory after warm-up
(the first minute) against the end.
`ab`: budget on in every phase; phases alternate between the defaults and the `--param` values (one node each), or
the node of git revision `--against` (checked out into a temporary worktree, run with its own config/refine.yaml), so
that a parameter's cost under load is measured side by side.

Writes JSON (default out/bench/soak_<mode>.json) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ros_latency import Bench, make_people  # noqa: E402

from dposer_ros.ros.process import NodeProcess  # noqa: E402
from dposer_ros.ros.refine_node import default_model_path  # noqa: E402


def phase(model: Path, budget_ms: float, people, rate: float, seconds: float, out_dir: Path, tag: str,
          within_ms: float, extra: dict | None = None, node_cpus: set[int] | None = None,
          source: Path | None = None) -> dict:
    domain = random.randint(120, 229)
    node = NodeProcess({"model_path": model, "latency_budget_ms": budget_ms, "person_timeout": 5.0, **(extra or {})},
                       out_dir / f"{tag}.node.log", domain, config=None if source is None else
                       source / "config" / "refine.yaml", source=source)
    if node_cpus:  # before the node starts its threads (they inherit it): its imports take a second
        os.sched_setaffinity(node.pid, node_cpus)
    bench = Bench(domain)
    try:
        if not bench.wait_connected(90.0):
            raise RuntimeError(f"node did not come up:\n{node.log()}")
        time.sleep(1.0)
        bench.run(people, rate, 3.0, node.pid)  # warm-up (first cold starts, first cost estimates)
        res = bench.run(people, rate, seconds, node.pid)
    finally:
        bench.close()
        code, stop_s = node.stop()
    lat = res.pop("person_latency_ms")
    sent = res["person_frames_sent"]
    in_time = sum(n for ms, n in lat if ms <= within_ms)
    res.update(budget_ms=budget_ms, within_ms=within_ms, answered_fraction=res["people_answered"] / max(1, sent),
               answered_within_fraction=in_time / max(1, sent), exit_code=code, exit_s=stop_s)
    return res


def table(result: dict) -> str:
    """The markdown table of a run (scripts/gen_results_tables.py quotes it), with its command and machine."""
    within = result["phases"][0]["within_ms"]
    lines = [HEADER.format(w=within)] + [row(r["name"], r) for r in result["phases"]]
    seen = ", left leg hidden" if result.get("hide_leg") else ""
    if result.get("node_cpus"):
        seen += f"; node on CPU {result['node_cpus']}, load generator on CPU {result.get('bench_cpus') or 'any'}"
    lines += ["", f"{result['people']} people ({result['format']}{seen}) in one message at {result['rate_hz']:.0f} Hz; run "
                  f"{result.get('date', 'on an unrecorded date')} on {result['machine']} (`{result['command']}`)."]
    if "rss_growth_mb" in result["phases"][0]:
        r = result["phases"][0]
        lines[-1] += (f" Node RSS after the first minute {r['rss_mb_after_warmup']:.0f} MB, growth to the end "
                      f"{r['rss_growth_mb']:+.1f} MB.")
    return "\n".join(lines) + "\n"


def row(name: str, r: dict) -> str:
    return (f"| {name} | {r['answered_within_fraction'] * 100:.1f} % | {r['answered_fraction'] * 100:.1f} % | "
            f"{r['latency_p50_ms']:.0f} / {r['latency_p99_ms']:.0f} | {r['refine_steps_mean']:.2f} | "
            f"{r['failed']} / {r['insane']} | {r['rss_mb_first']:.0f} -> {r['rss_mb_last']:.0f} |")


HEADER = ("| phase | person-frames answered within {w:.0f} ms | answered at all | latency p50 / p99 (ms) | "
          "prior steps (mean) | failed / NaN or > 100 m | node RSS (MB, its solver process included) |\n"
          "|---|---:|---:|---:|---:|---:|---:|")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("budget", "soak", "ab"))
    ap.add_argument("--model", type=Path, default=None, help="prior (default: the shipped one)")
    ap.add_argument("--format", default="coco_wholebody133")
    ap.add_argument("--people", type=int, default=10)
    ap.add_argument("--rate", type=float, default=60.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2, help="budget, ab: pairs of phases")
    ap.add_argument("--budget-ms", type=float, default=50.0)
    ap.add_argument("--node-cpus", default="", help="CPUs for the node, e.g. 1 (default: any)")
    ap.add_argument("--bench-cpus", default="", help="CPUs for this load generator, e.g. 0 (default: any)")
    ap.add_argument("--hide-leg", action="store_true",
                    help="every person's left knee, ankle and foot keypoints at confidence 0, so that the prior is "
                         "asked at every step (a fully seen warm frame does not ask it)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--node-param", action="append", default=[], metavar="NAME=VALUE",
                    help="another node parameter for every phase (e.g. hri_output=false)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="ab: the node parameter(s) of every second phase")
    ap.add_argument("--against", default=None, metavar="REV",
                    help="ab: every second phase runs the node of git revision REV (a temporary worktree)")
    args = ap.parse_args()
    extra = dict(p.split("=", 1) for p in args.node_param)
    if args.mode == "ab" and not (args.param or args.against):
        ap.error("ab needs --param NAME=VALUE (the parameter whose cost is measured) or --against REV")
    changed = dict(p.split("=", 1) for p in args.param)
    model = args.model or default_model_path()
    out = args.out or ROOT / "out" / "bench" / f"soak_{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    people = make_people(args.format, args.people, 120, seed=1, hide_leg=args.hide_leg)
    node_cpus = {int(c) for c in args.node_cpus.split(",") if c}
    if args.bench_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.bench_cpus.split(",")})
    result = {"command": "python bench/soak.py " + " ".join(sys.argv[1:]), "model": str(model),
              "date": time.strftime("%Y-%m-%d"),
              "format": args.format, "people": args.people, "rate_hz": args.rate, "hide_leg": args.hide_leg,
              "node_cpus": args.node_cpus, "bench_cpus": args.bench_cpus,
              "machine": f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}, Python "
                         f"{platform.python_version()}, torch {torch.__version__}", "phases": []}
    print(HEADER.format(w=args.budget_ms))
    if args.mode == "budget":
        plan = [(f"budget off ({i + 1})" if b == 0 else f"budget {args.budget_ms:.0f} ms ({i + 1})", b, {}, False)
                for i in range(args.rounds) for b in (0.0, args.budget_ms)]
    elif args.mode == "ab":
        against = None
        if args.against:
            rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.against], capture_output=True,
                                 text=True)
            if rev.returncode:
                ap.error(f"--against {args.against!r} is no revision of this repository: {rev.stderr.strip()}")
            against = rev.stdout.strip()
        label = ", ".join([f"{k}={v}" for k, v in changed.items()] + ([against] if against else []))
        first = "this checkout" if args.against else "defaults"
        plan = [(f"{label if b else first} ({i + 1})", args.budget_ms, changed if b else {}, b)
                for i in range(args.rounds) for b in (False, True)]
    else:
        plan = [(f"soak {args.seconds:.0f} s, budget {args.budget_ms:.0f} ms", args.budget_ms, {}, False)]
    other = None
    if args.against:
        other = Path(tempfile.mkdtemp()) / "other"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(other), args.against], check=True)
    try:
        for name, budget, params, second in plan:
            r = phase(model, budget, people, args.rate, args.seconds, ROOT / "out" / "bench",
                      f"soak_{len(result['phases'])}", args.budget_ms, {**extra, **params}, node_cpus,
                      other if second else None)
            r["name"] = name
            if args.mode == "soak":
                rss = np.array([v for t, v in r["rss_mb_samples"] if t >= 60.0])
                r["rss_mb_after_warmup"] = float(rss[0]) if len(rss) else None
                r["rss_growth_mb"] = float(rss[-1] - rss[0]) if len(rss) else None
            result["phases"].append(r)
            print(row(name, r), flush=True)
            out.write_text(json.dumps(result, indent=1))
    finally:
        if other is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False)
    if args.mode == "soak":
        r = result["phases"][0]
        print(f"RSS after the first minute {r['rss_mb_after_warmup']:.0f} MB, growth to the end "
              f"{r['rss_growth_mb']:+.1f} MB")
    print(f"json: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
