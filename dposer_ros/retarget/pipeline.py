"""Retargeting whole takes onto SMPL-X: targets in metres at a fixed rate, batched sequence fits, results per take."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from ..body.skeleton import NUM_JOINTS, Skeleton, smplx_neutral
from ..keypoints import get_format
from ..mocap import Motion
from .fit import FitSettings, SequenceFitter, sub_skeleton
from .sources import SIDES, SourceSpec, Take, metric_scale, read_take, reproportion, resample, target_points

# Flexion axis (in the joint's rest frame) and the sign of allowed flexion of hinge-like joints.
BODY_HINGES = {
    "left_knee": ((1, 0, 0), 1.0),
    "right_knee": ((1, 0, 0), 1.0),
    "left_elbow": ((0, 1, 0), -1.0),
    "right_elbow": ((0, 1, 0), 1.0),
}
BODY_FROZEN = ("head", "left_foot", "right_foot", "left_wrist", "right_wrist")  # nothing below them is observed
FINGERS = ("index", "middle", "pinky", "ring", "thumb")
_TIP_KEYPOINT = {"index": "index_finger_tip", "middle": "middle_finger_tip", "ring": "ring_finger_tip",
                 "pinky": "pinky_tip", "thumb": "thumb_tip"}


@dataclass
class TakeResult:
    """Retargeted frames of one take at the target rate."""

    take: Take
    pose: np.ndarray  # (T, 55, 3) axis-angle; zeros for parts not captured
    transl: np.ndarray  # (T, 3) metres (zeros for hand-only takes)
    parts: tuple[str, ...]  # parts present: body, left_hand, right_hand
    fit_error: np.ndarray  # (T, M) metres: SMPL-X joints against the re-proportioned targets
    raw_error: np.ndarray  # (T, M) metres: against the source joints, scaled to metres only
    scale: float  # metres per file unit


@dataclass
class _Prepared:
    """One file of a take, ready to fit: target names in skeleton order, positions in metres at the target rate."""

    side: str | None
    names: tuple[str, ...]
    targets: np.ndarray  # (T, M, 3) re-proportioned to the SMPL-X skeleton
    raw: np.ndarray  # (T, M, 3) scaled source joints
    scale: float


def body_skeleton() -> Skeleton:
    return sub_skeleton(smplx_neutral(), smplx_neutral().names[:22])


@cache
def hand_skeleton(side: str) -> Skeleton:
    """Wrist, 15 finger joints and five fingertip leaves (from the MediaPipe hand format's tip landmarks)."""
    skel = smplx_neutral()
    tips = get_format(f"mediapipe_hand21_{side}")
    leaves = {}
    for f in FINGERS:
        k = tips.keypoint_names.index(_TIP_KEYPOINT[f])
        parent = int(tips.joints[k])
        leaves[f"{side}_{f}_tip"] = (skel.names[parent], skel.rest_joints[parent] + tips.offsets[k])
    joints = [f"{side}_wrist"] + [f"{side}_{f}{k}" for f in FINGERS for k in (1, 2, 3)]
    return sub_skeleton(skel, joints, leaves)


def hand_hinges(side: str) -> dict:
    """Middle and distal finger joints flex towards the palm (rest palm normal -Y), about bone x palm normal."""
    skel = hand_skeleton(side)
    hinges = {}
    for f in FINGERS:
        if f == "thumb":
            continue
        for k, child in ((2, f"{side}_{f}3"), (3, f"{side}_{f}_tip")):
            joint = f"{side}_{f}{k}"
            bone = skel.rest_joints[skel.index(child)] - skel.rest_joints[skel.index(joint)]
            hinges[joint] = (np.cross(bone, (0.0, -1.0, 0.0)), 1.0)
    return hinges


def _rig(spec: SourceSpec, take: Take):
    """`spec`'s rig for `take`: the targets of the spec passed in apply, also to a take found with another version
    of it (e.g. before `SourceSpec.without_targets`)."""
    for rig in spec.rigs:
        if rig.patterns == take.rig.patterns:
            return rig
    raise ValueError(f"take {take.take_id} was not found with a rig of source {spec.name}")


def _prepare(spec: SourceSpec, take: Take, motion: Motion, side: str | None, fps: float,
             max_frames: int | None = None) -> _Prepared:
    skel = body_skeleton() if side is None else hand_skeleton(side)
    points = target_points(_rig(spec, take), motion, side)
    pairs = [tuple(p.format(side=side) for p in pair) for pair in spec.scale_pairs]
    scale = metric_scale(points, dict(zip(skel.names, skel.rest_joints)), pairs)
    points = {k: v[spec.skip_first_frames :] * scale for k, v in points.items()}
    names = tuple(n for n in skel.names if n in points)
    raw = np.stack([points[n] for n in names], axis=1)
    fitted = reproportion(points, skel)
    targets = np.stack([fitted[n] for n in names], axis=1)
    if not (np.all(np.isfinite(targets)) and np.all(np.isfinite(raw))):
        raise ValueError(f"{motion.path}: non-finite joint positions")
    targets, raw = resample(targets, motion.fps, fps)[:max_frames], resample(raw, motion.fps, fps)[:max_frames]
    return _Prepared(side, names, targets, raw, scale)


def _fit(fitter: SequenceFitter, sequences: Sequence[np.ndarray], segment: int, progress) -> list[tuple]:
    """Fit many (T, M, 3) sequences in one batch of segments of at most `segment` frames; (pose, transl, joints) each."""
    pieces = [(i, s) for i, seq in enumerate(sequences) for s in range(0, len(seq), segment)]
    length = max(min(segment, len(sequences[i]) - s) for i, s in pieces)
    targets = np.zeros((len(pieces), length, *sequences[0].shape[1:]), np.float32)
    valid = np.zeros((len(pieces), length), bool)
    for b, (i, s) in enumerate(pieces):
        chunk = sequences[i][s : s + segment]
        targets[b, : len(chunk)] = chunk
        targets[b, len(chunk) :] = chunk[-1]
        valid[b, : len(chunk)] = True
    pose, transl, joints = fitter.fit(torch.from_numpy(targets), torch.from_numpy(valid), progress)
    out = []
    for i, seq in enumerate(sequences):
        rows = [(b, min(segment, len(seq) - s)) for b, (j, s) in enumerate(pieces) if j == i]
        out.append(tuple(np.concatenate([a[b, :n] for b, n in rows]) for a in (pose, transl, joints)))
    return out


def _fit_files(spec, preps: list[_Prepared], settings, segment, progress) -> list[tuple]:
    """Fit files sharing one skeleton and target set; returns (pose in SMPL-X layout, transl, fit err, raw err)."""
    side = preps[0].side
    skel = body_skeleton() if side is None else hand_skeleton(side)
    names = preps[0].names
    weights = [spec.weights.get(n if side is None else n.replace(side, "{side}", 1), 1.0) for n in names]
    if side is None:
        fitter = SequenceFitter(skel, names, weights, BODY_HINGES, settings, BODY_FROZEN)
    else:
        tips = tuple(n for n in skel.names if n.endswith("_tip"))
        fitter = SequenceFitter(skel, names, weights, hand_hinges(side), settings, tips)
    # a hand's root (the wrist) carries the capture's own world orientation, meaningless for a body: hand fits
    # keep only the fingers
    rotated = [n for n in skel.names if not n.endswith("_tip")]
    first = 0 if side is None else 1
    full_index = [smplx_neutral().index(n) for n in rotated[first:]]
    results = []
    for prep, (pose, transl, joints) in zip(preps, _fit(fitter, [p.targets for p in preps], segment, progress)):
        full = np.zeros((len(pose), NUM_JOINTS, 3), np.float32)
        full[:, full_index] = pose[:, first : len(rotated)]
        fit_err = np.linalg.norm(joints - prep.targets, axis=-1)
        raw_err = np.linalg.norm(joints - prep.raw, axis=-1)
        results.append((full, transl, fit_err, raw_err))
    return results


def retarget_source(
    spec: SourceSpec,
    takes: Sequence[Take],
    settings: FitSettings,
    fps: float = 30.0,
    segment: int = 300,
    progress: Callable[[int], None] | None = None,
    max_frames: int | None = None,
) -> list[TakeResult]:
    """Retarget `takes` of one source; files with the same skeleton and targets are fitted together in one batch.
    `max_frames` keeps only the start of each take (quick checks)."""
    files = []  # (take index, prepared file)
    for i, take in enumerate(takes):
        for motion in read_take(take):
            side = None if spec.part == "body" else next(s for s in SIDES if motion.path.name.lower().startswith(s))
            files.append((i, _prepare(spec, take, motion, side, fps, max_frames)))
    groups: dict[tuple, list[int]] = {}
    for k, (_, prep) in enumerate(files):
        groups.setdefault((prep.side, prep.names), []).append(k)
    fitted: dict[int, tuple] = {}
    for members in groups.values():
        for k, res in zip(members, _fit_files(spec, [files[k][1] for k in members], settings, segment, progress)):
            fitted[k] = res

    results = []
    for i, take in enumerate(takes):
        mine = [k for k, (j, _) in enumerate(files) if j == i]
        frames = min(len(fitted[k][0]) for k in mine)
        pose = sum(fitted[k][0][:frames] for k in mine)  # hand files fill disjoint joints
        transl = fitted[mine[0]][1][:frames] if spec.part == "body" else np.zeros((frames, 3), np.float32)
        parts = ("body",) if spec.part == "body" else tuple(f"{files[k][1].side}_hand" for k in mine)
        fit_err = np.concatenate([fitted[k][2][:frames] for k in mine], axis=1)
        raw_err = np.concatenate([fitted[k][3][:frames] for k in mine], axis=1)
        scale = float(np.mean([files[k][1].scale for k in mine]))
        results.append(TakeResult(take, pose, transl, parts, fit_err, raw_err, scale))
    return results
