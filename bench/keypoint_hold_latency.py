"""Steady-state latency of the few-step refiner with the keypoint hold acting and without it, side by side.

    python bench/keypoint_hold_latency.py --budget 20

The hold (version 0.5.4) acts on keypoints hidden now and seen before, so the stream here hides the left leg's
keypoints of a track that saw them the frame before (its memory holds them); `off` is the same with
`keypoint_hold_weight` and `hand_keypoint_hold_weight` 0. Both run round-robin in one loop (`dposer bench`'s
`_cell`, torch, one thread, 4 steps) on the same warm-started synthetic stream, so load changes hit both alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", type=Path, default=Path("models/dposer_cpu/prior.pt"))
    parser.add_argument("--formats", default="coco17,h36m17")
    parser.add_argument("--persons", default="1,10", help="batch sizes")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per format and batch size")
    parser.add_argument("--out", type=Path, default=Path("bench/eval/keypoint_hold_latency.json"))
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
        for persons in (int(p) for p in args.persons.split(",")):
            obs, previous = synthetic_stream(fmt, persons)  # the left leg's keypoints hidden
            seen_before, _ = synthetic_stream(fmt, persons, hide_leg=False)
            previous.keypoint_memory, previous.keypoint_age = seen_before.points, torch.zeros(obs.confidence.shape)
            runners, answers = {}, {}
            for variant, weight in (("off", 0.0), ("on", None)):
                settings = RefineSettings() if weight is None else RefineSettings(keypoint_hold_weight=weight,
                                                                                  hand_keypoint_hold_weight=weight)
                refiner = FewStepRefiner(prior, fmt, settings)
                runners[variant] = ((lambda r=refiner: r(obs, previous)), None)
                answers[variant] = refiner(obs, previous).joints
            if not bool(((answers["on"] - answers["off"]).norm(dim=-1).amax(1) > 1e-3).all()):
                raise SystemExit(f"{name} x {persons}: the hold does not act on every body of this stream")
            times = _cell(runners, args.budget, 20, 100000)
            base = _stats(times["off"][0])[0]
            for variant, (lat, _) in times.items():
                p50, p99, _ = _stats(lat)
                rows.append({"format": name, "persons": persons, "hold": variant, "p50 ms": round(p50, 1),
                             "p99 ms": round(p99, 1), "p50 / off": round(p50 / base, 2), "calls": len(lat)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_description(), "platform": platform.platform(),
                                    "backend": "torch engine, one thread, 4 steps, the left leg hidden and remembered",
                                    "date": datetime.date.today().isoformat(),
                                    "command": f"python bench/keypoint_hold_latency.py --budget {args.budget}",
                                    "rows": rows}, indent=1))
    print("| " + " | ".join(rows[0]) + " |")
    print("|---" * len(rows[0]) + "|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main()
