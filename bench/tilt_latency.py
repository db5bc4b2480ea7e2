"""Steady-state latency of the few-step refiner with the pelvis-tilt pull acting and without it, side by side.

    python bench/tilt_latency.py --budget 30

The pull (version 0.5.3's default) acts only while nothing below the hips is seen and the floor is known, so the
stream here has both legs hidden and a floor under each body; `off` is the same with `pelvis_tilt_weight` 0. Both
run round-robin in one loop (`dposer bench`'s `_cell`, torch, one thread, 4 steps) on the same warm-started
synthetic stream, so load changes hit both alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import roma
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", type=Path, default=Path("models/dposer_cpu/prior.pt"))
    parser.add_argument("--formats", default="coco17,h36m17")
    parser.add_argument("--persons", default="1,10", help="batch sizes")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per format and batch size")
    parser.add_argument("--out", type=Path, default=Path("bench/eval/tilt_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dposer_ros.backends.bench import _cell, _stats, machine_description, synthetic_stream
    from dposer_ros.body import ForwardKinematics
    from dposer_ros.body.skeleton import smplx_neutral
    from dposer_ros.keypoints import get_format
    from dposer_ros.prior.model import PosePrior
    from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings

    prior = PosePrior.load(args.prior)
    names = smplx_neutral().names
    legs = [names.index(f"{side}_{part}") for side in ("left", "right") for part in ("knee", "ankle", "foot")]
    feet = [names.index("left_foot"), names.index("right_foot")]
    rows = []
    for name in args.formats.split(","):
        fmt = get_format(name)
        for persons in (int(p) for p in args.persons.split(",")):
            obs, previous = synthetic_stream(fmt, persons)
            obs.confidence[:, torch.isin(torch.tensor([int(j) for j in fmt.joints]), torch.tensor(legs))] = 0.0
            up = roma.rotvec_to_rotmat(previous.pose[:, 0])[:, :, 1]  # the bodies' own up: upright trunks
            joints = ForwardKinematics()(previous.pose, previous.transl).joints
            obs.up = up
            obs.floor = (joints[:, feet] * up[:, None]).sum(-1).min(1).values - 0.03  # under the soles
            runners, answers = {}, {}
            for variant, weight in (("off", 0.0), ("on", RefineSettings().pelvis_tilt_weight)):
                refiner = FewStepRefiner(prior, fmt, RefineSettings(pelvis_tilt_weight=weight))
                runners[variant] = ((lambda r=refiner: r(obs, previous)), None)
                answers[variant] = refiner(obs, previous).pose[:, 0]
            moved = (answers["on"] - answers["off"]).norm(dim=-1)
            if not bool((moved > 1e-3).all()):
                raise SystemExit(f"{name} x {persons}: the pull does not act on every body of this stream")
            times = _cell(runners, args.budget, 20, 100000)
            base = _stats(times["off"][0])[0]
            for variant, (lat, _) in times.items():
                p50, p99, _ = _stats(lat)
                rows.append({"format": name, "persons": persons, "pull": variant, "p50 ms": round(p50, 1),
                             "p99 ms": round(p99, 1), "p50 / off": round(p50 / base, 2), "calls": len(lat)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_description(), "platform": platform.platform(),
                                    "backend": "torch engine, one thread, 4 steps, both legs hidden, floor known",
                                    "date": datetime.date.today().isoformat(),
                                    "command": f"python bench/tilt_latency.py --budget {args.budget}",
                                    "rows": rows}, indent=1))
    print("| " + " | ".join(rows[0]) + " |")
    print("|---" * len(rows[0]) + "|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")


if __name__ == "__main__":
    main()
