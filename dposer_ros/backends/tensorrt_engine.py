"""TensorRT FP16 engine built from the exported ONNX, cached per GPU / TensorRT version / ONNX content.

Written against the TensorRT Python API of 8.6-10.x (JetPack 5/6, desktop wheels) and 11.x:
  * Builder -> NetworkDefinition (explicit batch) <- OnnxParser; one optimization profile over the batch;
  * FP16: with BuilderFlag.FP16 (TensorRT < 11) the sinusoidal time embedding and the normalisation layers are
    pinned to FP32 (PREFER_PRECISION_CONSTRAINTS); where the flag no longer exists (TensorRT 11 removed weak
    typing) the network is built strongly typed from `to_mixed_precision` of the ONNX (FP16 matmuls only);
  * inference: execution context, set_input_shape / set_tensor_address on torch CUDA tensors, execute_async_v3
    on a dedicated stream.
The serialized engine is stored under `models/engines/` with a sidecar JSON (build facts + the prior's metadata),
so an engine file is self-describing; its name is the cache key, and an engine whose key no longer matches
(other GPU, TensorRT version or ONNX content) is rebuilt.

Not run on hardware in the session that wrote it (no GPU there): see README, "Deployment".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import torch

from ..paths import default_engine_dir
from ..prior.layout import DIM, PARTS
from .base import INPUT_NAMES, LOG, OUTPUT_NAME, BackendError, PriorMeta
from .onnx_export import random_inputs, read_onnx, to_mixed_precision

ENGINE_FORMAT = "dposer_ros.trt/1"
DEFAULT_MAX_BATCH = 128  # rows: the refiner asks the prior twice per person (body, hands), so 64 people
DEFAULT_OPT_BATCH = 8


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "gpu"


def engine_cache_key(onnx_sha256: str, gpu_name: str, compute_capability: tuple[int, int], trt_version: str,
                     fp16: bool = True, max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = DEFAULT_OPT_BATCH) -> dict:
    """Everything an engine depends on. Engines are not portable across GPU models, compute capabilities or
    TensorRT versions, and must follow the ONNX content (its sha256 covers the weights and the metadata)."""
    return {
        "format": ENGINE_FORMAT,
        "onnx_sha256": onnx_sha256,
        "gpu": gpu_name,
        "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}",
        "tensorrt": trt_version,
        "fp16": bool(fp16),
        "batch": [1, int(opt_batch), int(max_batch)],
    }


def engine_cache_path(onnx_path: str | Path, key: dict, cache_dir: str | Path | None = None) -> Path:
    """<cache>/<onnx stem>.<gpu>-sm<cc>.trt<version>.<onnx sha256[:16]>.<options hash>.engine"""
    options = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    cc = key["compute_capability"].replace(".", "")
    name = (f"{Path(onnx_path).stem}.{_slug(key['gpu'])}-sm{cc}.trt{key['tensorrt']}."
            f"{key['onnx_sha256'][:16]}.{options}.engine")
    return Path(cache_dir or default_engine_dir()) / name


def load_engine_metadata(engine_path: str | Path) -> tuple[dict, PriorMeta]:
    """The sidecar of a cached engine: (build facts incl. the cache key, the prior's metadata)."""
    sidecar = Path(engine_path).with_suffix(".json")
    try:
        data = json.loads(sidecar.read_text())
        return data, PriorMeta.from_json(data["prior"], str(sidecar))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BackendError(f"{sidecar}: engine metadata unreadable ({type(err).__name__}: {err})") from err


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as err:  # also a broken install (missing libnvinfer) ends here
        raise BackendError(f"tensorrt is not importable ({type(err).__name__}: {err}); on Jetson install JetPack's "
                           "python3-libnvinfer, on a desktop the `tensorrt` wheels from NVIDIA's index") from err
    return trt


def _trt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


class _Logger:
    """A tensorrt.ILogger that forwards to logging (created lazily: the base class lives in tensorrt)."""

    @staticmethod
    def make(trt):
        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity, msg) -> None:
                level = {trt.ILogger.INTERNAL_ERROR: 50, trt.ILogger.ERROR: 40, trt.ILogger.WARNING: 30,
                         trt.ILogger.INFO: 10}.get(severity, 10)
                LOG.log(level, "tensorrt: %s", msg)

        return Logger()


