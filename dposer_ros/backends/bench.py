"""`dposer bench`: latency and throughput of the few-step refiner per inference backend, measured side by side.

Every cell (keypoint format, persons, steps) runs all backends round-robin (one call each, repeated), so load
changes on the machine hit every backend alike. Each call's time inside `engine.eps` is recorded too, which
splits the latency into network and solver (Gauss-Newton, kinematics, bookkeeping).
Input: a synthetic warm-started stream (the steady state of a track): poses with random joint rotations,
their keypoints with 1 cm noise, and the previous frame (the pose 0.03 rad away) as the initial state.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..body.kinematics import ForwardKinematics
from ..body.skeleton import NUM_JOINTS, smplx_neutral
from ..keypoints import get_format
from ..prior.engine import Engine
from ..prior.layout import DIM, PARTS
from ..solvers.compiled_step import CompiledStep
from ..solvers.refine import FewStepRefiner, RefineSettings
from ..solvers.types import BodyState, Observation
from .base import LOG, BackendError

ROOT = Path(__file__).resolve().parents[2]
BENCH_BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8", "tensorrt")  # onnxruntime-int8: int8 weights


@dataclass
class BenchConfig:
    prior: Path
    onnx: Path | None = None
    backends: tuple[str, ...] = BENCH_BACKENDS
    persons: tuple[int, ...] = (1, 4, 16, 64)
    steps: tuple[int, ...] = (1, 2, 4, 8)
    formats: tuple[str, ...] = ("coco17",)
    profile_formats: tuple[str, ...] = ("coco17", "smplx55")
    budget_s: float = 90.0  # for the whole persons x steps grid (all backends); at least min_reps per cell
    min_reps: int = 3
    max_reps: int = 200
    threads: int | None = 1  # see `dposer bench --help`
    full: bool = True  # also time the full DPoser optimisation (solvers/full.py) for the ratio
    full_reps: int = 2
    seed: int = 0
    compiled_step: bool = False  # the refiners' step compiled ahead of time (solvers/compiled_step.py)
    # the warm frames' prior steps as one ONNX graph on this ONNX Runtime device ("cpu", "cuda", "tensorrt";
    # solvers/warm_frame.py); its network time is inside the graph, not in the rows' network share
    frame_graph: str | None = None


@dataclass
class Row:
    kind: str  # "refine", "network", "full"
    format: str
    backend: str
    persons: int
    steps: int
    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # person-frames per second (persons / mean latency)
    network_share: float  # fraction of the time spent inside engine.eps
    extra: dict = field(default_factory=dict)


class TimedEngine:
    """An engine proxy that adds up the time spent in `eps`."""

    def __init__(self, engine) -> None:
        self.engine, self.name = engine, engine.name
        self.mean, self.std, self.sde = engine.mean, engine.std, engine.sde
        self.seconds = 0.0

    def eps(self, x, t, part_mask):
        start = time.perf_counter()
        out = self.engine.eps(x, t, part_mask)
        self.seconds += time.perf_counter() - start
        return out


def machine_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (f"{model}, {os.cpu_count()} cores{gpu}; {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"onnxruntime {onnxruntime.__version__}")


def synthetic_stream(fmt, persons: int, seed: int = 0, hide_leg: bool = True) -> tuple[Observation, BodyState]:
    """A batch of random bodies' keypoints (1 cm noise) and a warm start near them. With `hide_leg`, the keypoints
    of the left knee, ankle and foot are hidden: the refiner asks the prior only about joints it pulls, and on a
    fully seen warm frame about none, which a benchmark of the prior's cost must not measure."""
    gen = torch.Generator().manual_seed(seed)
    pose = 0.2 * torch.randn(persons, NUM_JOINTS, 3, generator=gen)
    pose[:, 0] = torch.tensor([1.2, 0.0, 0.0]) + 0.3 * torch.randn(persons, 3, generator=gen)
    transl = torch.randn(persons, 3, generator=gen) + torch.tensor([0.0, 0.0, 3.0])
    points = fmt.from_posed(ForwardKinematics()(pose, transl))
    points = points + 0.01 * torch.randn(points.shape, generator=gen)
    conf = torch.ones(points.shape[:2])
    if hide_leg:
        leg = [smplx_neutral().index(n) for n in ("left_knee", "left_ankle", "left_foot")]
        conf[:, torch.isin(torch.tensor(np.array(fmt.joints)), torch.tensor(leg))] = 0.0
    previous = BodyState(pose + 0.03 * torch.randn(pose.shape, generator=gen), transl + 0.01)
    return Observation(points, conf, fmt), previous


