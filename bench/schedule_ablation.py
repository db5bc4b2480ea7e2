"""Truncated against uniform timesteps in the few-step refiner, on the test clips of `dposer eval`.

Every variant is the shipped few-step refiner (config/solvers/refine.yaml and its entry in
config/solvers/methods.yaml) with only the schedule changed; all run side by side on the same clips, seeds and
corruptions. Writes bench/eval/schedule_ablation.md and .json.

Run: python bench/schedule_ablation.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "truncated 0.9 -> 0.3 (shipped)": {},
    "truncated 0.3 -> 0.05 (DPoser's range)": {"t_max": 0.3, "t_min": 0.05},
    "uniform t ~ U(0.001, 1)": {"schedule": "uniform"},
}
CORRUPTIONS = ["cam_noise_4cm", "cam_occl_limb", "cam_occl_legs", "cam_occl_hands", "cam_occl_random30", "radar"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8, help="test clips (body)")
    parser.add_argument("--frames", type=int, default=45, help="frames per clip")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "eval" / "schedule_ablation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dposer_ros.dataset.poses import default_dataset_path, load_dataset
    from dposer_ros.evaluation import evaluate, load_corruptions, select_clips
    from dposer_ros.evaluation.methods import build_methods
    from dposer_ros.prior.model import PosePrior

    prior = PosePrior.load(ROOT / "models" / "dposer_cpu" / "prior.pt")
    clips = select_clips(load_dataset(default_dataset_path()), args.clips, args.frames, "body", 0, "test")
    corruptions = {k: v for k, v in load_corruptions().items() if k in CORRUPTIONS}
    methods, _ = build_methods(["no_prior"], prior, {})
    for label, overrides in VARIANTS.items():
        built, errors = build_methods(["few_step"], prior, {"settings": overrides})
        if errors:
            raise RuntimeError(errors["few_step"])
        methods[label] = built["few_step"]
    result = evaluate(methods, corruptions, clips, seed=0)
    cells = {(r.corruption, r.method): r.metrics for r in result.rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"clips": args.clips, "frames": args.frames, "variants": VARIANTS,
         "rows": [{"corruption": c, "method": m, "metrics": v} for (c, m), v in cells.items()]}, indent=1))
    names = list(methods)
    lines = [f"MPJPE all / occluded joints (mm), {args.clips} test clips x {args.frames} frames, "
             "command `python bench/schedule_ablation.py`. **Bold**: best of the row.", "",
             "| corruption | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cor in CORRUPTIONS:
        values = [cells[(cor, m)] for m in names]
        key = "mpjpe_occluded" if values[0]["mpjpe_occluded"] is not None else "mpjpe_all"
        best = min(v[key] for v in values)
        row = []
        for v in values:
            text = f"{v['mpjpe_all']:.1f}" + (f" / {v['mpjpe_occluded']:.1f}" if v["mpjpe_occluded"] is not None else "")
            row.append(f"**{text}**" if v[key] == best else text)
        lines.append(f"| {cor} | " + " | ".join(row) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
