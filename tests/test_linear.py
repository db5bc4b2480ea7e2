"""The exportable SPD solve (solvers/linear.py): LAPACK's answers, an ONNX graph ONNX Runtime runs and TensorRT's
parser takes."""

import io
import warnings

import numpy as np
import onnx
import pytest
import torch

from dposer_ros.backends.onnx_export import onnx_bytes
from dposer_ros.backends.tensorrt_ops import tensorrt_onnx_ops, unsupported_ops
from dposer_ros.prior.layout import DIM
from dposer_ros.prior.model import Normalizer, PosePrior
from dposer_ros.prior.network import ScoreNet
from dposer_ros.prior.sde import SubVPSDE
from dposer_ros.solvers.linear import cholesky_solve_unrolled, cholesky_unrolled


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
