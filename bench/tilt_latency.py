"""Steady-state latency of the few-step refiner with the pelvis-tilt pull acting and without it, side by side.

    python bench/tilt_latency.py --budget 30

The pull (version 0.5.3's default) acts only while nothing below the hips is seen and the floor is known, so the
stream here has both legs hidden and a floor under each body; `off` is the same with `pelvis_tilt_weight` 0. Both
run round-robin in one loop (`dposer bench`'s `_cell`, torch, one thread, 4 steps) on the same warm-started
synthetic stream, so load changes hit both alike.
"""

from __future__ import annotations

import roma
import torch
from side_by_side import arguments, check_acts, report, timed_rows


def main() -> None:
    args = arguments(__doc__, "bench/eval/tilt_latency.json", 30.0)
    from dposer_ros.backends.bench import synthetic_stream
    from dposer_ros.body import ForwardKinematics
    from dposer_ros.body.skeleton import smplx_neutral
    from dposer_ros.keypoints import get_format
    from dposer_ros.prior.model import PosePrior
    from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings

    prior = PosePrior.load(args.prior)
    names = smplx_neutral().names
    legs = [names.index(f"{side}_{part}") for side in ("left", "right") for part in ("knee", "ankle", "foot")]
    feet = [names.index("left_foot"), names.index("right_foot")]
    rows = []
    for name in args.formats.split(","):
        fmt = get_format(name)
        for persons in (int(p) for p in args.persons.split(",")):
            obs, previous = synthetic_stream(fmt, persons)
            obs.confidence[:, torch.isin(torch.tensor([int(j) for j in fmt.joints]), torch.tensor(legs))] = 0.0
            up = roma.rotvec_to_rotmat(previous.pose[:, 0])[:, :, 1]  # the bodies' own up: upright trunks
            joints = ForwardKinematics()(previous.pose, previous.transl).joints
            obs.up = up
            obs.floor = (joints[:, feet] * up[:, None]).sum(-1).min(1).values - 0.03  # under the soles
            refiners = {"off": FewStepRefiner(prior, fmt, RefineSettings(pelvis_tilt_weight=0.0)),
                        "on": FewStepRefiner(prior, fmt, RefineSettings(pelvis_tilt_weight=RefineSettings().pelvis_tilt_weight))}
            check_acts(refiners, obs, previous, "the pull", f"{name} x {persons}")
            rows += timed_rows(refiners, obs, previous, args.budget, "pull", name, persons)
    report(rows, args.out, "torch engine, one thread, 4 steps, both legs hidden, floor known",
           f"python bench/tilt_latency.py --budget {args.budget}")


if __name__ == "__main__":
    main()
