"""Inference backends: ONNX export round trip, engines interchangeable in the refiner, fallback on bad files,
engine cache keys. TensorRT and CUDA tests run only where those exist."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dposer_ros.backends import (
    BackendError,
    OnnxRuntimeEngine,
    TorchEngine,
    engine_cache_key,
    engine_cache_path,
    export_onnx,
    read_onnx,
    select_engine,
    to_mixed_precision,
)
from dposer_ros.backends.onnx_export import random_inputs
from dposer_ros.keypoints import get_format
from dposer_ros.prior.layout import DIM, PART_DIMS, PARTS, dim_mask
from dposer_ros.prior.model import Normalizer, PosePrior
from dposer_ros.prior.network import ScoreNet
from dposer_ros.prior.sde import SubVPSDE
from dposer_ros.solvers.refine import FewStepRefiner, RefineSettings


def tiny_prior(seed: int = 0) -> PosePrior:
    torch.manual_seed(seed)
    net = ScoreNet(hidden=64, blocks=1, time_dim=32, groups=8, dropout=0.0)
    mean, std = 0.1 * torch.randn(DIM), 0.2 + 0.3 * torch.rand(DIM)
    return PosePrior(net, SubVPSDE(), Normalizer(mean, std)).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved tiny prior and its export (made once for the module)."""
    root = tmp_path_factory.mktemp("backends")
    prior_path = root / "prior.pt"
    tiny_prior().save(prior_path)
    result = export_onnx(prior_path, root / "prior.onnx")
    return prior_path, result.path, result


