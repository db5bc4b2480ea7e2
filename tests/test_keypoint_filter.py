"""The per-keypoint Kalman filter (solvers/keypoint_filter.py), in the refiner and in the node's tracks."""

from __future__ import annotations

import math

import pytest
import roma
import torch
from test_solvers import _keypoints, prior  # noqa: F401 (prior: the small untrained prior fixture)

from dposer_ros.keypoints import get_format
from dposer_ros.solvers.keypoint_filter import KeypointFilter, filter_keypoints
from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings
from dposer_ros.solvers.types import BodyState, Observation

DT = 1 / 30


def _walk(frames: int, people: int = 2, keypoints: int = 4, speed: float = 1.0) -> torch.Tensor:
    """(T, B, K, 3) points moving along x at `speed` m/s, each person and keypoint from its own place."""
    gen = torch.Generator().manual_seed(0)
    start = torch.rand(people, keypoints, 3, generator=gen)
    t = torch.arange(frames, dtype=torch.float32)[:, None, None, None] * DT
    return start + t * torch.tensor([speed, 0.0, 0.0])


def _run(truth: torch.Tensor, noisy: torch.Tensor, seen: torch.Tensor, noise: float, psd: float = 3.0):
    state, outs = None, []
    for i in range(truth.shape[0]):
        conf = seen[i].float()
        fitted, state = filter_keypoints(state, noisy[i], conf, torch.full((truth.shape[1],), DT),
                                         torch.full((truth.shape[1],), noise), psd, 0.2)
        outs.append((fitted, state))
    return outs


def test_the_filter_denoises_a_moving_keypoint_and_passes_exact_input_through():
    truth = _walk(60)
    gen = torch.Generator().manual_seed(1)
    noisy = truth + 0.02 * torch.randn(truth.shape, generator=gen)
    seen = torch.ones(truth.shape[:3], dtype=torch.bool)
    outs = _run(truth, noisy, seen, 0.02)
    raw = (noisy[20:] - truth[20:]).norm(dim=-1).mean()
    filtered = torch.stack([f for f, _ in outs[20:]]) - truth[20:]
    assert filtered.norm(dim=-1).mean() < 0.8 * raw  # after it has learnt the velocity: less error than the data
    velocity = outs[-1][1].velocity  # about the walk's 1 m/s (a decaying velocity model reads it somewhat low)
    assert 0.6 < float(velocity[..., 0].mean()) < 1.2 and float(velocity[..., 1:].abs().mean()) < 0.3
    exact = _run(truth, truth, seen, 0.0)  # noise 0: the data is the answer, bit for bit
    assert all(torch.equal(f, truth[i]) for i, (f, _) in enumerate(exact))


def test_a_hidden_keypoint_moves_on_with_its_velocity_and_drifts_boundedly():
    truth = _walk(40, speed=1.5)
    seen = torch.ones(truth.shape[:3], dtype=torch.bool)
    seen[30:, 0, 1] = False  # hidden after a second
    outs = _run(truth, truth, seen, 0.01)
    first_hidden = outs[30][1].position[0, 1]
    last_seen = truth[29, 0, 1]
    assert (first_hidden - truth[30, 0, 1]).norm() < 0.5 * (last_seen - truth[30, 0, 1]).norm()
    assert not torch.isnan(outs[30][0][0, 1]).any()  # the fitted points keep the (unused) observation there
    # hidden for a long time: it keeps its velocity about tau = 0.2 s, so it drifts at most ~speed x tau
    gone = torch.ones(200, 2, 4, dtype=torch.bool)
    gone[30:, 0, 1] = False
    long = _run(_walk(200, speed=1.5), _walk(200, speed=1.5), gone, 0.01)
    drift = (long[-1][1].position[0, 1] - truth[29, 0, 1]).norm()
    assert drift < 1.5 * 0.2 + 0.05


def test_a_keypoint_lost_for_long_restarts_at_its_observation():
    truth = _walk(3)
    seen = torch.ones(truth.shape[:3], dtype=torch.bool)
    _, state = _run(truth, truth, seen, 0.02)[-1]
    state.covariance[0, 2, 0] = 1.0  # its uncertainty grew past the reset (0.5 m std)
    far = truth[2] + 3.0
    fitted, after = filter_keypoints(state, far, torch.ones(2, 4), torch.full((2,), DT), torch.full((2,), 0.02), 3.0, 0.2)
    assert torch.equal(fitted[0, 2], far[0, 2]) and torch.equal(after.velocity[0, 2], torch.zeros(3))
    assert (fitted[0, 1] - far[0, 1]).norm() > 1.0  # the others follow their track, not a 3 m jump at once


def test_filter_state_travels_with_the_tracks():
    _, state = _run(_walk(5, people=3), _walk(5, people=3), torch.ones(5, 3, 4, dtype=torch.bool), 0.02)[-1]
    parts = state.split()
    assert all(torch.equal(p.position, state.select(i).position) for i, p in enumerate(parts))
    joined = KeypointFilter.cat(parts)
    assert joined is not None and torch.equal(joined.covariance, state.covariance)
    other = KeypointFilter(torch.zeros(1, 5, 3), torch.zeros(1, 5, 3), torch.zeros(1, 5, 3))
    assert KeypointFilter.cat([parts[0], other]) is None
    body = BodyState(torch.zeros(3, 55, 3), torch.zeros(3, 3), keypoint_filter=state)
    assert torch.equal(BodyState.cat(body.split()).keypoint_filter.velocity, state.velocity)
    assert BodyState.cat([body.select(0), BodyState(torch.zeros(1, 55, 3), torch.zeros(1, 3))]).keypoint_filter is None


