"""Held-out takes as keypoint streams: a test-split take through a sensor corruption model, in a REP 103 frame.

The dataset stores SMPL-X poses in its canonical world frame (Y up, X to the body's left at rest, Z forward).
Streams are published in a REP 103 frame (x forward, y left, z up): p_ros = R_ROS_FROM_DATASET @ p_dataset,
a proper rotation (x_ros = z, y_ros = x, z_ros = y). Corruptions are applied in the dataset frame (where
`dposer_ros.sensors` defines them), then the keypoints and the ground truth are rotated.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..body import ForwardKinematics, Posed
from ..dataset.poses import PoseDataset, default_dataset_path, load_dataset

R_ROS_FROM_DATASET = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
FRAME_ID = "world"

# names of the brief / README for the corruption models of config/eval/corruptions.yaml
CORRUPTION_ALIASES = {
    "camera_occlusion_legs": "cam_occl_legs",
    "camera_occlusion_limb": "cam_occl_limb",
    "camera_occlusion_hands": "cam_occl_hands",
    "camera_occlusion_random": "cam_occl_random30",
    "camera_noise": "cam_noise_2cm",
}


@dataclass
class Take:
    """All frames of one take, sorted by frame number (30 Hz)."""

    index: int
    name: str
    source: str
    split: str
    pose: np.ndarray  # (T, 55, 3)
    transl: np.ndarray  # (T, 3)
    frame: np.ndarray  # (T,) frame numbers
    part_mask: np.ndarray  # (T, 4)
    fps: float

    def __len__(self) -> int:
        return len(self.pose)

    def posed(self) -> Posed:
        """Ground-truth SMPL-X forward kinematics (dataset frame, float64)."""
        return ForwardKinematics()(torch.from_numpy(self.pose).double(), torch.from_numpy(self.transl).double())


def held_out_takes(data: PoseDataset, min_frames: int = 1) -> list[int]:
    """Indices of the test-split takes with body truth and at least `min_frames` frames, sorted."""
    mask = data.split_mask("test") & data.part_mask[:, 0]
    takes, counts = np.unique(data.take[mask], return_counts=True)
    return [int(t) for t, c in zip(takes, counts) if c >= min_frames]


def find_take(data: PoseDataset, spec: str, any_split: bool = False) -> int:
    """A take index from `test:N` (N-th test take), a take index, or a (unique part of a) take name."""
    names = data.meta["takes"]
    split = data.meta["take_split"]
    if spec.startswith("test:"):
        tests = held_out_takes(data)
        n = int(spec.split(":", 1)[1])
        if not 0 <= n < len(tests):
            raise ValueError(f"there are {len(tests)} test takes with body truth; {spec!r} is out of range")
        return tests[n]
    if spec.isdigit():
        idx = int(spec)
        if not 0 <= idx < len(names):
            raise ValueError(f"take index {idx} out of range (0..{len(names) - 1})")
    else:
        hits = [i for i, n in enumerate(names) if n == spec] or [i for i, n in enumerate(names) if spec in n]
        if not hits:
            close = difflib.get_close_matches(spec, names, n=3)
            raise ValueError(f"no take named {spec!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        test_hits = [i for i in hits if split[i] == "test"]
        if len(test_hits) > 1 or (not test_hits and len(hits) > 1):
            shown = ", ".join(names[i] for i in (test_hits or hits)[:5])
            raise ValueError(f"{spec!r} matches {len(test_hits or hits)} takes ({shown} ...); be more specific")
        idx = (test_hits or hits)[0]
    if split[idx] != "test" and not any_split:
        raise ValueError(f"take {names[idx]!r} is in the {split[idx]} split, not held out; replay test takes "
                         "(e.g. --take test:0) or pass --any-split")
    return idx


def load_take(spec: str, data: PoseDataset | None = None, dataset_path: Path | None = None,
              any_split: bool = False, max_frames: int | None = None) -> Take:
    data = data if data is not None else load_dataset(dataset_path or default_dataset_path())
    idx = find_take(data, spec, any_split)
    rows = np.flatnonzero(data.take == idx)
    rows = rows[np.argsort(data.frame[rows])]
    if max_frames:
        rows = rows[:max_frames]
    return Take(idx, data.meta["takes"][idx], data.meta["sources"][int(data.source[rows[0]])],
                data.meta["take_split"][idx], data.pose[rows].copy(), data.transl[rows].copy(),
                data.frame[rows].copy(), data.part_mask[rows].copy(), float(data.meta.get("fps", 30)))


def get_corruption(name: str, path: Path | None = None):
    """A corruption model of config/eval/corruptions.yaml by name (or an alias such as camera_occlusion_legs)."""
    from ..sensors import load_corruptions

    models = load_corruptions(path)
    key = CORRUPTION_ALIASES.get(name, name)
    if key not in models:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(list(models) + list(CORRUPTION_ALIASES))}")
    return models[key]


@dataclass
class StreamFrame:
    """One emitted sensor frame (REP 103 frame, metres)."""

    seq: int  # emitted frame number
    frame: int  # frame number within the take
    time_s: float  # since the first emitted frame
    points: np.ndarray  # (K, 3), NaN where not visible
    confidence: np.ndarray  # (K,), 0 where not visible
    visible: np.ndarray  # (K,) bool
    gt_joints: np.ndarray  # (55, 3) ground-truth SMPL-X joints
    joint_visible: np.ndarray  # (55,) bool: SMPL-X joints the keypoints observe (evaluation.metrics rules)


@dataclass
class Stream:
    take: Take
    corruption: str
    format_name: str
    rate_hz: float
    frames: list[StreamFrame]
    frame_id: str = FRAME_ID

    @property
    def duration_s(self) -> float:
        return self.frames[-1].time_s if self.frames else 0.0


def corrupt_take(take: Take, corruption, seed: int = 0) -> Stream:
    """Run `take` through a corruption model; keypoints and truth rotated into the REP 103 frame."""
    from ..evaluation.metrics import joint_visibility

    posed = take.posed()
    data = corruption.apply(posed, torch.Generator().manual_seed(seed))
    points, conf, visible, frames = (t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in data)
    fmt = corruption.format
    joint_vis = joint_visibility(fmt, torch.as_tensor(visible)).numpy()
    rot = R_ROS_FROM_DATASET
    gt = posed.joints.numpy()
    t0 = take.frame[int(frames[0])] if len(frames) else 0
    out = []
    for seq, i in enumerate(frames.tolist()):
        out.append(StreamFrame(
            seq=seq, frame=int(take.frame[i]), time_s=float(take.frame[i] - t0) / take.fps,
            points=points[seq].astype(np.float64) @ rot.T, confidence=conf[seq].astype(np.float64),
            visible=visible[seq].astype(bool), gt_joints=gt[i] @ rot.T, joint_visible=joint_vis[seq].astype(bool)))
    rate = getattr(corruption, "rate_hz", take.fps / max(1, int(getattr(corruption, "stride", 1))))
    return Stream(take, corruption.name, fmt.name, float(rate), out)


def to_dataset_frame(points: np.ndarray) -> np.ndarray:
    """REP 103 stream frame -> the dataset's Y-up frame (for drawing with dposer_ros.body.render)."""
    return np.asarray(points) @ R_ROS_FROM_DATASET


