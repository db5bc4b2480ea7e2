"""Load keypoint formats from YAML tables: `formats/*.yaml` (one format per file) + `landmarks.yaml`.

A format table::

    name: coco17
    description: ...
    keypoints:
      - {name: nose, landmark: nose}              # a landmark from landmarks.yaml
      - {name: left_eye, joint: left_eye_smplhf}  # an SMPL-X joint itself
      - {name: face-0, landmark: right_contour_1, weight: 0.2}
      - {include: mediapipe_hand21_left, prefix: left_hand_}  # another format's keypoints, renamed

Adding a format is adding a YAML file to `formats/`.
"""

from __future__ import annotations

import difflib
import math
import os
from collections import Counter
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np
import yaml

from dposer_ros.body import smplx_neutral

from .format import KeypointFormat, KeypointFormatError, parts_of

try:
    from importlib.resources.abc import Traversable
except ImportError:  # Python 3.10
    from importlib.abc import Traversable

Source = str | os.PathLike | Traversable

_FORMAT_KEYS = {"name", "description", "keypoints"}
_POINT_KEYS = {"name", "joint", "landmark", "weight"}
_INCLUDE_KEYS = {"include", "prefix"}


@dataclass(frozen=True)
class Landmark:
    """A point at `offset` (metres) in the frame of SMPL-X joint `joint`."""

    joint: int
    offset: tuple[float, float, float]


@dataclass
class _Table:
    name: str
    description: str
    entries: list[Any]
    file: str


def load_landmarks(source: Source | None = None) -> dict[str, Landmark]:
    """Read a landmarks table (default: the packaged `landmarks.yaml`)."""
    file = _as_traversable(source) if source is not None else resources.files(__package__) / "landmarks.yaml"
    data = _read_yaml(file)
    if not isinstance(data, dict) or set(data) != {"landmarks"} or not isinstance(data["landmarks"], dict):
        raise KeypointFormatError(f"{file}: expected a mapping with one key 'landmarks: {{name: {{joint, offset}}}}'")
    out: dict[str, Landmark] = {}
    for name, spec in data["landmarks"].items():
        where = f"{file}: landmark {name!r}"
        if not isinstance(spec, dict) or set(spec) != {"joint", "offset"}:
            raise KeypointFormatError(f"{where}: expected {{joint: <SMPL-X joint>, offset: [x, y, z]}}, got {spec!r}")
        offset = spec["offset"]
        if not (isinstance(offset, list) and len(offset) == 3 and all(_is_finite_number(v) for v in offset)):
            raise KeypointFormatError(f"{where}: offset must be three finite numbers (metres), got {offset!r}")
        out[str(name)] = Landmark(_joint_index(spec["joint"], where), cast(tuple[float, float, float], tuple(float(v) for v in offset)))
    return out


def load_formats(directory: Source | None = None, landmarks: Source | None = None) -> dict[str, KeypointFormat]:
    """Read every `*.yaml` format table in `directory` (default: the packaged `formats/`)."""
    folder = _as_traversable(directory) if directory is not None else resources.files(__package__) / "formats"
    if not folder.is_dir():
        raise KeypointFormatError(f"{folder}: not a directory of keypoint format tables")
    files = sorted(
        (f for f in folder.iterdir() if f.is_file() and f.name.endswith((".yaml", ".yml"))), key=lambda f: f.name
    )
    if not files:
        raise KeypointFormatError(f"{folder}: no keypoint format tables (*.yaml) found")
    tables: dict[str, _Table] = {}
    for file in files:
        table = _parse_table(file)
        if table.name in tables:
            raise KeypointFormatError(f"{file}: format {table.name!r} is already defined in {tables[table.name].file}")
        tables[table.name] = table
    marks = load_landmarks(landmarks)
    resolved: dict[str, list[tuple[str, int, tuple[float, ...], float]]] = {}
    for name in tables:
        _resolve(name, tables, marks, resolved, ())
    formats = {}
    for name, points in resolved.items():
        joints = np.array([p[1] for p in points], dtype=np.int64)
        formats[name] = KeypointFormat(
            name=name,
            keypoint_names=tuple(p[0] for p in points),
            joints=joints,
            offsets=np.array([p[2] for p in points], dtype=np.float64),
            weights=np.array([p[3] for p in points], dtype=np.float64),
            parts=parts_of(joints),
            description=tables[name].description,
        )
    return formats


@cache
def _packaged() -> dict[str, KeypointFormat]:
    return load_formats()


def known_formats() -> tuple[str, ...]:
    """Names of the packaged keypoint formats, sorted."""
    return tuple(sorted(_packaged()))


def get_format(name: str) -> KeypointFormat:
    """A packaged keypoint format by name (loaded once, then cached)."""
    formats = _packaged()
    if name not in formats:
        raise KeypointFormatError(f"unknown keypoint format {name!r}; known formats: {', '.join(known_formats())}")
    return formats[name]


