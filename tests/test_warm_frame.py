"""A warm frame's prior steps as one graph (solvers/warm_frame.py): the same steps as the eager refiner, exported
whole to ONNX with operators TensorRT parses, run by ONNX Runtime with a dynamic batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dposer_ros.backends.bench import synthetic_stream
from dposer_ros.keypoints import get_format
from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings
from dposer_ros.solvers.warm_frame import INPUTS, OUTPUTS, OnnxFrame, WarmFrame, frame_inputs, onnx_frame_bytes

PRIOR = Path(__file__).resolve().parents[1] / "models" / "dposer_cpu" / "prior.pt"
pytestmark = pytest.mark.skipif(not PRIOR.is_file(), reason="the shipped prior models/dposer_cpu/prior.pt is missing")


@pytest.fixture(scope="module")
def prior():
    from dposer_ros.prior.model import PosePrior

    return PosePrior.load(PRIOR)


@pytest.fixture(scope="module")
def refiner(prior):
    """Two prior steps a frame (the shipped four make a graph ONNX Runtime takes about a minute to load here; two
    chain the steps as well: the predicted noise carried from one to the next)."""
    return FewStepRefiner(prior, get_format("coco17"), RefineSettings(steps=2))


def _frame_steps(refiner, persons: int = 3):
    """What a warm frame hands its steps (a hidden leg: the prior asked), captured from the refiner's own frame."""
    captured = {}

    def capture(refiner, local, transl, *steps):
        captured["args"] = (local, transl, *steps)
        return None  # the eager steps answer

    obs, init = synthetic_stream(refiner.format, persons, seed=0, hide_leg=True)
    refiner.frame = capture
    try:
        refiner(obs, init)
    finally:
        refiner.frame = None
    return captured["args"]


@torch.no_grad()
def _eager(refiner, args):
    local, transl, schedule, carry, *rest = args
    return refiner._prior_steps(local, transl, None, schedule, dict(carry), *rest)


def _inputs(refiner, args):
    local, transl, schedule, carry, factor, zero, up, tilt, held, weak, target, weight, rest, offsets, gen = args
    return frame_inputs(refiner, local, transl, carry, factor, up, tilt, held, weak, target, weight, rest, offsets)


@pytest.fixture(scope="module")
def onnx_model(refiner, prior):
    return onnx_frame_bytes(refiner, prior)


@pytest.fixture(scope="module")
def session(onnx_model):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])


def test_the_graph_module_takes_the_eager_steps(refiner, prior):
    """In torch, the traced module (the exportable solve) gives the eager frame's rotations: the same code."""
    args = _frame_steps(refiner)
    eager = _eager(refiner, args)
    with torch.no_grad():
        got = WarmFrame(refiner, prior, exportable=True)(*_inputs(refiner, args))
    assert float((got[0] - eager[0]).abs().max()) < 1e-4 and float((got[1] - eager[1]).abs().max()) < 1e-5


def test_the_whole_frame_exports_with_tensorrt_operators_and_onnx_runtime_agrees(refiner, prior, onnx_model, session):
    import onnx

    from dposer_ros.backends.tensorrt_ops import unsupported_ops

    assert not prior.training  # the exporter restores the module's mode: the shared prior stays in eval (no dropout)
    assert unsupported_ops(onnx.load_from_string(onnx_model)) == set()
    args = _frame_steps(refiner)
    eager = _eager(refiner, args)
    inputs = _inputs(refiner, args)
    got = session.run(list(OUTPUTS), {name: x.numpy() for name, x in zip(INPUTS, inputs)})
    assert np.abs(got[0] - eager[0].numpy()).max() < 1e-4 and np.abs(got[1] - eager[1].numpy()).max() < 1e-5
    more = tuple(torch.cat([x, x[:2]]) for x in inputs)  # the batch is dynamic: 5 people through a graph traced at 3
    five = session.run(list(OUTPUTS), {name: x.numpy() for name, x in zip(INPUTS, more)})
    assert five[0].shape == (5, 55, 3, 3) and np.abs(five[0][:3] - got[0]).max() < 1e-5


def test_the_graph_takes_the_tilt_and_the_motion_models_legs_as_the_eager_steps(refiner, session):
    """The pelvis-tilt pull towards a known up direction and the motion model's legs (inputs computed once a
    frame) enter the graph as they enter the eager steps."""
    local, transl, schedule, carry, factor, zero, up, tilt, held, weak, target, weight, rest, offsets, gen = _frame_steps(refiner)
    batch = local.shape[0]
    up = torch.tensor([0.0, 1.0, 0.0]).expand(batch, 3).clone()
    tilt = refiner._tilt_scale(torch.tensor([300.0, 0.0, 150.0]))
    legs = 0.3 * torch.randn(batch, len(refiner.legs), 3, generator=torch.Generator().manual_seed(1))
    hidden = torch.zeros(batch, len(refiner.legs), dtype=torch.bool)
    hidden[0] = True
    carry = {**carry, "up": up, "motion": {"legs": legs, "hidden": hidden}}
    args = (local, transl, schedule, carry, factor, zero, up, tilt, held, weak, target, weight, rest, offsets, gen)
    eager = _eager(refiner, args)
    plain = _eager(refiner, (local, transl, schedule, {**carry, "motion": None}, factor, zero, up, None, held, weak,
                             target, weight, rest, offsets, gen))
    assert float((eager[0] - plain[0]).abs().max()) > 1e-2  # the tilt and the legs change the answer ...
    got = session.run(list(OUTPUTS), {name: x.numpy() for name, x in zip(INPUTS, _inputs(refiner, args))})
    assert np.abs(got[0] - eager[0].numpy()).max() < 1e-4  # ... and the graph follows


