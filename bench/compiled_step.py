"""The Gauss-Newton step compiled with torch.compile (inductor, CPU) against eager torch, side by side (issue 17).

    python bench/compiled_step.py --rounds 50

The step of bench/exported_step.py (the hold and the weak hold as pulls; robust weights) at fixed shapes per
format and batch: eager (LAPACK solves), `torch.compile` of the same step (its Cholesky's fallback branch on a
failed factorisation splits the graph) and of the exportable step (`exportable=True`: the unrolled Cholesky, no
branch on data, one graph), timed interleaved call by call on one thread. Also recorded: the seconds the first
compiled call took (compilation; inductor caches it on disk for later processes) and the largest difference of
the compiled steps' rotations from the eager one. Writes bench/eval/compiled_step.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from exported_step import _interleaved

CASES = (("coco17", 1), ("coco17", 10), ("coco17", 64), ("coco_wholebody133", 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("bench/eval/compiled_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    import roma

    from dposer_ros.backends.bench import machine_description
    from dposer_ros.body import ForwardKinematics
    from dposer_ros.body.jacobian import AttachedPoints
    from dposer_ros.keypoints import get_format
    from dposer_ros.solvers.gauss_newton import Pull, gauss_newton_step
    from dposer_ros.solvers.refine import FREE_JOINTS

    fk = ForwardKinematics()
    rows = []
    for name, batch in CASES:
        fmt = get_format(name)
        points = AttachedPoints(fk, fmt.joints, fmt.offsets, FREE_JOINTS)

        def step(local, transl, target, weight, previous, exportable=False, points=points):
            pulls = [Pull(previous, torch.ones_like(previous)),
                     Pull(previous, torch.full_like(previous[..., :1], 14.0), weak_cm=10.0)]
            return gauss_newton_step(fk, points, local, transl, target, weight, pulls, 1e-2, 10.0,
                                     exportable=exportable)

        g = torch.Generator().manual_seed(batch)
        local = roma.rotvec_to_rotmat(torch.randn(batch, 55, 3, generator=g) * 0.2)
        transl = torch.zeros(batch, 3)
        target = fmt.from_posed(fk.from_rotmat(roma.rotvec_to_rotmat(torch.randn(batch, 55, 3, generator=g) * 0.2),
                                               transl)).float()
        step_args = (local, transl, target, torch.ones(batch, fmt.num_keypoints),
                     roma.rotmat_to_rotvec(local[:, FREE_JOINTS]))
        compiled = torch.compile(step, dynamic=False)
        compiled_exportable = torch.compile(lambda *a: step(*a, exportable=True), dynamic=False)
        first = {}
        for label, fn in (("compiled", compiled), ("compiled exportable", compiled_exportable)):
            start = time.perf_counter()
            fn(*step_args)
            first[label] = time.perf_counter() - start
        reference = step(*step_args)[0]
        diff = {label: float((fn(*step_args)[0] - reference).abs().max())
                for label, fn in (("compiled", compiled), ("compiled exportable", compiled_exportable))}
        p50 = _interleaved({"eager": lambda: step(*step_args), "compiled": lambda: compiled(*step_args),
                            "compiled exportable": lambda: compiled_exportable(*step_args)}, args.rounds)
        rows.append({"format": name, "batch": batch, **{f"{k} p50 ms": round(v, 3) for k, v in p50.items()},
                     "compiled / eager": round(p50["compiled"] / p50["eager"], 2),
                     "compiled exportable / eager": round(p50["compiled exportable"] / p50["eager"], 2),
                     "first compiled call s": round(first["compiled"], 1),
                     "largest rotation difference": f"{max(diff.values()):.1e}"})
        print(rows[-1])
    args.out.write_text(json.dumps({"command": f"python bench/compiled_step.py --rounds {args.rounds}",
                                    "backend": f"torch.compile (inductor, CPU) vs eager torch, 1 thread; "
                                               f"{machine_description()}",
                                    "rows": rows, "date": time.strftime("%Y-%m-%d")}, indent=1))


if __name__ == "__main__":
    main()
