"""The motion-capture sources: which files form a take, and how their joints map onto SMPL-X (sources.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from ..mocap import Motion, read_motion

SIDES = ("left", "right")


@dataclass(frozen=True)
class Rig:
    """One skeleton of a source: the files it covers and how its joints map onto SMPL-X joints."""

    patterns: tuple[str, ...]
    targets: dict[str, str]


@dataclass(frozen=True)
class SourceSpec:
    """One source of sources.yaml. For hand sources `{side}` in joint names stands for left/right."""

    name: str
    part: str  # "body" or "hands"
    licence: str
    take_from: str  # "file" or "folder"
    skip_first_frames: int
    rigs: tuple[Rig, ...]
    weights: dict[str, float]
    scale_pairs: tuple[tuple[str, str], ...]

    def without_targets(self, joints) -> SourceSpec:
        """The same source with the SMPL-X joints `joints` left out of every rig's targets."""
        drop = set(joints)
        rigs = tuple(Rig(r.patterns, {k: v for k, v in r.targets.items() if k not in drop}) for r in self.rigs)
        return replace(self, rigs=rigs)


@dataclass(frozen=True)
class Take:
    """One take: its id (relative path without suffix) and its files (two, one per hand, for hand sources)."""

    source: str
    take_id: str
    files: tuple[Path, ...]
    rig: Rig


@cache
def load_sources() -> dict[str, SourceSpec]:
    """All sources of the packaged sources.yaml."""
    raw = yaml.safe_load(resources.files(__package__).joinpath("sources.yaml").read_text())
    defaults = raw["defaults"]
    specs = {}
    for name, s in raw["sources"].items():
        specs[name] = SourceSpec(
            name=name,
            part=s["part"],
            licence=s["licence"],
            take_from=s["take_from"],
            skip_first_frames=int(s.get("skip_first_frames", 0)),
            rigs=tuple(Rig(tuple(r["patterns"]), dict(r["targets"])) for r in s["rigs"]),
            weights={**defaults["weights"], **s.get("weights", {})},
            scale_pairs=tuple(tuple(p) for p in s.get("scale_pairs", defaults["scale_pairs"])),
        )
    return specs


def find_takes(spec: SourceSpec, mocap_dir: Path) -> list[Take]:
    """The takes of `spec` under `mocap_dir`/<source>, sorted by id."""
    root = Path(mocap_dir) / spec.name
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} not found; --mocap-dir should point at shared/data/mocap")
    rig_of: dict[Path, Rig] = {}
    for rig in spec.rigs:
        for pattern in rig.patterns:
            for f in root.glob(pattern):
                rig_of.setdefault(f, rig)
    groups: dict[str, list[Path]] = {}
    for f in sorted(rig_of):
        key = f.parent if spec.take_from == "folder" else f.with_name(f.name.split(".")[0])
        groups.setdefault(f"{spec.name}/{key.relative_to(root).as_posix()}", []).append(f)
    return [Take(spec.name, take_id, tuple(fs), rig_of[fs[0]]) for take_id, fs in sorted(groups.items())]


