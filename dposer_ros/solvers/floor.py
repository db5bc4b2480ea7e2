"""The floor a person stands on, as Gauss-Newton rows: feet never sink below it, and the lowest foot rests on it.

Where a frame knows its up direction and the floor's height along it (a robot's base frame: the ground is z = 0),
the floor says how far the legs reach down even while no keypoint sees them: a squat's hidden legs must bend, a
standing person's reach the ground. Each ankle (SMPL-X joint) sits at least its clearance above the floor (the mean
SMPL-X body's ankle above its sole; `ankle_clearance_cm`, checked against the mannequin mesh in the tests): one-sided
rows push an ankle that is below up, and the lowest ankle is pulled down to the floor. The ball of the foot is left
out: its height turns with the ankle, which few formats see (measured: lifting it lifted whole legs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..body.jacobian import AttachedPoints
from ..body.kinematics import ForwardKinematics, Posed
from ..body.skeleton import smplx_neutral

FOOT_POINTS = ("left_ankle", "right_ankle")
LEG_JOINTS = ("left_hip", "right_hip", "left_knee", "right_knee")


@dataclass
class Floor:
    """The ground plane {x : up . x = height} under B people; NaN height: unknown (no rows)."""

    up: torch.Tensor  # (B, 3) unit
    height: torch.Tensor  # (B,) metres along up

    def __post_init__(self) -> None:
        if self.height.shape != self.up.shape[:1]:
            raise ValueError(f"floor heights {tuple(self.height.shape)} do not match up {tuple(self.up.shape)}")


class FloorContact:
    """Rows of the floor term for a solver over the free joints `free`: `rows(posed, floor)` -> Jacobian (B, R,
    3F + 3) and residuals (B, R) in centimetres, weighted (R = the two ankles)."""

    def __init__(self, fk: ForwardKinematics, free, clearance_cm: float, below_weight: float,
                 contact_weight: float) -> None:
        names = smplx_neutral().names
        joints = [names.index(n) for n in FOOT_POINTS]
        self.points = AttachedPoints(fk, joints, torch.zeros(len(joints), 3).numpy(), free)
        # the legs alone answer to the floor: the pelvis and trunk are the seen keypoints' (the floor moving them
        # tilted a hidden pelvis and swung the legs forward)
        legs = [names.index(n) for n in LEG_JOINTS]
        self.columns = torch.tensor([float(int(j) in legs) for j in free for _ in range(3)] + [0.0] * 3)
        self.clearance = clearance_cm / 100.0
        self.below_weight, self.contact_weight = below_weight, contact_weight

    @property
    def active(self) -> bool:
        return self.below_weight > 0 or self.contact_weight > 0

    def rows(self, posed: Posed, floor: Floor) -> tuple[torch.Tensor, torch.Tensor]:
        pts = self.points.positions(posed)  # (B, 2, 3)
        known = torch.isfinite(floor.height)
        height = torch.where(known, floor.height, 0.0)
        above = ((pts * floor.up[:, None]).sum(-1) - height[:, None] - self.clearance) * 100.0  # cm
        lowest = torch.nn.functional.one_hot(above.argmin(1), above.shape[1]).bool()
        weight = torch.where(above < 0, self.below_weight, torch.where(lowest, self.contact_weight, 0.0))
        sw = (weight * known[:, None]).sqrt()
        jac = self.points.jacobian(posed, pts, scale=100.0 * sw)  # (B, 6, 3F + 3)
        jac_up = (jac.unflatten(1, (-1, 3)) * floor.up[:, None, :, None]).sum(2) * self.columns  # (B, 2, 3F + 3)
        return jac_up, above * sw
