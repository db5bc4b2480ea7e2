"""Metrics of refined SMPL-X joints against the ground truth (SMPL-X forward kinematics of the dataset pose).

All positions in metres in, millimetres out. Unless stated, body metrics use the 22 body joints (0..21).

- MPJPE (all / visible / occluded): mean Euclidean joint error, pooled over every (frame, joint) pair of a set.
- PA-MPJPE: per frame, the prediction is aligned to the truth by the best similarity transform (rotation,
  translation, scale; Umeyama) over the 22 body joints, then MPJPE.
- Hand MPJPE: the 30 finger joints (25..54), each relative to its own wrist (left 20, right 21) in both prediction
  and truth: finger positions minus wrist position (wrist orientation errors count, wrist position errors do not).
- Acceleration error: |a_pred - a_true| per body joint, a = second difference of positions over consecutive
  emitted frames, divided by stride^2 so it is always mm per (30 Hz frame)^2.
- Latency: p50 / p99 of per-frame wall-clock times (ms).

Joint visibility (which SMPL-X joints count as visible or occluded, from the keypoints' visibility):
  1. a joint that has keypoints attached to it (KeypointFormat.joints == j, with or without a landmark offset)
     is visible when any of them is visible (for smplx55 this is the keypoint's own visibility);
  2. otherwise it is visible when any keypoint attached to one of its descendants within its limb is visible
     (limbs: trunk = pelvis, spine, neck, head, jaw, eyes; each leg = hip, knee, ankle, foot; each arm = collar,
     shoulder, elbow, wrist and the hand's finger joints). E.g. with COCO the collar follows the arm's keypoints
     and the pelvis follows the face keypoints;
  3. a joint with no keypoint in its limb below it (e.g. COCO's feet, radar's eyes) follows its parent.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from ..body import NUM_JOINTS, smplx_neutral
from ..keypoints import KeypointFormat

BODY_JOINTS = tuple(range(22))
LEFT_FINGERS = tuple(range(25, 40))
RIGHT_FINGERS = tuple(range(40, 55))
HAND_JOINTS = LEFT_FINGERS + RIGHT_FINGERS
LEFT_WRIST, RIGHT_WRIST = 20, 21
LIMBS: dict[str, tuple[int, ...]] = {
    "trunk": (0, 3, 6, 9, 12, 15, 22, 23, 24),
    "left_leg": (1, 4, 7, 10),
    "right_leg": (2, 5, 8, 11),
    "left_arm": (13, 16, 18, 20, *LEFT_FINGERS),
    "right_arm": (14, 17, 19, 21, *RIGHT_FINGERS),
}


def joint_errors(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(..., J, 3) x 2 -> (..., J) Euclidean errors (input units)."""
    return (pred - gt).norm(dim=-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean of `values` where `mask` (NaN when the mask is empty)."""
    if mask is None:
        return float(values.mean()) if values.numel() else float("nan")
    mask = mask.expand_as(values)
    return float(values[mask].mean()) if mask.any() else float("nan")


def mpjpe(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Mean per-joint position error in mm over the joints where `mask` (pooled over all leading dims)."""
    return masked_mean(joint_errors(pred, gt), mask) * 1000.0


def similarity_align(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Align pred (..., J, 3) to gt by the least-squares similarity transform (Umeyama), per leading index."""
    pred, gt = pred.double(), gt.double()
    mp, mg = pred.mean(-2, keepdim=True), gt.mean(-2, keepdim=True)
    x, y = pred - mp, gt - mg
    cov = x.transpose(-1, -2) @ y  # (..., 3, 3)
    u, s, vt = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(vt.transpose(-1, -2) @ u.transpose(-1, -2)))
    e = torch.ones_like(s)
    e[..., -1] = d
    rot = vt.transpose(-1, -2) @ torch.diag_embed(e) @ u.transpose(-1, -2)  # maps x -> y
    var = x.square().sum((-1, -2))
    scale = (s * e).sum(-1) / var.clamp(min=1e-12)
    return scale[..., None, None] * (x @ rot.transpose(-1, -2)) + mg


def pa_joint_errors(pred: torch.Tensor, gt: torch.Tensor, joints=BODY_JOINTS) -> torch.Tensor:
    """(..., len(joints)) errors after per-frame similarity alignment on `joints`."""
    idx = list(joints)
    return joint_errors(similarity_align(pred[..., idx, :], gt[..., idx, :]), gt[..., idx, :].double())


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor, joints=BODY_JOINTS) -> float:
    """Procrustes-aligned MPJPE (mm) on the body joints."""
    return masked_mean(pa_joint_errors(pred, gt, joints)) * 1000.0


def hand_joint_errors(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(..., 30) wrist-relative errors of the finger joints (left 25..39 from joint 20, right 40..54 from 21)."""
    def rel(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., list(LEFT_FINGERS), :] - x[..., LEFT_WRIST : LEFT_WRIST + 1, :],
                          x[..., list(RIGHT_FINGERS), :] - x[..., RIGHT_WRIST : RIGHT_WRIST + 1, :]], dim=-2)
    return joint_errors(rel(pred), rel(gt))