def test_export_round_trip_batches_1_and_7(files):
    prior_path, onnx_path, result = files
    prior = PosePrior.load(prior_path)
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    model = onnx.load(str(onnx_path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x, t, m = random_inputs(batch, seed=3)
        got = session.run(["eps"], {"x": x.numpy(), "t": t.numpy(), "part_mask": m.numpy()})[0]
        with torch.no_grad():
            ref = prior.eps(x, t, m).numpy()
        assert got.shape == (batch, DIM)
        assert np.abs(got - ref).max() < 1e-4


def test_metadata_makes_the_file_self_describing(files):
    prior_path, onnx_path, _ = files
    prior, info = PosePrior.load(prior_path), read_onnx(onnx_path)
    assert torch.equal(info.meta.mean, prior.mean) and torch.equal(info.meta.std, prior.std)
    assert info.meta.prior_sha256 == prior.meta["sha256"]
    assert info.meta.net_config == prior.net.config
    sde = info.meta.make_sde()
    assert (sde.beta_min, sde.beta_max, sde.N) == (prior.sde.beta_min, prior.sde.beta_max, prior.sde.N)
    engine = OnnxRuntimeEngine(onnx_path, threads=1)
    assert torch.equal(engine.mean, prior.mean) and torch.equal(engine.std, prior.std)


def _stream(fmt, persons=2, seed=0):
    from dposer_ros.backends.bench import synthetic_stream

    return synthetic_stream(fmt, persons, seed)


@pytest.mark.parametrize("warm", [True, False])
def test_refiner_same_with_torch_and_onnxruntime(files, warm):
    prior_path, onnx_path, _ = files
    fmt = get_format("coco17")
    obs, init = _stream(fmt)
    settings = RefineSettings(steps=2, cold_start_iters=2)
    engines = [TorchEngine(PosePrior.load(prior_path)), OnnxRuntimeEngine(onnx_path, threads=1)]
    out = [FewStepRefiner(e, fmt, settings)(obs, init if warm else None) for e in engines]
    assert torch.isfinite(out[0].pose).all()
    assert (out[0].pose - out[1].pose).abs().max() < 1e-4
    assert (out[0].transl - out[1].transl).abs().max() < 1e-4
    expected = settings.steps + (0 if warm else settings.cold_prior_steps)  # a new track also gets cold-start steps
    assert out[0].network_evals == out[1].network_evals == expected


def test_corrupt_onnx_falls_back_to_torch_and_logs_why(files, tmp_path, caplog):
    prior_path, _, _ = files
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(BackendError, match="broken.onnx"):
        OnnxRuntimeEngine(bad)
    caplog.set_level(logging.INFO, logger="dposer_ros.backends")
    engine = select_engine(prior_path, backend="onnxruntime", onnx_path=bad)
    assert engine.name == "torch-cpu"
    fallbacks = [r for r in caplog.records if r.name == "dposer_ros.backends" and "falling back to torch" in r.getMessage()]
    assert fallbacks and fallbacks[0].levelno == logging.WARNING
    assert str(bad) in fallbacks[0].getMessage() and "not a readable ONNX model" in fallbacks[0].getMessage()


def test_auto_logs_each_fallback(files, caplog):
    prior_path, onnx_path, _ = files
    caplog.set_level(logging.INFO, logger="dposer_ros.backends")
    engine = select_engine(prior_path, onnx_path=onnx_path, device="cpu", threads=1)
    assert engine.name == "onnxruntime-cpu"
    skipped = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert skipped and skipped[0].startswith("backend tensorrt not used") and "falling back to onnxruntime" in skipped[0]


def test_onnx_with_wrong_input_size_is_rejected(files, tmp_path, caplog):
    prior_path, _, _ = files
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 200])
    t = helper.make_tensor_value_info("t", TensorProto.FLOAT, ["batch"])
    m = helper.make_tensor_value_info("part_mask", TensorProto.FLOAT, ["batch", 4])
    eps = helper.make_tensor_value_info("eps", TensorProto.FLOAT, ["batch", 200])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["eps"])], "other", [x, t, m], [eps])
    path = tmp_path / "other_layout.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(BackendError, match=rf"other_layout\.onnx: 'x' has shape \['batch', 200\].*\['batch', {DIM}\]"):
        read_onnx(path)
    caplog.set_level(logging.INFO, logger="dposer_ros.backends")
    assert select_engine(prior_path, backend="onnxruntime", onnx_path=path).name == "torch-cpu"
    assert any("other_layout.onnx" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_onnx_of_another_prior_is_rejected(files, tmp_path, caplog):
    _, onnx_path, _ = files
    other = tmp_path / "other.pt"
    tiny_prior(seed=1).save(other)
    caplog.set_level(logging.INFO, logger="dposer_ros.backends")
    engine = select_engine(other, backend="onnxruntime", onnx_path=onnx_path)
    assert engine.name == "torch-cpu"
    assert any("re-export" in r.getMessage() and str(onnx_path) in r.getMessage() for r in caplog.records)


def test_missing_onnx_is_exported_on_first_use(files, tmp_path):
    import shutil

    prior_path = shutil.copy(files[0], tmp_path / "alone.pt")  # no alone.onnx beside it
    engine = select_engine(prior_path, backend="onnxruntime", engine_dir=tmp_path / "engines", threads=1)
    assert engine.name == "onnxruntime-cpu" and engine.path.parent == tmp_path / "engines"
    assert engine.path.name.startswith("alone-") and read_onnx(engine.path).meta.prior_sha256 == engine.meta.prior_sha256


def test_engine_cache_key_follows_onnx_content(files, tmp_path):
    _, onnx_path, _ = files
    gpu = ("NVIDIA Jetson Orin", (8, 7), "10.3.0")
    key = engine_cache_key(read_onnx(onnx_path).sha256, *gpu)
    path = engine_cache_path(onnx_path, key, tmp_path)
    assert path.parent == tmp_path and "sm87" in path.name and "trt10.3.0" in path.name
    # same content, same key; re-exporting the same prior is byte-identical
    again = export_onnx(PosePrior.load(files[0]), tmp_path / "prior.onnx", check=False)
    assert engine_cache_path(again.path, engine_cache_key(again.sha256, *gpu), tmp_path) == path
    # other weights -> other sha256 -> other engine file
    changed = export_onnx(tiny_prior(seed=2), tmp_path / "prior.onnx", check=False)
    assert engine_cache_path(changed.path, engine_cache_key(changed.sha256, *gpu), tmp_path) != path
    # other GPU, compute capability, TensorRT version or build options -> other file
    sha = read_onnx(onnx_path).sha256
    for other in (engine_cache_key(sha, "NVIDIA GeForce RTX 4090", (8, 9), "10.3.0"),
                  engine_cache_key(sha, gpu[0], gpu[1], "10.7.0"),
                  engine_cache_key(sha, *gpu, fp16=False), engine_cache_key(sha, *gpu, max_batch=64)):
        assert engine_cache_path(onnx_path, other, tmp_path) != path


def test_mixed_precision_model_stays_close(files):
    prior_path, onnx_path, _ = files
    mixed = to_mixed_precision(onnx.load(str(onnx_path)))
    gemms = [n for n in mixed.graph.node if n.op_type == "Gemm"]
    assert gemms and all(n.input[0].endswith("__in_fp16") for n in gemms)
    session = ort.InferenceSession(mixed.SerializeToString(), providers=["CPUExecutionProvider"])
    prior = PosePrior.load(prior_path)
    x, t, m = random_inputs(16)
    got = session.run(["eps"], {"x": x.numpy(), "t": t.numpy(), "part_mask": m.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - prior.eps(x, t, m).numpy()).max() < 1e-2


def test_dim_mask_expands_each_part_over_its_entries():
    m = (torch.rand(9, len(PARTS)) < 0.5).float()
    sizes = torch.tensor([PART_DIMS[p] for p in PARTS])
    assert torch.equal(dim_mask(m), torch.repeat_interleave(m, sizes, dim=-1))


def test_export_cli_checks_and_fails_above_tolerance(files, tmp_path, capsys):
    from dposer_ros.cli import main

    prior_path, _, _ = files
    assert main(["export", "--prior", str(prior_path), "--out", str(tmp_path / "a.onnx")]) == 0
    assert "max |eps_torch - eps_onnxruntime|" in capsys.readouterr().out
    assert main(["export", "--prior", str(prior_path), "--out", str(tmp_path / "b.onnx"), "--tolerance", "1e-12"]) == 1
    assert not (tmp_path / "b.onnx").exists()


def test_bench_runs_side_by_side(files, tmp_path):
    from dposer_ros.backends.bench import BenchConfig, markdown, plot, run_bench

    prior_path, onnx_path, _ = files
    cfg = BenchConfig(prior=prior_path, onnx=onnx_path, backends=("torch", "onnxruntime"), persons=(1,), steps=(1,),
                      profile_formats=(), budget_s=0.0, min_reps=2, threads=1, full=False)
    result = run_bench(cfg, progress=lambda *_: None)
    kinds = {(r["kind"], r["backend"]) for r in result["rows"]}
    assert {("refine", "torch-cpu"), ("refine", "onnxruntime-cpu"), ("network", "onnxruntime-cpu")} <= kinds
    assert "| 1 | 1 | " in markdown(result)
    assert plot(result, tmp_path / "bench.png").stat().st_size > 0


def test_bench_runs_the_warm_frame_as_one_graph_when_asked(files, tmp_path, monkeypatch):
    from dposer_ros.backends.bench import BenchConfig, run_bench

    monkeypatch.setenv("DPOSER_ENGINE_DIR", str(tmp_path))  # the graph is exported here
    prior_path, _, _ = files
    cfg = BenchConfig(prior=prior_path, backends=("torch",), persons=(2,), steps=(1,), profile_formats=(),
                      budget_s=0.0, min_reps=2, threads=1, full=False, frame_graph="cpu")
    result = run_bench(cfg, progress=lambda *_: None)
    refine = [r for r in result["rows"] if r["kind"] == "refine"]
    assert refine and refine[0]["network_share"] == 0.0  # the network ran inside the graph, not through the engine
    assert result["config"]["frame_graph"] == "cpu" and list(tmp_path.glob("frame-coco17-*.onnx"))


def test_library_imports_no_ros_and_no_runtimes():
    """Every library module (all but dposer_ros.ros) imports without loading rclpy or an inference runtime."""
    code = ("import importlib, pkgutil, sys, dposer_ros; "
            "mods = [m.name for m in pkgutil.walk_packages(dposer_ros.__path__, 'dposer_ros.') "
            "        if not m.name.startswith('dposer_ros.ros')]; "
            "[importlib.import_module(m) for m in mods]; "
            "bad = [m for m in ('rclpy', 'onnxruntime', 'tensorrt') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else (0 if len(mods) > 40 else f'only {len(mods)} modules'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --- where a GPU exists ---------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on the CPU CI machines)")


@cuda
def test_torch_engine_cuda_graphs_match_cpu(files):
    prior = PosePrior.load(files[0])
    gpu, cpu = TorchEngine(prior, device="cuda"), TorchEngine(PosePrior.load(files[0]))
    for batch in (2, 7, 2):
        x, t, m = random_inputs(batch)
        assert (gpu.eps(x, t, m) - cpu.eps(x, t, m)).abs().max() < 1e-4
    assert sorted(gpu._graphs) == [2, 7]


@cuda
def test_tensorrt_engine_builds_caches_and_rebuilds(files, tmp_path, caplog):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack's python3-libnvinfer or NVIDIA's wheels)")
    from dposer_ros.backends import TensorRTEngine

    prior_path, onnx_path, _ = files
    caplog.set_level(logging.INFO, logger="dposer_ros.backends")
    engine = TensorRTEngine(onnx_path, cache_dir=tmp_path, max_batch=16, opt_batch=4)
    assert engine.path.is_file() and engine.path.with_suffix(".json").is_file()
    prior = PosePrior.load(prior_path)
    x, t, m = random_inputs(20)  # more rows than max_batch: run in chunks
    t = t.clamp(max=0.3)
    with torch.no_grad():
        assert (engine.eps(x, t, m) - prior.eps(x, t, m)).abs().max() < 5e-2
    fmt = get_format("coco17")
    obs, init = _stream(fmt)
    FewStepRefiner(engine, fmt, RefineSettings(steps=2))(obs, init)
    again = TensorRTEngine(onnx_path, cache_dir=tmp_path, max_batch=16, opt_batch=4)
    assert again.path == engine.path and any("loaded cached engine" in r.getMessage() for r in caplog.records)
    engine.path.write_bytes(b"garbage")
    rebuilt = TensorRTEngine(onnx_path, cache_dir=tmp_path, max_batch=16, opt_batch=4)
    assert rebuilt.path.is_file() and any("rebuilding" in r.getMessage() for r in caplog.records)


# --- the TensorRT engine's build/cache logic, against a stand-in `tensorrt` module (logic only, no TensorRT) ---
class _FakeTensorRT:
    """The slice of the tensorrt API that TensorRTEngine touches, recording what it is asked to do."""

    def __init__(self, version="10.3.0", has_fp16_flag=True):
        import types

        self.__version__, self.calls = version, []
        self.float32 = "f32"
        self.LayerType = types.SimpleNamespace(MATRIX_MULTIPLY="MM", NORMALIZATION="NORM", REDUCE="RED")
        flags = {"PREFER_PRECISION_CONSTRAINTS": "PREFER"} | ({"FP16": "FP16"} if has_fp16_flag else {})
        self.BuilderFlag = types.SimpleNamespace(**flags)
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=5)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
        fake = self

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO = range(4)

            def __init__(self):
                pass

        class Engine:
            num_io_tensors = 4

            def get_tensor_name(self, i):
                return ["x", "t", "part_mask", "eps"][i]

            def get_tensor_dtype(self, name):
                return "f32"

            def create_execution_context(self):
                return object()

        class Network:
            num_layers, num_inputs = 0, 0

        class Config:
            def set_memory_pool_limit(self, *args):
                pass

            def set_flag(self, flag):
                fake.calls.append(("flag", flag))

            def add_optimization_profile(self, profile):
                pass

        class Profile:
            def set_shape(self, name, *shapes):
                fake.calls.append(("shape", name, shapes))

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build",))
                return b"ENGINE" + fake.__version__.encode()

        class Parser:
            def __init__(self, network, logger):
                self.num_errors = 0

            def parse(self, data):
                fake.calls.append(("parse", data))
                return True

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                return Engine() if data.startswith(b"ENGINE") else None

        self.ILogger, self.Builder, self.OnnxParser, self.Runtime = ILogger, Builder, Parser, Runtime


