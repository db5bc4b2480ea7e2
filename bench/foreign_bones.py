"""Calibrated bone lengths against the source skeletons' own, after 1 s of a track (foreign protocol, held-out takes).

    python bench/foreign_bones.py --clips 24 --out bench/eval/foreign_bones.json

Each test clip is streamed clean (all keypoints seen, h36m17) through the few-step refiner; after `--frames`
frames (30 = 1 s) the track's body is read at rest through the format and its calibrated keypoint offsets, and each
bone's length (distance of its two keypoints) is compared with the same keypoints' distance in the source skeleton
(median over the clip); also with the calibrated shape alone (the betas, no keypoint offsets). Bones both define
alike: thigh (hip-knee), shin (knee-ankle), upper arm (shoulder-elbow),
forearm (elbow-wrist), left and right. The uncalibrated mean-shape body is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

BONES = {"thigh": ("hip", "knee"), "shin": ("knee", "ankle"), "upper_arm": ("shoulder", "elbow"),
         "forearm": ("elbow", "wrist")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--frames", type=int, default=30, help="frames before the lengths are read (30 = 1 s)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", type=Path, default=Path("models/dposer_cpu/prior.pt"))
    parser.add_argument("--out", type=Path, default=Path("bench/eval/foreign_bones.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dposer_ros.body import NUM_JOINTS, ForwardKinematics
    from dposer_ros.evaluation.foreign import foreign_clips
    from dposer_ros.keypoints import get_format
    from dposer_ros.paths import default_mocap_dir
    from dposer_ros.prior.model import PosePrior
    from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings
    from dposer_ros.solvers.types import Observation

    fmt = get_format("h36m17")
    prior = PosePrior.load(args.prior)
    solver = FewStepRefiner(prior, fmt, RefineSettings())
    fk = ForwardKinematics()
    clips = foreign_clips(default_mocap_dir(), args.clips, args.frames, args.split, args.seed, ("h36m17",),
                          progress=True)
    rows = []
    for clip in clips:
        truth = clip.truth["h36m17"].float()
        state = None
        for frame in truth:
            out = solver(Observation(frame[None].clone(), torch.ones(1, fmt.num_keypoints), fmt), state)
            state = out.select(0)
        zero = torch.zeros(1, NUM_JOINTS, 3, dtype=torch.float64)
        rest = fk(zero, rest_joints=out.rest_joints.double())
        shape = fmt.from_posed(rest)[0]
        calibrated = shape + out.keypoint_offsets.double()[0]  # rest frames are the identity
        neutral = fmt.from_posed(fk(zero))[0]
        row = {"clip": clip.name, "source": clip.source}
        for bone, (a, b) in BONES.items():
            for side in ("left", "right"):
                i, j = fmt.index(f"{side}_{a}"), fmt.index(f"{side}_{b}")
                source = float(np.median((truth[:, i] - truth[:, j]).norm(dim=-1)))
                row[f"{side}_{bone}"] = {"source": source, "calibrated": float((calibrated[i] - calibrated[j]).norm()),
                                         "shape": float((shape[i] - shape[j]).norm()),
                                         "neutral": float((neutral[i] - neutral[j]).norm())}
        rows.append(row)
    keys = [k for k in rows[0] if k not in ("clip", "source")]
    summary = {}
    for key in keys:
        cal = np.array([abs(r[key]["calibrated"] - r[key]["source"]) for r in rows]) * 100
        neu = np.array([abs(r[key]["neutral"] - r[key]["source"]) for r in rows]) * 100
        shp = np.array([abs(r[key]["shape"] - r[key]["source"]) for r in rows]) * 100
        summary[key] = {"calibrated_cm_mean": float(cal.mean()), "calibrated_cm_max": float(cal.max()),
                        "within_2cm": float((cal <= 2.0).mean()), "shape_cm_mean": float(shp.mean()),
                        "shape_within_2cm": float((shp <= 2.0).mean()), "neutral_cm_mean": float(neu.mean())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python bench/foreign_bones.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()), "machine": platform.platform(),
        "summary": summary, "clips": rows}, indent=1))
    print("| bone | shape + offsets: mean abs diff (cm) | max | within 2 cm | shape alone: mean | within 2 cm "
          "| mean shape: mean abs diff (cm) |")
    print("|---|---|---|---|---|---|---|")
    for key, s in summary.items():
        print(f"| {key} | {s['calibrated_cm_mean']:.1f} | {s['calibrated_cm_max']:.1f} | {s['within_2cm'] * 100:.0f} % | "
              f"{s['shape_cm_mean']:.1f} | {s['shape_within_2cm'] * 100:.0f} % | {s['neutral_cm_mean']:.1f} |")


if __name__ == "__main__":
    main()
