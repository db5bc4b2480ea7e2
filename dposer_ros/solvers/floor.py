"""A frame's floor, learnt from the people seen in it.

Feet mostly touch the floor: over many answers whose feet were seen, a low quantile of the lower foot joint's height
along the up direction is the floor plus the height of the SMPL-X foot joint (the ball of the foot) above the sole
there. A refiner told the floor stands hidden legs up when the pelvis is at a standing height
(`RefineSettings.pelvis_tilt_weight`); `FloorEstimate` gives it where nobody measured it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from ..body.skeleton import smplx_neutral
from ..keypoints import KeypointFormat

FEET = [smplx_neutral().index(n) for n in ("left_foot", "right_foot")]  # the balls of the feet
FEET_KEYPOINT_JOINTS = [smplx_neutral().index(f"{side}_{part}") for side in ("left", "right") for part in ("ankle", "foot")]
SEEN = 0.1  # a keypoint this confident sees its foot


def feet_seen(fmt: KeypointFormat, confidence: torch.Tensor) -> torch.Tensor:
    """(B,) bool: some ankle or foot keypoint of each person is seen."""
    feet = torch.as_tensor(np.isin(fmt.joints, FEET_KEYPOINT_JOINTS))
    return (confidence[:, feet] > SEEN).any(1)


@dataclass
class FloorEstimate:
    """The floor's height along a frame's up direction, from answered people (`add`); NaN until enough were seen."""

    # the foot joint's height above the floor at `quantile` of the answers with seen feet, measured on the foreign
    # protocol's train takes by `python bench/floor_estimate.py` (bench/eval/floor_estimate.json; a test checks it)
    sole_height: float = 0.012
    quantile: float = 0.2
    window: int = 900  # person-frames remembered (30 s of one person at 30 Hz)
    min_samples: int = 30  # person-frames with seen feet needed before a floor is given
    _lower: deque = field(default_factory=deque, repr=False)
    height: float = field(default=math.nan, init=False)  # the floor (NaN: not yet), updated by `add`

    def add(self, joints: torch.Tensor, seen: torch.Tensor, up: torch.Tensor) -> None:
        """Answers' joints (B, 55, 3), whether their feet were seen (B,), the frame's unit up direction (3,)."""
        lower = (joints.detach().double()[seen.bool()][:, FEET] @ up.double()).min(1).values
        self._lower.extend(lower.tolist())
        while len(self._lower) > self.window:
            self._lower.popleft()
        if len(self._lower) >= self.min_samples:
            self.height = float(np.quantile(np.fromiter(self._lower, float), self.quantile)) - self.sole_height
