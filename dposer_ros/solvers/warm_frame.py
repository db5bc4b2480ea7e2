"""A warm frame's prior steps as one graph, for ONNX Runtime (CPU) and TensorRT (GPU).

`FewStepRefiner._prior_steps` (the prior's mirror-symmetric query with the score network, the pulls, the
Gauss-Newton steps, the rotation updates), S steps chained, traced into one ONNX graph with a dynamic batch. The
code traced is the refiner's own, run with the torch prior and the exportable step (the unrolled Cholesky: no
LAPACK call, no branch on data), so the graph computes what the eager frame computes. What depends on data or
on a track's history stays outside, once a frame: the pulls' strengths, the keypoint filter and memory, the motion
model's legs (an input), the calibration. Where the graph cannot answer (a new track, no prior pull, a failed
run) the refiner takes its eager steps. Each batch size's first answer is checked against the eager steps.

On a CPU the graph in ONNX Runtime is slower than the eager frame with the step compiled by AOTInductor (the
unrolled solve is hundreds of small operations where LAPACK is one call; bench/RESULTS.md): it is the form of the
frame for TensorRT, and the check that the whole frame exports.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import cast

import numpy as np
import roma
import torch

from ..paths import default_engine_dir, sources_sha256
from ..prior.engine import Engine
from ..prior.layout import part_index
from ..prior.model import PosePrior
from ..prior.symmetric import MirrorSymmetric
from .gauss_newton import Pull, gauss_newton_step

LOG = logging.getLogger("dposer_ros.solvers")
INPUTS = ("local", "transl", "target", "weight", "factor", "hold", "previous", "weak", "rest", "offsets", "up",
          "tilt_up", "tilt", "legs", "legs_hidden", "sigma_cm")
OUTPUTS = ("local_out", "transl_out", "pose_out")
OPSET = 17
# the modules whose code is in the graph: a change to any of them is another file
SOURCES = ("solvers/refine.py", "solvers/gauss_newton.py", "solvers/linear.py", "solvers/upright.py",
           "solvers/warm_frame.py", "body/jacobian.py", "body/kinematics.py", "prior/layout.py", "prior/network.py",
           "prior/symmetric.py", "prior/sde.py")


class WarmFrame(torch.nn.Module):
    """The steps of a refiner's warm frame as a module of tensors only (what the exporter traces)."""

    def __init__(self, refiner, prior: PosePrior, exportable: bool = True) -> None:
        super().__init__()
        from .refine import FewStepRefiner

        s = refiner.settings
        if type(refiner) is not FewStepRefiner:  # a baseline swaps the prior's term: not this graph
            raise ValueError(f"a warm frame graph is the diffusion prior's refiner's, not {type(refiner).__name__}'s")
        if s.schedule != "truncated" or s.noise or not s.carry_noise or refiner.completion is not None:
            raise ValueError("a warm frame graph needs the truncated schedule, no fresh noise, the carried noise and "
                             "no completion network")
        self.prior = prior.eval()  # a submodule: its weights are the graph's
        self.refiner = copy.copy(refiner)
        engine = cast(Engine, prior)
        self.refiner.prior = MirrorSymmetric(engine) if s.mirror_symmetric else engine
        self.refiner.compiled, self.refiner.frame = None, None
        self.schedule = refiner.schedule.timesteps(s.steps, torch.Generator().manual_seed(s.seed)).tolist()
        self.exportable = exportable
        self.eval()  # an exporter that restores the module's mode afterwards must not set the shared prior training

    def forward(self, local, transl, target, weight, factor, hold, previous, weak, rest, offsets, up, tilt_up, tilt,
                legs, legs_hidden, sigma_cm):
        r = self.refiner
        s = r.settings
        carry = {"up": up, "groups": r.warm_groups, "motion": {"legs": legs, "hidden": legs_hidden > 0.5}}

        def step(local, transl, rotvec, pulls, weak, target, weight, rest, offsets):
            local, transl = gauss_newton_step(r.fk, r.points, local, transl, target, weight, pulls + [weak], s.damping,
                                              sigma_cm[:, None], rest_joints=rest, offsets=offsets, pose=rotvec,
                                              exportable=self.exportable, fallback=False)
            return local, transl, roma.rotmat_to_rotvec(local)

        return r._prior_steps(local, transl, roma.rotmat_to_rotvec(local), self.schedule, carry, factor,
                              torch.zeros_like(previous) + r.rest_target, tilt_up, tilt, Pull(previous, hold),
                              Pull(previous, weak, weak_cm=s.weak_dof_cm), target, weight, rest, offsets, None, step)


