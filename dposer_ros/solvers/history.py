"""A track's recent answers, time-stamped: what the motion model of hidden legs reads (prior/motion.py).

The history is three tensors carried in `BodyState`: body rotations (B, H, 22, 3, 3) as matrices (what the model
reads: no conversion), root translations (B, H, 3) and ages (B, H) in seconds (slot 0 the newest; inf: empty). An
answer is stored when the newest stored one is at least one period of the model's training rate old, so a 60 Hz
stream keeps a 30 Hz history and H stays fixed; lags are looked up by time, so rates that vary are read as they came.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class History:
    rotation: torch.Tensor  # (B, H, 22, 3, 3)
    transl: torch.Tensor  # (B, H, 3)
    age: torch.Tensor  # (B, H) seconds; inf: empty

    @staticmethod
    def empty(batch: int, capacity: int) -> History:
        return History(torch.eye(3).repeat(batch, capacity, 22, 1, 1), torch.zeros(batch, capacity, 3),
                       torch.full((batch, capacity), math.inf))

    def select(self, i: int) -> History:
        return History(self.rotation[i : i + 1].clone(), self.transl[i : i + 1].clone(), self.age[i : i + 1].clone())

    def split(self) -> list[History]:
        """`select(i)` for every i, one copy per field."""
        return [History(*row) for row in zip(self.rotation.clone().split(1), self.transl.clone().split(1),
                                              self.age.clone().split(1))]

    @staticmethod
    def cat(items: Sequence[History]) -> History | None:
        """One batched history of several (None unless all are of one capacity)."""
        if not items or any(h.age.shape[1] != items[0].age.shape[1] for h in items):
            return None
        return History(*(torch.cat([getattr(h, k) for h in items]) for k in ("rotation", "transl", "age")))

    def aged(self, seconds: torch.Tensor) -> History:
        """The same history `seconds` (B,) later."""
        return History(self.rotation, self.transl, self.age + seconds[:, None])

    def remember(self, rotation: torch.Tensor, transl: torch.Tensor, period: float) -> History:
        """With this frame's answer (local rotations (B, 55, 3, 3), transl (B, 3)) as the newest entry of each person whose newest
        entry is at least `period` s old (a 2 % margin for jittery stamps); the oldest entry drops out."""
        store = self.age[:, 0] >= 0.98 * period
        shifted = [torch.cat([new[:, None], old[:, :-1]], 1) for new, old in
                   ((rotation[:, :22].float(), self.rotation), (transl.float(), self.transl),
                    (torch.zeros_like(self.age[:, 0]), self.age))]
        return History(*(torch.where(store.view(-1, *[1] * (s.ndim - 1)), s, old)
                         for s, old in zip(shifted, (self.rotation, self.transl, self.age))))


@dataclass
class Lagged:
    """What the motion model reads of a history, for lags (L,) seconds."""

    past: torch.Tensor  # (B, L, 22, 3, 3) body rotations at each lag
    velocity: torch.Tensor  # (B, L, 3) the root's velocity over each lag, ending at the newest entry (m/s)
    available: torch.Tensor  # (B, L) bool: the history reaches the lag (a prefix of the lags)


def at_lags(history: History, lags: torch.Tensor, tolerance: float) -> Lagged:
    """The entries nearest each lag before now (rotations) and before the newest entry (velocities); a lag is
    available where both are within `tolerance` s of it and every shorter lag is available too."""
    age = history.age
    newest = age[:, :1]  # (B, 1)

    def nearest(want: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, L) -> indices, ok
        gap = (age[:, None, :] - want[..., None]).abs().nan_to_num(nan=math.inf)  # (B, L, H)
        best = gap.argmin(-1)
        return best, torch.gather(gap, 2, best[..., None])[..., 0] <= tolerance

    lagged, ok_past = nearest(lags[None].expand(age.shape[0], -1))
    before, ok_then = nearest(newest + lags[None])
    batch = torch.arange(age.shape[0])[:, None]
    span = (age[batch, before] - newest).clamp(min=1e-3)
    velocity = (history.transl[:, :1] - history.transl[batch, before]) / span[..., None]
    available = torch.cumprod((ok_past & ok_then & torch.isfinite(newest)).long(), 1).bool()
    velocity = torch.where(available[..., None], velocity, 0.0)
    return Lagged(history.rotation[batch, lagged], velocity, available)


def capacity(lags: tuple[float, ...], fps: float) -> int:
    """Entries a history needs to reach the longest lag before its newest entry, stored at `fps`."""
    return math.ceil(max(lags) * fps) + 3
