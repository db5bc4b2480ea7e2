"""What every solver takes and returns: keypoint observations, body states, refined results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ..keypoints import KeypointFormat
from .history import History
from .keypoint_filter import KeypointFilter

MAX_NOISE_M = 10.0  # a stated keypoint noise beyond this is a unit mistake (its square would overflow float32 at 1e19)


@dataclass
class Observation:
    """Keypoints of B people in one format (metres, any right-handed frame; the result stays in that frame), and
    where known the up direction of that frame (against gravity), which tells the prior how the body stands, the
    floor's height along it (the plane up . x = floor, where the feet stand), and the time since the person's previous
    frame (holds of what is hidden fade with time, not with frames)."""

    points: torch.Tensor  # (B, K, 3)
    confidence: torch.Tensor  # (B, K) in [0, 1]; 0 = not observed
    format: KeypointFormat
    up: torch.Tensor | None = None  # (B, 3) or (3,) direction (normalised here); None or a zero row: unknown
    floor: torch.Tensor | None = None  # (B,) or () metres along the unit up; None or NaN: unknown (so where up is)
    interval: torch.Tensor | None = None  # (B,) or () seconds since the person's previous frame; None or NaN: unknown
    # (B,) or () metres: the sensor's keypoint noise (standard deviation per axis at detector confidence 1); None: not
    # told (no keypoint filter, solvers/keypoint_filter.py), NaN: unknown for that person
    noise: torch.Tensor | None = None

    def __post_init__(self) -> None:
        k = self.format.num_keypoints
        if self.points.ndim != 3 or self.points.shape[1:] != (k, 3):
            raise ValueError(f"format '{self.format.name}' expects points of shape (B, {k}, 3), got {tuple(self.points.shape)}")
        if self.confidence.shape != self.points.shape[:2]:
            raise ValueError(f"confidence shape {tuple(self.confidence.shape)} does not match points {tuple(self.points.shape[:2])}")
        # a missing point (confidence 0, any value: NaN, Inf, 1e30) or one float32 cannot hold is no observation;
        # it must not poison the arithmetic (inf x 0 = NaN)
        points = self.points.float()
        conf = torch.nan_to_num(self.confidence.float(), nan=0.0).clamp(0.0, 1.0)
        usable = (conf > 0) & torch.isfinite(points).all(-1)
        self.points = torch.where(usable[..., None], points, 0.0)
        if self.up is not None:
            up = torch.as_tensor(self.up, dtype=torch.float32).expand(self.points.shape[0], 3)
            norm = up.norm(dim=-1, keepdim=True)
            if not torch.isfinite(up).all():
                raise ValueError(f"up must be finite directions (a zero row: unknown), got {up.tolist()}")
            self.up = up / norm.clamp(min=1e-12)
        if self.floor is not None:
            floor = torch.as_tensor(self.floor, dtype=torch.float32).expand(self.points.shape[0]).clone()
            if torch.isinf(floor).any():
                raise ValueError(f"floor must be finite heights (NaN: unknown), got {floor.tolist()}")
            if self.up is None:
                floor[:] = float("nan")
            else:
                floor[self.up.norm(dim=-1) == 0] = float("nan")
            self.floor = floor
        if self.interval is not None:
            interval = torch.as_tensor(self.interval, dtype=torch.float32).expand(self.points.shape[0]).clone()
            if (interval <= 0).any() or torch.isinf(interval).any():
                raise ValueError(f"interval must be positive finite seconds (NaN: unknown), got {interval.tolist()}")
            self.interval = interval
        if self.noise is not None:
            noise = torch.as_tensor(self.noise, dtype=torch.float32).expand(self.points.shape[0]).clone()
            if (noise < 0).any() or (noise > MAX_NOISE_M).any():  # (NaN compares False: unknown)
                raise ValueError(f"noise must lie in [0, {MAX_NOISE_M}] metres (NaN: unknown), got {noise.tolist()}")
            self.noise = noise
        self.confidence = conf * usable * torch.tensor(self.format.weights, dtype=torch.float32)


@dataclass
class BodyState:
    """SMPL-X pose (B, 55, 3) axis-angle and translation (B, 3): what a track carries from frame to frame."""

    pose: torch.Tensor
    transl: torch.Tensor
    # (B, F) for the solver's free joints: how long each has gone unseen by any keypoint, in frames of the hold's
    # rate (`RefineSettings.hold_rate_hz`; None: unknown)
    hidden_frames: torch.Tensor | None = field(default=None, kw_only=True)
    betas: torch.Tensor | None = field(default=None, kw_only=True)  # (B, 10) the body shape the pose is posed with
    calibration: Calibration | None = field(default=None, kw_only=True)  # the track's shape and keypoint calibration
    # (B, K, 3) where each keypoint of the format was last seen (NaN: never) and (B, K) the time since (as above): the
    # solver's memory of hidden keypoints (None: none kept)
    keypoint_memory: torch.Tensor | None = field(default=None, kw_only=True)
    keypoint_age: torch.Tensor | None = field(default=None, kw_only=True)
    history: History | None = field(default=None, kw_only=True)  # the track's recent answers (solvers/history.py;
    # kept for a refiner with a motion model)
    keypoint_filter: KeypointFilter | None = field(default=None, kw_only=True)  # its keypoints' Kalman filter
    # (solvers/keypoint_filter.py; kept where the sensor's noise is told)

    _PER_PERSON = ("pose", "transl", "hidden_frames", "betas", "keypoint_memory", "keypoint_age")

    def select(self, i: int) -> BodyState:
        """Person i as a detached one-person state (a copy)."""
        parts: dict[str, Any] = {k: None if getattr(self, k) is None else getattr(self, k)[i : i + 1].detach().clone()
                                 for k in self._PER_PERSON}
        calibration = None if self.calibration is None else self.calibration.select(i)
        history = None if self.history is None else self.history.select(i)
        kfilter = None if self.keypoint_filter is None else self.keypoint_filter.select(i)
        return BodyState(parts.pop("pose"), parts.pop("transl"), **parts, calibration=calibration, history=history,
                         keypoint_filter=kfilter)

    def split(self) -> list[BodyState]:
        """Every person as a one-person state: the values of `select(i)` for each i, with one copy per field for the
        whole batch instead of one per person (the node stores each answer as its track's next warm start)."""
        batch = self.pose.shape[0]
        parts: dict[str, Any] = {k: [None] * batch if getattr(self, k) is None else
                                 getattr(self, k).detach().clone().split(1) for k in self._PER_PERSON}
        calibrations: list[Any] = [None] * batch if self.calibration is None else self.calibration.split()
        histories: list[Any] = [None] * batch if self.history is None else self.history.split()
        filters: list[Any] = [None] * batch if self.keypoint_filter is None else self.keypoint_filter.split()
        return [BodyState(parts["pose"][i], parts["transl"][i], hidden_frames=parts["hidden_frames"][i],
                          betas=parts["betas"][i], keypoint_memory=parts["keypoint_memory"][i],
                          keypoint_age=parts["keypoint_age"][i], calibration=calibrations[i], history=histories[i],
                          keypoint_filter=filters[i])
                for i in range(batch)]

    @staticmethod
    def cat(states: Sequence[BodyState]) -> BodyState:
        """One batched state of several (an optional field only when every state has it)."""
        def joined(key: str) -> Any:  # a tensor, or None for an optional field some state lacks (or of other shapes)
            values = [getattr(s, key) for s in states]
            if any(v is None for v in values) or any(v.shape[1:] != values[0].shape[1:] for v in values):
                return None
            return torch.cat(values)
        calibrations = [s.calibration for s in states if s.calibration is not None]
        histories = [s.history for s in states if s.history is not None]
        filters = [s.keypoint_filter for s in states if s.keypoint_filter is not None]
        same = len(calibrations) == len(states) and all(c.offsets.shape[1:] == calibrations[0].offsets.shape[1:] for c in calibrations)
        return BodyState(joined("pose"), joined("transl"), hidden_frames=joined("hidden_frames"),
                         betas=joined("betas"), keypoint_memory=joined("keypoint_memory"),
                         keypoint_age=joined("keypoint_age"), calibration=Calibration.cat(calibrations) if same else None,
                         history=History.cat(histories) if len(histories) == len(states) else None,
                         keypoint_filter=KeypointFilter.cat(filters) if len(filters) == len(states) else None)


@dataclass
class Calibration:
    """What a track has learnt of its person (solvers/calibration.py), for its next frame: the body shape (B, 10)
    with its accumulated normal equations, information (B, 10, 10) and right-hand side (B, 10), the frames that
    calibrated it (B,), and each keypoint's offset from its anchor in the anchor joint's frame (B, K, 3) with its
    accumulated weight (B, K)."""

    betas: torch.Tensor
    information: torch.Tensor
    rhs: torch.Tensor
    frames: torch.Tensor
    offsets: torch.Tensor
    offset_weight: torch.Tensor

    def select(self, i: int) -> Calibration:
        return Calibration(*(getattr(self, f.name)[i : i + 1].clone() for f in fields(self)))

    def split(self) -> list[Calibration]:
        """`select(i)` for every i, one copy per field."""
        columns = [getattr(self, f.name).clone().split(1) for f in fields(self)]
        return [Calibration(*row) for row in zip(*columns)]

    @staticmethod
    def cat(items: Sequence[Calibration]) -> Calibration:
        return Calibration(*(torch.cat([getattr(c, f.name) for c in items]) for f in fields(Calibration)))


@dataclass
class Refined(BodyState):
    """A solver's answer for B people."""

    joints: torch.Tensor  # (B, 55, 3) posed joints
    part_observed: torch.Tensor  # (B, 4) bool: the input had evidence for the part (body, left hand, right hand, face)
    part_completed: torch.Tensor  # (B, 4) bool: the part was filled in by the prior alone
    network_evals: int = 0
    rest_joints: torch.Tensor | None = field(default=None, kw_only=True)  # (B, 55, 3) the rest joints of `betas`
    keypoint_offsets: torch.Tensor | None = field(default=None, kw_only=True)  # (B, K, 3) calibrated offsets it used
