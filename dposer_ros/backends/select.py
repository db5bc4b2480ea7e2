"""`select_engine`: the best backend that works here, falling back (and logging why) to the next one."""

from __future__ import annotations

from pathlib import Path

import torch

from ..prior.model import CheckpointError, PosePrior
from .base import LOG, BackendError, Engine
from .onnx_export import export_onnx, file_sha256, read_onnx

BACKENDS = ("tensorrt", "onnxruntime", "torch")
FALLBACKS = {"auto": BACKENDS, "tensorrt": BACKENDS, "onnxruntime": ("onnxruntime", "torch"), "torch": ("torch",)}


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def default_onnx_path(prior_path: Path, engine_dir: Path | None = None) -> Path:
    """Beside the prior (`prior.onnx`) when that exists, else an export in the engine folder keyed by the prior's sha256."""
    from .tensorrt_engine import default_engine_dir

    beside = prior_path.with_suffix(".onnx")
    if beside.is_file():
        return beside
    return Path(engine_dir or default_engine_dir()) / f"{prior_path.stem}-{file_sha256(prior_path)[:12]}.onnx"


def select_engine(
    prior_path: str | Path | None = None,
    backend: str = "auto",
    onnx_path: str | Path | None = None,
    *,
    device: str = "auto",
    threads: int | None = None,
    engine_dir: str | Path | None = None,
    fp16: bool = True,
    max_batch: int | None = None,
    int8: bool = False,
) -> Engine:
    """An engine for the prior, by preference: auto/tensorrt -> tensorrt, onnxruntime, torch;
    onnxruntime -> onnxruntime, torch; torch -> torch.

    tensorrt needs the `tensorrt` package and a CUDA GPU; onnxruntime and tensorrt run `onnx_path` (default: see
    `default_onnx_path`; exported on first use when the prior is given); torch needs `prior_path`. When an
    ONNX file and a prior are both given, the file must have been exported from that prior (sha256 recorded in
    its metadata). `int8`: ONNX Runtime on a CPU runs the network with int8 weights (`quantize_int8`, cached
    beside the ONNX file; TensorRT and torch ignore it). Each skipped backend is logged on logger
    `dposer_ros.backends` with the reason (INFO when `auto` merely finds tensorrt absent, WARNING otherwise);
    BackendError when none works.
    """
    if backend not in FALLBACKS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {sorted(FALLBACKS)}")
    if prior_path is None and onnx_path is None:
        raise ValueError("select_engine needs a prior checkpoint, an ONNX file, or both")
    device = _resolve_device(device)
    prior_path = Path(prior_path) if prior_path is not None else None
    engine_dir = Path(engine_dir) if engine_dir is not None else None
    order = FALLBACKS[backend]
    reasons: list[str] = []
    onnx_info = None
    prior_sha = file_sha256(prior_path) if prior_path is not None and prior_path.is_file() else None

    def resolve_onnx():
        nonlocal onnx_info, onnx_path
        if onnx_info is None:
            if onnx_path is None:
                if prior_sha is None:
                    raise BackendError(f"prior checkpoint {prior_path} not found, and no ONNX file given")
                onnx_path = default_onnx_path(prior_path, engine_dir)
                if not onnx_path.is_file():
                    LOG.info("exporting %s to %s (first use)", prior_path, onnx_path)
                    export_onnx(prior_path, onnx_path)
            info = read_onnx(onnx_path)
            if prior_sha is not None and info.meta.prior_sha256 != prior_sha:
                raise BackendError(
                    f"{info.path} was exported from a prior with sha256 {info.meta.prior_sha256[:16]}..., but "
                    f"{prior_path} has {prior_sha[:16]}...: re-export it with "
                    f"`dposer export --prior {prior_path} --out {info.path}`")
            onnx_info = info
        return onnx_info

    for i, name in enumerate(order):
        nxt = order[i + 1] if i + 1 < len(order) else None
        try:
            engine = _make(name, prior_path, resolve_onnx, device, threads, engine_dir, fp16, max_batch, int8)
        except BackendError as err:
            expected = backend == "auto" and name == "tensorrt" and getattr(err, "unavailable", False)
            level = 20 if expected else 30
            reasons.append(f"{name}: {err}")
            LOG.log(level, "backend %s not used: %s%s", name, err, f"; falling back to {nxt}" if nxt else "")
            continue
        LOG.info("inference backend: %s%s", engine.name, f" (asked for {backend})" if backend != "auto" else "")
        return engine
    raise BackendError("no inference backend can run the prior: " + " | ".join(reasons))


def _unavailable(message: str) -> BackendError:
    err = BackendError(message)
    err.unavailable = True  # the backend is simply not installed / no GPU, nothing is broken
    return err


def _make(name, prior_path, resolve_onnx, device, threads, engine_dir, fp16, max_batch, int8) -> Engine:
    if name == "tensorrt":
        from .tensorrt_engine import DEFAULT_MAX_BATCH, TensorRTEngine, import_tensorrt

        try:
            import_tensorrt()
        except BackendError as err:
            raise _unavailable(str(err)) from err
        if device == "cpu" or not torch.cuda.is_available():
            raise _unavailable("no CUDA GPU" + (" (device=cpu requested)" if device == "cpu" else " visible to torch"))
        info = resolve_onnx()
        return TensorRTEngine(info.path, device=device, cache_dir=engine_dir, fp16=fp16,
                              max_batch=max_batch or DEFAULT_MAX_BATCH)
    if name == "onnxruntime":
        from .engines import OnnxRuntimeEngine

        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise _unavailable(f"onnxruntime is not importable ({err})") from err
        info = resolve_onnx()
        if int8 and device == "cpu":
            from .quantize import quantize_int8

            info = quantize_int8(info.path)
        elif int8:
            LOG.warning("int8 weights are for ONNX Runtime on a CPU; running float32 on %s", device)
        return OnnxRuntimeEngine(info.path, device=device, threads=threads)
    if name == "torch":
        from .engines import TorchEngine

        if prior_path is None:
            raise BackendError("the torch backend needs the prior checkpoint (prior_path), only an ONNX file was given")
        try:
            prior = PosePrior.load(prior_path)
        except CheckpointError as err:
            raise BackendError(str(err)) from err
        if threads:
            torch.set_num_threads(int(threads))
        return TorchEngine(prior, device=device)
    raise ValueError(name)
