"""Acclaim ASF/AMC reader (CMU / HDM05 style) with vectorised forward kinematics.

Joints: ``root`` (at the AMC root translation), then per bone ``<bone>`` at the bone's start
(= its parent bone's end) and ``<bone>_end`` at its tip. Rotations follow the Acclaim
convention: C = rotation of the bone's ``axis`` angles in the listed axis order, M = rotation
of the AMC dof angles in the ``dof`` order (both applied about fixed axes in the listed order,
i.e. ``XYZ`` -> Rz Ry Rx), local = C M C^-1, tip = start + world rotation @ (direction * length).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fk import euler_matrix, forward_kinematics
from .motion import MocapError, Motion, read_text

_ROT = {"rx": "X", "ry": "Y", "rz": "Z"}
_ALL_DOF = {"rx", "ry", "rz", "tx", "ty", "tz", "l"}


@dataclass
class Bone:
    name: str
    direction: np.ndarray
    length: float
    axis: np.ndarray  # degrees or radians as in the ASF
    axis_order: str  # e.g. "XYZ"
    dof: tuple[str, ...]
    parent: str = "root"


@dataclass
class Skeleton:
    path: Path
    length_unit: float  # ASF ``units length`` (CMU/HDM05: 0.45, file unit = inch / 0.45)
    angle_deg: bool
    root_order: tuple[str, ...]  # e.g. ("tx", "ty", "tz", "rx", "ry", "rz")
    root_axis: str
    root_position: np.ndarray
    root_orientation: np.ndarray
    bones: dict[str, Bone]
    children: dict[str, list[str]]


def _sections(path: Path, text: str) -> dict[str, list[tuple[int, list[str]]]]:
    out: dict[str, list[tuple[int, list[str]]]] = {}
    cur: list[tuple[int, list[str]]] | None = None
    for i, raw in enumerate(text.splitlines()):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(":"):
            toks = line.split()
            cur = out.setdefault(toks[0][1:].lower(), [])
            if len(toks) > 1:
                cur.append((i + 1, toks[1:]))
        elif cur is not None:
            cur.append((i + 1, line.split()))
        else:
            raise MocapError(f"{path}:{i + 1}: text before the first ':section'")
    return out


def _nums(path: Path, ln: int, toks: list[str], n: int, what: str) -> np.ndarray:
    try:
        v = np.array([float(t) for t in toks[:n]])
    except ValueError:
        raise MocapError(f"{path}:{ln}: {what} must be numbers") from None
    if len(v) != n or not np.isfinite(v).all():
        raise MocapError(f"{path}:{ln}: {what} needs {n} finite numbers")
    return v


def read_asf(path: str | os.PathLike) -> Skeleton:
    """Parse an ``.asf`` (or ``.asf.xz``) skeleton."""
    path = Path(path)
    sec = _sections(path, read_text(path))
    for need in ("root", "bonedata", "hierarchy"):
        if need not in sec:
            raise MocapError(f"{path}: missing ':{need}' section")
    units = {t[0].lower(): t[1] for _, t in sec.get("units", []) if len(t) >= 2}
    try:
        length_unit = float(units.get("length", "1"))
    except ValueError:
        raise MocapError(f"{path}: bad units length {units['length']!r}") from None
    angle = units.get("angle", "deg").lower()
    if angle not in ("deg", "rad"):
        raise MocapError(f"{path}: unknown angle unit {angle!r}")
    root = {t[0].lower(): (ln, t[1:]) for ln, t in sec["root"] if t}
    default_order = ["TX", "TY", "TZ", "RX", "RY", "RZ"]
    order = tuple(t.lower() for t in root.get("order", (0, default_order))[1])
    if any(o not in _ALL_DOF - {"l"} for o in order):
        raise MocapError(f"{path}:{root['order'][0]}: unknown root order {order}")
    r_axis = "".join(root.get("axis", (0, ["XYZ"]))[1]).upper()
    pos = _nums(path, *root.get("position", (0, ["0", "0", "0"])), 3, "root position")
    ori = _nums(path, *root.get("orientation", (0, ["0", "0", "0"])), 3, "root orientation")

    bones: dict[str, Bone] = {}
    cur: dict | None = None
    for ln, t in sec["bonedata"]:
        k = t[0].lower()
        if k == "begin":
            if cur is not None:
                raise MocapError(f"{path}:{ln}: 'begin' inside a bone")
            cur = {"ln": ln}
        elif cur is None:
            raise MocapError(f"{path}:{ln}: {t[0]!r} outside begin/end")
        elif k == "end":
            for need in ("name", "direction", "length"):
                if need not in cur:
                    raise MocapError(f"{path}:{cur['ln']}: bone without '{need}'")
            if cur["name"] in bones or cur["name"] == "root":
                raise MocapError(f"{path}:{cur['ln']}: duplicate bone {cur['name']!r}")
            bones[cur["name"]] = Bone(cur["name"], cur["direction"], cur["length"],
                                      cur.get("axis", np.zeros(3)), cur.get("order", "XYZ"),
                                      cur.get("dof", ()))
            cur = None
        elif k == "name":
            cur["name"] = t[1]
        elif k == "direction":
            cur["direction"] = _nums(path, ln, t[1:], 3, "direction")
        elif k == "length":
            cur["length"] = float(_nums(path, ln, t[1:], 1, "length")[0])
        elif k == "axis":
            cur["axis"] = _nums(path, ln, t[1:], 3, "axis")
            cur["order"] = t[4].upper() if len(t) > 4 else "XYZ"
            if sorted(cur["order"]) != ["X", "Y", "Z"]:
                raise MocapError(f"{path}:{ln}: bad axis order {cur['order']!r}")
        elif k == "dof":
            dof = tuple(d.lower() for d in t[1:])
            if any(d not in _ALL_DOF for d in dof):
                raise MocapError(f"{path}:{ln}: unknown dof in {' '.join(t[1:])!r}")
            cur["dof"] = dof
        # id, limits (and their continuation lines), bodymass, cofmass: not needed
    if cur is not None:
        raise MocapError(f"{path}: bone starting at line {cur['ln']} has no 'end'")

    children: dict[str, list[str]] = {"root": []}
    for ln, t in sec["hierarchy"]:
        if t[0].lower() in ("begin", "end"):
            continue
        par = t[0]
        if par != "root" and par not in bones:
            raise MocapError(f"{path}:{ln}: hierarchy names unknown bone {par!r}")
        for c in t[1:]:
            if c not in bones:
                raise MocapError(f"{path}:{ln}: hierarchy names unknown bone {c!r}")
            if bones[c].parent != "root" or c in children["root"]:
                raise MocapError(f"{path}:{ln}: bone {c!r} has two parents")
            bones[c].parent = par
            children.setdefault(par, []).append(c)
    return Skeleton(path, length_unit, angle == "deg", order, r_axis, pos, ori, bones, children)


def _is_float(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _read_amc(path: Path, skel: Skeleton) -> tuple[dict[str, np.ndarray], int]:
    """Per-bone (F, n_dof) values of an AMC file (angles converted to radians)."""
    lines = read_text(path).splitlines()
    n_dof = {b.name: len(b.dof) for b in skel.bones.values()}
    n_dof["root"] = len(skel.root_order)
    angle_deg = skel.angle_deg
    rows: dict[str, list[str]] = {}
    row_lines: dict[str, list[int]] = {}
    frame_lines: list[int] = []
    seen: set[str] = set()

    def close_frame() -> None:
        if frame_lines:
            missing = [b for b, n in n_dof.items() if n and b not in seen]
            if missing:
                raise MocapError(f"{path}:{frame_lines[-1]}: frame {len(frame_lines) - 1} "
                                 f"lacks {missing[:5]} (truncated?)")

    for i, raw in enumerate(lines):
        toks = raw.split()
        if not toks or toks[0].startswith("#"):
            continue
        if toks[0].startswith(":"):
            if toks[0].upper() == ":RADIANS":
                angle_deg = False
            elif toks[0].upper() == ":DEGREES":
                angle_deg = True
            continue
        if len(toks) == 1 and toks[0].isdigit():
            close_frame()
            frame_lines.append(i + 1)
            seen = set()
            continue
        name = toks[0]
        if not frame_lines:
            raise MocapError(f"{path}:{i + 1}: bone values before the first frame number")
        if name not in n_dof:
            raise MocapError(f"{path}:{i + 1}: bone {name!r} is not in {skel.path.name}")
        if len(toks) - 1 != n_dof[name]:
            raise MocapError(
                f"{path}:{i + 1}: {name} has {len(toks) - 1} values, expected {n_dof[name]}")
        if name in seen:
            raise MocapError(f"{path}:{i + 1}: bone {name!r} twice in frame {len(frame_lines) - 1}")
        seen.add(name)
        if n_dof[name]:
            rows.setdefault(name, []).append(raw)
            row_lines.setdefault(name, []).append(i + 1)
    close_frame()
    n_frames = len(frame_lines)
    if n_frames == 0:
        raise MocapError(f"{path}: no frames")
    values = {}
    for name, rs in rows.items():
        flat = " ".join(rs).split()
        try:
            v = np.array([t for k, t in enumerate(flat) if k % (n_dof[name] + 1)], dtype=np.float64)
        except ValueError:
            ln = next(n for r, n in zip(rs, row_lines[name])
                      if not all(_is_float(t) for t in r.split()[1:]))
            raise MocapError(f"{path}:{ln}: non-numeric value for bone {name!r}") from None
        v = v.reshape(n_frames, n_dof[name])
        bad = ~np.isfinite(v).all(axis=1)
        if bad.any():
            f = int(np.argmax(bad))
            raise MocapError(f"{path}:{frame_lines[f]}: NaN/inf value for {name!r} in frame {f}")
        values[name] = v
    # angles to radians; keep translations
    rad = (lambda a: np.radians(a)) if angle_deg else (lambda a: a)
    for name, v in values.items():
        dof = skel.root_order if name == "root" else skel.bones[name].dof
        for k, d in enumerate(dof):
            if d in _ROT:
                v[:, k] = rad(v[:, k])
    return values, n_frames


def _c_matrix(angles: np.ndarray, order: str, deg: bool) -> np.ndarray:
    a = np.radians(angles) if deg else np.asarray(angles, dtype=np.float64)
    idx = ["XYZ".index(c) for c in order]
    # rotations about fixed axes in the listed order == intrinsic in reverse order
    return euler_matrix(order[::-1], a[idx][::-1])


def _dof_matrix(values: np.ndarray, dof: tuple[str, ...]) -> np.ndarray | None:
    cols = [k for k, d in enumerate(dof) if d in _ROT]
    if not cols:
        return None
    axes = "".join(_ROT[dof[k]] for k in cols)
    return euler_matrix(axes[::-1], values[:, cols[::-1]])


def read_asf_amc(asf_path: str | os.PathLike, amc_path: str | os.PathLike,
                 fps: float = 120.0) -> Motion:
    """Read an AMC clip with its ASF skeleton into world joint positions (file units, Y up)."""
    skel = read_asf(asf_path)
    amc_path = Path(amc_path)
    values, n_frames = _read_amc(amc_path, skel)
    names, parents, offsets, rots, trans = ["root"], [-1], [np.zeros(3)], [], []
    # root: C M C^-1, translation from AMC (+ ASF root position)
    root_v = values.get("root", np.zeros((n_frames, len(skel.root_order))))
    t = np.repeat(skel.root_position[None], n_frames, axis=0)
    for k, d in enumerate(skel.root_order):
        if d in ("tx", "ty", "tz"):
            t[:, "xyz".index(d[1])] += root_v[:, k]
    c = _c_matrix(skel.root_orientation, skel.root_axis, skel.angle_deg)
    m = _dof_matrix(root_v, skel.root_order)
    rots.append(c if m is None else c @ m @ c.T)
    trans.append(t)
    offsets[0] = skel.root_position

    index = {"root": 0}
    stack = list(reversed(skel.children.get("root", [])))
    while stack:
        b = skel.bones[stack.pop()]
        vec = b.direction * b.length
        par = skel.bones.get(b.parent)
        start = par.direction * par.length if par is not None else np.zeros(3)
        c = _c_matrix(b.axis, b.axis_order, skel.angle_deg)
        m = _dof_matrix(values[b.name], b.dof) if b.name in values else None
        index[b.name] = len(names)
        names += [b.name, f"{b.name}_end"]
        parents += [index[b.parent], index[b.name]]
        offsets += [start, vec]
        rots += [None if m is None else c @ m @ c.T, None]
        trans += [start, vec]
        stack.extend(reversed(skel.children.get(b.name, [])))
    unreached = set(skel.bones) - set(index)
    if unreached:
        raise MocapError(f"{skel.path}: bones not connected to root: {sorted(unreached)}")
    if len(set(names)) != len(names):
        raise MocapError(f"{skel.path}: bone names clash with '<bone>_end' names")
    parents_a = np.array(parents, dtype=np.int64)
    positions, _ = forward_kinematics(parents_a, rots, trans, n_frames)
    return Motion(amc_path, tuple(names), parents_a, np.stack(offsets), positions, float(fps))
