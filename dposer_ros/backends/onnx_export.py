"""Export the score network to ONNX (dynamic batch), check it against torch, and read exported files back.

The file is self-describing: the prior's normalisation, SDE, network settings and checkpoint sha256 are stored
as ONNX `metadata_props` (key `dposer_ros.prior`, JSON), so the ONNX Runtime and TensorRT engines need no
torch checkpoint, and a TensorRT engine built from the file carries them on in its sidecar JSON.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..prior.layout import DIM, PARTS, part_index
from ..prior.model import CheckpointError, PosePrior, file_sha256
from .base import INPUT_NAMES, LOG, META_KEY, OUTPUT_NAME, QUANT_KEY, BackendError, PriorMeta

if TYPE_CHECKING:
    import onnx

DEFAULT_OPSET = 17
CHECK_TOLERANCE = 1e-4
CHECK_BATCHES = (1, 7, 64)
# expected (batch-free) shape of each graph input/output
IO_SHAPES = {"x": (DIM,), "t": (), "part_mask": (len(PARTS),), OUTPUT_NAME: (DIM,)}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sha256: str
    opset: int
    max_abs_diff: float | None  # torch vs onnxruntime (None: not checked)
    meta: PriorMeta


@dataclass(frozen=True)
class OnnxInfo:
    """A validated exported file."""

    path: Path
    sha256: str
    opset: int
    meta: PriorMeta
    quantized: str | None = None  # how its weights were quantized (backends/quantize.py), None: float32


def _load_prior(prior: PosePrior | str | Path) -> PosePrior:
    if isinstance(prior, PosePrior):
        return prior
    try:
        return PosePrior.load(Path(prior))
    except CheckpointError as err:
        raise BackendError(str(err)) from err


def onnx_bytes(prior: PosePrior, opset: int = DEFAULT_OPSET) -> bytes:
    """The score network as an ONNX model (without metadata), batch dimension dynamic."""
    if opset < 17:
        raise ValueError(f"opset {opset}: at least 17 is needed")
    net = copy.deepcopy(prior.net).float().cpu().eval()
    sample = (torch.zeros(2, DIM), torch.full((2,), 0.5), torch.ones(2, len(PARTS)))
    buf = io.BytesIO()
    batch = {0: "batch"}
    part_index("cpu")  # made outside the trace, so it is one plain constant (and the bytes do not vary)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        # dynamo=False: the TorchScript-based exporter, which needs no onnxscript and gives a plain Gemm graph
        torch.onnx.export(
            net, sample, buf,  # type: ignore[arg-type]  # a file object works; the stubs allow only a path
            dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes={name: batch for name in (*INPUT_NAMES, OUTPUT_NAME)},
        )
    return buf.getvalue()


def export_onnx(
    prior: PosePrior | str | Path,
    out: str | Path,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = CHECK_TOLERANCE,
) -> ExportResult:
    """Write `out` (atomically); with `check`, compare with torch first and refuse (BackendError) above `tolerance`."""
    import onnx

    prior = _load_prior(prior)
    meta = PriorMeta.from_prior(prior)
    model = onnx.load_from_string(onnx_bytes(prior, opset))
    model.producer_name = "dposer_ros"
    # nothing here depends on file names or time: the same prior gives the same bytes (and TensorRT cache key)
    model.doc_string = f"dposer_ros score network eps(x, t, part_mask) of the prior with sha256 {meta.prior_sha256}"
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, meta.to_json()
    for key, value in (("dposer_ros.prior_sha256", meta.prior_sha256), ("dposer_ros.torch", torch.__version__)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    diff = None
    if check:
        diff = check_onnx(data, prior)
        if not diff <= tolerance:
            raise BackendError(f"exported ONNX for {out} differs from torch by {diff:.3g} (> {tolerance:g}); not written")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(out)
    return ExportResult(out, hashlib.sha256(data).hexdigest(), opset, diff, meta)


def random_inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check inputs: standard normal x, t in [1e-3, 1], random part masks (at least one part each)."""
    gen = torch.Generator().manual_seed(seed + batch)
    x = torch.randn(batch, DIM, generator=gen)
    t = 1e-3 + (1 - 1e-3) * torch.rand(batch, generator=gen)
    mask = (torch.rand(batch, len(PARTS), generator=gen) < 0.6).float()
    mask[:, 0] = torch.where(mask.sum(1) == 0, 1.0, mask[:, 0])
    return x, t, mask


