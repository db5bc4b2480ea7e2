"""The prior: sub-VP SDE, schedules, pose-vector layout and mirroring, masking, training, checkpoints."""

import math

import numpy as np
import pytest
import roma
import torch

from dposer_ros.body import ForwardKinematics
from dposer_ros.prior.layout import (
    DIFFUSED,
    DIM,
    PARTS,
    SLICES,
    dim_mask,
    from_vector,
    mirror_pose,
    mirror_vector_map,
    to_vector,
    with_conditions,
)
from dposer_ros.prior.model import CheckpointError, Normalizer, PosePrior
from dposer_ros.prior.network import ScoreNet
from dposer_ros.prior.schedule import TruncatedSchedule, UniformSchedule
from dposer_ros.prior.sde import SubVPSDE
from dposer_ros.prior.train import TrainConfig, denoising_loss, lr_factor, visible_parts


def test_sub_vp_marginals_match_the_published_numbers():
    sde = SubVPSDE()
    for t, expected in [(0.05, 0.029), (0.10, 0.104), (0.15, 0.212), (0.25, 0.476)]:
        _, std = sde.mean_std(torch.tensor(t))
        assert float(std) == pytest.approx(expected, abs=1.5e-3)
    mean, std = sde.mean_std(torch.tensor(1.0))
    assert float(mean) < 0.01 and float(std) > 0.99  # T = 1 is (almost) pure noise
    x0 = torch.randn(4, DIM)
    m, s = sde.marginal_prob(x0, torch.full((4,), 0.3))
    assert torch.allclose(m, x0 * sde.mean_std(torch.tensor(0.3))[0])


def test_sub_vp_forward_sde_reproduces_the_marginal_variance():
    """Simulating the forward SDE from x0 = 0 must give the closed-form std (checks drift and diffusion together)."""
    sde = SubVPSDE()
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(20000, 1)
    steps = 400
    for i in range(steps):
        t = torch.full((len(x),), (i + 0.5) / steps * 0.5)
        drift, diffusion = sde.sde(x, t)
        x = x + drift / steps * 0.5 + diffusion * math.sqrt(0.5 / steps) * torch.randn(x.shape, generator=g)
    # for x0 = 0 the marginal variance of sub-VP is std^2
    _, std = sde.mean_std(torch.tensor(0.5))
    assert float(x.std()) == pytest.approx(float(std), rel=0.05)


def test_truncated_schedule_is_the_published_formula_and_uniform_is_random():
    ts = TruncatedSchedule(0.15, 0.05).timesteps(4)
    expected = [0.05 + (4 - s - 1) / 4 * 0.10 for s in range(4)]
    assert torch.allclose(ts, torch.tensor(expected))
    assert ts[0] < 0.15 + 1e-6 and ts[-1] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="t_min <= t_max"):
        TruncatedSchedule(0.1, 0.2)
    u = UniformSchedule().timesteps(1000, torch.Generator().manual_seed(0))
    assert 0.001 <= float(u.min()) and float(u.max()) <= 1.0 and float(u.std()) > 0.25


def test_vector_layout_round_trip_and_left_hand_mirroring():
    pose = torch.randn(5, 55, 3)
    vec = to_vector(pose)
    assert vec.shape == (5, DIM) == (5, 259)
    back, expr = from_vector(vec, pose)
    assert torch.allclose(back, pose) and expr.shape == (5, 100)
    # a left hand equal to the mirror image of the right hand fills both slots with the same numbers
    mirrored = mirror_pose(pose)
    pose[:, 25:40] = mirrored[:, 25:40]
    vec = to_vector(pose)
    assert torch.allclose(vec[:, SLICES["left_hand"]], vec[:, SLICES["right_hand"]])


def test_mirroring_mirrors_the_body_geometrically():
    fk = ForwardKinematics()
    pose = torch.zeros(1, 55, 3)
    pose[0, 0] = torch.tensor([0.1, 0.5, 0.2])
    pose[0, 18] = torch.tensor([0.0, -1.2, 0.3])  # left elbow
    pose[0, 4] = torch.tensor([0.8, 0.0, 0.1])  # left knee
    j = fk(pose).joints[0]
    jm = fk(mirror_pose(pose)).joints[0]
    flip = torch.tensor([-1.0, 1.0, 1.0])
    # mirrored right wrist = left wrist reflected in x (up to the rest skeleton's own asymmetry, ~3 cm)
    assert ((jm[21] * flip) - j[20]).norm() < 0.05
    assert ((jm[5] * flip) - j[4]).norm() < 0.05


