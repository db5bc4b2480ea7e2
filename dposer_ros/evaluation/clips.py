"""Evaluation clips: short contiguous runs of frames from held-out (test split) takes.

Selection is deterministic for a seed: the takes of each source that hold a contiguous run of `frames` frames
(consecutive `frame` numbers, with truth for the wanted parts) are shuffled, then clips are taken round-robin over
the sources (sorted by name) and, within a source, round-robin over its takes, so N clips come from N different
takes and as many sources as possible. A take gives a second clip only when every take of every source already gave
one; clips of one take never overlap (each run of a take is tiled, from a random offset within its slack, into
non-overlapping slots of `frames` frames, shuffled).

Kinds: `body` clips need body truth (part_mask[0]); `hands` clips need both hands' truth (part_mask[1] and [2]),
e.g. ManipNet takes, whose body is at rest: only hand metrics are meaningful on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..body import ForwardKinematics, Posed
from ..dataset.poses import WORLD_UP, PoseDataset
from ..keypoints import KeypointFormat
from .metrics import Pool, clip_pool, joint_visibility

KIND_PARTS = {"body": (0,), "hands": (1, 2)}


@dataclass
class Clip:
    """T consecutive frames of one take (30 Hz)."""

    name: str  # "<take>@<first frame>"
    kind: str  # body | hands
    source: str
    take: str
    start: int  # first frame number within the take
    pose: torch.Tensor  # (T, 55, 3) axis-angle
    transl: torch.Tensor  # (T, 3)
    part_mask: torch.Tensor  # (T, 4) bool: body, left hand, right hand, face have truth
    up: tuple[float, float, float] | None = WORLD_UP  # the up direction of the clip's frame (None: unknown)
    floor: float | None = None  # the floor's height along `up` (None: unknown)

    def __len__(self) -> int:
        return self.pose.shape[0]

    def posed(self, fk: ForwardKinematics | None = None) -> Posed:
        """Ground truth: SMPL-X forward kinematics of the clip (float64)."""
        fk = fk or ForwardKinematics()
        return fk(self.pose.double(), self.transl.double())

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "source": self.source, "take": self.take, "start": self.start,
                "frames": len(self), "up": self.up, "floor": self.floor}

    def keypoint_truth(self, fmt: KeypointFormat, fk: ForwardKinematics | None = None) -> torch.Tensor:
        """(T, K, 3) keypoints of `fmt` read off the true body (this project's landmark tables)."""
        return fmt.from_posed(self.posed(fk))

    def score(self, fmt: KeypointFormat, data, outs: list, seconds: list[float], stride: int, fk) -> Pool:
        """SMPL-X joint errors of the refined bodies against the true body (`clip_pool`)."""
        pred = torch.cat([o.joints for o in outs]).double()
        gt = self.posed(fk).joints[data.frames]
        return clip_pool(pred, gt, joint_visibility(fmt, data.visible), self.part_mask[data.frames], stride, seconds)


def select_clips(data: PoseDataset, count: int, frames: int, kind: str = "body", seed: int = 0,
                 split: str = "test", takes: tuple[str, ...] = ()) -> list[Clip]:
    """`count` clips of `frames` frames from the `split` takes (see the module docstring); with `takes`, only from
    takes whose name holds one of these strings (e.g. ("lieDown", "squat") for poses near the floor)."""
    if kind not in KIND_PARTS:
        raise ValueError(f"clip kind must be one of {sorted(KIND_PARTS)}, got {kind!r}")
    if count <= 0:
        return []
    if frames < 1:
        raise ValueError("clips need at least one frame")
    ok = data.split_mask(split) & data.part_mask[:, list(KIND_PARTS[kind])].all(1)
    if takes:
        names = data.meta["takes"]
        wanted = np.array([any(t in name for t in takes) for name in names])
        ok &= wanted[data.take]
    idx = np.flatnonzero(ok)
    idx = idx[np.lexsort((data.frame[idx], data.take[idx]))]
    # contiguous runs: same take, consecutive frame numbers, consecutive rows in idx
    brk = np.flatnonzero((np.diff(data.take[idx]) != 0) | (np.diff(data.frame[idx]) != 1)) + 1
    runs = [r for r in np.split(idx, brk) if len(r) >= frames]
    rng = np.random.default_rng(seed)
    slots: dict[int, dict[int, list[np.ndarray]]] = {}  # source -> take -> list of row ranges
    for run in runs:
        src, take_id = int(data.source[run[0]]), int(data.take[run[0]])
        offset = int(rng.integers(0, len(run) % frames + 1))  # the tiling starts anywhere its slack allows
        for k in range(len(run) // frames):
            slots.setdefault(src, {}).setdefault(take_id, []).append(run[offset + k * frames : offset + (k + 1) * frames])
    if not slots:
        which = f" matching {', '.join(takes)}" if takes else ""
        raise ValueError(f"no {split} take{which} has {frames} consecutive frames with {kind} truth")
    sources = sorted(slots, key=lambda s: data.meta["sources"][s])
    queues: dict[int, list[int]] = {}  # source -> its takes, in turn
    for s in sources:
        order = sorted(slots[s])
        rng.shuffle(order)
        for t in order:
            rng.shuffle(slots[s][t])
        queues[s] = order
    picked: list[np.ndarray] = []
    # round-robin over sources, and within a source over its takes: first each take once, then again (a take goes
    # to the back of its source's queue), so takes repeat only when every take of every source was used
    for fresh in (True, False):
        again: dict[int, list[int]] = {s: [] for s in sources}
        while len(picked) < count and any(queues.values()):
            for s in sources:
                if len(picked) == count or not queues[s]:
                    continue
                t = queues[s].pop(0)
                picked.append(slots[s][t].pop(0))
                if slots[s][t]:
                    (again[s] if fresh else queues[s]).append(t)
        queues = again
    out = []
    for rows in picked:
        take = data.meta["takes"][int(data.take[rows[0]])]
        out.append(Clip(
            name=f"{take}@{int(data.frame[rows[0]])}", kind=kind, source=data.meta["sources"][int(data.source[rows[0]])],
            take=take, start=int(data.frame[rows[0]]), pose=torch.from_numpy(data.pose[rows].copy()),
            transl=torch.from_numpy(data.transl[rows].copy()), part_mask=torch.from_numpy(data.part_mask[rows].copy()),
        ))
    return out