def check_onnx(model: bytes | str | Path, prior: PosePrior, batches: tuple[int, ...] = CHECK_BATCHES) -> float:
    """Largest |eps_torch - eps_onnxruntime| (CPU) over random inputs at the given batch sizes."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    net = prior.net.eval()
    worst = 0.0
    for b in batches:
        x, t, m = random_inputs(b)
        with torch.no_grad():
            ref = net(x, t, m).numpy()
        got = session.run([OUTPUT_NAME], {"x": x.numpy(), "t": t.numpy(), "part_mask": m.numpy()})[0]
        if got.shape != ref.shape:
            raise BackendError(f"onnxruntime returned shape {got.shape} for batch {b}, expected {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim]


def read_onnx(path: str | Path) -> OnnxInfo:
    """Validate an exported file (readable, inputs x/t/part_mask and output eps of this code's sizes, metadata);
    every failure is a BackendError naming the file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise BackendError(f"ONNX model {path} not found (write it with `dposer export --prior ... --out {path}`)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and friends for corrupt files
        raise BackendError(f"{path} is not a readable ONNX model ({type(err).__name__}: {err}); "
                           "re-export it with `dposer export`") from err
    if not model.graph.node:
        raise BackendError(f"{path} is not a readable ONNX model (empty graph); re-export it with `dposer export`")
    ios = {v.name: v for v in (*model.graph.input, *model.graph.output)}
    for name, tail in IO_SHAPES.items():
        if name not in ios:
            raise BackendError(f"{path}: no graph {'output' if name == OUTPUT_NAME else 'input'} '{name}' "
                               f"(has {sorted(ios)}); not a dposer_ros score network")
        dims = _dims(ios[name])
        if len(dims) != 1 + len(tail) or any(d != e for d, e in zip(dims[1:], tail)):
            want = ["batch", *tail]
            raise BackendError(f"{path}: '{name}' has shape {dims}, this code's prior needs {want} "
                               f"(pose vector of {DIM} entries, {len(PARTS)} parts)")
        if ios[name].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise BackendError(f"{path}: '{name}' is not float32")
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise BackendError(f"{path}: no '{META_KEY}' metadata (not written by `dposer export`); re-export it")
    meta = PriorMeta.from_json(props[META_KEY], str(path))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    LOG.debug("%s: opset %d, prior sha256 %s", path, opset, meta.prior_sha256)
    return OnnxInfo(path, file_sha256(path), opset, meta, props.get(QUANT_KEY))


def to_mixed_precision(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of an exported model whose Gemm/MatMul layers compute in FP16 (weights stored FP16, activations cast
    in and out) while everything else (sinusoidal time embedding, GroupNorm statistics, masking) stays FP32.

    This is what a strongly typed TensorRT build needs for FP16 (TensorRT >= 10.12 deprecates, 11 removes,
    BuilderFlag.FP16); onnxruntime runs it too, which is how it is tested."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = copy.deepcopy(model)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    half: dict[str, str] = {}
    nodes = []
    for n, node in enumerate(graph.node):
        if node.op_type not in ("Gemm", "MatMul") or not all(name in inits for name in node.input[1:]):
            nodes.append(node)
            continue
        for name in node.input[1:]:
            if name not in half:
                half[name] = name + "__fp16"
                array = numpy_helper.to_array(inits[name]).astype(np.float16)
                graph.initializer.append(numpy_helper.from_array(array, half[name]))
        stem = node.name or f"{node.op_type}_{n}"
        a16, out16 = f"{stem}__in_fp16", f"{stem}__out_fp16"
        nodes.append(helper.make_node("Cast", [node.input[0]], [a16], to=TensorProto.FLOAT16, name=f"{stem}__cast_in"))
        out32 = node.output[0]
        node.input[:] = [a16, *(half[name] for name in node.input[1:])]
        node.output[0] = out16
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [out16], [out32], to=TensorProto.FLOAT, name=f"{stem}__cast_out"))
    used = {name for node in nodes for name in node.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale fp32 annotations of converted tensors
    onnx.checker.check_model(model)
    return model
