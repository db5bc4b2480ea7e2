"""The gravity condition of the shipped prior: the up direction it is told changes how it completes hidden legs."""

from pathlib import Path

import pytest
import torch

from dposer_ros.body import ForwardKinematics
from dposer_ros.keypoints import get_format
from dposer_ros.prior.model import PosePrior
from dposer_ros.solvers.refine import FewStepRefiner
from dposer_ros.solvers.types import Observation

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "dposer_cpu" / "prior.pt"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped prior is not in this checkout")
def test_hidden_legs_follow_the_up_direction():
    """An upright body (SMPL-X: y up) with both legs hidden, 10 frames: told the true up direction the prior
    completes legs near the standing truth; told the body is upside down or lying, it bends them (a prior that
    ignored the condition would answer alike)."""
    torch.manual_seed(0)
    prior = PosePrior.load(SHIPPED)
    fmt, fk = get_format("h36m17"), ForwardKinematics()
    pose = torch.zeros(1, 55, 3)
    pose[0, 16, 2], pose[0, 17, 2] = -1.2, 1.2  # arms down
    posed = fk(pose, torch.zeros(1, 3))
    points = fmt.from_posed(posed).float()
    conf = torch.ones(1, fmt.num_keypoints)
    conf[0, [k for k, name in enumerate(fmt.keypoint_names) if any(s in name for s in ("hip", "knee", "ankle"))]] = 0.0
    legs = [4, 5, 7, 8]  # knees, ankles

    def hidden_error_mm(up: torch.Tensor) -> float:
        refiner, out = FewStepRefiner(prior, fmt), None
        for _ in range(10):
            out = refiner(Observation(points, conf, fmt, up), out)
        return float((out.joints[0, legs] - posed.joints[0, legs].float()).norm(dim=-1).mean()) * 1000.0

    upright = hidden_error_mm(torch.tensor([0.0, 1.0, 0.0]))
    for wrong in (torch.tensor([0.0, -1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])):
        assert upright < 0.7 * hidden_error_mm(wrong)
    assert upright < 80.0