def frame_inputs(refiner, local: torch.Tensor, transl: torch.Tensor, carry: dict, factor: torch.Tensor,
                 up: torch.Tensor | None, tilt: torch.Tensor | None, held: Pull | None, weak: Pull | None,
                 target: torch.Tensor, weight: torch.Tensor, rest: torch.Tensor,
                 offsets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The graph's inputs (`INPUTS`) from what the refiner hands its steps (`FewStepRefiner._prior_steps`): an
    absent pull at zero strength, an unknown up direction as a zero vector (as the eager steps read them), the motion
    model's legs for this frame computed here."""
    batch, free = local.shape[0], len(refiner.points.free)
    zeros = torch.zeros(batch, free, 3)
    previous = held.target if held is not None else (weak.target if weak is not None else zeros)
    hold = torch.as_tensor(held.scale).expand(batch, free, 1) if held is not None else torch.zeros(batch, free, 1)
    weak_scale = torch.as_tensor(weak.scale).expand(batch, free, 1) if weak is not None else torch.zeros(batch, free, 1)
    if tilt is None:  # the rest pull alone: its root entry is zero, as the tilt's is where no one stands upright
        tilt = refiner._tilt_scale(torch.zeros(batch))
    legs = torch.zeros(batch, len(refiner.legs), 3)
    hidden = torch.zeros(batch, len(refiner.legs))
    motion = carry.get("motion")
    if motion is not None:
        if "legs" not in motion:
            motion.update(refiner.motion_legs(motion, carry["seen"], local[:, :22]))
        if motion["hidden"] is not None:
            legs, hidden = motion["legs"], motion["hidden"].float()
    no_up = torch.zeros(batch, 3)
    prior_up = carry.get("up")
    return tuple(x.float().contiguous() for x in (
        local, transl, target, weight, factor, hold, previous, weak_scale, rest, offsets,
        no_up if prior_up is None else prior_up, no_up if up is None else up, tilt.expand(batch, free, 3), legs,
        hidden, torch.full((batch,), float(refiner.settings.sigma_cm))))


def graph_key(refiner, prior_sha256: str) -> str:
    """sha256 of what the graph depends on: the format, every refiner setting, the prior, the code, torch."""
    fmt = refiner.format
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": fmt.name, "joints": [int(j) for j in fmt.joints],
                              "offsets": np.asarray(fmt.offsets).tolist(),
                              "settings": dataclasses.asdict(refiner.settings), "prior": prior_sha256,
                              "refiner": type(refiner).__name__, "groups": refiner.warm_groups,
                              "torch": torch.__version__, "opset": OPSET}, sort_keys=True).encode())
    digest.update(sources_sha256(SOURCES).encode())
    return digest.hexdigest()


def example_inputs(refiner, batch: int) -> tuple[torch.Tensor, ...]:
    """Inputs for `batch` people near the rest pose, every pull on (shapes and dtypes are what matter to a trace)."""
    g = torch.Generator().manual_seed(batch)
    free, k = len(refiner.points.free), refiner.format.num_keypoints
    local = roma.rotvec_to_rotmat(0.1 * torch.randn(batch, 55, 3, generator=g))
    transl = torch.zeros(batch, 3)
    rest = refiner.fk.rest_joints.float().expand(batch, -1, -1).clone()
    target = refiner.points.positions(refiner.fk.from_rotmat(local, transl, rest), None).float()
    previous = roma.rotmat_to_rotvec(local[:, refiner.points.free])
    up = torch.tensor([0.0, 1.0, 0.0]).expand(batch, 3).clone()
    return (local, transl, target, torch.ones(batch, k), torch.ones(batch, free, 1), torch.ones(batch, free, 1),
            previous, torch.ones(batch, free, 1), rest, torch.zeros(batch, k, 3), up, up,
            refiner._tilt_scale(torch.ones(batch)).expand(batch, free, 3).clone(), torch.zeros(batch, len(refiner.legs), 3),
            torch.zeros(batch, len(refiner.legs)), torch.full((batch,), float(refiner.settings.sigma_cm)))


def onnx_frame_bytes(refiner, prior: PosePrior) -> bytes:
    """The warm frame's steps as ONNX (opset `OPSET`; the batch dynamic in every input and output)."""
    module = WarmFrame(refiner, prior, exportable=True)
    buf = io.BytesIO()
    part_index("cpu")  # made outside the trace: one plain constant
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values it keeps as constants
        torch.onnx.export(module, example_inputs(refiner, 3), buf,  # type: ignore[arg-type]  # a file object works
                          dynamo=False, opset_version=OPSET,
                          input_names=list(INPUTS), output_names=list(OUTPUTS),
                          dynamic_axes={name: {0: "batch"} for name in (*INPUTS, *OUTPUTS)})
    return buf.getvalue()


