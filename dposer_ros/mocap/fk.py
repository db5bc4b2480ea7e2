"""Vectorised rotations and forward kinematics over all frames at once (numpy)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_AXES = {"X": (1, 2), "Y": (2, 0), "Z": (0, 1)}  # (i, j) plane rotated by the axis


def axis_rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    """(..., 3, 3) right-handed rotation by ``angle`` (radians) about ``axis`` in X/Y/Z."""
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros(angle.shape + (3, 3))
    i, j = _AXES[axis.upper()]
    k = 3 - i - j
    m[..., k, k] = 1.0
    m[..., i, i] = c
    m[..., j, j] = c
    m[..., i, j] = -s
    m[..., j, i] = s
    return m


def euler_matrix(axes: str, angles: np.ndarray) -> np.ndarray:
    """Intrinsic rotation R = R_a0 @ R_a1 @ ... for ``angles[..., n]`` (radians) about ``axes[n]``.

    Intrinsic in the listed order equals extrinsic in reverse order.
    """
    angles = np.asarray(angles, dtype=np.float64)
    out = None
    for n, ax in enumerate(axes):
        r = axis_rotation(ax, angles[..., n])
        out = r if out is None else out @ r
    if out is None:
        out = np.broadcast_to(np.eye(3), angles.shape[:-1] + (3, 3)).copy()
    return out


def forward_kinematics(
    parents: np.ndarray,
    local_rot: Sequence[np.ndarray | None],
    local_trans: Sequence[np.ndarray],
    num_frames: int,
    with_rotations: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """World positions (F, J, 3) [and world rotations (F, J, 3, 3)] of a tree with parents before children.

    ``local_rot[j]``: (F, 3, 3), (3, 3) or None (identity); ``local_trans[j]``: (F, 3) or (3,),
    the joint's position in its parent's frame. World: p_j = p_par + G_par t_j, G_j = G_par R_j.
    """
    j_count = len(parents)
    pos = np.empty((num_frames, j_count, 3))
    glob: list[np.ndarray | None] = [None] * j_count
    for j in range(j_count):
        par = int(parents[j])
        t = np.asarray(local_trans[j], dtype=np.float64)
        r = local_rot[j]
        if par < 0:
            pos[:, j] = t
            glob[j] = r
            continue
        g = glob[par]
        pos[:, j] = pos[:, par] + (t if g is None else np.einsum("...ij,...j->...i", g, t))
        if r is None:
            glob[j] = g
        else:
            glob[j] = r if g is None else g @ r
    if not with_rotations:
        return pos, None
    eye = np.eye(3)
    rotations = np.stack([np.broadcast_to(eye if g is None else g, (num_frames, 3, 3)) for g in glob], axis=1)
    return pos, rotations
