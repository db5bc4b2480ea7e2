"""BVH reader: own hierarchy parser + vectorised numpy forward kinematics.

Conventions (as in Biovision BVH and bvhio): a joint's local translation is its OFFSET, with
each position channel present replacing that component (so Bandai's per-joint translation
channels and the root position are used as given); rotation channels compose intrinsically in
the listed order (``Zrotation Xrotation Yrotation`` -> R = Rz Rx Ry), angles in degrees.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from .fk import euler_matrix, forward_kinematics
from .motion import MocapError, Motion, read_text

_CHANNELS: dict[str, tuple[str, Any]] = {  # kind, then the axis: its index (p) or its letter (r)
    "xposition": ("p", 0), "yposition": ("p", 1), "zposition": ("p", 2),
    "xrotation": ("r", "X"), "yrotation": ("r", "Y"), "zrotation": ("r", "Z"),
}


@dataclass
class _Joint:
    name: str
    parent: int
    offset: np.ndarray | None = None
    channels: list[str] = field(default_factory=list)
    end_sites: list[int] = field(default_factory=list)  # indices of End Site children
    is_end: bool = False


def _floats(path: Path, lineno: int, toks: list[str], n: int, what: str) -> np.ndarray:
    if len(toks) != n:
        raise MocapError(f"{path}:{lineno}: {what} needs {n} numbers, got {len(toks)}")
    try:
        v = np.array([float(t) for t in toks])
    except ValueError:
        bad = ' '.join(toks)
        raise MocapError(f"{path}:{lineno}: {what} has a non-number in {bad!r}") from None
    if not np.isfinite(v).all():
        raise MocapError(f"{path}:{lineno}: {what} has a NaN/inf value")
    return v


def _parse_hierarchy(path: Path, lines: list[str]) -> tuple[list[_Joint], int]:
    """Joints in file order and the index of the line after ``MOTION``."""
    joints: list[_Joint] = []
    stack: list[int] = []  # open joints
    pending: int | None = None  # declared joint waiting for its "{"
    started = False
    for i, raw in enumerate(lines):
        toks = raw.split()
        if not toks:
            continue
        ln, key = i + 1, toks[0]
        if not started:
            if key != "HIERARCHY":
                raise MocapError(f"{path}:{ln}: expected 'HIERARCHY', got {raw.strip()[:40]!r}")
            started = True
            continue
        if key == "MOTION":
            if stack or pending is not None or not joints:
                raise MocapError(
                    f"{path}:{ln}: MOTION before the hierarchy is closed (unbalanced braces)")
            return joints, i + 1
        if pending is not None and key != "{":
            raise MocapError(f"{path}:{ln}: expected '{{' after joint declaration, got {key!r}")
        if key in ("ROOT", "JOINT", "End"):
            opening = toks[-1] == "{"
            toks = toks[:-1] if opening else toks
            if key == "ROOT" and joints:
                raise MocapError(f"{path}:{ln}: a second ROOT (one skeleton per file only)")
            if key != "ROOT" and not stack:
                raise MocapError(f"{path}:{ln}: {key} outside any joint (unbalanced braces)")
            if key == "End":
                if len(toks) != 2 or toks[1] != "Site":
                    raise MocapError(f"{path}:{ln}: expected 'End Site'")
                par = stack[-1]
                if joints[par].is_end:
                    raise MocapError(f"{path}:{ln}: End Site inside an End Site")
                joints[par].end_sites.append(len(joints))
                joints.append(_Joint("", par, is_end=True))
            else:
                if len(toks) < 2:
                    raise MocapError(f"{path}:{ln}: {key} without a name")
                if stack and joints[stack[-1]].is_end:
                    raise MocapError(f"{path}:{ln}: JOINT inside an End Site")
                joints.append(_Joint(" ".join(toks[1:]), stack[-1] if stack else -1))
            pending = len(joints) - 1
            if opening:
                stack.append(pending)
                pending = None
        elif key == "{":
            if pending is None or len(toks) != 1:
                raise MocapError(f"{path}:{ln}: unexpected '{{'")
            stack.append(pending)
            pending = None
        elif key == "}":
            if not stack or len(toks) != 1:
                raise MocapError(f"{path}:{ln}: unbalanced '}}'")
            j = joints[stack.pop()]
            if j.offset is None:
                raise MocapError(f"{path}:{ln}: joint {j.name or 'End Site'!r} has no OFFSET")
        elif key == "OFFSET":
            if not stack:
                raise MocapError(f"{path}:{ln}: OFFSET outside any joint")
            joints[stack[-1]].offset = _floats(path, ln, toks[1:], 3, "OFFSET")
        elif key == "CHANNELS":
            if not stack or joints[stack[-1]].is_end:
                raise MocapError(f"{path}:{ln}: CHANNELS outside a joint")
            try:
                n = int(toks[1])
            except (IndexError, ValueError):
                raise MocapError(f"{path}:{ln}: CHANNELS needs a count") from None
            names = toks[2:]
            if len(names) != n:
                raise MocapError(f"{path}:{ln}: CHANNELS says {n} but lists {len(names)}")
            bad = [c for c in names if c.lower() not in _CHANNELS]
            if bad:
                raise MocapError(f"{path}:{ln}: unknown channel {bad[0]!r}")
            joints[stack[-1]].channels = [c.lower() for c in names]
        else:
            raise MocapError(f"{path}:{ln}: unexpected {key!r} in the hierarchy")
    raise MocapError(f"{path}: no MOTION section (file truncated or unbalanced braces)")


def _name_ends(path: Path, joints: list[_Joint]) -> list[str]:
    names = [j.name for j in joints]
    for j in joints:
        for k, e in enumerate(j.end_sites):
            names[e] = f"{j.name}_end" if len(j.end_sites) == 1 else f"{j.name}_end{k}"
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise MocapError(f"{path}: duplicate joint name {n!r}")
        seen.add(n)
    return names


def _header_value(path: Path, lines: list[str], i: int, label: str) -> tuple[str, int]:
    """Value after ``label`` (e.g. 'Frames:') on the next non-empty line from ``i``."""
    while i < len(lines) and not lines[i].strip():
        i += 1
    line = lines[i].strip() if i < len(lines) else ""
    if not line.startswith(label):
        raise MocapError(f"{path}:{i + 1}: expected {label!r}, got {line[:40]!r}")
    return line[len(label):].strip(), i + 1


def _parse_motion(path: Path, lines: list[str], i: int, n_chan: int) -> tuple[np.ndarray, float]:
    frames_s, i = _header_value(path, lines, i, "Frames:")
    time_s, i = _header_value(path, lines, i, "Frame Time:")
    try:
        n_frames = int(frames_s)
        frame_time = float(time_s)
    except ValueError:
        raise MocapError(f"{path}:{i}: bad 'Frames:' / 'Frame Time:' values") from None
    if n_frames < 0 or not frame_time > 0 or not np.isfinite(frame_time):
        raise MocapError(f"{path}:{i}: bad frame count {n_frames} or frame time {frame_time}")
    rows: list[str] = []
    linenos: list[int] = []
    for k in range(i, len(lines)):
        if len(rows) == n_frames:
            break
        if lines[k].strip():
            rows.append(lines[k])
            linenos.append(k + 1)
    if len(rows) < n_frames:
        raise MocapError(
            f"{path}:{len(lines)}: truncated, {len(rows)} frame lines but 'Frames: {n_frames}'"
        )
    if n_chan == 0:
        return np.zeros((n_frames, 0)), frame_time
    flat = " ".join(rows).split()
    if len(flat) != n_frames * n_chan or any(len(r.split()) != n_chan for r in rows):
        for r, ln in zip(rows, linenos):
            if len(r.split()) != n_chan:
                raise MocapError(
                    f"{path}:{ln}: frame line has {len(r.split())} values, expected {n_chan}")
    try:
        data = np.array(flat, dtype=np.float64).reshape(n_frames, n_chan)
    except ValueError:
        for r, ln in zip(rows, linenos):
            try:
                [float(t) for t in r.split()]
            except ValueError:
                raise MocapError(f"{path}:{ln}: non-numeric value in frame line") from None
        raise
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        f = int(np.argmax(bad))
        raise MocapError(f"{path}:{linenos[f]}: NaN/inf value in frame {f}")
    return data, frame_time


def read_bvh(path: str | os.PathLike, with_rotations: bool = False) -> Motion:
    """Read a ``.bvh`` or ``.bvh.xz`` file into world joint positions (file units and axes).

    ``with_rotations`` also keeps each joint's world rotation (F, J, 3, 3).
    """
    path = Path(path)
    lines = read_text(path).splitlines()
    joints, i = _parse_hierarchy(path, lines)
    names = _name_ends(path, joints)
    n_chan = sum(len(j.channels) for j in joints)
    data, frame_time = _parse_motion(path, lines, i, n_chan)
    n_frames = data.shape[0]
    offsets = [cast(np.ndarray, j.offset) for j in joints]  # all set: _parse_hierarchy checks each joint's OFFSET
    rots: list[np.ndarray | None] = []
    trans: list[np.ndarray] = []
    col = 0
    for j, t in zip(joints, offsets):
        rot_axes, rot_cols = "", []
        for c in j.channels:
            kind, what = _CHANNELS[c]
            if kind == "p":
                if t.ndim == 1:
                    t = np.repeat(t[None], n_frames, axis=0)
                t[:, what] = data[:, col]
            else:
                rot_axes += what
                rot_cols.append(col)
            col += 1
        trans.append(t)
        rots.append(euler_matrix(rot_axes, np.radians(data[:, rot_cols])) if rot_axes else None)
    parents = np.array([j.parent for j in joints], dtype=np.int64)
    positions, rotations = forward_kinematics(parents, rots, trans, n_frames, with_rotations)
    return Motion(
        path=path,
        joint_names=tuple(names),
        parents=parents,
        offsets=np.stack(offsets),
        positions=positions,
        fps=1.0 / frame_time,
        rotations=rotations,
    )
