"""Keypoint ground truth we did not make: the source skeletons' own joints, or keypoint arrays a user brings.

The in-house protocol (`clips.py`) reads its truth off SMPL-X bodies retargeted by this project, through this
project's landmark tables: a method tuned on it is tuned to ourselves. Here the truth is
  - **foreign**: the held-out takes' source skeleton joints (BVH / ASF of Bandai, HDM05, ReActIdle, CMU) in metres,
    with each actor's proportions and each rig's joint placement, mapped to keypoint formats by joint name
    (`foreign_skeletons.yaml`), never through SMPL-X;
  - **user keypoints**: an npz of keypoint arrays in one format (`load_keypoint_clips`).
A keypoint a skeleton does not define is NaN in the truth: never shown to a method and never scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import yaml

from ..body.jacobian import offset_frames
from ..dataset.poses import WORLD_UP
from ..keypoints import KeypointFormat
from ..retarget.sources import SourceSpec, Take, find_takes, load_sources, read_take, resample
from ..sensors import resolve_format
from .metrics import Pool, keypoint_pool

BODY_SOURCES = ("bandai", "hdm05", "reactidle", "cmu")
HAND_SOURCES = ("manipnet_hands",)
SOURCES = {"body": BODY_SOURCES, "hands": HAND_SOURCES}


@dataclass
class KeypointClip:
    """T consecutive frames (30 Hz) of true keypoints, in one or more formats."""

    name: str
    source: str
    take: str
    start: int
    truth: dict[str, torch.Tensor] = field(repr=False)  # format name -> (T, K, 3) metres, NaN where undefined
    kind: str = "body"
    up: tuple[float, float, float] | None = WORLD_UP  # the up direction of the clip's frame (None: unknown)
    floor: float | None = None  # the floor's height along `up` (None: unknown)

    def __len__(self) -> int:
        return next(iter(self.truth.values())).shape[0]

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "source": self.source, "take": self.take, "start": self.start,
                "frames": len(self), "truth": "keypoints", "up": self.up, "floor": self.floor}

    def keypoint_truth(self, fmt: KeypointFormat, fk=None) -> torch.Tensor:
        if fmt.name not in self.truth:
            raise ValueError(f"clip {self.name} has no ground truth in format {fmt.name!r} (it has "
                             f"{', '.join(self.truth)}); use a corruption of one of those formats")
        return self.truth[fmt.name]

    def score(self, fmt: KeypointFormat, data, outs: list, seconds: list[float], stride: int, fk) -> Pool:
        """Keypoint errors of the refined bodies, read through `fmt` and the track's calibrated keypoint offsets
        (where the method keeps them: its answer in the input's convention), against the truth (`keypoint_pool`)."""
        posed = fk(torch.cat([o.pose for o in outs]).double(), torch.cat([o.transl for o in outs]).double(),
                   _rest_joints(outs, fk))
        pred = fmt.from_posed(posed)
        if all(o.keypoint_offsets is not None for o in outs):
            offsets = torch.cat([o.keypoint_offsets for o in outs]).double()
            frames = offset_frames(fmt.joints, fmt.offsets, fk.skeleton.parents)
            pred = pred + (posed.rotations[:, frames] @ offsets[..., None])[..., 0]
        truth = self.keypoint_truth(fmt)[data.frames].double()
        return keypoint_pool(pred, truth, data.visible, stride, seconds)


def _rest_joints(outs: list, fk) -> torch.Tensor | None:
    """The refined people's own rest joints (T, 55, 3) when the solver calibrated a body shape, else None."""
    if any(getattr(o, "rest_joints", None) is None for o in outs):
        return None
    return torch.cat([o.rest_joints for o in outs]).double()


@cache
def foreign_table() -> dict:
    """The packaged foreign_skeletons.yaml: per-source rigs (unit, points) and per-format keypoint -> point."""
    return yaml.safe_load(resources.files(__package__).joinpath("foreign_skeletons.yaml").read_text())


def source_floor(source: str) -> float | None:
    """The ground's height (metres along the capture's up) in a source's frame, where each of its rigs has the same
    one (`floor_m`); None where it is unknown."""
    floors = {rig.get("floor_m") for rig in foreign_table()["rigs"].get(source, [])}
    return float(floors.pop()) if len(floors) == 1 and None not in floors else None


def _rig_points(spec: SourceSpec, take: Take) -> dict:
    for rig in foreign_table()["rigs"][spec.name]:
        if tuple(rig["patterns"]) == take.rig.patterns:
            return rig
    raise ValueError(f"foreign_skeletons.yaml has no rig of {spec.name} for the patterns {take.rig.patterns}")


def take_points(spec: SourceSpec, take: Take, fps: float = 30.0) -> dict[str, np.ndarray]:
    """Point name -> (F, 3) metres at `fps`: a take's own source joints (foreign_skeletons.yaml), first frames
    skipped as the dataset build skips them (reference poses). A rig with `sides` has one file per side (hands):
    "{side}" in its point names is that file's side."""
    rig = _rig_points(spec, take)
    side_of = {stem: side for side, stem in rig.get("sides", {}).items()}
    out = {}
    for path, motion in zip(take.files, read_take(take)):
        side = side_of.get(path.name.split(".")[0], "")
        for point, joint in rig["points"].items():
            xyz = motion.positions[spec.skip_first_frames :, motion.index(joint)] * float(rig["unit_m"])
            out[point.replace("{side}", side)] = resample(xyz, motion.fps, fps)
    frames = min(len(v) for v in out.values())  # the two hands' files may differ by a frame
    return {k: v[:frames] for k, v in out.items()}


def format_truth(points: dict[str, np.ndarray], fmt: KeypointFormat) -> torch.Tensor:
    """(F, K, 3) keypoints of `fmt` from named points (foreign_skeletons.yaml `formats`; a format joined with '+'
    reads each part's table); NaN where undefined."""
    tables = foreign_table()["formats"]
    missing = [part for part in fmt.name.split("+") if part not in tables]
    if missing:
        raise ValueError(f"foreign_skeletons.yaml maps no keypoints of format {missing[0]!r}; "
                         f"mapped formats: {', '.join(tables)}")
    joined = "+" in fmt.name
    frames = len(next(iter(points.values())))
    out = np.full((frames, fmt.num_keypoints, 3), np.nan)
    for k, name in enumerate(fmt.keypoint_names):
        part, key = name.split("/", 1) if joined else (fmt.name, name)
        point = tables[part].get(key)
        if point in points:
            out[:, k] = points[point]
    return torch.from_numpy(out)


def split_of_takes(mocap_dir: Path, build, kind: str = "body") -> dict[str, list[Take]]:
    """Takes of each body (or hand: `kind`) source in each split, as the dataset build assigns them (same salt,
    same take ids). -> {"train"|"val"|"test": [Take, ...]}."""
    from ..dataset.split import split_takes

    specs = load_sources()
    takes = [t for name in build.sources for t in find_takes(specs[name], Path(mocap_dir))]
    split = split_takes([t.take_id for t in takes], [t.source for t in takes], build.split["val"],
                        build.split["test"], build.split["salt"])
    out: dict[str, list[Take]] = {}
    for take, which in zip(takes, split):
        if take.source in SOURCES[kind]:
            out.setdefault(which, []).append(take)
    return out


def foreign_clips(mocap_dir: Path, count: int, frames: int, split: str = "test", seed: int = 0,
                  formats: tuple[str, ...] = ("h36m17", "coco17", "radar14"), build=None,
                  progress: bool = False, kind: str = "body", takes: tuple[str, ...] = ()) -> list[KeypointClip]:
    """`count` clips of `frames` frames (30 Hz) from different `split` takes, round-robin over the body sources
    (sorted by name), each take's window drawn at random; deterministic for `seed`. `kind` "hands": the hand
    captures (two hands each; too few takes for one clip each, so a take gives several windows, each drawn anew).
    `takes`: only takes whose id holds one of these strings (as `dposer eval --takes`)."""
    from tqdm.auto import tqdm

    from ..dataset.build import BuildConfig
    from ..paths import config_path

    build = build or BuildConfig.from_yaml(config_path("data/build.yaml"))
    takes_in = split_of_takes(mocap_dir, build, kind).get(split, [])
    if takes:
        takes_in = [t for t in takes_in if any(part in t.take_id for part in takes)]
        if not takes_in:
            raise ValueError(f"no {split} take's id holds any of {', '.join(takes)}")
    rng = np.random.default_rng(seed)
    queues: dict[str, list[Take]] = {}
    for take in takes_in:
        queues.setdefault(take.source, []).append(take)
    for source in queues:
        rng.shuffle(queues[source])
    specs = load_sources()
    fmts = [resolve_format(f) for f in formats]
    clips: list[KeypointClip] = []
    bar = tqdm(total=count, unit="clip", desc=f"foreign {split} clips", disable=not progress)
    while len(clips) < count and any(queues.values()):
        for source in sorted(queues):
            if len(clips) == count or not queues[source]:
                continue
            take = queues[source].pop(0)
            points = take_points(specs[source], take, build.fps)
            length = len(next(iter(points.values())))
            if length < frames:
                continue
            if kind == "hands":  # back in the queue: its next window is drawn anew
                queues[source].append(take)
            start = int(rng.integers(0, length - frames + 1))
            window = {k: v[start : start + frames] for k, v in points.items()}
            if not all(np.isfinite(v).all() for v in window.values()):
                continue
            floor = _rig_points(specs[source], take).get("floor_m")  # the capture's ground, where it is known
            clips.append(KeypointClip(f"{take.take_id}@{start}", source, take.take_id, start,
                                      {f.name: format_truth(window, f) for f in fmts}, kind,
                                      floor=None if floor is None else float(floor)))
            bar.update(1)
    bar.close()
    if len(clips) < count:
        raise ValueError(f"only {len(clips)} of {count} foreign {split} clips of {frames} frames could be made "
                         f"(too few {split} takes that long under {mocap_dir})")
    return clips


def load_keypoint_clips(path: Path, fmt: KeypointFormat, frames: int | None = None) -> list[KeypointClip]:
    """Clips from a user's npz: `keypoints` (N, K, 3) metres in format `fmt`, `clip` (N,) clip ids (frames of a
    clip in order, 30 Hz), optional `confidence` (N, K): 0 marks a keypoint the truth does not define, optional
    `up` (3,): the up direction of the keypoints' frame (against gravity; without it the prior is not told), optional
    `floor` (): the floor's height along `up` in metres (the feet stand on it; without it, unknown).
    `frames` cuts each clip into pieces of at most that many frames."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"keypoint file {path} not found")
    with np.load(path, allow_pickle=False) as data:
        if "keypoints" not in data:
            raise ValueError(f"{path}: needs an array 'keypoints' (N, {fmt.num_keypoints}, 3) in metres; "
                             f"it has {', '.join(data.files) or 'nothing'}")
        points = np.asarray(data["keypoints"], dtype=np.float64)
        ids = np.asarray(data["clip"]) if "clip" in data else np.zeros(len(points), dtype=np.int64)
        conf = np.asarray(data["confidence"], dtype=np.float64) if "confidence" in data else None
        up = np.asarray(data["up"], dtype=np.float64) if "up" in data else None
        floor = np.asarray(data["floor"], dtype=np.float64) if "floor" in data else None
    if floor is not None and (floor.shape != () or not np.isfinite(floor) or up is None):
        raise ValueError(f"{path}: 'floor' must be one finite height (metres along 'up', which it needs), got "
                         f"{floor.tolist()}{'' if up is not None else ' without up'}; leave it out when unknown")
    if up is not None and (up.shape != (3,) or not np.isfinite(up).all() or np.linalg.norm(up) < 1e-6):
        raise ValueError(f"{path}: 'up' must be one direction (3,) against gravity in the keypoints' frame, got "
                         f"{up.tolist()}; leave it out when unknown")
    if points.ndim != 3 or points.shape[1:] != (fmt.num_keypoints, 3):
        raise ValueError(f"{path}: 'keypoints' must be (N, {fmt.num_keypoints}, 3) for format {fmt.name}, "
                         f"got {points.shape}")
    if ids.shape != (len(points),):
        raise ValueError(f"{path}: 'clip' must hold one id per frame ({len(points)}), got shape {ids.shape}")
    if conf is not None:
        if conf.shape != points.shape[:2]:
            raise ValueError(f"{path}: 'confidence' must be (N, K) = {points.shape[:2]}, got {conf.shape}")
        points[conf <= 0] = np.nan
    defined = np.isfinite(points).all(-1)
    if not defined.any(0).any():
        raise ValueError(f"{path}: no finite keypoint with confidence > 0")
    clips = []
    for cid in dict.fromkeys(ids.tolist()):
        rows = np.flatnonzero(ids == cid)
        step = frames or len(rows)
        for s in range(0, len(rows) - step + 1 if frames else 1, step):
            piece = points[rows[s : s + step]]
            clips.append(KeypointClip(f"{cid}@{s}", path.stem, str(cid), s, {fmt.name: torch.from_numpy(piece)},
                                      up=None if up is None else (float(up[0]), float(up[1]), float(up[2])),
                                      floor=None if floor is None else float(floor)))
    if not clips:
        raise ValueError(f"{path}: no clip has {frames} frames")
    return clips
