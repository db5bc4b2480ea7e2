"""Steady-state latency of the few-step refiner with the keypoint filter acting and without it, side by side.

    python bench/keypoint_filter_latency.py --budget 30

The filter (solvers/keypoint_filter.py) acts where the observation tells the sensor's noise (node:
`keypoint_noise_cm`); the stream is bench/motion_latency.py's (a walk, up and floor known; both legs hidden, or every
keypoint seen with `--seen`) with a 2 cm noise told; `off` is the same refiner with `keypoint_filter` false. Both
run round-robin in one loop (torch, one thread, 4 steps) on the same warm-started frame.
"""

from __future__ import annotations

from motion_latency import walking_rows
from side_by_side import arguments, report


def main() -> None:
    args = arguments(__doc__, "bench/eval/keypoint_filter_latency.json", 30.0,
                     {"--seen": "every keypoint seen instead of both legs hidden"})
    rows = walking_rows(args, "filter", {"off": ({"keypoint_filter": False}, True), "on": ({}, True)}, "the keypoint filter",
                        floor=True, legs_hidden=not args.seen, noise=0.02)
    stream = "every keypoint seen" if args.seen else "both legs hidden"
    report(rows, args.out, f"torch engine, one thread, 4 steps, {stream}, 2 cm noise told, up and floor known, a walk",
           f"python bench/keypoint_filter_latency.py --budget {args.budget}" + (f" --seen --out {args.out}" if args.seen else ""))


if __name__ == "__main__":
    main()
