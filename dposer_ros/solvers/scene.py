"""A frame's floor and up direction, learnt from the people seen in it.

Feet mostly touch the floor. Over many answers whose ankles or feet were seen:
- the floor is a low quantile of the lower foot joint's height along the up direction, less the height of the
  SMPL-X foot joint (the ball of the foot) above the sole there;
- where nobody told the up direction, it is the normal of the plane the feet stand on (a plane fitted to the foot
  joints, those more than `plane_tolerance` off it left out: swinging and lifted feet), pointing to the heads side,
  once the feet have covered an area (`min_spread` along the plane's second axis: one spot or one line does not
  make a plane). The torsos alone are no substitute: people lean and bend (7.6 degrees off at the median on
  validation takes, no better than not telling it; bench/RESULTS.md).
A refiner told the floor stands hidden legs up when the pelvis is at a standing height
(`RefineSettings.pelvis_tilt_weight`), and told the up direction, the prior knows standing from lying.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..body.skeleton import smplx_neutral
from ..keypoints import KeypointFormat

FEET = [smplx_neutral().index(n) for n in ("left_foot", "right_foot")]  # the balls of the feet
FEET_KEYPOINT_JOINTS = [smplx_neutral().index(f"{side}_{part}") for side in ("left", "right") for part in ("ankle", "foot")]
PELVIS, NECK = smplx_neutral().index("pelvis"), smplx_neutral().index("neck")
SEEN = 0.1  # a keypoint this confident sees its foot
# the foot joint's height above the floor at the 0.2 quantile of answers with seen feet, measured on the foreign
# protocol's train takes by `python bench/floor_estimate.py` (bench/eval/floor_estimate.json; a test checks it)
SOLE_HEIGHT = 0.012


def feet_seen(fmt: KeypointFormat, confidence: torch.Tensor) -> torch.Tensor:
    """(B,) bool: some ankle or foot keypoint of each person is seen."""
    feet = torch.as_tensor(np.isin(fmt.joints, FEET_KEYPOINT_JOINTS))
    return (confidence[:, feet] > SEEN).any(1)


@dataclass
class SceneEstimate:
    """The floor (`height`, along the up direction) and, unless told, the up direction (`up`) of one frame, from
    answered people (`add`); NaN / None until enough were seen."""

    sole_height: float = SOLE_HEIGHT  # the foot joint above the floor at `quantile`
    quantile: float = 0.2
    window: int = 900  # person-frames remembered (30 s of one person at 30 Hz)
    min_samples: int = 30  # person-frames with seen feet needed before a floor is given
    plane_tolerance: float = 0.05  # metres: feet further off the fitted plane are not standing on it
    min_spread: float = 0.15  # metres: the feet's spread along the plane's second axis before its normal is trusted
    refresh: int = 60  # new person-frames between two updates of the estimates (each costs about a millisecond)
    _feet: np.ndarray | None = field(default=None, repr=False)  # (window, 2, 3) ring of the seen feet's joints
    _count: int = field(default=0, repr=False)  # person-frames with seen feet added so far
    _fresh: int = field(default=0, repr=False)  # ... since the last update
    _torso: np.ndarray = field(default_factory=lambda: np.zeros(3), repr=False)  # sum of seen torso directions
    up: np.ndarray | None = field(default=None, init=False)  # the learnt up direction (None: told, or not yet)
    height: float = field(default=math.nan, init=False)  # the floor along the up direction (NaN: not yet)

    def add(self, joints: torch.Tensor, seen: torch.Tensor, up: torch.Tensor | None = None) -> None:
        """Answers' joints (B, 55, 3), whether their feet were seen (B,), and the frame's unit up direction (3,)
        where it is told (None: learn it)."""
        joints = joints.detach().double()[seen.bool()]
        torso = (joints[:, NECK] - joints[:, PELVIS]).numpy()
        self._torso += (torso / np.linalg.norm(torso, axis=1, keepdims=True).clip(min=1e-9)).sum(0)
        if self._feet is None:
            self._feet = np.zeros((self.window, 2, 3))
        for foot in joints[:, FEET].numpy():
            self._feet[self._count % self.window] = foot
            self._count += 1
        self._fresh += len(joints)
        if self._fresh >= min(self.refresh, self._count):
            self.update(up)

    def update(self, up: torch.Tensor | None = None) -> None:
        """Recompute the estimates from what was added (`add` does it every `refresh` person-frames)."""
        if self._feet is None or self._count < self.min_samples:
            return
        self._fresh = 0
        feet = self._feet[: min(self._count, self.window)]
        if up is None:
            self.up = self._plane_normal(feet.reshape(-1, 3))
            if self.up is None:
                return
        direction = self.up if up is None else up.double().numpy()
        lower = (feet @ direction).min(1)
        self.height = float(np.quantile(lower, self.quantile)) - self.sole_height

    def _plane_normal(self, points: np.ndarray) -> np.ndarray | None:
        """The unit normal of the plane most feet stand on, towards the torsos; None while they span no area."""
        keep = np.ones(len(points), dtype=bool)
        for _ in range(5):
            if keep.sum() < self.min_samples:
                return None
            centre = points[keep].mean(0)
            values, vectors = np.linalg.eigh(np.cov((points[keep] - centre).T))
            normal = vectors[:, 0] * (1.0 if vectors[:, 0] @ self._torso >= 0 else -1.0)
            keep = np.abs((points - centre) @ normal) < self.plane_tolerance
        return normal if math.sqrt(max(values[1], 0.0)) >= self.min_spread else None