def pin_fp32_layers(network, trt) -> int:
    """Weakly typed FP16 builds: keep FP32 where FP16 breaks this network. The sinusoidal time embedding sees
    arguments up to ~1000 rad (999 t * frequency), where FP16's spacing of 0.5 turns sin/cos into noise; the
    GroupNorm statistics (mean/variance reductions) lose precision too. Pinned: every layer on the path from
    input `t` to the first matrix multiply, and every normalisation / reduction layer. Returns the count."""
    consumers: dict[str, list] = {}
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    for layer in layers:
        for j in range(layer.num_inputs):
            tensor = layer.get_input(j)
            if tensor is not None:
                consumers.setdefault(tensor.name, []).append(layer)
    t_input = next(network.get_input(i) for i in range(network.num_inputs) if network.get_input(i).name == "t")
    pinned, seen, frontier = [], set(), [t_input]
    while frontier:
        tensor = frontier.pop()
        for layer in consumers.get(tensor.name, []):
            if layer.name in seen or layer.type == trt.LayerType.MATRIX_MULTIPLY:
                continue
            seen.add(layer.name)
            pinned.append(layer)
            frontier.extend(layer.get_output(k) for k in range(layer.num_outputs))
    norm_types = {getattr(trt.LayerType, n) for n in ("NORMALIZATION", "REDUCE") if hasattr(trt.LayerType, n)}
    pinned += [layer for layer in layers if layer.type in norm_types and layer.name not in seen]
    count = 0
    for layer in pinned:
        outputs = [layer.get_output(k) for k in range(layer.num_outputs)]
        if not outputs or any(o.dtype != trt.float32 for o in outputs):
            continue  # shape / index / boolean layers: no float precision to pin
        layer.precision = trt.float32
        for k in range(layer.num_outputs):
            layer.set_output_type(k, trt.float32)
        if hasattr(layer, "compute_precision"):  # INormalizationLayer (TensorRT >= 8.6)
            layer.compute_precision = trt.float32
        count += 1
    return count


