"""A camera that moves with the robot: refining in its frame, against refining in a fixed frame (`fixed_frame`).

    python bench/moving_camera.py --clips 12 --frames 60 --yaw-rate 30 --speed 0.5

The foreign protocol's validation takes, seen from a robot 2.5 m from the person that turns about the up direction at
`--yaw-rate` degrees per second and drives at `--speed` m/s. "fixed frame": the keypoints in a frame fixed in the
world (what the node does with `fixed_frame`, e.g. odom); "camera frame": the same keypoints in the robot's moving
frame, each track carried from frame to frame as it is (the node without `fixed_frame`), so that a remembered
keypoint, the hold of a hidden joint and the warm start stay where the camera saw them. Both are scored against the
truth in the frame they were refined in (the errors do not depend on the frame). The robot's frame keeps the up
direction and the floor (it turns about up; its origin is on the floor), so only the motion differs. Writes
bench/eval/moving_camera.json and prints its table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CORRUPTIONS = ("cam_noise_2cm", "cam_occl_random30", "cam_occl_legs_late", "cam_occl_limb")
METHODS = ("few_step", "no_prior")
DISTANCE_M = 2.5  # from the robot to the person at the clip's start


def robot_motion(up: torch.Tensor, start: torch.Tensor, times: torch.Tensor, yaw_rate: float,
                 speed: float) -> tuple[torch.Tensor, torch.Tensor]:
    """World -> robot frame at each time (x_r = rot x + trans): (T, 3, 3), (T, 3). The robot starts `DISTANCE_M`
    from `start` (the person) on the floor plane through the origin, turns about `up` at `yaw_rate` deg/s and drives
    along its first heading at `speed` m/s."""
    import roma

    flat = start - (start @ up) * up
    side = torch.linalg.cross(up, torch.tensor([1.0, 0.0, 0.0], dtype=up.dtype))
    if side.norm() < 0.1:
        side = torch.linalg.cross(up, torch.tensor([0.0, 1.0, 0.0], dtype=up.dtype))
    side = side / side.norm()
    origin = flat - DISTANCE_M * side  # on the plane up . x = 0: the floor's height is the same in both frames
    heading = torch.linalg.cross(up, side)
    angle = math.radians(yaw_rate) * times
    rot = roma.rotvec_to_rotmat(-angle[:, None] * up)  # the frame turns by +angle: coordinates turn back
    where = origin + speed * times[:, None] * heading
    return rot, -(rot @ where[..., None])[..., 0]


def in_robot_frame(clip, data, fmt, fps: float, yaw_rate: float, speed: float):
    """The clip and its corrupted stream as the moving robot sees them."""
    truth = clip.keypoint_truth(fmt)
    up = torch.tensor(clip.up, dtype=truth.dtype)
    times = torch.arange(truth.shape[0], dtype=truth.dtype) / fps
    rot, trans = robot_motion(up, truth[0].nanmean(0), times, yaw_rate, speed)
    moved_truth = truth @ rot.transpose(1, 2) + trans[:, None]
    r, t = rot[data.frames].to(data.points), trans[data.frames].to(data.points)
    moved = replace(data, points=data.points @ r.transpose(1, 2) + t[:, None])  # NaN (hidden) stays NaN
    return replace(clip, truth={fmt.name: moved_truth}), moved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--yaw-rate", type=float, default=30.0, help="degrees per second")
    parser.add_argument("--speed", type=float, default=0.5, help="metres per second")
    parser.add_argument("--prior", type=Path, default=ROOT / "models" / "dposer_cpu" / "prior.pt")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "eval" / "moving_camera.json")
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

    prior = PosePrior.load(args.prior)
    corruptions = load_corruptions(config_path("eval/corruptions_foreign.yaml"))
    clips = foreign_clips(default_mocap_dir(), args.clips, args.frames, "val", 0, ("h36m17",))
    factories, errors = build_methods(list(METHODS), prior)
    if errors:
        print(f"cannot build {errors}", file=sys.stderr)
        return 2
    fk = ForwardKinematics()
    pools = {(c, m, f): Pool() for c in CORRUPTIONS for m in METHODS for f in ("fixed", "camera")}
    bar = tqdm(total=len(CORRUPTIONS) * len(clips), unit="clip", desc="moving camera")
    for name in CORRUPTIONS:
        cor = corruptions[name]
        fmt = cor.format
        solvers = {m: factories[m](fmt) for m in METHODS}
        for clip in clips:
            data = cor.apply_keypoints(clip.keypoint_truth(fmt), stream_seed(0, name, clip.name))
            seen = {"fixed": (clip, data), "camera": in_robot_frame(clip, data, fmt, cor.fps, args.yaw_rate, args.speed)}
            for m, solver in solvers.items():
                for frame, (c, d) in seen.items():
                    outs, seconds = run_stream(solver, fmt, d, c.up, c.floor, cor.fps)
                    pools[(name, m, frame)].merge(c.score(fmt, d, outs, seconds, cor.stride, fk))
            bar.update(1)
    bar.close()
    rows = []
    for name in CORRUPTIONS:
        metric = primary_metric(corruptions[name].to_dict(), True)
        row: dict[str, str] = {"corruption": name, "error": "hidden" if metric == "mpjpe_occluded" else "all"}
        for m in METHODS:
            fixed, moving = (pools[(name, m, f)].summary()[metric] for f in ("fixed", "camera"))
            row[f"{m} fixed frame"] = f"{fixed:.1f}"
            row[f"{m} camera frame"] = f"{moving:.1f}"
            row[f"{m} camera / fixed"] = f"{moving / fixed:.2f}"
        rows.append(row)
    command = "python bench/moving_camera.py " + " ".join(sys.argv[1:])
    run = {"command": command, "date": time.strftime("%Y-%m-%d"),
           "backend": (f"mm; {args.clips} validation clips x {args.frames} frames, the robot turning at "
                       f"{args.yaw_rate:g} deg/s and driving at {args.speed:g} m/s, {DISTANCE_M} m from the person; "
                       f"torch engine, one thread, {platform.platform()}"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(run, indent=1) + "\n")
    head = list(rows[0])
    print("\n".join(["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
                    + ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