def retarget_take(name: str, mocap_dir: Path, max_frames: int | None = None) -> Take:
    """A take retargeted straight from the mocap folder, for machines without the built dataset.

    The split comes from the same rule as `dposer data build` (all takes of the configured sources are listed,
    none is read but this one), so a held-out take stays held out.
    """
    from ..dataset.build import BuildConfig
    from ..dataset.split import split_takes
    from ..paths import config_path
    from ..retarget.pipeline import retarget_source
    from ..retarget.sources import find_takes, load_sources

    config = BuildConfig.from_yaml(config_path("data/build.yaml"))
    sources = load_sources()
    specs = {s: sources[s].without_targets(config.drop_targets.get(s, ())) for s in config.sources}
    takes = [t for s in config.sources for t in find_takes(specs[s], mocap_dir)]  # each take carries its rig
    split = split_takes([t.take_id for t in takes], [t.source for t in takes], config.split["val"],
                        config.split["test"], config.split["salt"])
    hits = [i for i, t in enumerate(takes) if t.take_id.endswith(name) and specs[t.source].part == "body"]
    if not hits:
        raise ValueError(f"no body take named {name!r} under {mocap_dir}")
    i = hits[0]
    [res] = retarget_source(specs[takes[i].source], [takes[i]], config.fit, config.fps, config.segment_frames,
                            max_frames=max_frames)
    n = len(res.pose)
    mask = np.zeros((n, 4), bool)
    mask[:, 0] = True
    return Take(i, takes[i].take_id, takes[i].source, split[i], res.pose, res.transl, np.arange(n, dtype=np.int32),
                mask, config.fps)
