"""The SMPL-X joint tree: names, parents, parts and the embedded neutral rest joints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

NUM_JOINTS = 55

# Joint index ranges of the pose parts; index 0 (pelvis) carries the global orientation.
PART_JOINTS: dict[str, tuple[int, ...]] = {
    "body": tuple(range(1, 22)),
    "jaw": (22,),
    "eyes": (23, 24),
    "left_hand": tuple(range(25, 40)),
    "right_hand": tuple(range(40, 55)),
}


@dataclass(frozen=True)
class Skeleton:
    """A kinematic tree with rest joint positions (metres, Y up, X to the body's left, Z forward)."""

    names: tuple[str, ...]
    parents: tuple[int, ...]
    rest_joints: np.ndarray  # (J, 3)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.parents) or self.rest_joints.shape != (len(self.names), 3):
            raise ValueError("names, parents and rest_joints must describe the same number of joints")
        if any(p >= j for j, p in enumerate(self.parents)):
            raise ValueError("parents must come before their children")

    @property
    def num_joints(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Index of a joint by name."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown joint {name!r}; known joints: {', '.join(self.names)}") from None

    def descendants(self, joint: int) -> tuple[int, ...]:
        """All joints below `joint` (not itself)."""
        below: list[int] = []
        frontier = {joint}
        for j, p in enumerate(self.parents):
            if p in frontier:
                below.append(j)
                frontier.add(j)
        return tuple(below)

    def depth_levels(self) -> list[np.ndarray]:
        """Joints grouped by depth below the root (level 0 is the root)."""
        depth = [0] * self.num_joints
        for j, p in enumerate(self.parents):
            depth[j] = 0 if p < 0 else depth[p] + 1
        return [np.flatnonzero(np.array(depth) == d) for d in range(max(depth) + 1)]


@cache
def smplx_neutral() -> Skeleton:
    """The SMPL-X neutral mean-shape (betas = 0) skeleton shipped with the package."""
    text = resources.files(__package__).joinpath("smplx_neutral_skeleton.json").read_text()
    facts = json.loads(text)
    rest = np.asarray(facts["J"], dtype=np.float64)
    rest.setflags(write=False)
    return Skeleton(tuple(facts["names"]), tuple(int(p) for p in facts["parents"]), rest)
