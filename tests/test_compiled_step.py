"""The refiner's step compiled ahead of time (solvers/compiled_step.py): the same step as eager torch at any batch,
the refiner with it answers as without, packages are cached by what shapes them, a failed factorisation falls back
to the eager step, and the serving side compiles in the background. Compiling takes tens of seconds: once here."""

import logging
import os
import shutil
import sys
import time

import pytest
import roma
import torch

from dposer_ros.backends.bench import synthetic_stream
from dposer_ros.backends.solver_process import RefinerCache
from dposer_ros.body import ForwardKinematics
from dposer_ros.keypoints import get_format
from dposer_ros.prior.layout import DIM
from dposer_ros.prior.model import Normalizer, PosePrior
from dposer_ros.prior.network import ScoreNet
from dposer_ros.prior.sde import SubVPSDE
from dposer_ros.solvers.compiled_step import BackgroundCompiler, CompiledStep, WarmStep, package_key, prune_packages
from dposer_ros.solvers.gauss_newton import Pull
from dposer_ros.solvers.refine import FREE_JOINTS, FewStepRefiner, RefineSettings

FMT = get_format("coco17")
SETTINGS = RefineSettings(steps=2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compiled")
    step = CompiledStep.for_refiner(FMT, SETTINGS, folder)  # compiles (tens of seconds)
    assert step is not None and step.path.parent == folder
    return folder


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    return PosePrior(ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8, dropout=0.0), SubVPSDE(),
                     Normalizer(0.05 * torch.randn(DIM), 0.2 + 0.3 * torch.rand(DIM))).eval()


