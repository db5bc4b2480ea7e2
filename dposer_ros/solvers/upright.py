"""Someone standing upright with legs no keypoint sees: the gate of the pelvis-tilt pull and of the floor contact.

Where the up direction is known, the torso seen and no confident keypoint below either hip, the hip keypoints barely
say how the pelvis is tilted: the refiner then pulls the pelvis's tilt against the up direction towards the training
data's mean (`RefineSettings.pelvis_tilt_weight`; the trunk's lean goes to the spine instead of tilting the pelvis
and flexing the hidden legs under it), and the shape calibration takes the feet on a known floor
(`floor_contact_weight`, `solvers.calibration.FloorContact`). Both fade as the trunk leans and as the pelvis comes
down from a standing height: someone sitting, kneeling or lying is not standing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch

from ..body.jacobian import AttachedPoints
from ..body.kinematics import ForwardKinematics
from ..body.skeleton import smplx_neutral
from .calibration import FloorContact
from .gauss_newton import inverse_right_jacobian
from .scene import FEET, SOLE_HEIGHT
from .types import Observation


class Upright:
    """How surely each person stands upright over the floor, and the pelvis tilt of the training data's people.

    `torso` (K,): 1 for the format's keypoints that say where the torso is; `hips` the hips' columns in the refiner's
    `by_data` (B, F) (a keypoint below them sees the pelvis's tilt against the legs); `mean_up` (3,) the up direction
    in the pelvis frame on average over the training data (zero: a prior without gravity, no tilt pull).
    """

    def __init__(self, fk: ForwardKinematics, free: Sequence[int], settings, torso: torch.Tensor,
                 hips: Sequence[int], mean_up: torch.Tensor) -> None:
        self.settings, self.torso, self.hips, self.mean_up = settings, torso, list(hips), mean_up
        self.feet = AttachedPoints(fk, FEET, torch.zeros(len(FEET), 3).numpy(), free)
        skeleton = smplx_neutral()
        self.neck = skeleton.index("neck")
        chain = [self.neck]
        while chain[-1] != 0:
            chain.append(int(skeleton.parents[chain[-1]]))
        self.trunk_chain = chain[::-1]  # pelvis, spine1-3, neck

    def trunk(self, local: torch.Tensor, transl: torch.Tensor, rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3) pelvis and (B, 3) pelvis -> neck of the pose: forward kinematics of the spine's chain alone."""
        chain = self.trunk_chain
        bones = rest[:, chain[1:]] - rest[:, chain[:-1]]  # (B, 4, 3)
        trunk = bones[:, -1]
        for i in range(len(chain) - 2, 0, -1):  # from the neck's bone down: b_i + R_i (...)
            trunk = bones[:, i - 1] + (local[:, chain[i]] @ trunk[..., None])[..., 0]
        return rest[:, 0] + transl, (local[:, 0] @ trunk[..., None])[..., 0]

    def standing(self, obs: Observation, by_data: torch.Tensor, posed: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                 rest: torch.Tensor, min_height: float) -> torch.Tensor | None:
        """(B,) in [0, 1]: how surely each person stands upright with legs no keypoint sees, from the frame's pose
        (`posed()`: (B, 3) pelvis and (B, 3) pelvis -> neck, computed only when needed): the up direction known, the
        torso seen, no confident keypoint below either hip, the trunk within `pelvis_tilt_max_lean_deg` of upright
        (fading) and, with `min_height` > 0, the pelvis at least that share of the person's standing pelvis height
        (rest pose, calibrated shape) above a known floor, fading in over the 0.1 below (unknown floor: 0). None
        where no one is."""
        s = self.settings
        if obs.up is None or (min_height > 0 and (obs.floor is None or bool(obs.floor.isnan().all()))):
            return None
        torso = ((obs.confidence > 0.1).float() @ self.torso) >= s.min_part_points
        unseen = torso & ~by_data[:, self.hips].any(1) & (obs.up.norm(dim=-1) > 0)
        if not bool(unseen.any()):
            return None
        pelvis, trunk = posed()
        lean_cos = (trunk * obs.up).sum(-1) / trunk.norm(dim=-1).clamp(min=1e-9)
        limit = math.cos(math.radians(s.pelvis_tilt_max_lean_deg))
        strength = unseen * ((lean_cos - limit) / (1.0 - limit)).clamp(0.0, 1.0)
        if min_height > 0:  # standing: the pelvis as high above the floor as a standing one's
            floor = cast(torch.Tensor, obs.floor)
            standing = rest[:, 0, 1] - rest[:, FEET, 1].min(1).values  # SMPL-X's rest pose is Y up
            share = ((pelvis * obs.up).sum(-1) - floor) / standing
            strength = strength * torch.nan_to_num(((share - min_height) / 0.1 + 1.0).clamp(0.0, 1.0), nan=0.0)
        return strength if bool((strength > 0).any()) else None

    def tilt_strength(self, obs: Observation, by_data: torch.Tensor, local: torch.Tensor, transl: torch.Tensor,
                      rest: torch.Tensor) -> torch.Tensor | None:
        """(B,) strength of the pull on each person's pelvis tilt this frame (per radian^2), from the pose the frame
        starts at (`standing` at `pelvis_tilt_min_height`; unknown floor: none); None where no one's is pulled."""
        s = self.settings
        if s.pelvis_tilt_weight <= 0 or not bool(self.mean_up.any()):
            return None
        strength = self.standing(obs, by_data, lambda: self.trunk(local, transl, rest), rest, s.pelvis_tilt_min_height)
        return None if strength is None else strength * s.pelvis_tilt_weight

    def tilted_root(self, local: torch.Tensor, theta: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """(B, 3) the root's axis-angle with the pelvis tilted as on average (`mean_up`), heading kept:
        R* = R Rot(m -> u) = R exp(swing) with u = R^T up the current up direction in the pelvis frame and m the
        mean's; it is theta + J_r^-1(theta) swing (theta (B, 3) the root's axis-angle: no wrap-around near pi)."""
        u = (local[:, 0].transpose(-1, -2) @ up[..., None])[..., 0]
        axis = torch.linalg.cross(self.mean_up.expand_as(u), u, dim=-1)
        sin = axis.norm(dim=-1, keepdim=True)
        cos = u @ self.mean_up[:, None]
        # atan2(0, 0) as atan2(0, 1), both 0: an exported graph's atan2 divides (an unknown up, a prior without gravity)
        cos = torch.where((sin == 0) & (cos == 0), torch.ones_like(cos), cos)
        swing = axis * (torch.atan2(sin, cos) / sin.clamp(min=1e-9))
        return theta + (inverse_right_jacobian(theta) @ swing[..., None])[..., 0]

    def floor_contact(self, obs: Observation, by_data: torch.Tensor, joints: torch.Tensor,
                      rest: torch.Tensor) -> FloorContact | None:
        """The floor's evidence of the legs' length for people standing with hidden legs (`floor_contact_weight`),
        from the frame's answer (`joints` (B, 55, 3))."""
        s = self.settings
        if s.floor_contact_weight <= 0 or not s.calibrate_shape:
            return None
        standing = self.standing(obs, by_data, lambda: (joints[:, 0], joints[:, self.neck] - joints[:, 0]), rest,
                                 s.floor_contact_min_height)
        if standing is None:
            return None
        return FloorContact(self.feet, cast(torch.Tensor, obs.up), cast(torch.Tensor, obs.floor) + SOLE_HEIGHT,
                            standing * s.floor_contact_weight)
