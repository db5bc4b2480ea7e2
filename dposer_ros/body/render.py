"""Pictures of poses: the skinned `mannequin-x` body and stick skeletons, drawn with matplotlib (world Y up)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from mpl_toolkits.mplot3d import Axes3D
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

LIGHT = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])


@lru_cache(maxsize=32)
def _mannequin(shape: tuple[float, ...] = ()):
    from mannequin import Mannequin

    betas = np.zeros(10, np.float32)
    betas[: len(shape)] = shape
    return Mannequin("wooden", shape=betas, flat_hand_mean=True)  # zero hand pose = flat hand, as in this package


def body_mesh(pose: np.ndarray, transl: np.ndarray | None = None,
              betas: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and faces (F, 3) of the skinned mannequin for a (55, 3) axis-angle pose and a body shape
    (10 SMPL-X betas, rounded to 0.05 so that a track's slowly settling shape reuses one model; None: the mean)."""
    shape = () if betas is None else tuple(float(b) for b in np.round(np.asarray(betas, np.float64) * 20) / 20)
    model = _mannequin(shape)
    params = model.rest_pose()
    pose = np.asarray(pose, np.float32)
    params["pelvis_rotation"] = pose[0]
    params["body_pose"] = pose[1:22]
    params["hand_pose"] = pose[25:55]
    if transl is not None:
        params["global_translation"] = np.asarray(transl, np.float32)
    return model.vertices(params), np.asarray(model.faces)


def _to_plot(points: np.ndarray) -> np.ndarray:
    """World (x, y up, z forward) -> matplotlib (x, z, y) so that the body stands upright."""
    return np.asarray(points)[..., [0, 2, 1]]


def draw_body(ax: Axes3D, pose: np.ndarray, transl: np.ndarray | None = None, color=(0.85, 0.7, 0.5), stride: int = 1) -> None:
    """Draw the shaded mannequin (every `stride`-th face) on a 3D axis."""
    verts, faces = body_mesh(pose, transl)
    tris = verts[faces[::stride]]
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True) + 1e-12
    shade = 0.35 + 0.65 * np.clip(normals @ LIGHT, 0, 1)
    colors = np.clip(np.asarray(color)[None] * shade[:, None], 0, 1)
    ax.add_collection3d(Poly3DCollection(_to_plot(tris), facecolors=colors, edgecolors="none"))


def draw_skeleton(ax: Axes3D, joints: np.ndarray, parents, color="k", marker_size: float = 6, label: str | None = None) -> None:
    """Draw bones between each joint and its parent, and the joints as dots."""
    pts = _to_plot(joints)
    for j, p in enumerate(parents):
        if p >= 0:
            ax.plot(*pts[[p, j]].T, color=color, lw=1.5)
    ax.scatter(*pts.T, color=color, s=marker_size, label=label, depthshade=False)


def frame_axes(ax: Axes3D, points: np.ndarray, title: str = "", margin: float = 0.1) -> None:
    """Equal-aspect limits around `points` (world coordinates), front view, no clutter."""
    pts = _to_plot(points.reshape(-1, 3))
    centre = (pts.max(0) + pts.min(0)) / 2
    half = (pts.max(0) - pts.min(0)).max() / 2 + margin
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=10, azim=-70)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_zticks([])
    ax.set_title(title, fontsize=9)


def pose_grid(poses: np.ndarray, path, titles: list[str] | None = None, columns: int = 4) -> None:
    """A picture of (N, 55, 3) poses as mannequins (root orientation and translation dropped), saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(poses) // columns)
    fig = plt.figure(figsize=(2.6 * columns, 3.2 * rows))
    for i, pose in enumerate(np.asarray(poses)):
        pose = pose.copy()
        pose[0] = 0.0
        ax = fig.add_subplot(rows, columns, i + 1, projection="3d")
        draw_body(ax, pose)
        verts, _ = body_mesh(pose)
        frame_axes(ax, verts, titles[i] if titles else "", margin=0.05)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