def test_observation_noise_is_checked():
    fmt = get_format("coco17")
    pts = torch.zeros(2, fmt.num_keypoints, 3)
    conf = torch.ones(2, fmt.num_keypoints)
    assert Observation(pts, conf, fmt, noise=torch.tensor(0.02)).noise.shape == (2,)
    assert math.isnan(float(Observation(pts, conf, fmt, noise=torch.tensor([0.02, float("nan")])).noise[1]))
    for bad in (-0.01, float("inf"), 1e20):
        with pytest.raises(ValueError, match="noise"):
            Observation(pts, conf, fmt, noise=torch.tensor(bad))


def _person_stream(frames: int, noise: float, hide: float):
    """A person walking sideways at 1 m/s: (T, 1, K, 3) truth, noisy points, confidences with `hide` of the
    keypoints hidden at random per frame."""
    fmt, kp, _ = _keypoints("h36m17", batch=1)
    gen = torch.Generator().manual_seed(3)
    truth = kp[None] + (torch.arange(frames, dtype=torch.float32) * DT)[:, None, None, None] * torch.tensor([1.0, 0, 0])
    noisy = truth + noise * torch.randn(truth.shape, generator=gen)
    conf = (torch.rand(truth.shape[:3], generator=gen) >= hide).float() * 0.85
    return fmt, truth, noisy, conf


def _stream_error(prior, fmt, truth, noisy, conf, settings, noise):  # noqa: F811
    refiner = FewStepRefiner(prior, fmt, settings)
    state, errors = None, []
    for i in range(truth.shape[0]):
        obs = Observation(noisy[i], conf[i], fmt, interval=None if i == 0 else torch.tensor(DT),
                          noise=None if noise is None else torch.tensor(noise))
        out = refiner(obs, state)
        state = out.select(0)
        if i >= 10:
            posed = refiner.fk.from_rotmat(roma.rotvec_to_rotmat(out.pose), out.transl, out.rest_joints)
            errors.append((refiner.points.positions(posed, out.keypoint_offsets) - truth[i]).norm(dim=-1).mean())
    return float(torch.stack(errors).mean()), state


def test_the_refiner_filters_where_the_noise_is_told(prior):  # noqa: F811 (the fixture)
    """Told the sensor's noise, the refiner fits filtered keypoints: less error on a noisy, randomly occluded walk
    than without; not told (or `keypoint_filter` off), the answers are those of a refiner without the filter."""
    fmt, truth, noisy, conf = _person_stream(30, 0.02, 0.3)
    settings = RefineSettings(steps=1)
    told, state = _stream_error(prior, fmt, truth, noisy, conf, settings, 0.02)
    untold, plain = _stream_error(prior, fmt, truth, noisy, conf, settings, None)
    off, off_state = _stream_error(prior, fmt, truth, noisy, conf, RefineSettings(steps=1, keypoint_filter=False), 0.02)
    assert state.keypoint_filter is not None and plain.keypoint_filter is None and off_state.keypoint_filter is None
    assert untold == off and torch.equal(plain.pose, off_state.pose)
    assert told < 0.9 * untold
    seen = conf[-1, 0] > 0.1  # the memory keeps the filtered places: a keypoint hidden next is held there
    assert torch.equal(state.keypoint_memory[0, seen], state.keypoint_filter.position[0, seen])


@pytest.mark.parametrize("value", ["-1", "inf", "1e30"])
def test_the_demo_refuses_a_bad_keypoint_noise_before_it_starts(value, capsys):
    from dposer_ros.cli import main

    assert main(["demo", "--keypoint-noise-cm", value]) == 2
    assert "--keypoint-noise-cm" in capsys.readouterr().err


@pytest.mark.parametrize("carry", [1.0, 0.0])
def test_a_body_keypoint_is_carried_by_its_velocity_on_its_first_hidden_frame_only(prior, carry):  # noqa: F811
    """`keypoint_carry_frames`: a body keypoint on its first hidden frame is held where the filter carries it, one
    hidden longer and every hand keypoint at its last filtered place (0: every one there)."""
    fmt = get_format("coco_wholebody133")
    refiner = FewStepRefiner(prior, fmt, RefineSettings(steps=1, keypoint_carry_frames=carry))
    k = fmt.num_keypoints
    age = (torch.arange(k) % 2 * 3.0)[None]  # every other keypoint hidden for three frames already
    init = BodyState(torch.zeros(1, 55, 3), torch.zeros(1, 3), keypoint_memory=torch.zeros(1, k, 3), keypoint_age=age)
    carried = KeypointFilter(torch.full((1, k, 3), 0.05), torch.zeros(1, k, 3), torch.zeros(1, k, 3))
    obs = Observation(torch.zeros(1, k, 3), torch.zeros(1, k), fmt)  # every keypoint hidden
    held, weight = refiner._held_keypoints(obs, init, carried)
    moved = held[0].norm(dim=-1) > 0
    expect = (~refiner.in_hand & (age[0] == 0)) if carry else torch.zeros(k, dtype=torch.bool)
    assert torch.equal(moved, expect) and (expect.sum() > 0) == bool(carry)
    assert torch.allclose(held[0, moved], torch.tensor(0.05)) and (weight > 0).all()
