"""Gauss-Newton with and without the per-joint solve of joints no keypoint moves, side by side in one run.

    python bench/solver_split.py --rounds 60

Under a body format (coco17) the 30 finger joints move no keypoint: `gauss_newton_step` solves their update per
joint (3 x 3) and factorises only the other 20 joints and the translation. `joint system` puts every free joint in
one factorisation, as before 2026-11-29. Both refine the same warm-started batch, interleaved call by call (ONNX
Runtime engine, one thread), so load changes hit both alike. Writes bench/eval/solver_split.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

CASES = ((1, 4), (10, 1), (10, 4), (64, 4))  # (people, prior steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", type=Path, default=Path("models/dposer_cpu/prior.pt"))
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("bench/eval/solver_split.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dposer_ros.backends.select import select_engine
    from dposer_ros.body import ForwardKinematics
    from dposer_ros.keypoints import get_format
    from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings
    from dposer_ros.solvers.types import BodyState, Observation

    engine = select_engine(args.prior, args.backend, threads=1)
    fmt = get_format("coco17")
    rows = []
    for people, steps in CASES:
        gen = torch.Generator().manual_seed(0)
        pose = torch.randn(people, 55, 3, generator=gen) * 0.2
        pose[:, 22:] = 0.0
        obs = Observation(fmt.from_posed(ForwardKinematics()(pose, torch.randn(people, 3, generator=gen))).float(),
                          torch.ones(people, fmt.num_keypoints), fmt)
        runs = {}
        for variant in ("per-joint split", "joint system"):
            refiner = FewStepRefiner(engine, fmt, RefineSettings(steps=steps))
            if variant == "joint system":
                refiner.points.unmoved = refiner.points.unmoved[:0]
            first = refiner(obs)
            runs[variant] = (refiner, BodyState.cat([first.select(i) for i in range(people)]), [])
        for _ in range(args.rounds):
            for refiner, state, times in runs.values():
                start = time.perf_counter()
                refiner(obs, state)
                times.append(time.perf_counter() - start)
        p50 = {v: statistics.median(t) * 1000 for v, (_, _, t) in runs.items()}
        rows.append({"people": people, "steps": steps, **{f"{v} p50 ms": round(m, 2) for v, m in p50.items()},
                     "speed-up": round(p50["joint system"] / p50["per-joint split"], 2),
                     "person-frames/s (split)": round(people / p50["per-joint split"] * 1000)})
    result = {"command": f"python bench/solver_split.py --rounds {args.rounds}", "backend": engine.name,
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "rows": rows,
              "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps(result, indent=1))
    head = list(rows[0])
    print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in head) + " |")


if __name__ == "__main__":
    main()