class TensorRTEngine:
    """FP16 TensorRT engine of an exported file; builds (or loads from the cache) on construction."""

    def __init__(self, onnx_path: str | Path, device: int | str | torch.device = "cuda", cache_dir: str | Path | None = None,
                 fp16: bool = True, max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = DEFAULT_OPT_BATCH,
                 workspace_mb: int = 1024, rebuild: bool = False, tolerance: float = 5e-2) -> None:
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise BackendError("tensorrt: torch sees no CUDA device (a CUDA build of torch and a GPU are needed)")
        self.trt = trt
        self.device = torch.device(device if not isinstance(device, int) else f"cuda:{device}")
        if self.device.type != "cuda":
            raise BackendError(f"tensorrt runs on CUDA devices, not {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        info = read_onnx(onnx_path)
        self.onnx, self.meta = info, info.meta
        self.mean, self.std, self.sde = info.meta.mean, info.meta.std, info.meta.make_sde()
        props = torch.cuda.get_device_properties(self.device)
        self.key = engine_cache_key(info.sha256, props.name, (props.major, props.minor), trt.__version__, fp16,
                                    max_batch, opt_batch)
        self.fp16, self.max_batch, self.opt_batch = fp16, max_batch, opt_batch
        self.workspace = workspace_mb << 20
        self.tolerance = tolerance
        self.path = engine_cache_path(info.path, self.key, cache_dir)
        self._logger = _Logger.make(trt)
        self._runtime = trt.Runtime(self._logger)
        self.stream = torch.cuda.Stream(self.device)
        engine = None if rebuild else self._load_cached()
        if engine is None:
            engine = self._build_and_store()
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{self.path}: TensorRT could not create an execution context (GPU memory?)")
        self._check_io()
        self.name = "tensorrt-fp16" if fp16 else "tensorrt-fp32"

    # -- cache --------------------------------------------------------------------------------------------
    def _load_cached(self):
        if not self.path.is_file():
            LOG.info("tensorrt: no cached engine %s; building one", self.path.name)
            return None
        try:
            facts, _ = load_engine_metadata(self.path)
            if facts.get("key") != self.key:
                raise BackendError(f"{self.path}: sidecar key {facts.get('key')} != expected {self.key}")
            engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise BackendError(f"{self.path}: TensorRT could not deserialize it (corrupt, or another TensorRT "
                                   "version / GPU)")
        except (BackendError, OSError, RuntimeError) as err:
            LOG.warning("tensorrt: cached engine unusable, rebuilding: %s", err)
            if self.path.exists():  # keep it for inspection, out of the cache's way
                self.path.replace(self.path.with_name(self.path.name + ".bad"))
            return None
        LOG.info("tensorrt: loaded cached engine %s", self.path)
        return engine

    def _build_and_store(self):
        start = time.perf_counter()
        data, mode = self._build()
        seconds = time.perf_counter() - start
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BackendError(f"tensorrt: the engine just built from {self.onnx.path} does not deserialize")
        diff = self._check_against_onnx(engine)
        if diff is not None and not diff <= self.tolerance:
            raise BackendError(f"tensorrt: engine built from {self.onnx.path} differs from onnxruntime by "
                               f"{diff:.3g} (> {self.tolerance:g}); not cached")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f"{self.onnx.path.stem}.*.engine"):
            if stale != self.path:
                try:
                    facts, _ = load_engine_metadata(stale)
                    same_gpu = facts["key"]["gpu"] == self.key["gpu"]
                except BackendError:
                    same_gpu = True
                if same_gpu:  # engines of other GPUs may share the folder (network home); leave those
                    LOG.info("tensorrt: removing stale engine %s", stale.name)
                    stale.unlink(missing_ok=True)
                    stale.with_suffix(".json").unlink(missing_ok=True)
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        sidecar = {
            "key": self.key, "engine_file": self.path.name, "onnx_file": str(self.onnx.path),
            "precision_mode": mode, "build_seconds": round(seconds, 1), "max_abs_diff_vs_onnxruntime": diff,
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "prior": self.meta.to_json(),
        }
        self.path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))
        tmp.replace(self.path)
        LOG.info("tensorrt: built %s in %.0f s (%s, max |diff| vs onnxruntime %s)", self.path, seconds, mode,
                 "unchecked" if diff is None else f"{diff:.2g}")
        return engine

    def _build(self) -> tuple[bytes, str]:
        trt = self.trt
        builder = trt.Builder(self._logger)
        strongly_typed = self.fp16 and not hasattr(trt.BuilderFlag, "FP16")
        flags = 0
        if _trt_major(trt) < 10:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if strongly_typed:
            import onnx

            model = to_mixed_precision(onnx.load(str(self.onnx.path))).SerializeToString()
            mode = "strongly typed, FP16 matmuls (to_mixed_precision)"
        else:
            model = self.onnx.path.read_bytes()
            mode = "BuilderFlag.FP16, time embedding + normalisation pinned FP32" if self.fp16 else "FP32"
        if not parser.parse(model):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"{self.onnx.path}: TensorRT's ONNX parser rejected it: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace)
        if self.fp16 and not strongly_typed:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
            LOG.info("tensorrt: %d layers pinned to FP32", pin_fp32_layers(network, trt))
        profile = builder.create_optimization_profile()
        for name, width in (("x", DIM), ("t", None), ("part_mask", len(PARTS))):
            def shape(n: int, w: int | None = width) -> tuple[int, ...]:
                return (n,) if w is None else (n, w)
            profile.set_shape(name, shape(1), shape(self.opt_batch), shape(self.max_batch))
        config.add_optimization_profile(profile)
        with torch.cuda.device(self.device):
            serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"tensorrt: building an engine from {self.onnx.path} failed (see the tensorrt log)")
        return bytes(serialized), mode

    # -- inference ------------------------------------------------------------------------------------------
    def _check_io(self) -> None:
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        if sorted(names) != sorted((*INPUT_NAMES, OUTPUT_NAME)):
            raise BackendError(f"{self.path}: engine tensors {names}, expected {[*INPUT_NAMES, OUTPUT_NAME]}")
        for name in names:
            if engine.get_tensor_dtype(name) != self.trt.float32:
                raise BackendError(f"{self.path}: engine tensor '{name}' is {engine.get_tensor_dtype(name)}, not float32")

    def _run(self, context, x: torch.Tensor, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        out = torch.empty((x.shape[0], DIM), device=self.device, dtype=torch.float32)
        for name, tensor in (("x", x), ("t", t), ("part_mask", m)):
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)  # inputs were written on the current stream
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError(f"{self.path}: TensorRT execution failed")
        current.wait_stream(self.stream)
        return out

    def eps(self, x: torch.Tensor, t: torch.Tensor, part_mask: torch.Tensor) -> torch.Tensor:
        out_device = x.device
        args = [v.detach().to(self.device, torch.float32).contiguous() for v in (x, t, part_mask)]
        with torch.cuda.device(self.device):
            chunks = [self._run(self.context, *(a[s : s + self.max_batch] for a in args))
                      for s in range(0, x.shape[0], self.max_batch)]
            out = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
        return out.to(out_device)

    def _check_against_onnx(self, engine) -> float | None:
        """Largest |eps_tensorrt - eps_onnxruntime(CPU)| on random inputs (FP16 tolerance); None without onnxruntime."""
        try:
            import onnxruntime as ort
        except ImportError as err:
            LOG.warning("tensorrt: onnxruntime not importable (%s): the new engine is not checked", err)
            return None
        session = ort.InferenceSession(str(self.onnx.path), providers=["CPUExecutionProvider"])
        context = engine.create_execution_context()
        worst = 0.0
        for b in sorted({1, self.opt_batch, self.max_batch}):
            x, t, m = random_inputs(b)
            t = t.clamp(max=0.5)  # the solvers use small t
            ref = torch.from_numpy(session.run([OUTPUT_NAME], {"x": x.numpy(), "t": t.numpy(), "part_mask": m.numpy()})[0])
            with torch.cuda.device(self.device):
                got = self._run(context, *(v.to(self.device).contiguous() for v in (x, t, m))).cpu()
            worst = max(worst, float((got - ref).abs().max()))
        return worst