def test_the_refiner_answers_through_the_cached_graph_and_falls_back_to_eager(refiner, prior, onnx_model, session,
                                                                            tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    import dposer_ros.solvers.warm_frame as warm_frame

    exports = []
    monkeypatch.setattr(warm_frame, "onnx_frame_bytes", lambda r, p: exports.append(r) or onnx_model)
    monkeypatch.setattr(ort, "InferenceSession", lambda path, *a, **k: session)  # the module's, made from those bytes
    obs, init = synthetic_stream(refiner.format, 2, seed=0, hide_leg=True)
    eager = refiner(obs, init)
    graph = OnnxFrame.load(refiner, prior, tmp_path)
    assert graph.path.parent == tmp_path and graph.path.name.startswith("frame-coco17-")
    assert graph.path.read_bytes() == onnx_model
    assert OnnxFrame.load(refiner, prior, tmp_path).path == graph.path and len(exports) == 1  # cached: not exported again
    other = FewStepRefiner(refiner.prior.engine, refiner.format, RefineSettings(steps=2, prior_weight=2.0))
    assert OnnxFrame.load(other, prior, tmp_path).path != graph.path and len(exports) == 2  # a setting: another graph
    refiner.frame = graph
    try:
        got = refiner(obs, init)
        assert graph.calls == 1 and graph.verified == {2} and graph.fallbacks == 0
        assert float((got.joints - eager.joints).abs().max()) < 1e-4
        assert refiner(obs, None).joints.shape == eager.joints.shape and graph.calls == 1  # a new track: eager
        graph.session = _Failing()
        again = refiner(obs, init)  # a failed run: the eager steps answer, counted
        assert graph.fallbacks == 1 and torch.equal(again.joints, eager.joints)
        graph.session = _Off(session)  # a runtime that computes something else: refused at the size's first call
        obs3, init3 = synthetic_stream(refiner.format, 3, seed=0, hide_leg=True)
        plain = refiner(obs3, init3)
        assert graph.refused == {3} and torch.equal(plain.joints, _eager_answer(refiner, obs3, init3).joints)
    finally:
        refiner.frame = None
    with pytest.raises(ValueError, match="device"):
        OnnxFrame.load(refiner, prior, tmp_path, device="npu")


def _eager_answer(refiner, obs, init):
    frame, refiner.frame = refiner.frame, None
    try:
        return refiner(obs, init)
    finally:
        refiner.frame = frame


class _Off:
    def __init__(self, session) -> None:
        self.session = session

    def run(self, outputs, feed):
        local, transl, pose = self.session.run(outputs, feed)
        return [local @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32), transl, pose]

    def get_providers(self):
        return ["CPUExecutionProvider"]


class _Failing:
    def run(self, *args, **kwargs):
        raise RuntimeError("no memory left on the device")


def test_a_graph_needs_the_diffusion_refiner_with_a_deterministic_truncated_schedule(prior):
    from dposer_ros.solvers.baselines import NoPriorRefiner

    for settings in (RefineSettings(schedule="uniform"), RefineSettings(noise=True)):
        with pytest.raises(ValueError, match="truncated schedule"):
            WarmFrame(FewStepRefiner(prior, get_format("coco17"), settings), prior)
    with pytest.raises(ValueError, match="NoPriorRefiner"):
        WarmFrame(NoPriorRefiner(prior, get_format("coco17")), prior)


def test_a_serving_process_prepares_the_graph_of_its_start_settings_only(refiner, prior, onnx_model, session, tmp_path,
                                                                         monkeypatch, caplog):
    """`FrameGraphs` in the node's `RefinerCache`: the format and settings prepared at start answer through the
    graph; a refiner of other settings (changed at run time) takes eager steps, said once."""
    ort = pytest.importorskip("onnxruntime")
    import logging

    import dposer_ros.solvers.warm_frame as warm_frame
    from dposer_ros.backends.solver_process import RefinerCache
    from dposer_ros.solvers.warm_frame import FrameGraphs, frame_device

    monkeypatch.setattr(warm_frame, "onnx_frame_bytes", lambda r, p: onnx_model)
    monkeypatch.setattr(ort, "InferenceSession", lambda path, *a, **k: session)
    assert frame_device("tensorrt") == ("tensorrt" if torch.cuda.is_available() else "cpu")
    cache = RefinerCache(prior, frames=FrameGraphs(prior, "cpu", cache_dir=tmp_path))
    settings = refiner.settings
    cache.prepare_frame(refiner.format, settings)
    assert cache.refiner(refiner.format, settings).frame is not None
    assert cache.step_status() == "eager; warm frames as one graph: coco17 (CPUExecutionProvider)"
    obs, init = synthetic_stream(refiner.format, 2, seed=0, hide_leg=True)
    got = cache(refiner.format, settings, obs, init)
    assert float((got.joints - _eager_answer(refiner, obs, init).joints).abs().max()) < 1e-4
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dposer_ros.solvers"):
        other = RefineSettings(steps=2, prior_weight=3.0)
        assert cache.refiner(refiner.format, other).frame is None
        cache.refiner(get_format("h36m17"), settings)
    assert sum("no warm-frame graph" in r.getMessage() for r in caplog.records) == 2  # once per format and settings