def _parse_table(file: Traversable) -> _Table:
    data = _read_yaml(file)
    if not isinstance(data, dict):
        raise KeypointFormatError(f"{file}: expected a mapping with keys name, keypoints[, description]")
    unknown = set(data) - _FORMAT_KEYS
    if unknown or not {"name", "keypoints"} <= set(data):
        raise KeypointFormatError(
            f"{file}: a format table needs keys 'name' and 'keypoints' (optional 'description'); "
            f"got {sorted(map(str, data))}"
        )
    name, entries = data["name"], data["keypoints"]
    if not isinstance(name, str) or not name:
        raise KeypointFormatError(f"{file}: 'name' must be a non-empty string, got {name!r}")
    if not isinstance(entries, list) or not entries:
        raise KeypointFormatError(f"{file}: 'keypoints' must be a non-empty list")
    return _Table(name, str(data.get("description") or "").strip(), entries, str(file))


def _resolve(name: str, tables: dict[str, _Table], marks: dict[str, Landmark], done: dict, stack: tuple) -> list:
    """The (name, joint, offset, weight) list of format `name`, following includes."""
    if name in done:
        return done[name]
    table = tables[name]
    points: list[tuple[str, int, tuple[float, ...], float]] = []
    for i, entry in enumerate(table.entries):
        where = f"{table.file}: keypoints[{i}]"
        if isinstance(entry, dict) and "include" in entry:
            points += _include(entry, where, tables, marks, done, stack + (name,))
        else:
            points.append(_point(entry, where, marks))
    dupes = sorted(n for n, count in Counter(p[0] for p in points).items() if count > 1)
    if dupes:
        raise KeypointFormatError(f"{table.file}: duplicate keypoint names in format {name!r}: {', '.join(dupes)}")
    done[name] = points
    return points


def _include(entry: dict, where: str, tables: dict, marks: dict, done: dict, stack: tuple[str, ...]) -> list:
    if set(entry) - _INCLUDE_KEYS:
        raise KeypointFormatError(f"{where}: an include takes keys {sorted(_INCLUDE_KEYS)}, got {sorted(entry)}")
    other, prefix = entry["include"], entry.get("prefix", "")
    if other not in tables:
        raise KeypointFormatError(f"{where}: includes unknown format {other!r}{_suggest(other, tables)}")
    if other in stack:
        raise KeypointFormatError(f"{where}: include cycle {' -> '.join(stack + (other,))}")
    if not isinstance(prefix, str):
        raise KeypointFormatError(f"{where}: prefix must be a string, got {prefix!r}")
    return [(prefix + n, j, off, w) for n, j, off, w in _resolve(other, tables, marks, done, stack)]


def _point(entry: Any, where: str, marks: dict[str, Landmark]) -> tuple[str, int, tuple[float, ...], float]:
    if not isinstance(entry, dict) or set(entry) - _POINT_KEYS or "name" not in entry:
        raise KeypointFormatError(
            f"{where}: expected {{name, joint | landmark[, weight]}} or {{include[, prefix]}}, got {entry!r}"
        )
    name = entry["name"]
    if not isinstance(name, str) or not name:
        raise KeypointFormatError(f"{where}: keypoint name must be a non-empty string, got {name!r}")
    where = f"{where} ({name})"
    if ("joint" in entry) == ("landmark" in entry):
        raise KeypointFormatError(f"{where}: give exactly one of 'joint' or 'landmark'")
    weight = entry.get("weight", 1.0)
    if not _is_finite_number(weight) or weight < 0:
        raise KeypointFormatError(f"{where}: weight must be a finite number >= 0, got {weight!r}")
    if "joint" in entry:
        return name, _joint_index(entry["joint"], where), (0.0, 0.0, 0.0), float(weight)
    mark = entry["landmark"]
    if mark not in marks:
        raise KeypointFormatError(f"{where}: unknown landmark {mark!r}{_suggest(mark, marks)}")
    return name, marks[mark].joint, marks[mark].offset, float(weight)


def _joint_index(joint: Any, where: str) -> int:
    names = smplx_neutral().names
    if joint not in names:
        raise KeypointFormatError(f"{where}: unknown SMPL-X joint {joint!r}{_suggest(joint, names)}")
    return names.index(joint)


def _suggest(word: Any, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _as_traversable(source: Source) -> Traversable:
    return Path(source) if isinstance(source, (str, os.PathLike)) else source


def _read_yaml(file: Traversable) -> Any:
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeypointFormatError(f"{file}: no such file") from None
    except yaml.YAMLError as exc:
        raise KeypointFormatError(f"{file}: not valid YAML: {exc}") from None