def _stats(times: list[float]) -> tuple[float, float, float]:
    a = np.asarray(times) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.mean())


def _cell(runners: dict, budget: float, min_reps: int, max_reps: int) -> dict[str, tuple[list[float], list[float]]]:
    """Round-robin calls of every runner: name -> (latencies, network seconds per call)."""
    out: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in runners}
    for name, (fn, timed) in runners.items():  # warm-up (first-call allocations, graph captures)
        fn()
    start = time.perf_counter()
    reps = 0
    while reps < max_reps and (reps < min_reps or time.perf_counter() - start < budget):
        for name, (fn, timed) in runners.items():
            before = timed.seconds if timed is not None else 0.0
            t0 = time.perf_counter()
            fn()
            out[name][0].append(time.perf_counter() - t0)
            out[name][1].append((timed.seconds - before) if timed is not None else 0.0)
        reps += 1
    return out


def make_engines(cfg: BenchConfig) -> dict:
    from ..prior.model import PosePrior
    from .engines import OnnxRuntimeEngine, TorchEngine
    from .onnx_export import export_onnx
    from .select import default_onnx_path

    prior = PosePrior.load(cfg.prior)
    onnx_path = cfg.onnx or default_onnx_path(cfg.prior)
    if not onnx_path.is_file():
        export_onnx(prior, onnx_path)
    engines: dict[str, Engine] = {}
    for name in cfg.backends:
        try:
            if name == "torch":
                engines[name] = TorchEngine(prior, device="cpu")
            elif name in ("onnxruntime", "onnxruntime-int8"):
                from .quantize import quantize_int8

                path = quantize_int8(onnx_path).path if name.endswith("int8") else onnx_path
                engines[name] = OnnxRuntimeEngine(path, threads=cfg.threads or torch.get_num_threads())
            elif name == "tensorrt":
                from .tensorrt_engine import TensorRTEngine, import_tensorrt

                import_tensorrt()
                if not torch.cuda.is_available():
                    raise BackendError("no CUDA GPU visible to torch")
                engines[name] = TensorRTEngine(onnx_path)
            elif name == "torch-cuda":
                engines[name] = TorchEngine(prior, device="cuda")
            else:
                raise BackendError(f"unknown backend {name!r}")
        except BackendError as err:
            LOG.warning("bench: skipping %s: %s", name, err)
            print(f"skipping backend {name}: {err}")
    return engines