def test_tensorrt_cache_logic_with_a_stand_in(files, tmp_path, monkeypatch, caplog):
    import types

    from dposer_ros.backends import tensorrt_engine as te

    _, onnx_path, _ = files
    fake = _FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: types.SimpleNamespace(name="NVIDIA Orin", major=8, minor=7))
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a: None)
    monkeypatch.setattr(te.torch.cuda, "device", lambda *a: __import__("contextlib").nullcontext())
    monkeypatch.setattr(te, "pin_fp32_layers", lambda network, trt: 0)
    monkeypatch.setattr(te.TensorRTEngine, "_check_against_onnx", lambda self, engine: 1e-3)
    caplog.set_level(logging.INFO, logger="dposer_ros.backends")

    engine = te.TensorRTEngine(onnx_path, cache_dir=tmp_path, max_batch=128, opt_batch=8)
    assert engine.name == "tensorrt-fp16" and engine.path.name.startswith("prior.NVIDIA-Orin-sm87.trt10.3.0.")
    assert ("flag", "FP16") in fake.calls and ("shape", "x", ((1, DIM), (8, DIM), (128, DIM))) in fake.calls
    facts = json.loads(engine.path.with_suffix(".json").read_text())
    assert facts["key"] == engine.key and facts["key"]["onnx_sha256"] == read_onnx(onnx_path).sha256
    assert te.load_engine_metadata(engine.path)[1].prior_sha256 == read_onnx(onnx_path).meta.prior_sha256

    fake.calls.clear()  # second start: loaded from the cache, nothing built
    assert te.TensorRTEngine(onnx_path, cache_dir=tmp_path).path == engine.path and ("build",) not in fake.calls

    engine.path.write_bytes(b"garbage")  # corrupt cache: logged, moved aside, rebuilt
    te.TensorRTEngine(onnx_path, cache_dir=tmp_path)
    assert ("build",) in fake.calls and engine.path.with_name(engine.path.name + ".bad").exists()
    assert any("rebuilding" in r.getMessage() and engine.path.name in r.getMessage() for r in caplog.records)

    # another TensorRT version -> another key; the stale engine of this GPU is removed; TensorRT 11 (no
    # BuilderFlag.FP16) builds strongly typed from the mixed-precision model
    fake11 = _FakeTensorRT("11.0.0", has_fp16_flag=False)
    monkeypatch.setitem(sys.modules, "tensorrt", fake11)
    newer = te.TensorRTEngine(onnx_path, cache_dir=tmp_path)
    assert newer.path != engine.path and not engine.path.exists()
    assert ("network", 1 << 5) in fake11.calls and ("flag", "FP16") not in fake11.calls
    parsed = onnx.load_from_string(next(c[1] for c in fake11.calls if c[0] == "parse"))
    assert any(n.op_type == "Cast" for n in parsed.graph.node)


