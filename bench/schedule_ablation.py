"""Truncated against uniform timesteps in the few-step refiner, on the test clips of `dposer eval`.

Every variant is the shipped few-step refiner (config/solvers/refine.yaml and its entry in
config/solvers/methods.yaml) with only the schedule changed (one variant: the settings shipped before tuning round
6); all run side by side on the same clips, seeds and
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
    "truncated 0.35 -> 0.3 (shipped)": {},
    "truncated 0.45 -> 0.3, prior_weight 1.0 (round 6)": {"t_max": 0.45, "prior_weight": 1.0},
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
    data = {"clips": args.clips, "frames": args.frames, "variants": VARIANTS, "methods": list(methods),
            "rows": [{"corruption": r.corruption, "method": r.method, "metrics": r.metrics} for r in result.rows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print(write_table(data, args.out))


def _occluded(metrics: dict) -> float | None:
    value = metrics["mpjpe_occluded"]
    return None if value is None or value != value else value  # None or NaN: no occluded joints


def write_table(data: dict, out: Path) -> str:
    """Markdown table (MPJPE all / occluded, best of each row in bold) of an ablation run -> out.md; returns it."""
    cells = {(r["corruption"], r["method"]): r["metrics"] for r in data["rows"]}
    names = data["methods"]
    lines = [f"MPJPE all / occluded joints (mm), {data['clips']} test clips x {data['frames']} frames, "
             "command `python bench/schedule_ablation.py`. **Bold**: best of the row.", "",
             "| corruption | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for cor in CORRUPTIONS:
        values = [cells[(cor, m)] for m in names]
        score = [_occluded(v) if _occluded(values[0]) is not None else v["mpjpe_all"] for v in values]
        row = []
        for v, sc in zip(values, score):
            text = f"{v['mpjpe_all']:.1f}" + (f" / {_occluded(v):.1f}" if _occluded(v) is not None else "")
            row.append(f"**{text}**" if sc == min(score) else text)
        lines.append(f"| {cor} | " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    Path(out).with_suffix(".md").write_text(text)
    return text

if __name__ == "__main__":
    main()
