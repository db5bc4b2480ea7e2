"""Points attached to joints (joints themselves or landmarks at an offset) and their analytic Jacobian.

With rotations updated as R_f <- R_f exp(delta_f) (local increments), a point p attached to joint j moves as
dp / d delta_f = -[p - P_f]_x G_f for every joint f on the chain from the root to j (j included, which turns a
landmark's offset), where P_f and G_f are f's world position and rotation; dp / d transl = I.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .kinematics import ForwardKinematics, Posed


def skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*v.shape, 3)


def offset_frames(joints: Sequence[int] | np.ndarray, offsets: np.ndarray, parents: Sequence[int]) -> torch.Tensor:
    """(K,) the joint in whose frame a point's calibrated extra offset lives: its own joint, unless the point sits at
    that joint and no point of the set moves with the joint's rotation (COCO's ankles, whose feet nothing sees): an
    offset in that frame would turn with a rotation only a prior guesses, so it lives in the parent's frame."""
    joints = np.asarray(joints).tolist()
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, 3)
    landmark = [bool(np.abs(o).sum() > 0) for o in offsets]
    turned = set()  # joints whose rotation moves some point: strict ancestors of a point's joint, or a landmark's own
    for j, is_landmark in zip(joints, landmark):
        if is_landmark:
            turned.add(j)
        p = parents[j]
        while p >= 0:
            turned.add(p)
            p = parents[p]
    return torch.tensor([j if (is_landmark or j in turned or parents[j] < 0) else parents[j]
                         for j, is_landmark in zip(joints, landmark)], dtype=torch.long)


class AttachedPoints:
    """K points, each attached to a joint of `fk`'s skeleton at an offset in that joint's frame; optionally with a
    per-person extra offset (`positions(posed, extra)`) in the frame of `offset_frames`."""

    def __init__(self, fk: ForwardKinematics, joints: Sequence[int] | np.ndarray, offsets: np.ndarray,
                 free: Sequence[int] | np.ndarray) -> None:
        self.fk = fk
        self.joint = torch.tensor(np.asarray(joints), dtype=torch.long)
        self.offset = torch.as_tensor(np.array(offsets, dtype=np.float32))
        self.free = torch.tensor(np.asarray(free), dtype=torch.long)
        parents = fk.skeleton.parents
        chain = torch.zeros(len(self.joint), len(self.free))
        free_list = self.free.tolist()
        for k, j in enumerate(self.joint.tolist()):
            on_chain = set()
            while j >= 0:
                on_chain.add(j)
                j = parents[j]
            chain[k] = torch.tensor([float(f in on_chain) for f in free_list])
        self.chain = chain  # (K, F): rotating free joint f moves point k
        self.moved = chain.sum(0) > 0  # (F,) free joints whose rotation moves some point (a landmark's own joint too)
        self.unmoved = ~self.moved
        self.moved_columns = torch.cat([(3 * torch.nonzero(self.moved)[:, 0, None] + torch.arange(3)).reshape(-1),
                                        3 * len(self.free) + torch.arange(3)])  # ... their Jacobian columns, then transl
        self.unmoved_columns = (3 * torch.nonzero(self.unmoved)[:, 0, None] + torch.arange(3)).reshape(-1)
        self.frame = offset_frames(self.joint.tolist(), self.offset.numpy(), parents)
        # the Jacobian is sparse (a point moves with the few joints on its chain): only those (k, f) blocks are
        # computed, and copied to their places in the (3K, 3F + 3) matrix, which starts as the translation part
        pk, pf = chain.nonzero(as_tuple=True)
        self.pair_point, self.pair_free, self._pair_joint = pk, pf, self.free[pf]
        self._pair_sum = torch.nn.functional.one_hot(pf, len(self.free)).T.float()  # (F, P): pair p is joint f's
        # a point at a joint is not moved by that joint's own rotation, whatever its extra offset
        self._pair_moves = (self._pair_joint != self.joint[pk]) | (self.frame[pk] == self.joint[pk])
        width = 3 * len(self.free) + 3
        i = torch.arange(3)
        rows, cols = 3 * pk[:, None, None] + i[None, :, None], 3 * pf[:, None, None] + i[None, None, :]
        self._pair_flat = (rows * width + cols).reshape(-1)  # (P * 9,) into the flattened matrix
        base = torch.zeros(len(self.joint) * 3, width)
        base[torch.arange(len(self.joint) * 3), 3 * len(self.free) + torch.arange(len(self.joint) * 3) % 3] = 1.0
        self._base = base.reshape(-1)  # dp / d transl = I

    def pair_blocks(self, posed: Posed, points: torch.Tensor) -> torch.Tensor:
        """(B, P, 3, 3): d point / d increment of joint f for the P (point, free joint) pairs on chains
        (`pair_point`, `pair_free`)."""
        lever = points[:, self.pair_point] - posed.joints[:, self._pair_joint]  # (B, P, 3)
        lever = lever * self._pair_moves[:, None].to(lever)
        rot = posed.rotations[:, self._pair_joint]  # (B, P, 3, 3)
        return torch.linalg.cross(rot, lever[..., None].expand_as(rot), dim=-2)  # -[lever]_x G_f, column-wise

    def joint_information(self, block: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, 3) per free joint: sum over the points on its chains of weight_k B_kf^T B_kf, what the points
        tell of that joint's rotation alone, from `pair_blocks` (B, P, 3, 3) and per-point weights (B, K)."""
        weighted = block.transpose(-1, -2) * weight[:, self.pair_point, None, None]
        per_pair = (weighted @ block).flatten(2)  # (B, P, 9), summed per joint by a (F, P) 0/1 matrix: no scatter
        return (self._pair_sum.to(per_pair) @ per_pair).unflatten(2, (3, 3))

    def positions(self, posed: Posed, extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, 3) world positions of the points; `extra` (B, K, 3): per-person offsets in the `frame` joints."""
        rot = posed.rotations[:, self.joint]
        out = posed.joints[:, self.joint] + (rot @ self.offset.to(rot)[..., None]).squeeze(-1)
        if extra is not None:
            out = out + (posed.rotations[:, self.frame] @ extra.to(rot)[..., None]).squeeze(-1)
        return out

    def jacobian(self, posed: Posed, points: torch.Tensor, block: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K*3, 3F + 3): derivatives of the points w.r.t. the free joints' local increments, then translation
        (from `pair_blocks` when given)."""
        batch, k = points.shape[:2]
        block = self.pair_blocks(posed, points) if block is None else block
        jac = self._base.to(points).expand(batch, -1).index_copy(1, self._pair_flat, block.reshape(batch, -1))
        return jac.reshape(batch, k * 3, 3 * len(self.free) + 3)
