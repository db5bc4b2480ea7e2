"""Steady-state latency of the few-step refiner with the motion model of hidden legs acting and without it, side
by side.

    python bench/motion_latency.py --budget 30

The motion model (version 0.6.0's default) acts only on hidden legs of a person who moves, so the stream here has
both legs hidden, the up direction known and every track's second of history a walk at 1.2 m/s; `off` is the same
refiner without the model (`motion_legs` false). Both run round-robin in one loop (`dposer bench`'s `_cell`, torch,
one thread, 4 steps) on the same warm-started synthetic stream, so load changes hit both alike.
"""

from __future__ import annotations

import roma
import torch
from side_by_side import arguments, check_acts, report, timed_rows


def walking_stream(fmt, persons: int, motion, floor: bool = False, legs_hidden: bool = True,
                   noise: float | None = None):
    """`dposer bench`'s synthetic stream with both legs hidden (`legs_hidden`), the up direction and the time step
    known, and every track's history a second of walking at 1.2 m/s up to the previous frame; with `floor`, a floor
    under the soles; with `noise` (metres), the sensor's noise told (the keypoint filter)."""
    from dposer_ros.backends.bench import synthetic_stream
    from dposer_ros.body import ForwardKinematics
    from dposer_ros.body.skeleton import smplx_neutral
    from dposer_ros.solvers.history import History, capacity

    names = smplx_neutral().names
    legs = [names.index(f"{side}_{part}") for side in ("left", "right") for part in ("knee", "ankle", "foot")]
    obs, previous = synthetic_stream(fmt, persons)
    if legs_hidden:
        obs.confidence[:, torch.isin(torch.tensor([int(j) for j in fmt.joints]), torch.tensor(legs))] = 0.0
    up = roma.rotvec_to_rotmat(previous.pose[:, 0])[:, :, 1]  # the bodies' own up
    obs.up, obs.interval = up, torch.full((persons,), 1 / 30)
    if floor:
        feet = [names.index("left_foot"), names.index("right_foot")]
        joints = ForwardKinematics()(previous.pose, previous.transl).joints
        obs.floor = (joints[:, feet] * up[:, None]).sum(-1).min(1).values - 0.03
    forward = torch.linalg.cross(up, torch.tensor([1.0, 0.0, 0.0]).expand_as(up), dim=-1)
    history = History.empty(persons, capacity(motion.lags, motion.fps))
    for i in range(40, -1, -1):  # a second and a bit of walking, up to the previous frame
        history = history.aged(torch.full((persons,), 1 / 30))
        history = history.remember(roma.rotvec_to_rotmat(previous.pose), previous.transl - 1.2 * i / 30 * forward, 1 / motion.fps)
    previous.history = history
    if noise is not None:  # the sensor's noise told, and the tracks' keypoint filters warm from the walk's last frames
        from dposer_ros.solvers.keypoint_filter import filter_keypoints

        obs.noise = torch.full((persons,), noise)
        for i in range(5, 0, -1):
            _, previous.keypoint_filter = filter_keypoints(previous.keypoint_filter, obs.points - 1.2 * i / 30 * forward[:, None],
                                                           obs.confidence.clamp(max=1.0), obs.interval, obs.noise, 3.0, 0.5)
    return obs, previous


def walking_rows(args, label: str, variants: dict[str, tuple[dict, bool]], what: str | None = None,
                 floor: bool = False, others=None, legs_hidden: bool = True, noise: float | None = None) -> list[dict]:
    """Timed rows of refiner variants (name -> (RefineSettings overrides, with the shipped motion model)) on the
    walking stream of every format and batch size of `args`; with `what`, first check the "on" variant acts.
    `others(format name, obs, previous)`: more variants (name -> a callable of obs and previous) timed with them."""
    from dposer_ros.evaluation.methods import DEFAULT_MOTION
    from dposer_ros.keypoints import get_format
    from dposer_ros.prior.model import PosePrior
    from dposer_ros.prior.motion import LegMotion
    from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings

    prior, motion = PosePrior.load(args.prior), LegMotion.load(DEFAULT_MOTION)
    rows = []
    for name in args.formats.split(","):
        fmt = get_format(name)
        for persons in (int(p) for p in args.persons.split(",")):
            obs, previous = walking_stream(fmt, persons, motion, floor, legs_hidden, noise)
            refiners = {variant: FewStepRefiner(prior, fmt, RefineSettings(**overrides), motion=motion if use else None)
                        for variant, (overrides, use) in variants.items()}
            if what is not None:
                check_acts(refiners, obs, previous, what, f"{name} x {persons}")
            if others is not None:  # first: the reference of the ratios
                refiners = {**others(name, obs, previous), **refiners}
            rows += timed_rows(refiners, obs, previous, args.budget, label, name, persons)
    return rows


def main() -> None:
    args = arguments(__doc__, "bench/eval/motion_latency.json", 30.0)
    rows = walking_rows(args, "motion", {"off": ({}, False), "on": ({}, True)}, "the motion model")
    report(rows, args.out, "torch engine, one thread, 4 steps, both legs hidden, up known, a walk's history",
           f"python bench/motion_latency.py --budget {args.budget}")


if __name__ == "__main__":
    main()
