"""The floor learnt from the feet of the people a frame has seen (`FloorEstimate`), against being told it.

    python bench/floor_estimate.py --clips 24 --calibration-clips 24 --frames 40

First the foot joint's height above the sole (`FloorEstimate.sole_height`) on TRAIN takes: answers to 2 cm noise
with the feet seen, against each capture's own floor. Then on the VALIDATION takes whose capture has a floor
(Bandai, CMU, HDM05): for each clip, a floor learnt from the answers to the other clips of the same capture (people
seen earlier in the same room, the refiner told the up direction but no floor), and each corruption refined told
the true floor, no floor, and the learnt one. Writes bench/eval/floor_estimate.json and prints its table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CORRUPTIONS = ("cam_occl_legs", "cam_occl_limb", "cam_occl_random30", "cam_noise_2cm")
VARIANTS = ("floor told", "no floor", "floor learnt")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24, help="validation clips (those of captures with a floor used)")
    parser.add_argument("--calibration-clips", type=int, default=24, help="train clips that measure sole_height")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--prior", type=Path, default=ROOT / "models" / "dposer_cpu" / "prior.pt")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "eval" / "floor_estimate.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from tqdm.auto import tqdm

    from dposer_ros.body import ForwardKinematics
    from dposer_ros.evaluation import load_corruptions
    from dposer_ros.evaluation.compare import primary_metric
    from dposer_ros.evaluation.foreign import foreign_clips
    from dposer_ros.evaluation.methods import build_methods
    from dposer_ros.evaluation.metrics import Pool
    from dposer_ros.evaluation.runner import run_stream, stream_seed
    from dposer_ros.paths import config_path, default_mocap_dir
    from dposer_ros.prior.model import PosePrior
    from dposer_ros.solvers.floor import FEET, FloorEstimate, feet_seen

    prior = PosePrior.load(args.prior)
    corruptions = load_corruptions(config_path("eval/corruptions_foreign.yaml"))
    seen_cor = corruptions["cam_noise_2cm"]
    fmt = seen_cor.format
    solver = build_methods(["few_step"], prior)[0]["few_step"](fmt)
    fk = ForwardKinematics()

    def answers(clip):
        """(joints (T, 55, 3), feet seen (T,)) of the clip under 2 cm noise, told its up direction but no floor."""
        data = seen_cor.apply_keypoints(clip.keypoint_truth(fmt), stream_seed(0, "floor", clip.name))
        outs, _ = run_stream(solver, fmt, data, clip.up, None, seen_cor.fps)
        return torch.cat([o.joints for o in outs]), feet_seen(fmt, data.confidence)

    # 1. the foot joint's height above the floor at the estimator's quantile, on train takes
    lower = []
    for clip in tqdm(foreign_clips(default_mocap_dir(), args.calibration_clips, args.frames, "train", 0, (fmt.name,)),
                     desc="sole height (train)", unit="clip"):
        if clip.floor is not None:
            joints, seen = answers(clip)
            lower += list((joints[seen][:, FEET].double().numpy() @ np.asarray(clip.up)).min(1) - clip.floor)
    sole = float(np.quantile(lower, FloorEstimate().quantile))

    # 2. validation: each clip's floor learnt from the other clips of its capture
    clips = [c for c in foreign_clips(default_mocap_dir(), args.clips, args.frames, "val", 0, (fmt.name,))
             if c.floor is not None]
    seen_by = {clip.name: answers(clip) for clip in tqdm(clips, desc="answers (val)", unit="clip")}
    pools = {(c, v): Pool() for c in CORRUPTIONS for v in VARIANTS}
    errors = []
    bar = tqdm(total=len(clips) * len(CORRUPTIONS), desc="refine (val)", unit="clip")
    for clip in clips:
        est = FloorEstimate(sole_height=sole)
        up = torch.tensor(clip.up, dtype=torch.float64)
        for other in clips:
            if other.source == clip.source and other.name != clip.name:
                est.add(*seen_by[other.name], up)
        if np.isnan(est.height):
            raise RuntimeError(f"too few answers with seen feet to learn the floor of {clip.name}: use more --clips")
        errors.append(est.height - clip.floor)
        for name in CORRUPTIONS:
            cor = corruptions[name]
            data = cor.apply_keypoints(clip.keypoint_truth(fmt), stream_seed(0, name, clip.name))
            for variant, floor in zip(VARIANTS, (clip.floor, None, est.height)):
                outs, seconds = run_stream(solver, fmt, data, clip.up, floor, cor.fps)
                pools[(name, variant)].merge(clip.score(fmt, data, outs, seconds, cor.stride, fk))
            bar.update(1)
    bar.close()
    rows = []
    for name in CORRUPTIONS:
        metric = primary_metric(corruptions[name].to_dict(), True)
        row = {"corruption": name, "error": "hidden" if metric == "mpjpe_occluded" else "all"}
        row.update({v: f"{pools[(name, v)].summary()[metric]:.1f}" for v in VARIANTS})
        rows.append(row)
    err_cm = 100 * np.abs(errors)
    note = (f"mm, few_step, told the up direction; {len(clips)} validation clips x {args.frames} frames (captures with "
            f"a floor), each floor learnt from the other clips of its capture: {np.median(err_cm):.1f} cm off "
            f"(median; max {err_cm.max():.1f}); sole_height {sole:.3f} m from the train clips; torch engine, one "
            f"thread, {platform.platform()}")
    run = {"command": "python bench/floor_estimate.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
           "backend": note, "rows": rows, "sole_height": sole, "floor_error_m": errors}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(run, indent=1) + "\n")
    head = list(rows[0])
    print("\n".join(["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
                    + ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]))
    print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