def test_masking_zeroes_inputs_and_outputs_of_hidden_parts():
    torch.manual_seed(0)
    net = ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8, dropout=0.0).eval()
    x = torch.randn(3, DIM)
    mask = torch.tensor([[1.0, 0, 0, 0, 1], [0, 1, 1, 0, 0], [1, 1, 1, 0, 1]])
    out = net(x, torch.full((3,), 0.3), mask)
    m = dim_mask(mask)
    assert torch.all(out[m == 0] == 0)
    assert torch.all(out[:, SLICES["gravity"]] == 0)  # a condition is an input only
    # what a hidden part holds does not change the output
    x2 = x.clone()
    x2[0, SLICES["left_hand"]] = 100.0
    assert torch.allclose(net(x2, torch.full((3,), 0.3), mask)[0], out[0])
    g = torch.Generator().manual_seed(1)
    visible = visible_parts(torch.tensor([[1.0, 1, 1, 0]] * 2000), 0.2, g)
    assert visible.sum(1).min() >= 1 and torch.all(visible[:, 3] == 0)
    assert 0.75 < float(visible[:, :3].mean()) < 0.85


def test_loss_only_counts_visible_parts():
    net = ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8, dropout=0.0)
    sde = SubVPSDE()
    x = torch.zeros(8, DIM)
    body = torch.tensor([[1.0, 0, 0, 0, 1]] * 8)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = denoising_loss(net, sde, x, body, 1e-5, g())
    x[:, SLICES["right_hand"]] = 50.0  # hidden part: no effect on the loss
    assert float(denoising_loss(net, sde, x, body, 1e-5, g())) == pytest.approx(float(a))


def test_gravity_is_the_up_direction_in_the_pelvis_frame_and_mirrors_with_the_body():
    """The condition part: R_root^T up, zero when the up direction is unknown; the mirror map keeps it consistent
    (what training's mirror augmentation and the mirror-symmetric prior rely on)."""
    pose = torch.randn(6, 55, 3) * 0.4
    up = torch.tensor([0.0, 1.0, 0.0])
    vec = to_vector(pose, up=up)
    rot = roma.rotvec_to_rotmat(pose[:, 0])
    assert torch.allclose(vec[:, SLICES["gravity"]], (rot.transpose(1, 2) @ up).squeeze(-1), atol=1e-6)
    assert torch.allclose(torch.einsum("bij,bj->bi", rot, vec[:, SLICES["gravity"]]), up.expand(6, 3), atol=1e-6)
    assert torch.all(to_vector(pose)[:, SLICES["gravity"]] == 0)
    perm, sign = mirror_vector_map()
    assert torch.allclose(to_vector(mirror_pose(pose), up=up), sign * vec[:, perm], atol=1e-6)
    assert torch.equal(DIFFUSED[SLICES["gravity"]], torch.zeros(3)) and DIFFUSED.sum() == DIM - 3


def test_conditions_go_into_the_loss_unnoised_and_are_not_scored():
    """The gravity entries are given clean: the loss does not count them, but the network sees their values."""
    torch.manual_seed(0)
    net = ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8, dropout=0.0)
    sde = SubVPSDE()
    x = torch.randn(8, DIM)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    with_up, without = torch.tensor([[1.0, 0, 0, 0, 1]] * 8), torch.tensor([[1.0, 0, 0, 0, 0]] * 8)
    a = float(denoising_loss(net, sde, x, with_up, 1e-5, g()))
    x2 = x.clone()
    x2[:, SLICES["gravity"]] += 3.0
    assert float(denoising_loss(net, sde, x2, with_up, 1e-5, g())) != pytest.approx(a)  # an input
    assert float(denoising_loss(net, sde, x2, without, 1e-5, g())) == pytest.approx(
        float(denoising_loss(net, sde, x, without, 1e-5, g())))  # masked: not even an input
    assert with_conditions(torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0]]), True).tolist() == [[1, 0, 0, 0, 1], [0, 1, 1, 0, 0]]


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=1000, warmup=100, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.01)
    assert lr_factor(99, cfg) == pytest.approx(1.0)
    assert lr_factor(1000, cfg) == pytest.approx(0.1)
    assert lr_factor(550, cfg) == pytest.approx(0.55)


def _tiny_prior() -> PosePrior:
    torch.manual_seed(0)
    net = ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8, dropout=0.0)
    norm = Normalizer(torch.randn(DIM) * 0.1, torch.rand(DIM) + 0.5)
    return PosePrior(net, SubVPSDE(), norm, {"note": "test"}).eval()


