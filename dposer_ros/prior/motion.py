"""A motion prior: the body's rotations at the next frame, predicted from the track's last answers.

A small MLP over the last H frames' root and body rotations (22 joints, 6D each: the last frame's absolute local
rotations and the earlier frames' relative to it) predicts each joint's rotation change to the next frame. Trained on
the training split's takes with noise on the history (a refiner's answers are noisy), it smooths as it extrapolates.
The few-step refiner uses it as the target of its hold (`RefineSettings.motion_model`).
"""

from __future__ import annotations

import roma
import torch
from torch import nn

JOINTS = 22  # root and the 21 body joints


def features(history: torch.Tensor) -> torch.Tensor:
    """(B, H, 22, 3, 3) rotation history, oldest first -> (B, 22 * 6 * H) network input."""
    last = history[:, -1]
    rel = last[:, None].transpose(-1, -2) @ history[:, :-1]
    return torch.cat([last[..., :2].reshape(len(history), -1), rel[..., :2].reshape(len(history), -1)], 1)


class MotionPrior(nn.Module):
    """Next-frame body rotations from the last `frames` ones."""

    def __init__(self, frames: int = 4, hidden: int = 512) -> None:
        super().__init__()
        self.frames = frames
        self.net = nn.Sequential(nn.Linear(JOINTS * 6 * frames, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, JOINTS * 3))

    def delta(self, history: torch.Tensor) -> torch.Tensor:
        """(B, H, 22, 3, 3) rotations -> (B, 22, 3) predicted rotation change from the last frame (axis-angle)."""
        return self.net(features(history)).reshape(-1, JOINTS, 3)

    @torch.no_grad()
    def predict(self, history: torch.Tensor) -> torch.Tensor:
        """(B, H, 22, 3) axis-angle history, oldest first -> (B, 22, 3) predicted next rotations (axis-angle)."""
        rot = roma.rotvec_to_rotmat(history.float())
        return roma.rotmat_to_rotvec(rot[:, -1] @ roma.rotvec_to_rotmat(self.delta(rot)))

    @classmethod
    def load(cls, path) -> MotionPrior:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = cls()
        model.net.load_state_dict(state)
        return model.eval()