def hand_mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> float:
    return masked_mean(hand_joint_errors(pred, gt)) * 1000.0


def accel_joint_errors(pred: torch.Tensor, gt: torch.Tensor, stride: int = 1, joints=BODY_JOINTS) -> torch.Tensor:
    """(T-2, len(joints)) |second difference of pred - of gt| / stride^2 along the first (time) axis."""
    idx = list(joints)
    def acc(x: torch.Tensor) -> torch.Tensor:
        x = x[..., idx, :].double()
        return x[2:] - 2 * x[1:-1] + x[:-2]
    return joint_errors(acc(pred), acc(gt)) / stride**2


def accel_error(pred: torch.Tensor, gt: torch.Tensor, stride: int = 1, joints=BODY_JOINTS) -> float:
    """Acceleration error, mm / (30 Hz frame)^2, of a (T, J, 3) sequence."""
    return masked_mean(accel_joint_errors(pred, gt, stride, joints)) * 1000.0


def latency_ms(seconds) -> dict[str, float]:
    """p50 / p99 / mean of per-frame times (s) in ms."""
    s = np.asarray(seconds, dtype=np.float64) * 1000.0
    if s.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "mean": float("nan")}
    return {"p50": float(np.percentile(s, 50)), "p99": float(np.percentile(s, 99)), "mean": float(s.mean())}


@cache
def _visibility_tables(fmt: KeypointFormat) -> tuple[np.ndarray, np.ndarray]:
    """(55, K) own[j, k]: keypoint k is attached to joint j; support[j, k]: attached to a descendant in j's limb."""
    skel = smplx_neutral()
    limb_of = {j: name for name, js in LIMBS.items() for j in js}
    k = fmt.num_keypoints
    own = np.zeros((NUM_JOINTS, k), dtype=bool)
    own[fmt.joints, np.arange(k)] = True
    support = np.zeros_like(own)
    for j in range(NUM_JOINTS):
        below = [d for d in skel.descendants(j) if limb_of.get(d) == limb_of.get(j)]
        if below:
            support[j] = own[below].any(0)
    return own, support


def joint_visibility(fmt: KeypointFormat, visible: torch.Tensor) -> torch.Tensor:
    """(..., K) keypoint visibility -> (..., 55) SMPL-X joint visibility (rules in the module docstring)."""
    own, support = _visibility_tables(fmt)
    vis = visible.bool()
    own_t, sup_t = torch.as_tensor(own), torch.as_tensor(support)
    has_own = own_t.any(1)
    has_support = sup_t.any(1)
    by_own = (vis[..., None, :] & own_t).any(-1)
    by_support = (vis[..., None, :] & sup_t).any(-1)
    out = torch.where(has_own, by_own, by_support)
    parents = smplx_neutral().parents
    for j in range(NUM_JOINTS):  # parents come first: rule 3 reads the already final parent
        if not has_own[j] and not has_support[j]:
            out[..., j] = out[..., parents[j]] if parents[j] >= 0 else False
    return out