def run_bench(cfg: BenchConfig, progress=print) -> dict:
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: BenchConfig, progress) -> dict:
    engines = make_engines(cfg)
    if not engines:
        raise BackendError("no backend to benchmark")
    rows: list[Row] = []
    timed = {name: TimedEngine(e) for name, e in engines.items()}
    refiners: dict = {}
    graphs: dict = {}  # (format, steps) -> the warm frame's graph, shared by the backends

    def refiner(name, fmt, steps):
        key = (name, fmt.name, steps)
        if key not in refiners:
            settings = RefineSettings(steps=steps)
            compiled = CompiledStep.for_refiner(fmt, settings) if cfg.compiled_step else None
            refiners[key] = FewStepRefiner(timed[name], fmt, settings, compiled=compiled)
            if cfg.frame_graph is not None:
                from ..solvers.warm_frame import OnnxFrame

                if (fmt.name, steps) not in graphs:
                    graphs[fmt.name, steps] = OnnxFrame.load(refiners[key], cfg.prior, threads=cfg.threads or 1,
                                                             device=cfg.frame_graph)
                refiners[key].frame = graphs[fmt.name, steps]
        return refiners[key]

    def add_refine_rows(fmt, persons, steps, results):
        for name, (lat, net) in results.items():
            p50, p99, mean = _stats(lat)
            rows.append(Row("refine", fmt.name, engines[name].name, persons, steps, len(lat), p50, p99, mean,
                            persons / (mean / 1e3), float(np.sum(net) / np.sum(lat))))

    started = time.perf_counter()
    load_at_start = os.getloadavg()
    cells = [(f, p, s) for f in cfg.formats for p in cfg.persons for s in cfg.steps]
    per_cell = cfg.budget_s / max(1, len(cells))
    for fmt_name, persons, steps in cells:
        fmt = get_format(fmt_name)
        obs, init = synthetic_stream(fmt, persons, cfg.seed)
        runners: dict[str, tuple[Callable[[], object], TimedEngine | None]] = {
            n: (partial(refiner(n, fmt, steps), obs, init), timed[n]) for n in engines}
        add_refine_rows(fmt, persons, steps, _cell(runners, per_cell, cfg.min_reps, cfg.max_reps))
        progress(f"  {fmt_name} persons={persons} steps={steps}: " + ", ".join(
            f"{r.backend} {r.p50_ms:.1f} ms" for r in rows[-len(engines):]))
    # 1-person profile of the other formats (network vs solver split)
    for fmt_name in cfg.profile_formats:
        if fmt_name in cfg.formats and 1 in cfg.persons and 4 in cfg.steps:
            continue
        fmt = get_format(fmt_name)
        obs, init = synthetic_stream(fmt, 1, cfg.seed)
        runners = {n: (partial(refiner(n, fmt, 4), obs, init), timed[n]) for n in engines}
        add_refine_rows(fmt, 1, 4, _cell(runners, 4.0, cfg.min_reps, cfg.max_reps))
    # the network alone, at the row counts the refiner sends (2 per person: body and hands)
    for persons in cfg.persons:
        rows_n = 2 * persons
        x, t, m = torch.randn(rows_n, DIM), torch.full((rows_n,), 0.07), torch.ones(rows_n, len(PARTS))
        runners = {n: (partial(e.eps, x, t, m), None) for n, e in engines.items()}
        for name, (lat, _) in _cell(runners, 1.0, 5, 500).items():
            p50, p99, mean = _stats(lat)
            rows.append(Row("network", "-", engines[name].name, persons, 1, len(lat), p50, p99, mean,
                            persons / (mean / 1e3), 1.0, {"rows": rows_n}))
    # the full DPoser optimisation (accuracy reference), for the ratio
    if cfg.full:
        try:
            from ..solvers.full import FullOptimizer
        except ImportError as err:
            LOG.warning("bench: solvers/full.py not available (%s): no full-optimisation ratio", err)
        else:
            fmt = get_format(cfg.formats[0])
            obs, init = synthetic_stream(fmt, 1, cfg.seed)
            name = "torch" if "torch" in engines else next(iter(engines))
            full = FullOptimizer(timed[name], fmt)
            timed[name].seconds = 0.0
            lat = []
            try:
                for _ in range(cfg.full_reps):
                    t0 = time.perf_counter()
                    result = full(obs, init)
                    lat.append(time.perf_counter() - t0)
            except Exception as err:  # solvers/full.py is another module's work in progress: report, go on
                LOG.warning("bench: the full optimisation failed (%s: %s): no ratio", type(err).__name__, err)
                progress(f"full optimisation failed ({type(err).__name__}: {err}): no ratio")
            else:
                p50, p99, mean = _stats(lat)
                rows.append(Row("full", fmt.name, engines[name].name, 1, result.network_evals, len(lat), p50, p99,
                                mean, 1 / (mean / 1e3), timed[name].seconds / sum(lat)))
    return {"machine": machine_description(), "load_average": [round(v, 2) for v in load_at_start + os.getloadavg()],
            "config": {k: str(v) if isinstance(v, Path) else v
                                                            for k, v in asdict(cfg).items()},
            "seconds": time.perf_counter() - started, "rows": [asdict(r) for r in rows]}


