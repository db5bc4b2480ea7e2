"""The solver's step alone: eager torch against its AOTInductor package, side by side (issue 17).

    python bench/step_package.py --rounds 50

The warm step the refiner runs (`solvers.compiled_step.WarmStep`: three diagonal pulls, the weak hold, robust
weights) on random poses of each format and batch: eager torch and the package `dposer compile` makes (compiled here
when it is not cached), timed interleaved call by call on one thread. Recorded: p50 per variant, its ratio to eager,
and the largest difference of the rotations. Writes bench/eval/step_package.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

CASES = (("coco17", 1), ("coco17", 10), ("coco17", 64), ("coco_wholebody133", 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="timed calls of each variant per case")
    parser.add_argument("--out", type=Path, default=Path("bench/eval/step_package.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    import roma

    from dposer_ros.backends.bench import machine_description
    from dposer_ros.keypoints import get_format
    from dposer_ros.solvers.compiled_step import CompiledStep, WarmStep, example_inputs
    from dposer_ros.solvers.refine import FREE_JOINTS, RefineSettings

    settings = RefineSettings()
    rows = []
    for name, batch in CASES:
        fmt = get_format(name)
        package = CompiledStep.for_refiner(fmt, settings)
        eager = WarmStep(fmt, FREE_JOINTS, settings.damping, settings.weak_dof_cm)
        g = torch.Generator().manual_seed(batch)
        inputs = list(example_inputs(fmt, FREE_JOINTS, batch))
        inputs[2] = torch.randn(inputs[2].shape, generator=g) * 0.3  # keypoint targets around the origin
        inputs[10] = torch.randn(inputs[10].shape, generator=g) * 0.2  # the pose, and its rotation matrices
        inputs[0] = roma.rotvec_to_rotmat(inputs[10])
        inputs[7] = torch.full_like(inputs[7], 10.0)  # the weak hold on
        variants = {"eager": lambda: eager(*inputs), "package": lambda: package.runner(*inputs)}
        with torch.no_grad():
            answers = {v: fn()[0] for v, fn in variants.items()}
            times: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(args.rounds):
                for v, fn in variants.items():
                    start = time.perf_counter()
                    fn()
                    times[v].append(time.perf_counter() - start)
        base = float(np.median(times["eager"]))
        for v, ts in times.items():
            p50 = float(np.median(ts))
            rows.append({"format": name, "batch": batch, "variant": v, "p50 ms": round(p50 * 1000, 3),
                         "p50 / eager": round(p50 / base, 2),
                         "largest rotation difference": f"{float((answers[v] - answers['eager']).abs().max()):.1e}"})
            print(rows[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": f"python bench/step_package.py --rounds {args.rounds}",
        "backend": f"the warm Gauss-Newton step, eager torch against its AOTInductor package (torch {torch.__version__}), "
                   f"one thread; {machine_description()}",
        "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))
    print(f"json: {args.out}")


if __name__ == "__main__":
    main()