def resample(positions: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    """Linear resampling of (F, ...) positions from `fps` to `target_fps` (exact decimation when it divides)."""
    ratio = fps / target_fps
    if abs(ratio - round(ratio)) < 1e-3 and round(ratio) >= 1:
        return positions[:: int(round(ratio))]
    times = np.arange(0.0, (len(positions) - 1) / fps + 1e-9, 1.0 / target_fps) * fps
    lo = np.floor(times).astype(int).clip(0, len(positions) - 1)
    hi = (lo + 1).clip(max=len(positions) - 1)
    frac = (times - lo).reshape(-1, *([1] * (positions.ndim - 1)))
    return positions[lo] * (1 - frac) + positions[hi] * frac


def metric_scale(points: dict[str, np.ndarray], rest: dict[str, np.ndarray], pairs) -> float:
    """Least-squares factor mapping source distances of `pairs` (median over frames) onto the SMPL-X rest distances."""
    src = np.array([np.median(np.linalg.norm(points[a] - points[b], axis=-1)) for a, b in pairs])
    ref = np.array([np.linalg.norm(rest[a] - rest[b]) for a, b in pairs])
    if not np.all(np.isfinite(src)) or src.max() <= 0:
        raise ValueError("cannot derive a metric scale: degenerate source skeleton")
    return float(src @ ref / (src @ src))


def reproportion(points: dict[str, np.ndarray], skeleton) -> dict[str, np.ndarray]:
    """Give the source skeleton the proportions of `skeleton`, keeping how each of its segments is oriented.

    Each target joint is placed relative to its nearest target ancestor, root first: a lone child along the source's
    bone direction at the skeleton's bone length; several children (pelvis -> hips and spine, chest -> neck and
    collars) by the rotation that best maps the skeleton's rest offsets onto the source's offsets (Kabsch). Rigs
    differ in proportions and joint placement (CMU arms, Bandai hips), which no pose can absorb.
    """
    index = {n: skeleton.index(n) for n in points}
    groups: dict[str, list[str]] = {}
    for name, j in index.items():
        p = skeleton.parents[j]
        while p >= 0 and skeleton.names[p] not in points:
            p = skeleton.parents[p]
        if p >= 0:
            groups.setdefault(skeleton.names[p], []).append(name)
    out = dict(points)
    rest = skeleton.rest_joints
    for j in sorted(index[n] for n in groups):  # parents before children
        parent = skeleton.names[j]
        children = groups[parent]
        src = np.stack([points[c] - points[parent] for c in children], axis=-2)  # (F, C, 3)
        ref = np.stack([rest[index[c]] - rest[j] for c in children])  # (C, 3)
        if len(children) == 1:
            norm = np.linalg.norm(src, axis=-1, keepdims=True)
            placed = src / np.maximum(norm, 1e-9) * np.linalg.norm(ref)
        else:
            u, _, vt = np.linalg.svd(np.einsum("fci,cj->fij", src, ref))
            d = np.sign(np.linalg.det(u @ vt))
            u[..., -1] *= d[..., None]
            placed = np.einsum("fij,cj->fci", u @ vt, ref)
        for k, c in enumerate(children):
            out[c] = out[parent] + placed[..., k, :]
    return out


def target_points(rig: Rig, motion: Motion, side: str | None = None) -> dict[str, np.ndarray]:
    """SMPL-X joint name -> (F, 3) source positions (file units), for the joints the rig maps."""
    out = {}
    for smplx_name, src_name in rig.targets.items():
        if side is not None:
            smplx_name = smplx_name.format(side=side)
        if src_name.endswith("_tip"):
            out[smplx_name] = virtual_tip(motion, src_name[: -len("_tip")])
        else:
            out[smplx_name] = motion.positions[:, motion.index(src_name)]
    return out


def virtual_tip(motion: Motion, joint: str, length: float = 0.8) -> np.ndarray:
    """A point past `joint` along its bone, turned by the joint's own rotation (a finger's distal phalanx).

    The direction is the joint's rest offset from its parent, carried by the joint's world rotation; its length is
    `length` times that offset. This keeps the flexion of the last joint, which a zero-length End Site would lose.
    """
    j = motion.index(joint)
    if motion.rotations is None:
        raise ValueError(f"{motion.path}: virtual tips need joint rotations, which this reader does not provide")
    offset = motion.offsets[j] * length
    return motion.positions[:, j] + np.einsum("fij,j->fi", motion.rotations[:, j], offset)


def read_take(take: Take) -> list[Motion]:
    """The motions of a take, in file order (with joint rotations where the rig needs virtual tips)."""
    tips = any(name.endswith("_tip") for name in take.rig.targets.values())
    return [read_motion(f, with_rotations=tips) for f in take.files]
