"""Steady-state latency of the few-step refiner with everything issue 18 added acting at once, against the same
code with the settings from before it and against the code the issue measured, side by side in one run.

    python bench/issue18_latency.py --budget 30
    python bench/issue18_latency.py --budget 30 --seen --out bench/eval/issue18_latency_seen.json

The stream is the worst case for cost (bench/motion_latency.py's): both legs hidden, the up direction and a floor
known, a walking history, so that the calibration, the mirror-symmetric query, the weak hold, gravity, the pelvis-tilt
pull, the floor contact and the motion model all act. `before`: bench/calibration_latency.py's settings from before
issue 18 with the later additions off too (no pelvis-tilt pull, keypoint memory, floor contact or motion model);
`now`: the shipped defaults with the shipped motion model; `then`: the package and prior of `--then` (default: the
last commit before issue 18's work, the refiner the issue measured, with its own defaults), read with `git archive`
and imported under another name, fed the same keypoints. Round-robin in one loop (torch, one thread, 4 steps).
With `--seen`, the common path instead: the same stream with every keypoint seen.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from calibration_latency import BEFORE
from motion_latency import walking_rows
from side_by_side import arguments, report

LATER = {"pelvis_tilt_weight": 0.0, "keypoint_hold_weight": 0.0, "hand_keypoint_hold_weight": 0.0,
         "floor_contact_weight": 0.0, "motion_legs": False}
THEN = "d63803c"  # 2026-11-29, "Defaults live once": the last commit before the foreign protocol and calibration


def then_refiners(commit: str, folder: Path):
    """`others` for `walking_rows`: the refiner of `commit` (its package as `dposer_then`, its prior and defaults)."""
    archive = subprocess.run(["git", "archive", commit, "dposer_ros", "models/dposer_cpu/prior.pt"], check=True,
                             capture_output=True).stdout
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(folder, filter="data")
    (folder / "dposer_ros").rename(folder / "dposer_then")
    sys.path.insert(0, str(folder))
    from dposer_then.keypoints import get_format
    from dposer_then.prior.model import PosePrior
    from dposer_then.solvers.refine import FewStepRefiner
    from dposer_then.solvers.types import BodyState, Observation

    prior = PosePrior.load(folder / "models/dposer_cpu/prior.pt")

    def others(name: str, obs, previous) -> dict:
        fmt = get_format(name)
        refiner = FewStepRefiner(prior, fmt)
        old_obs = Observation(obs.points, obs.confidence, fmt)
        old_previous = BodyState(previous.pose, previous.transl)
        return {f"then ({commit})": lambda _obs, _previous: refiner(old_obs, old_previous)}

    return others


def main() -> None:
    args = arguments(__doc__, "bench/eval/issue18_latency.json", 30.0,
                     {"--seen": "every keypoint seen (the common path) instead of both legs hidden"})
    with tempfile.TemporaryDirectory() as folder:
        rows = walking_rows(args, "settings", {"before": ({**BEFORE, **LATER}, False), "now": ({}, True)}, floor=True,
                            others=then_refiners(THEN, Path(folder)), legs_hidden=not args.seen)
    stream = "every keypoint seen" if args.seen else "both legs hidden"
    report(rows, args.out, f"torch engine, one thread, 4 steps, {stream}, up and floor known, a walk's history",
           f"python bench/issue18_latency.py --budget {args.budget}" + (f" --seen --out {args.out}" if args.seen else ""))


if __name__ == "__main__":
    main()
