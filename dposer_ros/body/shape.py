"""SMPL-X rest joints as a function of the 10 shape coefficients (betas), without the licensed model files.

J(beta) = J0 + D beta, with J0 (55, 3) the neutral mean-shape joints (`smplx_neutral()`) and D (55, 3, 10) the joint
shape directions. D comes from `mannequin-x` (Apache-2.0, A. Boscolo Camiletto), whose SMPL-X calibration holds them for 54 joints
(SMPL-X without jaw and eyes, plus two wrist copies); `smplx_shape_joints.npz` is that table in SMPL-X joint order,
the jaw and eyes given the head's directions (they sit rigidly in the head). Regenerate it with
    python -m dposer_ros.body.shape > /dev/null   (writes the npz beside this module; needs mannequin-x)
With the real model files, `SmplxModel.rest_joints(betas)` gives the same quantity exactly.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .skeleton import NUM_JOINTS, smplx_neutral

NUM_BETAS = 10
_FILE = "smplx_shape_joints.npz"


@cache
def shape_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """(J0 (55, 3), D (55, 3, 10)) float64."""
    with resources.files(__package__).joinpath(_FILE).open("rb") as f, np.load(f) as data:
        dirs = torch.from_numpy(data["joint_dirs"].astype(np.float64))
    return torch.from_numpy(np.array(smplx_neutral().rest_joints)), dirs


def rest_joints(betas: torch.Tensor) -> torch.Tensor:
    """(..., 10) betas -> (..., 55, 3) rest joints (metres), in the dtype of `betas`."""
    j0, dirs = shape_tables()
    return j0.to(betas) + torch.einsum("jcb,...b->...jc", dirs.to(betas), betas)


def derive(out: Path | None = None) -> Path:
    """Write the packaged table from mannequin-x's SMPL-X calibration (maintainer tool)."""
    import mannequin

    calib = np.load(Path(mannequin.__file__).parent / "assets" / "smplx_calibration.npz")
    names = [str(n) for n in np.load(Path(mannequin.__file__).parent / "assets" / "wooden.npz")["joint_names"]]
    # mannequin order: 22 body joints, L_Hand, R_Hand (wrist copies), 30 finger joints in SMPL-X order
    rows = list(range(22)) + [None, None, None] + list(range(24, 54))
    head = names.index("Head")
    rest = np.zeros((NUM_JOINTS, 3), np.float64)
    dirs = np.zeros((NUM_JOINTS, 3, NUM_BETAS), np.float64)
    skel = smplx_neutral()
    for j, row in enumerate(rows):
        if row is None:  # jaw, eyes: rigid in the head
            rest[j] = skel.rest_joints[j]
            dirs[j] = calib["joint_dirs"][head]
        else:
            rest[j] = calib["joint_rest"][row]
            dirs[j] = calib["joint_dirs"][row]
    if np.abs(rest - skel.rest_joints).max() > 1e-4:
        raise ValueError("mannequin-x's rest joints differ from the SMPL-X neutral skeleton: the joint order changed")
    out = out or Path(__file__).with_name(_FILE)
    np.savez_compressed(out, joint_dirs=dirs.astype(np.float32))
    return out


if __name__ == "__main__":
    print(derive())
