"""Steady-state latency of the few-step refiner with everything issue 18 added acting at once, against the same
code with the settings from before it, side by side in one run.

    python bench/issue18_latency.py --budget 30

The stream is the worst case for cost (bench/motion_latency.py's): both legs hidden, the up direction and a floor
known, a walking history, so that the calibration, the mirror-symmetric query, the weak hold, gravity, the pelvis-tilt
pull, the floor contact and the motion model all act. `before`: bench/calibration_latency.py's settings from before
issue 18 with the later additions off too (no pelvis-tilt pull, keypoint memory, floor contact or motion model);
`now`: the shipped defaults with the shipped motion model. Round-robin in one loop (torch, one thread, 4 steps).
"""

from __future__ import annotations

from calibration_latency import BEFORE
from motion_latency import walking_rows
from side_by_side import arguments, report

LATER = {"pelvis_tilt_weight": 0.0, "keypoint_hold_weight": 0.0, "hand_keypoint_hold_weight": 0.0,
         "floor_contact_weight": 0.0, "motion_legs": False}


def main() -> None:
    args = arguments(__doc__, "bench/eval/issue18_latency.json", 30.0)
    rows = walking_rows(args, "settings", {"before": ({**BEFORE, **LATER}, False), "now": ({}, True)}, floor=True)
    report(rows, args.out, "torch engine, one thread, 4 steps, both legs hidden, up and floor known, a walk's history",
           f"python bench/issue18_latency.py --budget {args.budget}")


if __name__ == "__main__":
    main()
