"""Writes a small SMPL-X model file in the official npz layout, for testing the `smplx` path without licensed files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dposer_ros.body import smplx_neutral

# smplx's SMPLX class reads fixed vertex ids (largest 9929) for its extra joints, so the mesh needs 9930 vertices.
NUM_VERTICES = 9930


def write_tiny_smplx(path: Path, seed: int = 0, package_shape: bool = False) -> Path:
    """Random-but-valid SMPL-X model: joints regress exactly onto 55 anchor vertices placed at the neutral rest joints.
    `package_shape`: the anchors move with the first 10 betas as this package's joint shape table says
    (`dposer_ros.body.shape`), so the model's joints are this package's for any shape."""
    rng = np.random.default_rng(seed)
    skel = smplx_neutral()
    v_template = rng.normal(0.0, 0.3, (NUM_VERTICES, 3))
    v_template[:55] = skel.rest_joints
    j_regressor = np.zeros((55, NUM_VERTICES))
    j_regressor[np.arange(55), np.arange(55)] = 0.7
    j_regressor[np.arange(55), 55 + np.arange(55)] = 0.3  # a mix of two vertices, like a real regressor
    v_template[55:110] = skel.rest_joints
    shapedirs = np.zeros((NUM_VERTICES, 3, 20))
    shapedirs[:110] = rng.normal(0.0, 0.01, (110, 3, 20))
    if package_shape:
        from dposer_ros.body.shape import shape_tables

        dirs = shape_tables()[1].numpy()
        shapedirs[:55, :, :10] = shapedirs[55:110, :, :10] = dirs
    weights = np.zeros((NUM_VERTICES, 55))
    weights[np.arange(NUM_VERTICES), rng.integers(0, 55, NUM_VERTICES)] = 1.0
    kintree = np.stack([np.array(skel.parents, dtype=np.int64), np.arange(55)])
    kintree[0, 0] = 4294967295  # the official files store the root's parent as uint32 -1
    np.savez(
        path,
        v_template=v_template,
        f=rng.integers(0, NUM_VERTICES, (200, 3)).astype(np.uint32),
        J_regressor=j_regressor,
        shapedirs=shapedirs,
        posedirs=np.zeros((NUM_VERTICES, 3, 486), dtype=np.float32),
        weights=weights,
        kintree_table=kintree,
        hands_componentsl=np.eye(45),
        hands_componentsr=np.eye(45),
        hands_meanl=rng.normal(0.0, 0.1, 45),
        hands_meanr=rng.normal(0.0, 0.1, 45),
        lmk_faces_idx=np.arange(51, dtype=np.int64),
        lmk_bary_coords=np.full((51, 3), 1.0 / 3.0),
    )
    return path
