"""Points attached to joints (joints themselves or landmarks at an offset) and their analytic Jacobian.

With rotations updated as R_f <- R_f exp(delta_f) (local increments), a point p attached to joint j moves as
dp / d delta_f = -[p - P_f]_x G_f for every joint f on the chain from the root to j (j included, which turns a
landmark's offset), where P_f and G_f are f's world position and rotation; dp / d transl = I.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

from .kinematics import ForwardKinematics, Posed
from .skeleton import PART_JOINTS

APART = ("left_hand", "right_hand")  # parts whose joints move only their own points: their normal-matrix blocks


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


def diagonal_block_index(n: int, size: int) -> torch.Tensor:
    """(9n,) where the entries of n 3 x 3 blocks (row-major) go on the diagonal of a flattened (size, size) matrix."""
    i, j = torch.arange(3), torch.arange(n)
    rows, cols = 3 * j[:, None, None] + i[None, :, None], 3 * j[:, None, None] + i[None, None, :]
    return (rows * size + cols).reshape(-1)


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
        lineage = torch.zeros(len(self.joint), len(parents))
        for k, j in enumerate(self.joint.tolist()):
            while j >= 0:
                lineage[k, j] = 1.0
                j = parents[j]
        self.lineage = lineage  # (K, J): point k's joint and its ancestors
        chain = lineage[:, self.free]
        self.chain = chain  # (K, F): rotating free joint f moves point k
        # indices (not masks: a compiled step keeps static shapes) of the free joints whose rotation moves some
        # point (a landmark's own joint too), of the others, and their Jacobian columns (then the translation's)
        self.moved = torch.nonzero(chain.sum(0) > 0)[:, 0]
        self.unmoved = torch.nonzero(chain.sum(0) == 0)[:, 0]
        self.moved_columns = torch.cat([(3 * self.moved[:, None] + torch.arange(3)).reshape(-1),
                                        3 * len(self.free) + torch.arange(3)])
        self.unmoved_columns = (3 * self.unmoved[:, None] + torch.arange(3)).reshape(-1)
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
        coord = torch.arange(len(self.joint) * 3)
        self._transl_flat = coord * width + 3 * len(self.free) + coord % 3  # dp / d transl = I: its entries
        self._flat = torch.cat([self._pair_flat, self._transl_flat])
        # ... and in the matrix of the `moved_columns` only (every pair's joint moves its point's chain: it is there)
        slot = torch.full((len(self.free),), -1, dtype=torch.long)
        slot[self.moved] = torch.arange(len(self.moved))
        narrow = len(self.moved_columns)
        moved_cols = 3 * slot[pf][:, None, None] + i[None, None, :]
        self._flat_moved = torch.cat([(rows * narrow + moved_cols).reshape(-1),
                                      coord * narrow + 3 * len(self.moved) + coord % 3])
        self._gram_plans = {False: self._gram_plan(torch.arange(width)), True: self._gram_plan(self.moved_columns)}
        # where the normal equations' 3 x 3 diagonal blocks go, for the systems a step solves (made here, outside any
        # trace: a compiled graph takes them as constants)
        n_free = len(self.free)
        self._block_index = {(n, size): diagonal_block_index(n, size) for n, size in
                             ((len(self.moved), narrow), (n_free, width), (n_free, 3 * n_free))}

    def block_index(self, n: int, size: int) -> torch.Tensor:
        """`diagonal_block_index(n, size)`, made once for the systems a step solves (another size: made now, not kept,
        since inside a trace a kept tensor would be the trace's)."""
        index = self._block_index.get((n, size))
        return diagonal_block_index(n, size) if index is None else index

    def _gram_plan(self, columns: torch.Tensor) -> list[list[tuple]] | None:
        """How to form J^T J of a Jacobian restricted to `columns` block by block: the columns of an `APART` part (a
        hand's fingers) touch only the rows of the points they move, so their products with the other hand's are
        zero and those with the rest need only their rows. -> per pair of runs of columns of one part, (column slice,
        column slice, the rows they share: a slice where consecutive, None where none), or None: no such part."""
        n_free = len(self.free)
        label = []
        for c in columns.tolist():
            joint = int(self.free[c // 3]) if c < 3 * n_free else -1
            label.append(next((i for i, part in enumerate(APART) if joint in PART_JOINTS[part]), -1))
        rows_of = {}
        for i, part in enumerate(APART):
            moved = (self.chain[:, [f for f in range(n_free) if int(self.free[f]) in PART_JOINTS[part]]] > 0).any(1)
            rows_of[i] = (3 * torch.nonzero(moved)[:, 0, None] + torch.arange(3)).reshape(-1)
        if all(len(rows_of[i]) == 0 for i in set(label) - {-1}):
            return None
        runs, begin = [], 0
        for c in range(1, len(label) + 1):
            if c == len(label) or label[c] != label[begin]:
                runs.append((slice(begin, c), None if label[begin] < 0 else rows_of[label[begin]]))
                begin = c
        return [[(a, b, self._rows(ra, rb, 3 * len(self.joint))) for b, rb in runs] for a, ra in runs]

    @staticmethod
    def _rows(a: torch.Tensor | None, b: torch.Tensor | None, k3: int) -> torch.Tensor | slice | None:
        """The rows two column runs share (None: none), as a slice where they are consecutive."""
        if a is None and b is None:
            return slice(0, k3)
        rows = cast(torch.Tensor, b) if a is None else a if b is None else a[torch.isin(a, b)]
        if len(rows) == 0:
            return None
        if bool((rows.diff() == 1).all()):
            return slice(int(rows[0]), int(rows[-1]) + 1)
        return rows

    def gram(self, jac: torch.Tensor, moved_only: bool = False) -> torch.Tensor:
        """J^T J (B, n, n) of a Jacobian from `jacobian` (all columns, or `moved_columns` with `moved_only`), block
        by block where parts keep apart (whole-body formats: a quarter of the dense product's work)."""
        plan = self._gram_plans[moved_only]
        if plan is None:
            return jac.transpose(1, 2) @ jac
        out = []
        for line in plan:
            blocks = []
            for cols_a, cols_b, rows in line:
                if rows is None:
                    blocks.append(jac.new_zeros(jac.shape[0], cols_a.stop - cols_a.start, cols_b.stop - cols_b.start))
                else:
                    jr = jac[:, rows]
                    blocks.append(jr[..., cols_a].transpose(1, 2) @ jr[..., cols_b])
            out.append(torch.cat(blocks, 2))
        return torch.cat(out, 1)

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
        per_pair = (weighted @ block).flatten(2)  # (B, P, 9), summed per joint
        if torch.onnx.is_in_onnx_export():  # by a (F, P) 0/1 matrix: the exporter mis-exports repeated-index scatters
            return (self._pair_sum.to(per_pair) @ per_pair).unflatten(2, (3, 3))
        out = per_pair.new_zeros(per_pair.shape[0], len(self.free), 9)
        return out.index_add_(1, self.pair_free, per_pair).unflatten(2, (3, 3))

    def positions(self, posed: Posed, extra: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, 3) world positions of the points; `extra` (B, K, 3): per-person offsets in the `frame` joints."""
        rot = posed.rotations[:, self.joint]
        out = posed.joints[:, self.joint] + (rot @ self.offset.to(rot)[..., None]).squeeze(-1)
        if extra is not None:
            out = out + (posed.rotations[:, self.frame] @ extra.to(rot)[..., None]).squeeze(-1)
        return out

    def jacobian(self, posed: Posed, points: torch.Tensor, block: torch.Tensor | None = None,
                 scale: torch.Tensor | None = None, moved_only: bool = False) -> torch.Tensor:
        """(B, K*3, 3F + 3): derivatives of the points w.r.t. the free joints' local increments, then translation
        (from `pair_blocks` when given); with `scale` (B, K) each point's rows times its factor (scaled before the
        blocks are placed: a tenth of the work of scaling the matrix). With `moved_only` only the `moved_columns`
        (the same values as selecting them, without making the others)."""
        batch, k = points.shape[:2]
        block = self.pair_blocks(posed, points) if block is None else block
        transl = points.new_ones(batch, 3 * k)
        if scale is not None:
            block = block * scale[:, self.pair_point, None, None]
            transl = scale.repeat_interleave(3, dim=1)
        values = torch.cat([block.reshape(batch, -1), transl], 1)
        width, flat = (len(self.moved_columns), self._flat_moved) if moved_only else (3 * len(self.free) + 3, self._flat)
        jac = points.new_zeros(batch, 3 * k * width)
        # in place into a fresh tensor (no copy of it); out of place for the ONNX exporter (see gauss_newton_step)
        jac = jac.index_copy(1, flat, values) if torch.onnx.is_in_onnx_export() else jac.index_copy_(1, flat, values)
        return jac.reshape(batch, k * 3, width)
