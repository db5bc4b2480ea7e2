"""Completion of hidden body joints: masks, training, files, and its use in the few-step refiner."""

import pytest
import torch

from dposer_ros.body import ForwardKinematics
from dposer_ros.body.skeleton import smplx_neutral
from dposer_ros.evaluation.methods import build_methods
from dposer_ros.keypoints import get_format
from dposer_ros.prior.completion import BODY, Completion, CompletionError, random_hidden, subtree_matrix, train_completion
from dposer_ros.prior.layout import DIM
from dposer_ros.prior.model import Normalizer, PosePrior
from dposer_ros.prior.network import ScoreNet
from dposer_ros.prior.sde import SubVPSDE
from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings
from dposer_ros.solvers.types import BodyState, Observation

NAMES = smplx_neutral().names


def _body(name: str) -> int:
    return BODY.index(NAMES.index(name))


def test_subtrees_and_random_masks():
    sub = subtree_matrix()
    below_hip = {NAMES[BODY[k]] for k in torch.nonzero(sub[_body("left_hip")]).squeeze(1).tolist()}
    assert below_hip == {"left_hip", "left_knee", "left_ankle", "left_foot"}
    masks = random_hidden(4000, torch.Generator().manual_seed(0))
    assert masks.shape == (4000, len(BODY)) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert 0.1 < masks.mean() < 0.6 and masks.sum(1).gt(0).float().mean() > 0.9  # most samples hide something


def _correlated_poses(n: int, seed: int = 0) -> torch.Tensor:
    """Synthetic poses whose body joints all share one random rotation (so hidden ones follow from seen ones)."""
    g = torch.Generator().manual_seed(seed)
    pose = torch.zeros(n, 55, 3)
    pose[:, list(BODY)] = (torch.randn(n, 1, 3, generator=g) * 0.5).expand(-1, len(BODY), -1)
    return pose


def test_training_learns_hidden_joints_from_seen_ones():
    model = train_completion(_correlated_poses(2000), steps=300, batch=128, hidden=64, layers=2, progress=False)
    pose = _correlated_poses(200, seed=1)
    hidden = torch.zeros(200, len(BODY), dtype=torch.bool)
    hidden[:, [_body("left_knee"), _body("right_elbow")]] = True
    out = model(pose, hidden)
    truth = pose[:, list(BODY)]
    assert torch.allclose(out[~hidden], truth[~hidden], atol=1e-5)  # seen joints pass through
    err = (out[hidden] - truth[hidden]).norm(dim=-1).mean()
    mean_err = (model.mean.unflatten(-1, (len(BODY), 3)).expand(200, -1, -1)[hidden] - truth[hidden]).norm(dim=-1).mean()
    assert err < 0.3 * mean_err


def test_file_round_trip_and_bad_files(tmp_path):
    model = train_completion(_correlated_poses(300), steps=5, batch=32, hidden=32, layers=1, progress=False)
    path = tmp_path / "completion.pt"
    model.save(path)
    loaded = Completion.load(path)
    pose = _correlated_poses(4, seed=2)
    hidden = torch.rand(4, len(BODY), generator=torch.Generator().manual_seed(0)) < 0.5
    assert torch.equal(loaded(pose, hidden), model(pose, hidden))
    with pytest.raises(CompletionError, match="not found"):
        Completion.load(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CompletionError, match="garbage.pt.*not a readable"):
        Completion.load(tmp_path / "garbage.pt")
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CompletionError, match="not a completion model"):
        Completion.load(tmp_path / "other.pt")
    torch.save({**payload, "mean": torch.zeros(5)}, tmp_path / "shape.pt")
    with pytest.raises(CompletionError, match="'mean' must be 63"):
        Completion.load(tmp_path / "shape.pt")
    torch.save({**payload, "net_config": {"hidden": 99, "layers": 1}}, tmp_path / "weights.pt")
    with pytest.raises(CompletionError, match="do not match"):
        Completion.load(tmp_path / "weights.pt")


class _Fixed:
    """A stand-in completion that proposes one pose for every hidden joint."""

    def __init__(self, pose: torch.Tensor) -> None:
        self.pose = pose

    def __call__(self, pose: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return torch.where(hidden[..., None], self.pose[:, list(BODY)], pose[:, list(BODY)])


def test_refiner_pulls_hidden_body_joints_to_the_completion(tmp_path):
    torch.manual_seed(0)
    prior = PosePrior(ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8, dropout=0.0), SubVPSDE(),
                      Normalizer(torch.zeros(DIM), torch.full((DIM,), 0.3))).eval()
    fmt = get_format("coco17")
    pose = torch.zeros(1, 55, 3)
    kp = fmt.from_posed(ForwardKinematics()(pose, torch.zeros(1, 3))).float()
    conf = torch.ones(kp.shape[:2])
    conf[0, fmt.keypoint_names.index("left_wrist")] = 0.0  # nothing sees the elbow turn
    proposal = torch.zeros(1, 55, 3)
    elbow = NAMES.index("left_elbow")
    proposal[0, elbow] = torch.tensor([0.0, 0.0, 1.0])
    proposal[0, NAMES.index("neck")] = torch.tensor([0.8, 0.0, 0.0])  # a seen joint: must not be pulled there
    settings = RefineSettings(hidden_prior_weight=100.0, hidden_prior_ramp=False)
    state = BodyState(pose, torch.zeros(1, 3))
    obs = Observation(kp, conf, fmt)
    plain = FewStepRefiner(prior, fmt, settings)(obs, state)
    completed = FewStepRefiner(prior, fmt, settings, completion=_Fixed(proposal))(obs, state)
    assert (completed.pose[0, elbow] - proposal[0, elbow]).norm() < 0.3 < (plain.pose[0, elbow] - proposal[0, elbow]).norm()
    # the targets: the completion's for the hidden body joints, the diffusion prior's for every other joint
    with_completion = FewStepRefiner(prior, fmt, settings, completion=_Fixed(proposal))
    seen = with_completion.seen_joints(conf)
    args = (pose, 0.5, torch.Generator().manual_seed(0))
    target = with_completion.prior_pulls(*args, {"seen": seen})[0].target
    reference = FewStepRefiner(prior, fmt, settings).prior_pulls(*args, {"seen": seen})[0].target
    free = list(with_completion.free)
    hidden = torch.zeros(len(free), dtype=torch.bool)
    hidden[1:22] = ~seen[0, 1:22]
    assert hidden[free.index(elbow)] and not hidden[free.index(NAMES.index("neck"))]
    assert torch.allclose(target[0, hidden], proposal[0, [free[k] for k in torch.nonzero(hidden).squeeze(1)]])
    assert torch.allclose(target[0, ~hidden], reference[0, ~hidden])
    # the evaluation method loads the file it is given
    train_completion(_correlated_poses(300), steps=5, batch=32, hidden=32, layers=1, progress=False).save(tmp_path / "c.pt")
    factories, errors = build_methods(["few_step_completion"], prior, {"completion": str(tmp_path / "c.pt")})
    assert not errors and factories["few_step_completion"](fmt).completion is not None
    _, errors = build_methods(["few_step_completion"], prior, {"completion": str(tmp_path / "none.pt")})
    assert "not found" in errors["few_step_completion"]


def test_cli_names_a_missing_dataset_and_writes_nothing(tmp_path, capsys):
    from dposer_ros.cli import main

    assert main(["completion", "--dataset", str(tmp_path / "none.npz"), "--out", str(tmp_path / "c.pt")]) == 2
    assert "none.npz not found" in capsys.readouterr().err
    assert not (tmp_path / "c.pt").exists()
