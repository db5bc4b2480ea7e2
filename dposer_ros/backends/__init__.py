"""Inference backends for the prior's score network: torch, ONNX Runtime, TensorRT, behind one interface.

    engine = select_engine("models/dposer_cpu/prior.pt")       # tensorrt > onnxruntime > torch, logged
    refiner = FewStepRefiner(engine, get_format("coco17"))      # any engine stands in for the PosePrior

`dposer export` writes the ONNX file (with the prior's metadata), `dposer bench` compares the backends.
Importing this package imports neither onnxruntime nor tensorrt (nor rclpy); they load when an engine is made.
"""

from .base import LOG, BackendError, Engine, PriorMeta
from .engines import OnnxRuntimeEngine, TorchEngine
from .onnx_export import ExportResult, check_onnx, export_onnx, read_onnx, to_mixed_precision
from .select import BACKENDS, select_engine
from .tensorrt_engine import TensorRTEngine, default_engine_dir, engine_cache_key, engine_cache_path

__all__ = [
    "BACKENDS",
    "LOG",
    "BackendError",
    "Engine",
    "ExportResult",
    "OnnxRuntimeEngine",
    "PriorMeta",
    "TensorRTEngine",
    "TorchEngine",
    "check_onnx",
    "default_engine_dir",
    "engine_cache_key",
    "engine_cache_path",
    "export_onnx",
    "read_onnx",
    "select_engine",
    "to_mixed_precision",
]
