"""A refiner's frame with the solver's step compiled ahead of time, against eager torch, side by side (issue 17).

    python bench/compiled_frame.py --budget 60

The frame of `dposer bench` (a warm-started synthetic stream with a hidden leg, so the prior is asked at every step;
4 steps, one thread), and a new track's first frame (the same keypoints without a warm start: rigid alignment, data-
only steps, the prior's cold steps, then the frame's): the torch engine with the eager step (the reference), ONNX
Runtime float32 and int8 with the eager step, and both with the step compiled by AOTInductor (`dposer compile`;
compiled here first when it is not cached); for COCO-17's warm frames also the frame's prior steps as one ONNX graph
with the float32 network inside (`solvers/warm_frame.py`, ONNX Runtime on the CPU; exported here first). Every
variant runs round-robin call by call on the same frame, so the machine's load hits all alike. Recorded per variant:
p50 and p99, the ratio of p50 to the reference's, person-frames per second, and the largest joint difference to the
reference's answer. Writes bench/eval/compiled_frame.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

# formats whose warm frames also run as one ONNX graph (solvers/warm_frame.py); COCO-WholeBody's, with the hands'
# joints in the joint system, is a graph ONNX Runtime takes too long to load here
GRAPH_FORMATS = ("coco17",)
DEFAULT_OUT = Path("bench/eval/compiled_frame.json")
CASES = (("coco17", 1, "warm"), ("coco17", 10, "warm"), ("coco17", 64, "warm"), ("coco_wholebody133", 10, "warm"),
         ("coco17", 1, "new track"), ("coco17", 10, "new track"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed calls for all cases together")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dposer_ros.backends import select_engine
    from dposer_ros.backends.bench import machine_description, synthetic_stream
    from dposer_ros.keypoints import get_format
    from dposer_ros.solvers.compiled_step import CompiledStep
    from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings
    from dposer_ros.solvers.warm_frame import OnnxFrame

    prior = Path("models/dposer_cpu/prior.pt")
    engines = {"torch": select_engine(prior, "torch", device="cpu", threads=1),
               "onnxruntime": select_engine(prior, "onnxruntime", device="cpu", threads=1),
               "onnxruntime int8": select_engine(prior, "onnxruntime", device="cpu", threads=1, int8=True)}
    settings = RefineSettings(steps=4)
    graphs: dict = {}
    rows = []
    for name, persons, frame in CASES:
        fmt = get_format(name)
        start = time.perf_counter()
        compiled = CompiledStep.for_refiner(fmt, settings)
        print(f"{name}: step package {compiled.path.name} ready in {time.perf_counter() - start:.0f} s")
        variants = {
            "torch, eager step": FewStepRefiner(engines["torch"], fmt, settings),
            "onnxruntime, eager step": FewStepRefiner(engines["onnxruntime"], fmt, settings),
            "onnxruntime int8, eager step": FewStepRefiner(engines["onnxruntime int8"], fmt, settings),
            "onnxruntime, compiled step": FewStepRefiner(engines["onnxruntime"], fmt, settings, compiled=compiled),
            "onnxruntime int8, compiled step": FewStepRefiner(engines["onnxruntime int8"], fmt, settings,
                                                              compiled=compiled),
        }
        if name in GRAPH_FORMATS and frame == "warm":  # the warm frame's prior steps as one ONNX graph
            graphed = FewStepRefiner(engines["onnxruntime"], fmt, settings)
            if name not in graphs:
                start = time.perf_counter()
                graphs[name] = OnnxFrame.load(graphed, prior)
                print(f"{name}: frame graph {graphs[name].path.name} ready in {time.perf_counter() - start:.0f} s")
            graphed.frame = graphs[name]
            variants["onnxruntime, frame graph"] = graphed
        obs, init = synthetic_stream(fmt, persons, seed=0)
        start = init if frame == "warm" else None
        answers = {v: ref(obs, start) for v, ref in variants.items()}  # warm-up, and the answers compared
        times: dict[str, list[float]] = {v: [] for v in variants}
        deadline = time.perf_counter() + args.budget / len(CASES)
        while time.perf_counter() < deadline or min(len(t) for t in times.values()) < 5:
            for v, ref in variants.items():
                t0 = time.perf_counter()
                ref(obs, start)
                times[v].append(time.perf_counter() - t0)
        reference = "torch, eager step"
        base = float(np.median(times[reference]))
        for v, ts in times.items():
            p50 = float(np.median(ts))
            diff = float((answers[v].joints - answers[reference].joints).norm(dim=-1).max()) * 1000.0
            rows.append({"format": name, "persons": persons, "frame": frame, "variant": v, "p50 ms": round(p50 * 1000, 1),
                         "p99 ms": round(float(np.percentile(ts, 99)) * 1000, 1), "p50 / torch eager": round(p50 / base, 2),
                         "person-frames/s": round(persons / p50), "largest joint difference mm": round(diff, 4),
                         "calls": len(ts)})
            print(rows[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": f"python bench/compiled_frame.py --budget {args.budget:g}"
                   + ("" if args.out == DEFAULT_OUT else f" --out {args.out}"),
        "backend": "4 steps, a hidden leg, one thread; the solver's step compiled by AOTInductor (torch "
                   f"{torch.__version__}) against eager, the warm frame as one ONNX graph; {machine_description()}",
        "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))
    print(f"json: {args.out}")


if __name__ == "__main__":
    main()
