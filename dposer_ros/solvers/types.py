"""What every solver takes and returns: keypoint observations, body states, refined results."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..keypoints import KeypointFormat


@dataclass
class Observation:
    """Keypoints of B people in one format (metres, any right-handed frame; the result stays in that frame)."""

    points: torch.Tensor  # (B, K, 3)
    confidence: torch.Tensor  # (B, K) in [0, 1]; 0 = not observed
    format: KeypointFormat

    def __post_init__(self) -> None:
        k = self.format.num_keypoints
        if self.points.ndim != 3 or self.points.shape[1:] != (k, 3):
            raise ValueError(f"format '{self.format.name}' expects points of shape (B, {k}, 3), got {tuple(self.points.shape)}")
        if self.confidence.shape != self.points.shape[:2]:
            raise ValueError(f"confidence shape {tuple(self.confidence.shape)} does not match points {tuple(self.points.shape[:2])}")
        # missing points (NaN with confidence 0) must not poison the arithmetic
        self.points = torch.nan_to_num(self.points.float())
        self.confidence = self.confidence.float().clamp(0.0, 1.0) * torch.tensor(self.format.weights, dtype=torch.float32)


@dataclass
class BodyState:
    """SMPL-X pose (B, 55, 3) axis-angle and translation (B, 3): what a track carries from frame to frame."""

    pose: torch.Tensor
    transl: torch.Tensor


@dataclass
class Refined(BodyState):
    """A solver's answer for B people."""

    joints: torch.Tensor  # (B, 55, 3) posed joints
    part_observed: torch.Tensor  # (B, 4) bool: the input had evidence for the part (body, left hand, right hand, face)
    part_completed: torch.Tensor  # (B, 4) bool: the part was filled in by the prior alone
    network_evals: int = 0
