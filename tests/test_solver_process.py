"""The refiner in a child process (`dposer_ros.backends.solver_process`): the same answers as in-process, errors
carried across with the child's message, a dead child started again, a clean end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from dposer_ros.backends import select_engine
from dposer_ros.backends.solver_process import RefinerCache, SolverProcess, SolverProcessError, to_numpy, to_torch
from dposer_ros.body import ForwardKinematics
from dposer_ros.keypoints import get_format
from dposer_ros.prior.layout import DIM
from dposer_ros.prior.model import Normalizer, PosePrior
from dposer_ros.prior.motion import LegMotion, MotionNet
from dposer_ros.prior.network import ScoreNet
from dposer_ros.prior.sde import SubVPSDE
from dposer_ros.solvers.refine import RefineSettings
from dposer_ros.solvers.types import Observation

FMT = get_format("coco17")


@pytest.fixture(scope="module")
def prior_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("solver_process") / "prior.pt"
    PosePrior(ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8), SubVPSDE(),
              Normalizer(torch.randn(DIM) * 0.05, torch.rand(DIM) * 0.3 + 0.2)).save(path)
    LegMotion(MotionNet(3, hidden=16), (0.1, 0.2, 0.3), 30.0).save(path.with_name("motion.pt"))
    return path


@pytest.fixture(scope="module")
def solver(prior_path):
    proc = SolverProcess(prior_path, "torch", 1, prior_path.with_name("motion.pt"))
    yield proc
    proc.close()


def observation(people: int = 3, seed: int = 0) -> Observation:
    gen = torch.Generator().manual_seed(seed)
    pose = 0.2 * torch.randn(people, 55, 3, generator=gen)
    transl = torch.tensor([0.0, 0.0, 2.0]) + 0.1 * torch.randn(people, 3, generator=gen)
    points = FMT.from_posed(ForwardKinematics()(pose, transl)).float()
    conf = torch.ones(points.shape[:2])
    conf[:, [13, 15]] = 0.0  # the left knee and ankle hidden: the prior is asked
    return Observation(points, conf, FMT, torch.tensor([0.0, -1.0, 0.0]), torch.tensor(0.9), torch.tensor(1 / 30))


def test_the_child_answers_as_the_refiner_in_this_process_does(solver, prior_path):
    local = RefinerCache(select_engine(prior_path, "torch", threads=1), LegMotion.load(prior_path.with_name("motion.pt")))
    assert solver.backend == "torch-cpu" and solver.motion_loaded and solver.running
    settings = RefineSettings(steps=2)
    far, near = solver(FMT, settings, observation(), None), local(FMT, settings, observation(), None)
    for _ in range(4):  # warm starts: the whole state (history, calibration, memory) crosses and comes back
        far, near = solver(FMT, settings, observation(), far), local(FMT, settings, observation(), near)
    assert far.history is not None and far.calibration is not None
    for name in ("pose", "transl", "joints", "betas", "keypoint_memory", "part_completed"):
        torch.testing.assert_close(getattr(far, name), getattr(near, name), rtol=0, atol=0, equal_nan=True, msg=name)
    assert torch.equal(far.history.rotation, near.history.rotation)


def test_numpy_round_trip_keeps_every_field_and_does_not_rerun_checks():
    obs = observation()
    back = to_torch(to_numpy(obs))
    assert isinstance(back, Observation) and back.format.name == FMT.name
    assert torch.equal(back.confidence, obs.confidence)  # not scaled by the format's weights a second time
    assert torch.equal(back.points, obs.points) and torch.equal(back.floor, obs.floor)


def test_an_error_in_the_child_fails_the_call_with_its_message_and_the_child_goes_on(solver):
    wrong = observation()
    wrong.points = wrong.points[:, :5]  # 5 keypoints where the format has 17: the refiner raises
    with pytest.raises(SolverProcessError, match="in the solver process"):
        solver(FMT, RefineSettings(steps=1), wrong, None)
    assert solver(FMT, RefineSettings(steps=1), observation(), None).joints.shape == (3, 55, 3)


def test_a_killed_child_fails_its_call_and_is_started_again(prior_path):
    proc = SolverProcess(prior_path, "torch", 1)
    try:
        first = proc.pid
        assert first is not None
        many = observation(people=400)
        result: list = []

        def call() -> None:
            try:
                result.append(proc(FMT, RefineSettings(steps=4), many, None))
            except SolverProcessError as err:
                result.append(err)

        worker = threading.Thread(target=call)
        worker.start()
        time.sleep(0.3)  # inside the call
        os.kill(first, signal.SIGKILL)
        worker.join(30.0)
        assert len(result) == 1 and isinstance(result[0], SolverProcessError) and "exited" in str(result[0])
        assert proc(FMT, RefineSettings(steps=1), observation(), None).joints.shape == (3, 55, 3)
        assert proc.restarts == 1 and proc.pid != first and proc.running
    finally:
        proc.close()


def test_a_bad_checkpoint_is_refused_with_the_childs_reason(tmp_path):
    bad = tmp_path / "prior.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SolverProcessError) as err:
        SolverProcess(bad, "torch", 1)
    assert str(bad) in str(err.value) or "checkpoint" in str(err.value).lower()


def test_close_ends_the_child_which_ignores_sigint(prior_path):
    proc = SolverProcess(prior_path, "torch", 1)
    pid = proc.pid
    assert pid is not None
    os.kill(pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group: the parent decides
    time.sleep(0.3)
    assert proc.running and proc(FMT, RefineSettings(steps=1), observation(), None).joints.shape == (3, 55, 3)
    start = time.monotonic()
    proc.close()
    assert not proc.running and time.monotonic() - start < 2.0


def test_the_child_exits_when_its_parent_dies(prior_path, tmp_path):
    """A parent killed outright (no close) leaves no solver process behind."""
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from dposer_ros.backends.solver_process import SolverProcess
        proc = SolverProcess(Path({str(prior_path)!r}), "torch", 1)
        print(proc.pid, flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    pid = int(out.stdout.strip().splitlines()[-1])
    end = time.monotonic() + 10.0
    while time.monotonic() < end and Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "gone"


def test_the_child_loads_int8_weights_when_asked(prior_path, tmp_path, monkeypatch):
    monkeypatch.setenv("DPOSER_ENGINE_DIR", str(tmp_path))  # the child exports and quantizes here
    proc = SolverProcess(prior_path, "onnxruntime", 1, int8=True)
    try:
        assert proc.backend == "onnxruntime-cpu-int8"
        out = proc(FMT, RefineSettings(steps=2), observation(), None)
        assert torch.isfinite(out.joints).all()
    finally:
        proc.close()
    assert any(p.name.endswith(".onnx") and "-int8-" in p.name for p in tmp_path.iterdir())


def test_the_child_prepares_the_warm_frame_graph_of_its_format_when_asked(prior_path, tmp_path, monkeypatch):
    """`frame_graph`: the child exports and loads the graph of the format and settings it is prepared for before it
    says it is ready, and its warm frames answer through it as the eager refiner does here."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("DPOSER_ENGINE_DIR", str(tmp_path))  # the child exports the graph here
    settings = RefineSettings(steps=1)  # one step: a small graph, quick to export and load
    proc = SolverProcess(prior_path, "torch", 1, frame_graph=True, prepare=((FMT.name, settings),))
    try:
        assert any("as one graph" in text for _, text in proc.messages)
        local = RefinerCache(select_engine(prior_path, "torch", threads=1))
        far = near = None
        for _ in range(3):
            far, near = proc(FMT, settings, observation(), far), local(FMT, settings, observation(), near)
        assert float((far.joints - near.joints).abs().max()) < 1e-4
    finally:
        proc.close()
    assert any(p.name.startswith("frame-coco17-") and p.suffix == ".onnx" for p in tmp_path.iterdir())
