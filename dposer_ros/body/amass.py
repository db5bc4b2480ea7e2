"""Refined poses as AMASS-style SMPL-X sequences, and the `smplx` keyword arguments that reproduce them.

Conventions of every pose this package produces (SmplxPose, `Refined`, these files):
- SMPL-X, **neutral** gender, **10 shape coefficients** (`betas`), 10 expression coefficients (zeros);
- hand poses are full axis-angle rotations (no PCA) with a **flat hand at zero**: `flat_hand_mean=True` in `smplx`;
- `poses` (N, 165) = the 55 joints' axis-angle rotations in SMPL-X joint order (global orientation, 21 body joints,
  jaw, left eye, right eye, 15 + 15 finger joints), `trans` (N, 3) = smplx `transl` (the pelvis sits at
  J_pelvis(betas) + trans), metres, in the frame of the keypoints (or the node's output frame).
So `smplx.create(model_dir, **SMPLX_MODEL_KWARGS)` with `to_smplx_kwargs(npz)` gives the joints this package posed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .kinematics import split_pose
from .skeleton import NUM_JOINTS

NUM_BETAS = 10
NUM_EXPRESSION = 10
SMPLX_MODEL_KWARGS = {"model_type": "smplx", "gender": "neutral", "use_pca": False, "flat_hand_mean": True,
                      "num_betas": NUM_BETAS, "num_expression_coeffs": NUM_EXPRESSION}


@dataclass
class PoseSequence:
    """One person's refined poses over time."""

    person_id: str
    times: list[float] = field(default_factory=list)  # seconds (the input stamps)
    poses: list[np.ndarray] = field(default_factory=list)  # (55, 3) each
    trans: list[np.ndarray] = field(default_factory=list)  # (3,) each
    betas: list[np.ndarray] = field(default_factory=list)  # (10,) each

    def add(self, time_s: float, pose: np.ndarray, trans: np.ndarray, betas: np.ndarray | None) -> None:
        self.times.append(float(time_s))
        self.poses.append(np.asarray(pose, dtype=np.float64).reshape(NUM_JOINTS, 3))
        self.trans.append(np.asarray(trans, dtype=np.float64).reshape(3))
        self.betas.append(np.zeros(NUM_BETAS) if betas is None or len(betas) == 0 else np.asarray(betas, np.float64))

    def to_amass(self) -> dict[str, np.ndarray]:
        """The AMASS-style arrays. `betas` is the track's last shape (its calibration is held after the first
        second); `betas_per_frame` keeps every frame's; `mocap_framerate` is the median rate of the stamps."""
        times = np.asarray(self.times)
        dt = np.diff(times)
        rate = float(1.0 / np.median(dt)) if len(dt) and np.median(dt) > 0 else 0.0
        return {
            "poses": np.stack(self.poses).reshape(len(self.poses), 3 * NUM_JOINTS),
            "trans": np.stack(self.trans),
            "betas": self.betas[-1],
            "betas_per_frame": np.stack(self.betas),
            "num_betas": np.array(NUM_BETAS),
            "gender": np.array("neutral"),
            "surface_model_type": np.array("smplx"),
            "flat_hand_mean": np.array(True),
            "mocap_framerate": np.array(round(rate, 3)),
            "mocap_time_length": np.array(float(times[-1] - times[0]) if len(times) else 0.0),
            "timestamps": times,
            "person_id": np.array(self.person_id),
        }


def to_smplx_kwargs(data: dict | np.lib.npyio.NpzFile, frames: slice | None = None) -> dict[str, torch.Tensor]:
    """Forward keyword arguments of an `smplx` SMPL-X model (made with SMPLX_MODEL_KWARGS) for the frames of an
    AMASS-style sequence: global_orient, body_pose, jaw / eye poses, hand poses, transl, betas, expression."""
    poses = torch.as_tensor(np.asarray(data["poses"])[frames or slice(None)], dtype=torch.float32)
    n = poses.shape[0]
    kwargs = split_pose(poses.reshape(n, NUM_JOINTS, 3))
    kwargs["transl"] = torch.as_tensor(np.asarray(data["trans"])[frames or slice(None)], dtype=torch.float32)
    kwargs["betas"] = torch.as_tensor(np.asarray(data["betas"]), dtype=torch.float32).reshape(1, -1).expand(n, -1)
    kwargs["expression"] = torch.zeros(n, NUM_EXPRESSION)
    return kwargs


def write_sequences(sequences: dict[str, PoseSequence], out: Path) -> list[Path]:
    """One npz per person: `<out stem>_<person id>.npz` beside `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for pid, seq in sequences.items():
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in pid) or "anonymous"
        path = out.with_name(f"{out.stem}_{safe}.npz")
        np.savez(path, **seq.to_amass())  # type: ignore[arg-type]
        paths.append(path)
    return paths
