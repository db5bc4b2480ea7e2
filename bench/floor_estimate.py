"""The floor (and with --learn-up the up direction) learnt from the feet of the people a frame has seen, against
being told them (`SceneEstimate`).

    python bench/floor_estimate.py --clips 24 --calibration-clips 24 --frames 40
    python bench/floor_estimate.py --clips 24 --calibration-clips 24 --frames 40 --learn-up

First the foot joint's height above the sole (`SceneEstimate.sole_height`) on TRAIN takes: answers to 2 cm noise
with the feet seen, against each capture's own floor. Then on the VALIDATION takes whose capture has a floor
(Bandai, CMU, HDM05): for each clip, what the answers to the other clips of the same capture teach (people seen
earlier in the same room), and each corruption refined three ways. Without --learn-up the refiner is told the up
direction throughout: told the true floor, no floor, the learnt one (bench/eval/floor_estimate.json). With
--learn-up it is told nothing while it learns: told the true up and floor, nothing, the learnt up and floor
(bench/eval/up_estimate.json). Prints the table.
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
VARIANTS = {False: ("floor told", "no floor", "floor learnt"),
            True: ("up and floor told", "nothing told", "up and floor learnt")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24, help="validation clips (those of captures with a floor used)")
    parser.add_argument("--calibration-clips", type=int, default=24, help="train clips that measure sole_height")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--learn-up", action="store_true", help="learn the up direction too (told nothing)")
    parser.add_argument("--prior", type=Path, default=ROOT / "models" / "dposer_cpu" / "prior.pt")
    parser.add_argument("--out", type=Path, help="default: bench/eval/floor_estimate.json (up_estimate.json)")
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "eval" / ("up_estimate.json" if args.learn_up else "floor_estimate.json")
    variants = VARIANTS[args.learn_up]
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
    from dposer_ros.solvers.scene import FEET, SceneEstimate, feet_seen

    prior = PosePrior.load(args.prior)
    corruptions = load_corruptions(config_path("eval/corruptions_foreign.yaml"))
    seen_cor = corruptions["cam_noise_2cm"]
    fmt = seen_cor.format
    solver = build_methods(["few_step"], prior)[0]["few_step"](fmt)
    fk = ForwardKinematics()

    def answers(clip, told_up: bool = True):
        """(joints (T, 55, 3), feet seen (T,)) of the clip under 2 cm noise, told no floor (and maybe no up)."""
        data = seen_cor.apply_keypoints(clip.keypoint_truth(fmt), stream_seed(0, "floor", clip.name))
        outs, _ = run_stream(solver, fmt, data, clip.up if told_up else None, None, seen_cor.fps)
        return torch.cat([o.joints for o in outs]), feet_seen(fmt, data.confidence)

    # 1. the foot joint's height above the floor at the estimator's quantile, on train takes
    lower = []
    for clip in tqdm(foreign_clips(default_mocap_dir(), args.calibration_clips, args.frames, "train", 0, (fmt.name,)),
                     desc="sole height (train)", unit="clip"):
        if clip.floor is not None:
            joints, seen = answers(clip)
            lower += list((joints[seen][:, FEET].double().numpy() @ np.asarray(clip.up)).min(1) - clip.floor)
    sole = float(np.quantile(lower, SceneEstimate().quantile))

    # 2. validation: what each clip's capture teaches through the answers to its other clips
    clips = [c for c in foreign_clips(default_mocap_dir(), args.clips, args.frames, "val", 0, (fmt.name,))
             if c.floor is not None]
    seen_by = {clip.name: answers(clip, not args.learn_up) for clip in tqdm(clips, desc="answers (val)", unit="clip")}
    pools = {(c, v): Pool() for c in CORRUPTIONS for v in variants}
    errors, angles = [], []
    bar = tqdm(total=len(clips) * len(CORRUPTIONS), desc="refine (val)", unit="clip")
    for clip in clips:
        est = SceneEstimate(sole_height=sole)
        up = torch.tensor(clip.up, dtype=torch.float64)
        for other in clips:
            if other.source == clip.source and other.name != clip.name:
                est.add(*seen_by[other.name], None if args.learn_up else up)
        est.update(None if args.learn_up else up)
        learnt_up = clip.up
        if args.learn_up:  # what the other clips' feet did not teach stays unknown (the refiner is told nothing)
            learnt_up = None if est.up is None else tuple(float(v) for v in est.up)
            if est.up is not None:
                angles.append(float(np.degrees(np.arccos(np.clip(est.up @ up.numpy(), -1.0, 1.0)))))
        if not np.isnan(est.height):
            errors.append(est.height - clip.floor)
        floor = None if np.isnan(est.height) else est.height
        told = [(clip.up, clip.floor), (None, None) if args.learn_up else (clip.up, None), (learnt_up, floor)]
        for name in CORRUPTIONS:
            cor = corruptions[name]
            data = cor.apply_keypoints(clip.keypoint_truth(fmt), stream_seed(0, name, clip.name))
            for variant, (told_up, floor) in zip(variants, told):
                outs, seconds = run_stream(solver, fmt, data, told_up, floor, cor.fps)
                pools[(name, variant)].merge(clip.score(fmt, data, outs, seconds, cor.stride, fk))
            bar.update(1)
    bar.close()
    rows = []
    for name in CORRUPTIONS:
        metric = primary_metric(corruptions[name].to_dict(), True)
        row = {"corruption": name, "error": "hidden" if metric == "mpjpe_occluded" else "all"}
        row.update({v: f"{pools[(name, v)].summary()[metric]:.1f}" for v in variants})
        rows.append(row)
    err_cm = 100 * np.abs(errors)
    learnt = "up direction and floor" if args.learn_up else "floor"
    up_note = (f"up learnt for {len(angles)} clips, {np.median(angles):.1f} degrees off (median; max "
               f"{max(angles):.1f}), " if args.learn_up else "")
    note = (f"mm, few_step{'' if args.learn_up else ', told the up direction'}; {len(clips)} validation clips x "
            f"{args.frames} frames (captures with a floor), each {learnt} learnt from the other clips of its capture: "
            f"{up_note}floor learnt for {len(errors)} clips, {np.median(err_cm):.1f} cm off (median; max "
            f"{err_cm.max():.1f}); sole_height {sole:.3f} m from the train clips; torch engine, one thread, "
            f"{platform.platform()}")
    run = {"command": "python bench/floor_estimate.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
           "backend": note, "rows": rows, "sole_height": sole, "floor_error_m": errors, "up_error_deg": angles}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(run, indent=1) + "\n")
    head = list(rows[0])
    print("\n".join(["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
                    + ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]))
    print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
