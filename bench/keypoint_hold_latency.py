"""Steady-state latency of the few-step refiner with the keypoint hold acting and without it, side by side.

    python bench/keypoint_hold_latency.py --budget 20

The hold (version 0.5.4) acts on keypoints hidden now and seen before, so the stream here hides the left leg's
keypoints of a track that saw them the frame before (its memory holds them); `off` is the same with
`keypoint_hold_weight` and `hand_keypoint_hold_weight` 0. Both run round-robin in one loop (`dposer bench`'s
`_cell`, torch, one thread, 4 steps) on the same warm-started synthetic stream, so load changes hit both alike.
"""

from __future__ import annotations

import torch
from side_by_side import arguments, check_acts, report, timed_rows


def main() -> None:
    args = arguments(__doc__, "bench/eval/keypoint_hold_latency.json", 20.0)
    from dposer_ros.backends.bench import synthetic_stream
    from dposer_ros.keypoints import get_format
    from dposer_ros.prior.model import PosePrior
    from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings

    prior = PosePrior.load(args.prior)
    rows = []
    for name in args.formats.split(","):
        fmt = get_format(name)
        for persons in (int(p) for p in args.persons.split(",")):
            obs, previous = synthetic_stream(fmt, persons)  # the left leg's keypoints hidden
            seen_before, _ = synthetic_stream(fmt, persons, hide_leg=False)
            previous.keypoint_memory, previous.keypoint_age = seen_before.points, torch.zeros(obs.confidence.shape)
            refiners = {"off": FewStepRefiner(prior, fmt, RefineSettings(keypoint_hold_weight=0.0,
                                                                         hand_keypoint_hold_weight=0.0)),
                        "on": FewStepRefiner(prior, fmt, RefineSettings())}
            check_acts(refiners, obs, previous, "the hold", f"{name} x {persons}")
            rows += timed_rows(refiners, obs, previous, args.budget, "hold", name, persons)
    report(rows, args.out, "torch engine, one thread, 4 steps, the left leg hidden and remembered",
           f"python bench/keypoint_hold_latency.py --budget {args.budget}")


if __name__ == "__main__":
    main()
