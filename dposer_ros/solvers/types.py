"""What every solver takes and returns: keypoint observations, body states, refined results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
    # (B, F) for the solver's free joints: consecutive frames each has gone unseen by any keypoint (None: unknown)
    hidden_frames: torch.Tensor | None = field(default=None, kw_only=True)

    def select(self, i: int) -> BodyState:
        """Person i as a detached one-person state (a copy)."""
        hidden = None if self.hidden_frames is None else self.hidden_frames[i : i + 1].clone()
        return BodyState(self.pose[i : i + 1].detach().clone(), self.transl[i : i + 1].detach().clone(), hidden_frames=hidden)

    @staticmethod
    def cat(states: Sequence[BodyState]) -> BodyState:
        """One batched state of several (hidden_frames only when every state has them)."""
        hidden = [s.hidden_frames for s in states]
        return BodyState(torch.cat([s.pose for s in states]), torch.cat([s.transl for s in states]),
                         hidden_frames=None if any(h is None for h in hidden) else torch.cat(hidden))


@dataclass
class Refined(BodyState):
    """A solver's answer for B people."""

    joints: torch.Tensor  # (B, 55, 3) posed joints
    part_observed: torch.Tensor  # (B, 4) bool: the input had evidence for the part (body, left hand, right hand, face)
    part_completed: torch.Tensor  # (B, 4) bool: the part was filled in by the prior alone
    network_evals: int = 0
