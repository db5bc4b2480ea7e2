"""The exact SMPL-X model through the `smplx` package, for users who have the licensed model files."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .kinematics import split_pose
from .skeleton import NUM_JOINTS


class SmplxOutput(NamedTuple):
    joints: torch.Tensor  # (B, 55, 3) metres
    vertices: torch.Tensor  # (B, V, 3) metres


class SmplxModel(torch.nn.Module):
    """Shape-dependent joints, vertices and faces from a SMPL-X model file (``SMPLX_NEUTRAL.npz`` etc.).

    Poses follow this package's convention: a (B, 55, 3) axis-angle full pose with flat hands at zero.
    """

    def __init__(self, model_path: str | Path, num_betas: int = 10, num_expression_coeffs: int = 10) -> None:
        super().__init__()
        import smplx

        path = Path(model_path).expanduser()
        if not path.is_file() or path.suffix not in (".npz", ".pkl"):
            raise FileNotFoundError(
                f"SMPL-X model file {path} not found: give the path of SMPLX_NEUTRAL.npz (or .pkl) from "
                "https://smpl-x.is.tue.mpg.de (registration required), or leave the model path empty to use "
                "the embedded neutral skeleton"
            )
        try:
            self.model = smplx.SMPLX(
                str(path),
                ext=path.suffix[1:],
                use_pca=False,
                flat_hand_mean=True,
                num_betas=num_betas,
                num_expression_coeffs=num_expression_coeffs,
            )
        except (KeyError, AttributeError, ValueError, OSError) as err:
            raise ValueError(f"{path} is not a valid SMPL-X model file: {err}") from err
        self.num_betas = num_betas
        self.num_expression_coeffs = num_expression_coeffs

    @property
    def faces(self) -> np.ndarray:
        return np.asarray(self.model.faces, dtype=np.int64)

    def rest_joints(self, betas: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 55, 3) rest-pose joints for shape `betas` (B, num_betas); mean shape when None."""
        if betas is None:
            betas = self.model.v_template.new_zeros(1, self.num_betas)
        from smplx.lbs import blend_shapes, vertices2joints

        shaped = self.model.v_template + blend_shapes(betas, self.model.shapedirs)
        return vertices2joints(self.model.J_regressor, shaped)[:, :NUM_JOINTS]

    def forward(
        self,
        pose: torch.Tensor,
        transl: torch.Tensor | None = None,
        betas: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
    ) -> SmplxOutput:
        """Pose (B, 55, 3) axis-angle -> joints and vertices."""
        batch = pose.shape[0]
        zeros = pose.new_zeros
        out = self.model(
            betas=zeros(batch, self.num_betas) if betas is None else betas,
            expression=zeros(batch, self.num_expression_coeffs) if expression is None else expression,
            transl=zeros(batch, 3) if transl is None else transl,
            return_verts=True,
            **split_pose(pose),
        )
        return SmplxOutput(out.joints[:, :NUM_JOINTS], out.vertices)
