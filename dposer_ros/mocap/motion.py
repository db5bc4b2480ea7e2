"""Common types of the mocap readers: :class:`Motion`, :class:`MocapError`, file opening."""
from __future__ import annotations

import lzma
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class MocapError(ValueError):
    """A motion file is missing, unreadable or malformed.

    The message starts with ``<file>:<line>:`` where a line is known; frames count from 0.
    """


class MocapFileNotFoundError(MocapError, FileNotFoundError):
    """The motion file does not exist (also a :class:`FileNotFoundError`)."""


@dataclass(frozen=True, eq=False)
class Motion:
    """World joint positions of one take, in the file's units and axes.

    ``joint_names`` lists every joint in parent-before-child order, End Sites / bone tips
    included as ``"<joint>_end"``; ``parents[j]`` is the index of the parent (-1 for the root);
    ``offsets[j]`` the rest offset from the parent; ``positions`` is (frames, joints, 3).
    """

    path: Path
    joint_names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    positions: np.ndarray
    fps: float
    rotations: np.ndarray | None = None  # (F, J, 3, 3) world rotations, when the reader was asked for them

    def __post_init__(self) -> None:
        j = len(self.joint_names)
        if self.parents.shape != (j,) or self.offsets.shape != (j, 3):
            raise MocapError(f"{self.path}: parents/offsets do not match {j} joint names")
        if self.positions.ndim != 3 or self.positions.shape[1:] != (j, 3):
            raise MocapError(f"{self.path}: positions shape {self.positions.shape} != (F, {j}, 3)")

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    def index(self, name: str) -> int:
        """Index of joint ``name``; KeyError listing the available names if missing."""
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise KeyError(
                f"joint {name!r} not in {self.path.name}; joints: {', '.join(self.joint_names)}"
            ) from None


def read_text(path: str | os.PathLike) -> str:
    """Whole text of ``path``, xz-decompressed when it ends in ``.xz``; errors as MocapError."""
    p = Path(path)
    if not p.is_file():
        raise MocapFileNotFoundError(2, "no such motion file", str(p))
    try:
        if p.suffix == ".xz":
            with lzma.open(p, "rt", encoding="utf-8", errors="replace") as f:
                return f.read()
        return p.read_text(encoding="utf-8", errors="replace")
    except (lzma.LZMAError, EOFError) as e:
        raise MocapError(f"{p}: corrupt or truncated xz stream ({e})") from e
    except OSError as e:
        raise MocapError(f"{p}: cannot read ({e})") from e


def base_suffix(path: str | os.PathLike) -> str:
    """Lower-case format suffix with a trailing ``.xz`` ignored (``a.bvh.xz`` -> ``.bvh``)."""
    p = Path(path)
    if p.suffix.lower() == ".xz":
        p = p.with_suffix("")
    return p.suffix.lower()
