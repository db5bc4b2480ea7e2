"""The exportable SPD solve (solvers/linear.py) and Gauss-Newton step: LAPACK's answers, ONNX graphs that ONNX
Runtime runs to the same numbers and that use only operators TensorRT's parser takes."""

import io
import warnings

import numpy as np
import onnx
import pytest
import roma
import torch

from dposer_ros.backends.onnx_export import onnx_bytes
from dposer_ros.backends.tensorrt_ops import tensorrt_onnx_ops, unsupported_ops
from dposer_ros.body import ForwardKinematics
from dposer_ros.body.jacobian import AttachedPoints
from dposer_ros.keypoints import get_format
from dposer_ros.prior.layout import DIM
from dposer_ros.prior.model import Normalizer, PosePrior
from dposer_ros.prior.network import ScoreNet
from dposer_ros.prior.sde import SubVPSDE
from dposer_ros.solvers.gauss_newton import Pull, gauss_newton_step
from dposer_ros.solvers.linear import block_jacobi_pcg, cholesky_solve_unrolled, cholesky_unrolled
from dposer_ros.solvers.refine import FREE_JOINTS


def spd(batch: int, n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(batch, n, n, generator=g, dtype=dtype)
    return m @ m.transpose(1, 2) + 0.1 * n * torch.eye(n, dtype=dtype)


@pytest.mark.parametrize("n", [1, 3, 66])
def test_unrolled_cholesky_and_solve_match_lapack(n):
    a = spd(4, n)
    b = torch.randn(4, n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(cholesky_unrolled(a), torch.linalg.cholesky(a), atol=1e-10)
    assert torch.allclose(cholesky_solve_unrolled(a, b), torch.linalg.solve(a, b), atol=1e-10)


def test_block_jacobi_pcg_converges_to_the_solve():
    """Exact after n iterations (in exact arithmetic), and the error falls as iterations are added."""
    a = spd(3, 12, seed=5)
    b = torch.randn(3, 12, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    exact = torch.linalg.solve(a, b)
    errors = [float((block_jacobi_pcg(a, b, k) - exact).norm() / exact.norm()) for k in (2, 6, 12)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-8


def test_a_singular_system_stays_finite():
    a = torch.zeros(1, 3, 3, dtype=torch.float64)
    a[0, 0, 0] = 1.0
    assert torch.isfinite(cholesky_solve_unrolled(a, torch.ones(1, 3, 1, dtype=torch.float64))).all()


class _Solve(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return cholesky_solve_unrolled(a, b)


def _export_solve(n: int) -> bytes:
    buf = io.BytesIO()
    a, b = spd(2, n).float(), torch.ones(2, n, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        torch.onnx.export(_Solve(), (a, b), buf, dynamo=False, opset_version=17, input_names=["a", "b"],
                          output_names=["x"], dynamic_axes={k: {0: "batch"} for k in ("a", "b", "x")})
    return buf.getvalue()


def test_the_solve_exports_and_onnx_runtime_agrees():
    ort = pytest.importorskip("onnxruntime")
    n = 66  # a body format's system: 21 joints + the translation
    data = _export_solve(n)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    a = spd(5, n, seed=3).float()
    b = torch.randn(5, n, 1, generator=torch.Generator().manual_seed(4))
    (x,) = session.run(["x"], {"a": a.numpy(), "b": b.numpy()})
    ref = torch.linalg.solve(a.double(), b.double()).numpy()
    assert np.abs(x - ref).max() < 1e-4 * np.abs(ref).max()


def test_exported_graphs_use_only_operators_tensorrt_parses():
    """The solve and the score network, against onnx-tensorrt's support table; an operator outside it fails."""
    assert {"MatMul", "Sqrt", "Div", "Concat", "Slice"} <= tensorrt_onnx_ops()
    assert unsupported_ops(onnx.load_from_string(_export_solve(9))) == set()
    torch.manual_seed(0)
    prior = PosePrior(ScoreNet(hidden=32, blocks=1, time_dim=16, groups=8, dropout=0.0), SubVPSDE(),
                      Normalizer(torch.zeros(DIM), torch.ones(DIM)))
    net = onnx.load_from_string(onnx_bytes(prior))
    assert unsupported_ops(net) == set()
    net.graph.node.add(op_type="Det", input=["x"], output=["det"])  # no TensorRT layer
    assert unsupported_ops(net) == {"Det"}


def test_tensorrt_parses_the_exported_solve():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack's python3-libnvinfer or NVIDIA's wheels)")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(_export_solve(9))
    assert ok, [str(parser.get_error(i)) for i in range(parser.num_errors)]


@pytest.mark.parametrize("name", ["coco17", "mediapipe_hand21_left"])
def test_a_gauss_newton_step_exports_whole_and_agrees(name):
    """One step (the hold and the weak hold as pulls, robust weights) as one ONNX graph: ONNX Runtime gives the
    eager step's rotations; the exportable solve changes the eager step by float rounding only. COCO-17: the
    fingers solved apart; a hand: the normal matrix formed by blocks (`AttachedPoints.gram`)."""
    ort = pytest.importorskip("onnxruntime")
    fmt, fk = get_format(name), ForwardKinematics()
    points = AttachedPoints(fk, fmt.joints, fmt.offsets, FREE_JOINTS)
    g = torch.Generator().manual_seed(0)
    local = roma.rotvec_to_rotmat(torch.randn(3, 55, 3, generator=g) * 0.2)
    transl = torch.zeros(3, 3)
    target = fmt.from_posed(fk.from_rotmat(roma.rotvec_to_rotmat(torch.randn(3, 55, 3, generator=g) * 0.2), transl)).float()
    weight = torch.rand(3, fmt.num_keypoints, generator=g)
    previous = roma.rotmat_to_rotvec(local[:, FREE_JOINTS])

    class Step(torch.nn.Module):
        def __init__(self, exportable: bool) -> None:
            super().__init__()
            self.exportable = exportable

        def forward(self, local, transl, target, weight, previous):
            pulls = [Pull(previous, torch.ones_like(previous)), Pull(previous, torch.full_like(previous[..., :1], 14.0), weak_cm=10.0)]
            return gauss_newton_step(fk, points, local, transl, target, weight, pulls, 1e-2, 10.0, exportable=self.exportable)

    args = (local, transl, target, weight, previous)
    eager = Step(False)(*args)
    assert (Step(True)(*args)[0] - eager[0]).abs().max() < 1e-4
    names = ["local", "transl", "target", "weight", "previous"]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Step(True), args, buf, dynamo=False, opset_version=17, input_names=names,
                          output_names=["local_out", "transl_out"],
                          dynamic_axes={k: {0: "batch"} for k in (*names, "local_out", "transl_out")})
    model = onnx.load_from_string(buf.getvalue())
    assert unsupported_ops(model) == set()
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in zip(names, args)})
    assert np.abs(got[0] - eager[0].numpy()).max() < 1e-4 and np.abs(got[1] - eager[1].numpy()).max() < 1e-5
    more = tuple(torch.cat([a, a[:2]]) for a in args)  # the batch stays dynamic: 5 people through a graph traced at 3
    got = session.run(None, {k: v.numpy() for k, v in zip(names, more)})
    assert np.abs(got[0] - Step(False)(*more)[0].numpy()).max() < 1e-4
