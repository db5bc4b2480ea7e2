"""The Gauss-Newton step and its linear solve exported to ONNX, against eager torch, side by side in one run (issue 17).

    python bench/exported_step.py --rounds 100

Exports one step (COCO-17; the hold and the weak hold as pulls; robust weights) with `exportable=True` at each batch
size, and the 66-unknown solve alone (unrolled Cholesky; block-Jacobi PCG with 66 iterations), and times ONNX Runtime
(CPU, one thread) against the eager step and LAPACK, interleaved call by call. Writes bench/eval/exported_step.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

BATCHES = (1, 10, 64)


def _export(module: torch.nn.Module, args: tuple, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=17, input_names=names)
    return buf.getvalue()


def _interleaved(runners: dict, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    for fn in runners.values():
        fn()
    for _ in range(rounds):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1000.0 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench/eval/exported_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    import onnxruntime as ort
    import roma

    from dposer_ros.backends.bench import machine_description
    from dposer_ros.body import ForwardKinematics
    from dposer_ros.body.jacobian import AttachedPoints
    from dposer_ros.keypoints import get_format
    from dposer_ros.solvers.gauss_newton import Pull, gauss_newton_step
    from dposer_ros.solvers.linear import block_jacobi_pcg, cholesky_solve_unrolled
    from dposer_ros.solvers.refine import FREE_JOINTS

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    fmt, fk = get_format("coco17"), ForwardKinematics()
    points = AttachedPoints(fk, fmt.joints, fmt.offsets, FREE_JOINTS)

    class Step(torch.nn.Module):
        def __init__(self, exportable: bool) -> None:
            super().__init__()
            self.exportable = exportable

        def forward(self, local, transl, target, weight, previous):
            pulls = [Pull(previous, torch.ones_like(previous)),
                     Pull(previous, torch.full_like(previous[..., :1], 14.0), weak_cm=10.0)]
            return gauss_newton_step(fk, points, local, transl, target, weight, pulls, 1e-2, 10.0,
                                     exportable=self.exportable)

    class Solve(torch.nn.Module):
        def __init__(self, pcg: bool) -> None:
            super().__init__()
            self.pcg = pcg

        def forward(self, a, b):
            return block_jacobi_pcg(a, b, a.shape[-1]) if self.pcg else cholesky_solve_unrolled(a, b)

    rows = []
    for batch in BATCHES:
        g = torch.Generator().manual_seed(batch)
        local = roma.rotvec_to_rotmat(torch.randn(batch, 55, 3, generator=g) * 0.2)
        transl = torch.zeros(batch, 3)
        target = fmt.from_posed(fk.from_rotmat(roma.rotvec_to_rotmat(torch.randn(batch, 55, 3, generator=g) * 0.2),
                                               transl)).float()
        step_args = (local, transl, target, torch.ones(batch, fmt.num_keypoints), roma.rotmat_to_rotvec(local[:, FREE_JOINTS]))
        names = ["local", "transl", "target", "weight", "previous"]
        step = ort.InferenceSession(_export(Step(True), step_args, names), options, providers=["CPUExecutionProvider"])
        feed = {k: v.numpy() for k, v in zip(names, step_args)}
        eager = Step(False)
        m = torch.randn(batch, 66, 66, generator=g)
        a, b = m @ m.transpose(1, 2) + 66 * torch.eye(66), torch.randn(batch, 66, 1, generator=g)
        solves = {kind: ort.InferenceSession(_export(Solve(kind == "pcg"), (a, b), ["a", "b"]), options,
                                             providers=["CPUExecutionProvider"]) for kind in ("cholesky", "pcg")}
        p50 = _interleaved({
            "step eager": lambda: eager(*step_args),
            "step onnxruntime": lambda: step.run(None, feed),
            "solve LAPACK": lambda: torch.cholesky_solve(b, torch.linalg.cholesky(a)),
            "solve unrolled Cholesky (ORT)": lambda: solves["cholesky"].run(None, {"a": a.numpy(), "b": b.numpy()}),
            "solve PCG-66 (ORT)": lambda: solves["pcg"].run(None, {"a": a.numpy(), "b": b.numpy()}),
        }, args.rounds)
        rows.append({"batch": batch, **{f"{k} p50 ms": round(v, 3) for k, v in p50.items()}})
        print(rows[-1])
    args.out.write_text(json.dumps({"command": f"python bench/exported_step.py --rounds {args.rounds}",
                                    "backend": f"onnxruntime CPU 1 thread vs torch 1 thread; {machine_description()}",
                                    "rows": rows, "date": time.strftime("%Y-%m-%d")}, indent=1))


if __name__ == "__main__":
    main()