def markdown(result: dict) -> str:
    """The tables of bench/RESULTS.md."""
    rows = [Row(**r) for r in result["rows"]]
    backends = list(dict.fromkeys(r.backend for r in rows if r.kind == "refine"))
    lines = []
    for fmt in dict.fromkeys(r.format for r in rows if r.kind == "refine"):
        cell = {(r.persons, r.steps, r.backend): r for r in rows if r.kind == "refine" and r.format == fmt}
        keys = sorted({(p, s) for p, s, _ in cell})
        lines += [f"**{fmt}**, few-step refinement (warm-started), latency per call p50 / p99 (ms), "
                  "throughput (person-frames/s), share of time in the network:", ""]
        head = "| persons | steps | calls | " + " | ".join(f"{b} p50 / p99" for b in backends)
        head += " | " + " | ".join(f"{b} frames/s" for b in backends) + " | network share | "
        head += " | ".join(f"{b} / {backends[0]}" for b in backends[1:]) + (" |" if len(backends) > 1 else "")
        lines += [head, "|" + "---:|" * (head.count("|") - 1)]
        for p, s in keys:
            rs = [cell.get((p, s, b)) for b in backends]
            lat = " | ".join(f"{r.p50_ms:.1f} / {r.p99_ms:.1f}" if r else "-" for r in rs)
            thr = " | ".join(f"{r.throughput:.0f}" if r else "-" for r in rs)
            share = " / ".join(f"{100 * r.network_share:.0f}%" if r else "-" for r in rs)
            ratio = " | ".join(f"{r.p50_ms / rs[0].p50_ms:.2f}" if r and rs[0] else "-" for r in rs[1:])
            calls = min(r.n for r in rs if r)
            lines.append(f"| {p} | {s} | {calls} | {lat} | {thr} | {share} |" + (f" {ratio} |" if len(rs) > 1 else ""))
        lines.append("")
    net = [r for r in rows if r.kind == "network"]
    if net:
        lines += ["The network alone (`engine.eps`, 2 rows per person), p50 / p99 (ms):", ""]
        head = "| persons (rows) | " + " | ".join(backends) + " |"
        lines += [head, "|" + "---:|" * (head.count("|") - 1)]
        for p in sorted({r.persons for r in net}):
            by_backend = {r.backend: r for r in net if r.persons == p}
            lines.append(f"| {p} ({2 * p}) | " + " | ".join(
                f"{by_backend[b].p50_ms:.2f} / {by_backend[b].p99_ms:.2f}" if b in by_backend else "-" for b in backends) + " |")
        lines.append("")
    full = [r for r in rows if r.kind == "full"]
    for f in full:
        few = {r.backend: r for r in rows if r.kind == "refine" and r.format == f.format and r.persons == 1 and r.steps == 4}
        ratio = ", ".join(f"{f.p50_ms / r.p50_ms:.0f}x the few-step refiner on {b} ({r.p50_ms:.1f} ms)"
                          for b, r in few.items())
        lines.append(f"Full DPoser optimisation (`solvers/full.py`, {f.steps} network evaluations, {f.backend}, "
                     f"{f.format}, 1 person, n={f.n}): {f.p50_ms:.0f} ms per frame = {ratio} (4 steps).")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [Row(**r) for r in result["rows"] if r["kind"] == "refine"]
    fmt = rows[0].format
    rows = [r for r in rows if r.format == fmt]
    backends = list(dict.fromkeys(r.backend for r in rows))
    steps = sorted({r.steps for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(steps)))
    styles = ["-o", "--s", ":^", "-.d"]
    for bi, b in enumerate(backends):
        for si, s in enumerate(steps):
            rs = sorted((r for r in rows if r.backend == b and r.steps == s), key=lambda r: r.persons)
            if not rs:
                continue
            persons = [r.persons for r in rs]
            axes[0].errorbar(persons, [r.p50_ms for r in rs], yerr=[[0] * len(rs), [r.p99_ms - r.p50_ms for r in rs]],
                             fmt=styles[bi % 4], color=colors[si], capsize=2, label=f"{b}, {s} steps")
            axes[1].plot(persons, [r.throughput for r in rs], styles[bi % 4], color=colors[si])
            axes[2].plot(persons, [100 * r.network_share for r in rs], styles[bi % 4], color=colors[si])
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    persons = sorted({r.persons for r in rows})
    for ax, title in zip(axes, ("latency per frame, p50 (bar: p99) [ms]", "throughput [person-frames/s]",
                                "time in the network [%]")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(persons)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("persons per call")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    axes[2].set_ylim(0, 100)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"few-step refinement ({fmt}) per inference backend - {result['machine'].split(';')[0]}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return path