PROVIDERS = {  # ONNX Runtime's execution providers per device, in order of preference
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


class OnnxFrame:
    """A warm frame's steps in ONNX Runtime, as the refiner's `frame`: on the CPU, or on a GPU through ONNX Runtime's
    CUDA or TensorRT execution provider (`device`; the TensorRT engine built once and cached beside the graph).
    Each batch size's first answer is checked against the same graph run by torch (`WarmFrame`, whose steps are the
    eager refiner's); a size that differs runs the eager steps from then on."""

    def __init__(self, session, path: Path, key: str, reference: WarmFrame) -> None:
        self.session, self.path, self.key, self.reference = session, path, key, reference
        self.calls = 0
        self.fallbacks = 0  # calls the eager steps answered (a failed run or a non-finite answer)
        self.verified: set[int] = set()
        self.refused: set[int] = set()

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    @classmethod
    def load(cls, refiner, prior: PosePrior | str | Path, cache_dir: str | Path | None = None, threads: int = 1,
             device: str = "cpu") -> OnnxFrame:
        """The cached graph of this refiner (format, settings) and prior, exported first where there is none, in an
        ONNX Runtime session on `device` ("cpu", "cuda" or "tensorrt"; providers this onnxruntime lacks are left
        out, logged)."""
        import onnxruntime as ort

        if device not in PROVIDERS:
            raise ValueError(f"device must be one of {sorted(PROVIDERS)}, got {device!r}")
        prior = prior if isinstance(prior, PosePrior) else PosePrior.load(Path(prior))
        key = graph_key(refiner, prior.meta["sha256"])
        folder = Path(cache_dir) if cache_dir is not None else default_engine_dir()
        path = folder / f"frame-{refiner.format.name}-{key[:16]}.onnx"
        if not path.is_file():
            LOG.info("exporting the warm frame's steps of %s to %s (first use)", refiner.format.name, path)
            data = onnx_frame_bytes(refiner, prior)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(path)
        available = set(ort.get_available_providers())
        providers: list = []
        for name in PROVIDERS[device]:
            if name not in available:
                LOG.warning("onnxruntime has no %s: the warm frame's graph runs without it", name)
            elif name == "TensorrtExecutionProvider":  # float32 engines, built once and kept beside the graph
                providers.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(folder),
                                         "trt_fp16_enable": False}))
            else:
                providers.append(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=providers)
        return cls(session, path, key, WarmFrame(refiner, prior, exportable=True))

    def __call__(self, refiner, local, transl, schedule, carry, factor, zero, up, tilt, held, weak, target, weight,
                 rest, offsets, gen) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The frame's steps (the arguments of `FewStepRefiner._prior_steps`), or None: the eager steps answer."""
        batch = local.shape[0]
        if batch in self.refused:
            return None
        inputs = frame_inputs(refiner, local, transl, carry, factor, up, tilt, held, weak, target, weight, rest, offsets)
        self.calls += 1
        try:
            out = self.session.run(list(OUTPUTS), {name: x.numpy() for name, x in zip(INPUTS, inputs)})
        except Exception as err:  # onnxruntime raises its own exception types
            LOG.warning("the warm frame's graph failed (%s); eager steps instead", err)
            self.fallbacks += 1
            return None
        answer = tuple(torch.from_numpy(x) for x in out)
        if not all(bool(torch.isfinite(x).all()) for x in answer):
            self.fallbacks += 1
            return None
        if batch not in self.verified:  # a batch size's first answer against the graph's own steps in torch
            with torch.no_grad():
                reference = self.reference(*inputs)
            difference = float((answer[0] - reference[0]).abs().max())
            if difference > 1e-3:
                self.refused.add(batch)
                LOG.warning("the warm frame's graph on %s differs from torch by %.3g at batch %d: eager steps for "
                            "that batch size", self.providers[0], difference, batch)
                return None
            self.verified.add(batch)
        return answer[0], answer[1], answer[2]


def frame_device(backend: str) -> str:
    """The ONNX Runtime device of a node's warm-frame graphs for its inference `backend`: "tensorrt" (TensorRT's
    execution provider) with the tensorrt backend on a CUDA GPU, "cuda" on any other CUDA GPU, else "cpu"."""
    if not torch.cuda.is_available():
        return "cpu"
    return "tensorrt" if backend in ("tensorrt", "auto") else "cuda"


class FrameGraphs:
    """A serving process's warm-frame graphs, one per format and settings: `prepare` loads (exporting first where
    needed) the graph of a refiner before serving; `get` hands a refiner its prepared graph. A refiner of other
    settings (changed at run time) keeps its eager steps: a graph is a minute's work on a small CPU, not a frame's
    (logged once per settings)."""

    def __init__(self, prior: PosePrior, device: str = "cpu", threads: int = 1,
                 cache_dir: str | Path | None = None) -> None:
        self.prior, self.device, self.threads, self.cache_dir = prior, device, threads, cache_dir
        self._graphs: dict[str, OnnxFrame] = {}
        self._told: set[str] = set()

    def prepare(self, refiner) -> OnnxFrame:
        graph = OnnxFrame.load(refiner, self.prior, self.cache_dir, self.threads, self.device)
        self._graphs[graph.key] = graph
        LOG.info("warm frames of %s as one graph: %s on %s", refiner.format.name, graph.path.name, graph.providers[0])
        return graph

    def get(self, refiner) -> OnnxFrame | None:
        key = graph_key(refiner, self.prior.meta["sha256"])
        graph = self._graphs.get(key)
        if graph is None and key not in self._told:
            self._told.add(key)
            LOG.info("no warm-frame graph for %s with these settings (prepared at start only): eager steps",
                     refiner.format.name)
        return graph

    def status(self) -> str:
        """The formats whose warm frames run as one graph, and where."""
        return ", ".join(sorted(f"{g.path.name.split('-')[1]} ({g.providers[0]})" for g in self._graphs.values()))
