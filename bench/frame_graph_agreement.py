"""The warm frame as one ONNX graph against the eager refiner, frame by frame on validation streams (issue 17).

    python bench/frame_graph_agreement.py --clips 6 --frames 40

Each stream (the foreign protocol's validation clips, Human3.6M-17, the listed corruptions) runs through the few-
step refiner twice, each with its own tracks: eager, and with its warm frames' prior steps as one ONNX graph in ONNX
Runtime (`solvers/warm_frame.py`; the same float32 weights; on the CPU, or with `--device` on a GPU). Recorded per
corruption: the largest and the mean joint difference between the two answers over every frame (differences may
build up along a stream: each run warm-starts from its own last answer), how many frames the graph answered, and the
per-frame latency of both. Writes bench/eval/frame_graph_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

CORRUPTIONS = ("cam_noise_2cm", "cam_occl_limb", "cam_occl_legs_late", "cam_occl_hands", "cam_occl_random30")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--device", choices=("cpu", "cuda", "tensorrt"), default="cpu",
                        help="where ONNX Runtime runs the graph (its CUDA or TensorRT execution provider on a GPU)")
    parser.add_argument("--out", type=Path, default=Path("bench/eval/frame_graph_agreement.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dposer_ros.backends.bench import machine_description
    from dposer_ros.evaluation import load_corruptions
    from dposer_ros.evaluation.foreign import foreign_clips
    from dposer_ros.evaluation.methods import build_methods
    from dposer_ros.evaluation.runner import run_stream, stream_seed
    from dposer_ros.paths import config_path, default_mocap_dir
    from dposer_ros.prior.model import PosePrior
    from dposer_ros.solvers.warm_frame import OnnxFrame

    prior = PosePrior.load(Path("models/dposer_cpu/prior.pt"))
    corruptions = load_corruptions(config_path("eval/corruptions_foreign.yaml"))
    clips = foreign_clips(default_mocap_dir(), args.clips, args.frames, "val", 0, ("h36m17",))
    factories, _ = build_methods(["few_step"], prior, {})
    eager = factories["few_step"](corruptions[CORRUPTIONS[0]].format)
    graph = factories["few_step"](corruptions[CORRUPTIONS[0]].format)
    start = time.perf_counter()
    graph.frame = OnnxFrame.load(graph, prior, device=args.device)
    print(f"graph {graph.frame.path.name} on {graph.frame.providers[0]} ready in {time.perf_counter() - start:.0f} s")
    rows = []
    for name in CORRUPTIONS:
        cor = corruptions[name]
        worst, diffs, times = 0.0, [], {"eager": [], "graph": []}
        calls = graph.frame.calls
        for clip in clips:
            data = cor.apply_keypoints(clip.keypoint_truth(cor.format, None), stream_seed(0, cor.name, clip.name))
            answers = {}
            for label, solver in (("eager", eager), ("graph", graph)):
                outs, seconds = run_stream(solver, cor.format, data, clip.up, clip.floor, cor.fps, cor.stated_noise_m)
                answers[label] = torch.stack([o.joints[0] for o in outs])
                times[label] += list(seconds)
            d = (answers["graph"] - answers["eager"]).norm(dim=-1) * 1000.0
            worst = max(worst, float(d.max()))
            diffs.append(float(d.mean()))
        rows.append({"corruption": name, "largest joint difference mm": round(worst, 4),
                     "mean joint difference mm": round(float(np.mean(diffs)), 5),
                     "frames answered by the graph": graph.frame.calls - calls,
                     "frames": len(times["graph"]),
                     "eager p50 ms": round(float(np.median(times["eager"])) * 1000, 1),
                     "graph p50 ms": round(float(np.median(times["graph"])) * 1000, 1)})
        print(rows[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": f"python bench/frame_graph_agreement.py --clips {args.clips} --frames {args.frames}"
                   + ("" if args.device == "cpu" else f" --device {args.device}")
                   + ("" if args.out == Path("bench/eval/frame_graph_agreement.json") else f" --out {args.out}"),
        "backend": f"few_step, {args.clips} validation clips x {args.frames} frames, h36m17; eager torch against the "
                   f"warm frame's ONNX graph in ONNX Runtime ({graph.frame.providers[0]}, float32), one thread; "
                   f"{machine_description()}",
        "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))
    print(f"json: {args.out}")


if __name__ == "__main__":
    main()