def _pulls(batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    f = len(FREE_JOINTS)
    local = roma.rotvec_to_rotmat(0.3 * torch.randn(batch, 55, 3, generator=g))
    target = FMT.from_posed(ForwardKinematics().from_rotmat(roma.rotvec_to_rotmat(0.3 * torch.randn(batch, 55, 3,
                                                                                                  generator=g)))).float()
    diagonal = [Pull(0.1 * torch.randn(batch, f, 3, generator=g), torch.rand(batch, f, 3, generator=g)),
                Pull(torch.zeros(batch, f, 3), torch.rand(f, 1, generator=g)),
                Pull(roma.rotmat_to_rotvec(local[:, FREE_JOINTS]), 3 * torch.rand(batch, f, 1, generator=g))]
    weak = Pull(roma.rotmat_to_rotvec(local[:, FREE_JOINTS]), 14 * torch.rand(batch, f, 1, generator=g), weak_cm=10.0)
    weight = torch.rand(batch, FMT.num_keypoints, generator=g)
    weight[:, 13:] = 0.0  # the left leg unseen: the pulls decide it
    rest = ForwardKinematics().rest_joints.float().expand(batch, -1, -1).clone()
    return local, torch.zeros(batch, 3), target, weight, diagonal, weak, rest, torch.zeros(batch, FMT.num_keypoints, 3)


def test_the_compiled_step_is_the_eager_step_at_any_batch(cache):
    step = CompiledStep.for_refiner(FMT, SETTINGS, cache, compile_missing=False)
    assert step is not None
    module = WarmStep(FMT, FREE_JOINTS, SETTINGS.damping, SETTINGS.weak_dof_cm)
    for batch in (1, 3, 17, 64):  # one package, the batch dynamic (not the example's 2 baked in anywhere)
        local, transl, target, weight, diagonal, weak, rest, offsets = _pulls(batch, batch)
        pose = roma.rotmat_to_rotvec(local)
        from dposer_ros.solvers.gauss_newton import gauss_newton_step

        for sigma in (SETTINGS.sigma_cm, 4 * SETTINGS.sigma_cm):  # the robust scale is an input (a new track's wider)
            got = step(local, transl, target, weight, diagonal, weak, rest, offsets, pose, sigma)
            assert got is not None
            ref = gauss_newton_step(module.fk, module.points, local, transl, target, weight, [*diagonal, weak],
                                    SETTINGS.damping, sigma, rest_joints=rest, offsets=offsets, pose=pose)
            assert (got[0] - ref[0]).abs().max() < 1e-4 and (got[1] - ref[1]).abs().max() < 1e-5
        assert (got[2] - roma.rotmat_to_rotvec(got[0])).abs().max() < 1e-5  # the next step's axis-angle
        assert not torch.allclose(got[0], local)  # it moved


def test_the_refiner_answers_as_without_it(cache, prior):
    step = CompiledStep.for_refiner(FMT, SETTINGS, cache, compile_missing=False)
    obs, init = synthetic_stream(FMT, 3, seed=1)  # a hidden leg: the prior is asked at every step
    eager, compiled = FewStepRefiner(prior, FMT, SETTINGS), FewStepRefiner(prior, FMT, SETTINGS, compiled=step)
    a, b = eager(obs, init), compiled(obs, init)
    assert step.calls == SETTINGS.steps and step.fallbacks == 0 and 3 in step.verified
    assert (a.joints - b.joints).norm(dim=-1).max() < 1e-4  # metres
    assert (a.pose - b.pose).abs().max() < 1e-4
    calls = step.calls
    new_a, new_b = eager(obs, None), compiled(obs, None)  # a new track: its data-only and prior steps compiled too
    assert step.calls - calls == SETTINGS.cold_start_iters + SETTINGS.cold_prior_steps + SETTINGS.steps
    assert (new_a.joints - new_b.joints).norm(dim=-1).max() < 1e-3


def test_a_failed_factorisation_falls_back_to_the_eager_step(cache, prior):
    step = CompiledStep.for_refiner(FMT, SETTINGS, cache, compile_missing=False)
    obs, init = synthetic_stream(FMT, 2, seed=2)
    reference = FewStepRefiner(prior, FMT, SETTINGS)(obs, init)
    runner = step.runner
    step.runner = lambda *args: tuple(torch.full_like(x, float("nan")) for x in runner(*args))
    out = FewStepRefiner(prior, FMT, SETTINGS, compiled=step)(obs, init)
    assert step.fallbacks == SETTINGS.steps
    assert torch.equal(out.joints, reference.joints)  # every step eager: bit for bit


def test_packages_are_keyed_by_what_shapes_them(cache, tmp_path):
    key = package_key(FMT, FREE_JOINTS, 0.01, 10.0)
    assert key == package_key(FMT, FREE_JOINTS, 0.01, 10.0)
    assert len({key, package_key(FMT, FREE_JOINTS, 0.02, 10.0), package_key(FMT, FREE_JOINTS, 0.01, 5.0),
                package_key(get_format("h36m17"), FREE_JOINTS, 0.01, 10.0)}) == 4
    assert CompiledStep.package_path(FMT, FREE_JOINTS, SETTINGS.damping, SETTINGS.weak_dof_cm, cache) == \
        CompiledStep.for_refiner(FMT, RefineSettings(sigma_cm=5.0), cache, compile_missing=False).path  # an input
    other = RefineSettings(steps=2, weak_dof_cm=5.0)
    assert CompiledStep.for_refiner(FMT, other, cache, compile_missing=False) is None  # not made: not compiled here
    start = time.perf_counter()
    assert CompiledStep.for_refiner(FMT, SETTINGS, cache) is not None
    assert time.perf_counter() - start < 5.0  # cached: loaded, not compiled again
    with pytest.raises(ValueError, match="compiled step was made for"):
        FewStepRefiner(PosePrior(ScoreNet(hidden=16, blocks=1, time_dim=16, groups=8), SubVPSDE(),
                                 Normalizer(torch.zeros(DIM), torch.ones(DIM))), FMT, other,
                       compiled=CompiledStep.for_refiner(FMT, SETTINGS, cache, compile_missing=False))


def test_the_serving_side_compiles_in_the_background_and_takes_it_when_ready(cache, prior, tmp_path, monkeypatch,
                                                                               caplog):
    obs, init = synthetic_stream(FMT, 2, seed=3)
    empty = tmp_path / "empty"
    # a compilation that fails: logged once, eager steps go on
    monkeypatch.setattr(sys, "executable", shutil.which("false") or "/bin/false")
    compiler = BackgroundCompiler(empty)
    solver = RefinerCache(prior, compiler=compiler)
    caplog.set_level(logging.INFO, logger="dposer_ros.solvers")
    assert torch.isfinite(solver(FMT, SETTINGS, obs, init).joints).all()
    assert solver.refiner(FMT, SETTINGS).compiled is None
    for _ in range(50):
        solver(FMT, SETTINGS, obs, init)
        if any("failed" in r.getMessage() for r in caplog.records):
            break
        time.sleep(0.1)
    assert any("compiling the solver's step for coco17 failed" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    # a package in the cache (as a finished background compilation leaves it): taken at the next call
    ready = BackgroundCompiler(cache)
    solver = RefinerCache(prior, compiler=ready)
    out = solver(FMT, SETTINGS, obs, init)
    assert solver.refiner(FMT, SETTINGS).compiled is not None
    assert (out.joints - FewStepRefiner(prior, FMT, SETTINGS)(obs, init).joints).norm(dim=-1).max() < 1e-4
    solver.close()


def test_dposer_compile_reports_a_cached_package_and_refuses_unknown_formats(cache, capsys):
    from dposer_ros.cli import main

    assert main(["compile", "--format", "coco17", "--cache-dir", str(cache)]) == 0
    assert "coco17: " in (out := capsys.readouterr().out) and "(cached)" in out
    assert main(["compile", "--format", "coco17,no_such_format", "--cache-dir", str(cache)]) == 2
    assert "unknown keypoint format 'no_such_format'" in capsys.readouterr().err


def test_the_solve_without_fallback_is_nan_where_the_factorisation_fails():
    from dposer_ros.solvers.gauss_newton import _spd_solve

    good = torch.eye(6) * 2.0
    bad = torch.eye(6)
    bad[4, 4] = -1.0  # not positive definite
    b = torch.ones(2, 6, 1)
    x = _spd_solve(torch.stack([good, bad]), b, exportable=False, fallback=False)
    assert torch.allclose(x[0], b[0] / 2.0) and torch.isnan(x[1]).all()
    assert torch.isfinite(_spd_solve(torch.stack([good, bad]), b, exportable=False)).all()  # with the LU fallback


def test_the_solver_process_loads_the_compiled_step_it_is_told_to_prepare(cache, prior, tmp_path, monkeypatch):
    from dposer_ros.backends.solver_process import SolverProcess

    monkeypatch.setenv("DPOSER_ENGINE_DIR", str(cache))  # the child finds the package there
    path = tmp_path / "prior.pt"
    prior.save(path)
    obs, init = synthetic_stream(FMT, 2, seed=4)
    proc = SolverProcess(path, "torch", 1, compiled_step=True, prepare=(("coco17", SETTINGS),))
    try:
        out = proc(FMT, SETTINGS, obs, init)
    finally:
        proc.close()
    reference = FewStepRefiner(PosePrior.load(path), FMT, SETTINGS)(obs, init)
    assert (out.joints - reference.joints).norm(dim=-1).max() < 1e-4


def test_dposer_compile_says_what_is_wrong_when_compilation_fails(tmp_path, capsys):
    from dposer_ros.cli import main

    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the cache folder should be")
    assert main(["compile", "--format", "coco17", "--cache-dir", str(blocked)]) == 1
    assert "could not compile the solver's step for coco17" in capsys.readouterr().err


def test_a_batch_size_whose_compiled_answer_differs_runs_eagerly(cache, prior, caplog):
    """The first call of each batch size is checked against the eager step: a package that answers wrongly but
    finitely (a size baked into a graph) is refused for that size, and the refiner answers as the eager one."""
    step = CompiledStep.for_refiner(FMT, SETTINGS, cache, compile_missing=False)
    runner = step.runner
    step.runner = lambda *args: tuple(x + 0.01 for x in runner(*args))  # off by 0.01 everywhere, finite
    obs, init = synthetic_stream(FMT, 5, seed=5)
    caplog.set_level(logging.WARNING, logger="dposer_ros.solvers")
    refiner = FewStepRefiner(prior, FMT, SETTINGS, compiled=step)
    out = refiner(obs, init)
    assert 5 in step.refused and 5 not in step.verified and step.calls == 1  # refused at once, not asked again
    assert torch.equal(out.joints, FewStepRefiner(prior, FMT, SETTINGS)(obs, init).joints)
    assert any("differs from the eager one" in r.getMessage() for r in caplog.records)
    refiner(obs, init)
    assert step.calls == 1


def test_old_packages_of_a_format_are_pruned_the_one_in_use_kept(tmp_path):
    made = []
    for i in range(7):  # seven solver versions of coco17, oldest first
        path = tmp_path / f"step-coco17-{i:016x}.pt2"
        path.write_bytes(b"x")
        os.utime(path, (1000 + i, 1000 + i))
        made.append(path)
    other = tmp_path / "step-coco17_foot-0000000000000000.pt2"  # another format whose name starts alike
    other.write_bytes(b"x")
    os.utime(other, (1, 1))
    removed = prune_packages(made[0], keep=4)  # the oldest is loaded again: it becomes the most recent
    assert set(removed) == {made[1], made[2], made[3]}
    assert {p.name for p in tmp_path.iterdir()} == {made[0].name, *(p.name for p in made[4:]), other.name}
    assert prune_packages(made[0], keep=4) == []
