"""Steady-state latency of the few-step refiner with and without this version's additions, side by side in one run.

    python bench/calibration_latency.py --budget 60

`before`: the settings before these additions (no calibration, no mirror symmetry, t 0.35 -> 0.3, no weak hold, the
prior not told the up direction); `now`: the shipped defaults; and each addition alone. Every variant runs
round-robin in one loop (`dposer bench`'s `_cell`) on the same warm-started synthetic stream (torch, one thread,
4 steps), so load changes hit all alike.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import roma
import torch

BEFORE = {"mirror_symmetric": False, "calibrate_shape": False, "calibrate_offsets": False, "t_max": 0.35, "t_min": 0.3,
          "weak_hold_weight": 0.0, "gravity": False}
ADDITIONS = {"mirror": ("mirror_symmetric",), "calibration": ("calibrate_shape", "calibrate_offsets"),
             "weak hold": ("weak_hold_weight",), "gravity": ("gravity",)}
VARIANTS = {"before": BEFORE,
            **{f"{name} only": {k: v for k, v in BEFORE.items() if k not in keys} for name, keys in ADDITIONS.items()},
            "now": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", type=Path, default=Path("models/dposer_cpu/prior.pt"))
    parser.add_argument("--formats", default="coco17,h36m17")
    parser.add_argument("--persons", type=int, default=1)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per format")
    parser.add_argument("--out", type=Path, default=Path("bench/eval/calibration_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dposer_ros.backends.bench import _cell, _stats, machine_description, synthetic_stream
    from dposer_ros.keypoints import get_format
    from dposer_ros.prior.model import PosePrior
    from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings

    prior = PosePrior.load(args.prior)
    rows = []
    for name in args.formats.split(","):
        fmt = get_format(name)
        obs, previous = synthetic_stream(fmt, args.persons)
        obs.up = roma.rotvec_to_rotmat(torch.tensor([1.2, 0.0, 0.0]))[:, 1].expand(args.persons, 3)  # the stream's up
        runners = {}
        for variant, overrides in VARIANTS.items():
            refiner = FewStepRefiner(prior, fmt, RefineSettings(**overrides))
            runners[variant] = ((lambda r=refiner: r(obs, previous)), None)
        times = _cell(runners, args.budget, 20, 100000)
        base = _stats(times["before"][0])[0]
        for variant, (lat, _) in times.items():
            p50, p99, _ = _stats(lat)
            rows.append({"format": name, "variant": variant, "p50_ms": p50, "p99_ms": p99, "ratio_p50": p50 / base,
                         "calls": len(lat)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_description(), "platform": platform.platform(),
                                    "command": f"python bench/calibration_latency.py --budget {args.budget}",
                                    "rows": rows}, indent=1))
    print("| format | variant | p50 ms | p99 ms | p50 / before | calls |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['variant']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['ratio_p50']:.2f} | {r['calls']} |")


if __name__ == "__main__":
    main()
