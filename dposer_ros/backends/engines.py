"""The torch and ONNX Runtime engines (TensorRT: tensorrt_engine.py). Each takes CPU or CUDA tensors and returns
eps on the device of its input `x`, so the solvers (which run on CPU) use any engine unchanged."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..prior.layout import DIM, part_index
from ..prior.model import PosePrior
from .base import LOG, OUTPUT_NAME, BackendError, PriorMeta
from .onnx_export import read_onnx


class TorchEngine:
    """The prior's own network. On CUDA, one CUDA graph is captured per batch size (up to `max_graphs` sizes;
    further sizes run eagerly), which removes the kernel-launch overhead that dominates at these batch sizes."""

    def __init__(self, prior: PosePrior, device: str | torch.device = "cpu", cuda_graphs: bool = True,
                 max_graphs: int = 32) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError("torch engine: CUDA requested but torch sees no CUDA device")
        self.meta = PriorMeta.from_prior(prior)
        self.mean, self.std, self.sde = self.meta.mean, self.meta.std, prior.sde
        net = prior.net if self.device.type == "cpu" else copy.deepcopy(prior.net)
        self.net = net.to(self.device).eval()
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.max_graphs = max_graphs
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]] = {}
        self.name = f"torch-{self.device.type}" + ("-graphs" if self.cuda_graphs else "")
        if self.cuda_graphs:
            part_index(self.device)  # the gather index must exist on the device before any capture

    def eps(self, x: torch.Tensor, t: torch.Tensor, part_mask: torch.Tensor) -> torch.Tensor:
        out_device = x.device
        if self.cuda_graphs and (x.shape[0] in self._graphs or len(self._graphs) < self.max_graphs):
            out = self._replay(x, t, part_mask)
        else:
            with torch.no_grad():
                out = self.net(x.to(self.device, torch.float32), t.to(self.device, torch.float32),
                               part_mask.to(self.device, torch.float32))
        return out.to(out_device)

    def _capture(self, batch: int):
        dev = self.device
        static = (torch.zeros(batch, DIM, device=dev), torch.full((batch,), 0.5, device=dev),
                  torch.ones(batch, 4, device=dev))
        with torch.no_grad():
            # warm up on a side stream (cuBLAS handles, allocator pools), as torch.cuda.graphs requires
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.net(*static)
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self.net(*static)
        LOG.debug("torch engine: captured a CUDA graph for batch %d", batch)
        return graph, static, out

    def _replay(self, x: torch.Tensor, t: torch.Tensor, part_mask: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if batch not in self._graphs:
            self._graphs[batch] = self._capture(batch)
        graph, (sx, st, sm), out = self._graphs[batch]
        sx.copy_(x)
        st.copy_(t)
        sm.copy_(part_mask)
        graph.replay()
        return out.clone()  # the static output is overwritten by the next replay


class OnnxRuntimeEngine:
    """An exported file (`dposer export`) on ONNX Runtime: CPU execution provider, or CUDA when asked for and
    available. `threads` sets intra-op threads (None: onnxruntime's default, one per core)."""

    def __init__(self, onnx_path: str | Path, device: str | torch.device = "cpu", threads: int | None = None,
                 spinning: bool = False) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendError(f"onnxruntime is not importable ({err}); pip install onnxruntime") from err
        info = read_onnx(onnx_path)
        self.path, self.sha256, self.meta = info.path, info.sha256, info.meta
        self.mean, self.std, self.sde = info.meta.mean, info.meta.std, info.meta.make_sde()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = int(threads)
        # idle intra-op threads spin by default, which steals the cores from the solver's torch ops between calls
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                LOG.warning("onnxruntime: no CUDAExecutionProvider in this build (%s); running on CPU",
                            ", ".join(ort.get_available_providers()))
        try:
            self.session = ort.InferenceSession(str(info.path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise BackendError(f"{info.path}: onnxruntime cannot load it ({type(err).__name__}: {err})") from err
        self.providers = self.session.get_providers()
        self.name = "onnxruntime-" + ("cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu")
        self.quantized = info.quantized
        if info.quantized:
            self.name += "-int8"

    def eps(self, x: torch.Tensor, t: torch.Tensor, part_mask: torch.Tensor) -> torch.Tensor:
        feeds = {name: v.detach().to("cpu", torch.float32).contiguous().numpy()
                 for name, v in (("x", x), ("t", t), ("part_mask", part_mask))}
        out = self.session.run([OUTPUT_NAME], feeds)[0]
        return torch.from_numpy(out).to(x.device)