def test_checkpoint_round_trip(tmp_path):
    prior = _tiny_prior()
    prior.save(tmp_path / "p.pt")
    loaded = PosePrior.load(tmp_path / "p.pt")
    x, t, m = torch.randn(2, DIM), torch.tensor([0.1, 0.5]), torch.ones(2, len(PARTS))
    assert torch.equal(loaded.eps(x, t, m), prior.eps(x, t, m))
    assert torch.equal(loaded.mean, prior.mean) and loaded.meta["note"] == "test" and len(loaded.meta["sha256"]) == 64
    assert torch.allclose(loaded.denoise(x, t, m), prior.denoise(x, t, m))


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        PosePrior.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        PosePrior.load(tmp_path / "junk.pt")
    prior = _tiny_prior()
    prior.save(tmp_path / "p.pt")
    payload = torch.load(tmp_path / "p.pt", weights_only=True)
    torch.save({**payload, "format": "something/else"}, tmp_path / "fmt.pt")
    with pytest.raises(CheckpointError, match="not a dposer prior checkpoint"):
        PosePrior.load(tmp_path / "fmt.pt")
    torch.save({**payload, "layout": {"parts": list(PARTS), "dims": {"body": 69, "left_hand": 45, "right_hand": 45,
                                                                         "face": 103}}}, tmp_path / "layout.pt")
    with pytest.raises(CheckpointError, match="part layout"):
        PosePrior.load(tmp_path / "layout.pt")
    state = dict(payload["state_dict"])
    state["out.weight"] = state["out.weight"][:10]
    torch.save({**payload, "state_dict": state}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="weights do not match"):
        PosePrior.load(tmp_path / "shape.pt")
    torch.save({**payload, "std": torch.full((DIM,), float("nan"))}, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="finite"):
        PosePrior.load(tmp_path / "nan.pt")


def test_normalizer_ignores_absent_parts():
    vec = torch.randn(100, DIM) * 3 + 1
    mask = torch.tensor([[1.0, 0, 0, 0, 0]] * 100)
    norm = Normalizer.fit(vec, mask)
    assert torch.allclose(norm.mean[SLICES["body"]], vec[:, SLICES["body"]].mean(0), atol=1e-5)
    assert torch.all(norm.mean[SLICES["face"]] == 0) and torch.all(norm.std[SLICES["face"]] == 1)
    z = norm.normalize(vec)
    assert abs(float(z[:, SLICES["body"]].mean())) < 1e-4 and np.isclose(float(z[:, SLICES["body"]].std()), 1.0, atol=0.05)


def test_solver_settings_files_match_the_library_defaults():
    """config/solvers/*.yaml document the solvers' settings; they must not drift from the dataclasses."""
    from pathlib import Path

    from dposer_ros.settings import load_settings
    from dposer_ros.solvers.full import FullSettings
    from dposer_ros.solvers.refine import RefineSettings

    config = Path(__file__).resolve().parents[1] / "config" / "solvers"
    assert load_settings(RefineSettings, config / "refine.yaml") == RefineSettings()
    assert load_settings(FullSettings, config / "full.yaml") == FullSettings()
    with pytest.raises(ValueError, match="unknown settings"):
        load_settings(RefineSettings, None, stepz=3)
    with pytest.raises(ValueError, match="between 1 and 8"):
        load_settings(RefineSettings, config / "refine.yaml", steps=9)


def test_every_model_file_is_checked_the_same_way(tmp_path):
    """One validation for the prior, the completion model and the baselines: a missing, corrupt or foreign file is
    a CheckpointError naming the file (the VAE and GMM loads used to raise whatever torch / numpy raised)."""
    from dposer_ros.prior.classical import GMMPrior, VAEPrior
    from dposer_ros.prior.completion import Completion

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a model")
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "someone-else/1"}, foreign)
    for load in (PosePrior.load, Completion.load, VAEPrior.load, GMMPrior.load):
        with pytest.raises(CheckpointError, match="not found"):
            load(tmp_path / "missing")
        with pytest.raises(CheckpointError, match="garbage.bin.*not a readable"):
            load(garbage)
    for load in (PosePrior.load, Completion.load, VAEPrior.load):
        with pytest.raises(CheckpointError, match="foreign.pt"):
            load(foreign)
    np.savez(tmp_path / "gmm.npz", weights_body=np.ones(2))
    with pytest.raises(CheckpointError, match="not a GMM prior"):
        GMMPrior.load(tmp_path / "gmm.npz")