class Pool:
    """Sums and counts of per-element errors (metres) and latencies, merged over clips and corruptions."""

    KEYS = ("all", "visible", "occluded", "pa", "accel", "hand")

    def __init__(self) -> None:
        self.sum = dict.fromkeys(self.KEYS, 0.0)
        self.count = dict.fromkeys(self.KEYS, 0)
        self.latency: list[float] = []

    def add(self, key: str, values: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        v = values if mask is None else values[mask.expand_as(values)]
        self.sum[key] += float(v.double().sum())
        self.count[key] += int(v.numel())

    def merge(self, other: Pool) -> Pool:
        for key in self.KEYS:
            self.sum[key] += other.sum[key]
            self.count[key] += other.count[key]
        self.latency += other.latency
        return self

    def summary(self) -> dict[str, float]:
        """Metric means in mm (NaN where nothing was measured) and latency in ms."""
        mm = {k: (self.sum[k] / self.count[k] * 1000.0 if self.count[k] else float("nan")) for k in self.KEYS}
        lat = latency_ms(self.latency)
        return {
            "mpjpe_all": mm["all"], "mpjpe_visible": mm["visible"], "mpjpe_occluded": mm["occluded"],
            "pa_mpjpe": mm["pa"], "accel": mm["accel"], "hand_mpjpe": mm["hand"],
            "latency_p50_ms": lat["p50"], "latency_p99_ms": lat["p99"], "latency_mean_ms": lat["mean"],
            "frames": len(self.latency), "occluded_joints": self.count["occluded"],
        }


def clip_pool(pred: torch.Tensor, gt: torch.Tensor, joint_visible: torch.Tensor, part_mask: torch.Tensor,
              stride: int = 1, latency: list[float] | None = None) -> Pool:
    """Errors of one clip: pred, gt (T, 55, 3); joint_visible (T, 55); part_mask (T, 4) body/left/right/face truth.

    Body metrics use the frames with body truth, hand metrics the frames with both hands' truth; acceleration
    needs three consecutive emitted frames with body truth.
    """
    pool = Pool()
    pool.latency = list(latency or [])
    pred, gt = pred.double(), gt.double()
    body = part_mask[:, 0].bool()
    hands = part_mask[:, 1].bool() & part_mask[:, 2].bool()
    b = list(BODY_JOINTS)
    if body.any():
        err = joint_errors(pred[body][:, b], gt[body][:, b])
        vis = joint_visible[body][:, b].bool()
        pool.add("all", err)
        pool.add("visible", err, vis)
        pool.add("occluded", err, ~vis)
        pool.add("pa", pa_joint_errors(pred[body], gt[body]))
        if len(body) >= 3:
            ok = body[2:] & body[1:-1] & body[:-2]
            pool.add("accel", accel_joint_errors(pred, gt, stride)[ok])
    if hands.any():
        pool.add("hand", hand_joint_errors(pred[hands], gt[hands]))
    return pool


def keypoint_pool(pred: torch.Tensor, truth: torch.Tensor, visible: torch.Tensor, stride: int = 1,
                  latency: list[float] | None = None) -> Pool:
    """Errors of one clip scored on keypoints: pred, truth (T, K, 3), truth NaN where the skeleton does not define
    the keypoint (not scored). all / visible / occluded: the defined keypoints, those shown to the method, those
    hidden from it; pa: per frame similarity-aligned over the defined keypoints; accel: on the defined keypoints."""
    pool = Pool()
    pool.latency = list(latency or [])
    defined = torch.isfinite(truth).all(-1)
    cols = defined.all(0).nonzero().flatten()  # keypoints the skeleton defines (the same in every frame)
    pred, truth = pred.double()[:, cols], truth.double()[:, cols]
    vis = visible.bool()[:, cols]
    err = joint_errors(pred, truth)
    pool.add("all", err)
    pool.add("visible", err, vis)
    pool.add("occluded", err, ~vis)
    pool.add("pa", pa_joint_errors(pred, truth, range(len(cols))))
    if pred.shape[0] >= 3:
        pool.add("accel", accel_joint_errors(pred, truth, stride, range(len(cols))))
    return pool