def test_gpu_check_script_is_valid_bash():
    """bench/gpu_check.sh runs where a GPU is lent; here at least it must parse."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "gpu_check.sh")
    done = subprocess.run(["bash", "-n", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_int8_weights_are_cached_close_and_named(files, tmp_path, caplog):
    from dposer_ros.backends.quantize import int8_path, quantize_int8

    _, onnx_path, _ = files
    source = tmp_path / "prior.onnx"
    source.write_bytes(onnx_path.read_bytes())
    info = quantize_int8(source)
    assert info.path == int8_path(read_onnx(source)) and info.quantized and "int8" in info.quantized
    assert info.meta.prior_sha256 == read_onnx(source).meta.prior_sha256  # the metadata survives
    mtime = info.path.stat().st_mtime_ns
    assert quantize_int8(source).path.stat().st_mtime_ns == mtime  # cached, not written again
    fp32, int8 = OnnxRuntimeEngine(source, threads=1), OnnxRuntimeEngine(info.path, threads=1)
    assert fp32.name == "onnxruntime-cpu" and int8.name == "onnxruntime-cpu-int8"
    x, t, m = random_inputs(16, seed=5)
    ref, got = fp32.eps(x, t, m), int8.eps(x, t, m)
    assert not torch.equal(ref, got)  # really another network
    assert float((got - ref).norm() / ref.norm()) < 0.05
    info.path.write_bytes(b"\x08\x07truncated")  # a broken cache file is quantized again, with a warning
    caplog.set_level(logging.WARNING, logger="dposer_ros.backends")
    assert quantize_int8(source).quantized
    assert any("quantizing again" in r.getMessage() for r in caplog.records)


def test_select_engine_int8_on_cpu_and_refiner_close(files, tmp_path):
    prior_path, onnx_path, _ = files
    fmt = get_format("coco17")
    obs, init = _stream(fmt)
    settings = RefineSettings(steps=2)
    fp32 = select_engine(prior_path, "onnxruntime", onnx_path=onnx_path, device="cpu", threads=1)
    int8 = select_engine(prior_path, "onnxruntime", onnx_path=onnx_path, device="cpu", threads=1, int8=True)
    assert int8.name == "onnxruntime-cpu-int8" and fp32.name == "onnxruntime-cpu"
    assert select_engine(prior_path, "torch", device="cpu", int8=True).name == "torch-cpu"  # torch ignores it
    a, b = (FewStepRefiner(e, fmt, settings)(obs, init) for e in (fp32, int8))
    assert (a.joints - b.joints).norm(dim=-1).max() < 0.01  # metres


def test_eval_refuses_int8_without_onnxruntime(tmp_path, capsys):
    from dposer_ros.cli import main

    assert main(["eval", "--prior", "models/dposer_cpu/prior.pt", "--int8", "--clips", "1", "--frames", "2",
                 "--methods", "no_prior", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    assert "--int8 needs --backend onnxruntime" in capsys.readouterr().err
