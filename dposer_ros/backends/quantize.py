"""The score network with int8 weights for ONNX Runtime on a CPU (dynamic quantization).

`onnxruntime.quantization.quantize_dynamic` stores every MatMul weight as int8 (one scale per output channel) and
quantizes the activations per call (`DynamicQuantizeLinear` + `MatMulInteger`); the time embedding and the group
norms stay float32. On a CPU the network's cost is its weights' memory traffic, so a quarter of the bytes is most
of the gain (bench/RESULTS.md, "The prior with int8 weights"). The file keeps the exported file's metadata (the
prior's normalisation, SDE and sha256) and is cached beside it, keyed by the exported file's sha256.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .base import LOG, QUANT_KEY, BackendError
from .onnx_export import OnnxInfo, read_onnx

QUANT_SCHEME = "int8 weights per output channel, dynamic int8 activations (onnxruntime quantize_dynamic)"


def int8_path(source: OnnxInfo) -> Path:
    """Where the int8 file of an exported file is cached: beside it, named by the source's sha256."""
    return source.path.with_name(f"{source.path.stem}-int8-{source.sha256[:12]}.onnx")


def quantize_int8(source: str | Path, out: str | Path | None = None) -> OnnxInfo:
    """The int8 file of an exported file (`dposer export`): read from the cache when there, else written (atomically).

    Raises BackendError when onnxruntime's quantization tools are missing or the result does not read back."""
    info = read_onnx(source)
    path = Path(out) if out is not None else int8_path(info)
    if path.is_file():
        try:
            cached = read_onnx(path)
        except BackendError as err:
            LOG.warning("%s; quantizing again", err)
        else:
            if cached.quantized and cached.meta.prior_sha256 == info.meta.prior_sha256:
                return cached
            LOG.warning("%s is not an int8 file of this prior; quantizing again", path)
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise BackendError(f"int8 weights need onnx and onnxruntime's quantization tools ({err}); "
                           "pip install onnx onnxruntime") from err
    path.parent.mkdir(parents=True, exist_ok=True)
    LOG.info("quantizing %s to int8 weights: %s (first use)", info.path, path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        quantize_dynamic(str(info.path), str(staged), weight_type=QuantType.QInt8, per_channel=True)
        model = onnx.load(str(staged))
        entry = model.metadata_props.add()
        entry.key, entry.value = QUANT_KEY, f"{QUANT_SCHEME}; from sha256 {info.sha256}"
        onnx.save(model, str(staged))
        os.replace(staged, path)
    return read_onnx(path)
