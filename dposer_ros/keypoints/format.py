"""`KeypointFormat`: an ordered keypoint layout expressed as points rigidly attached to SMPL-X joints."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch

from dposer_ros.body import NUM_JOINTS, PART_JOINTS, Posed, smplx_neutral

# Pose part of PART_JOINTS -> keypoint part label. The pelvis (global orientation) counts as body.
PART_LABELS: dict[str, str] = {
    "body": "body",
    "jaw": "face",
    "eyes": "face",
    "left_hand": "left_hand",
    "right_hand": "right_hand",
}


class KeypointFormatError(ValueError):
    """A keypoint format is unknown, malformed, or does not match the data given to it."""


@cache
def joint_parts() -> tuple[str, ...]:
    """Part label (body, face, left_hand, right_hand) of each of the 55 SMPL-X joints, from PART_JOINTS."""
    labels = ["body"] * NUM_JOINTS
    for part, joints in PART_JOINTS.items():
        for j in joints:
            labels[j] = PART_LABELS[part]
    return tuple(labels)


def parts_of(joints: np.ndarray) -> tuple[str, ...]:
    """Part label of each keypoint: the part of the SMPL-X joint it is attached to."""
    table = joint_parts()
    return tuple(table[int(j)] for j in joints)


@dataclass(frozen=True, eq=False)
class KeypointFormat:
    """K keypoints, each at `offsets[k]` in the frame of SMPL-X joint `joints[k]` (metres).

    `weights` multiply the detector's confidences in a solver; `parts` label each keypoint with the
    body part of its joint. Left/right always mean the person's own left/right (SMPL-X left = +X).
    """

    name: str
    keypoint_names: tuple[str, ...]
    joints: np.ndarray  # (K,) int, SMPL-X joint index
    offsets: np.ndarray  # (K, 3) float64, metres in the joint's frame
    weights: np.ndarray  # (K,) float64
    parts: tuple[str, ...]  # (K,)
    description: str = ""
    _tensors: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        k = len(self.keypoint_names)
        joints = np.array(self.joints, dtype=np.int64).reshape(-1)
        offsets = np.array(self.offsets, dtype=np.float64).reshape(-1, 3) if k else np.zeros((0, 3))
        weights = np.array(self.weights, dtype=np.float64).reshape(-1)
        if not (len(joints) == len(offsets) == len(weights) == len(self.parts) == k):
            raise KeypointFormatError(
                f"format {self.name!r}: names, joints, offsets, weights and parts differ in length"
            )
        if k and (joints.min() < 0 or joints.max() >= NUM_JOINTS):
            raise KeypointFormatError(f"format {self.name!r}: joint indices must lie in [0, {NUM_JOINTS})")
        for attr, arr in (("joints", joints), ("offsets", offsets), ("weights", weights)):
            arr.setflags(write=False)
            object.__setattr__(self, attr, arr)
        object.__setattr__(self, "keypoint_names", tuple(self.keypoint_names))
        object.__setattr__(self, "parts", tuple(self.parts))

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    def index(self, name: str) -> int:
        """Position of a keypoint by name."""
        try:
            return self.keypoint_names.index(name)
        except ValueError:
            raise KeypointFormatError(f"format {self.name!r} has no keypoint {name!r}") from None

    def from_posed(self, posed: Posed) -> torch.Tensor:
        """Keypoints (..., K, 3) of a posed body: joint position + joint rotation @ offset (differentiable)."""
        joints, rotations = posed.joints, posed.rotations
        key = (joints.device, joints.dtype)
        if key not in self._tensors:
            self._tensors[key] = (
                torch.tensor(self.joints, device=joints.device),
                torch.tensor(self.offsets, dtype=joints.dtype, device=joints.device),
            )
        idx, off = self._tensors[key]
        rot = rotations.index_select(-3, idx)
        return joints.index_select(-2, idx) + (rot @ off[:, :, None]).squeeze(-1)

    def validate(self, points: np.ndarray | torch.Tensor, confidences: np.ndarray | torch.Tensor | None = None) -> None:
        """Check points (K, 3) or (N, K, 3) [and confidences (K,) or (N, K)] against this format.

        Non-finite coordinates are an error, except where a confidence of 0 marks the keypoint missing.
        """
        pts = _as_numpy(points)
        k = self.num_keypoints
        if pts.ndim not in (2, 3) or pts.shape[-1] != 3:
            raise KeypointFormatError(
                f"format {self.name!r} expects points of shape ({k}, 3) or (N, {k}, 3), got {tuple(pts.shape)}"
            )
        if pts.shape[-2] != k:
            raise KeypointFormatError(f"format {self.name!r} expects {k} keypoints, got {pts.shape[-2]}")
        bad = ~np.isfinite(pts).all(axis=-1)
        if confidences is not None:
            conf = _as_numpy(confidences)
            if conf.shape != pts.shape[:-1]:
                raise KeypointFormatError(
                    f"format {self.name!r}: confidences must have shape {pts.shape[:-1]}, got {tuple(conf.shape)}"
                )
            wrong = ~np.isfinite(conf) | (conf < 0)
            if wrong.any():
                raise KeypointFormatError(
                    f"format {self.name!r}: confidences must be finite and >= 0; bad at {self._names_where(wrong)}"
                )
            bad &= conf > 0
        if bad.any():
            frames = f" in {int(bad.reshape(-1, k).any(axis=-1).sum())} of {len(bad)} frames" if bad.ndim == 2 else ""
            raise KeypointFormatError(
                f"format {self.name!r}: non-finite coordinates at keypoints {self._names_where(bad)}{frames}"
            )

    def observed_parts(self) -> set[str]:
        """Pose parts whose joint rotations move at least one keypoint of non-zero weight.

        A keypoint with an offset is moved by its own joint's rotation, so it observes that joint's
        part. A keypoint sitting exactly on a joint is moved only by the joints above it, so it
        observes its parent joint's part: e.g. COCO's eyes (the SMPL-X eye joints) observe the head,
        not the eye rotations, and hand MCP keypoints observe the wrist (body) rotation.
        """
        skel, table = smplx_neutral(), joint_parts()
        seen: set[str] = set()
        for j, off, w in zip(self.joints, self.offsets, self.weights):
            if w <= 0:
                continue
            if np.any(off != 0) or skel.parents[j] < 0:
                seen.add(table[j])
            else:
                seen.add(table[skel.parents[j]])
        return seen

    def _names_where(self, mask: np.ndarray) -> str:
        hit = np.asarray(mask.reshape(-1, self.num_keypoints).any(axis=0))
        return ", ".join(n for n, h in zip(self.keypoint_names, hit) if h)


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)
