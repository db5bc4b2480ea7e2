"""Which ONNX operators TensorRT's ONNX parser takes (`tensorrt_onnx_ops.yaml`, from onnx-tensorrt's support table),
to check an exported graph where TensorRT itself is not installed."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    import onnx


@cache
def tensorrt_onnx_ops() -> frozenset[str]:
    """The operator names of the support table."""
    text = resources.files(__package__).joinpath("tensorrt_onnx_ops.yaml").read_text()
    return frozenset(yaml.safe_load(text)["supported"])


def unsupported_ops(model: onnx.ModelProto) -> set[str]:
    """Operator types of `model`'s graph (default domain) that TensorRT's ONNX parser does not list."""
    used = {node.op_type for node in model.graph.node if node.domain in ("", "ai.onnx")}
    return used - tensorrt_onnx_ops()
