"""What every inference backend shares: the engine interface, its error type, and the prior's metadata.

An engine is anything with `name`, `mean` (DIM,), `std` (DIM,), `sde` (a `SubVPSDE`) and
`eps(x, t, part_mask) -> torch.Tensor`: exactly what `FewStepRefiner` (and `FullOptimizer`) use of a prior.
`PosePrior` itself satisfies it; the engines here run the same score network on other runtimes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import torch

from ..prior.engine import Engine  # noqa: F401  (re-exported: the backends' interface)
from ..prior.layout import DIM, PART_DIMS, PARTS
from ..prior.model import PosePrior, state_bytes
from ..prior.sde import SubVPSDE

LOG = logging.getLogger("dposer_ros.backends")

INPUT_NAMES = ("x", "t", "part_mask")
OUTPUT_NAME = "eps"
META_KEY = "dposer_ros.prior"  # ONNX metadata_props key holding PriorMeta as JSON
QUANT_KEY = "dposer_ros.quantized"  # ONNX metadata_props key: how the weights were quantized (backends/quantize.py)
META_FORMAT = "dposer_ros.onnx/1"


class BackendError(RuntimeError):
    """A backend cannot serve the prior: its package or a GPU is missing, or a model/engine file is corrupt or
    does not match. The message names the file when there is one."""

    unavailable: bool  # set (True) only when the backend is not installed or has no GPU: read it with getattr


@dataclass(frozen=True)
class PriorMeta:
    """Everything but the weights that a runtime needs to stand in for a `PosePrior`."""

    mean: torch.Tensor  # (DIM,) float32
    std: torch.Tensor  # (DIM,) float32
    sde: dict  # SubVPSDE keyword arguments: beta_min, beta_max, num_steps
    net_config: dict
    prior_sha256: str  # of the checkpoint file the weights came from (or of the weights, for an unsaved prior)
    layout: dict = field(default_factory=lambda: {"parts": list(PARTS), "dims": dict(PART_DIMS)})

    @classmethod
    def from_prior(cls, prior: PosePrior) -> PriorMeta:
        sha = prior.meta.get("sha256") or hashlib.sha256(state_bytes(prior.net)).hexdigest()
        return cls(
            mean=prior.mean.detach().float().cpu().clone(),
            std=prior.std.detach().float().cpu().clone(),
            sde={"beta_min": prior.sde.beta_min, "beta_max": prior.sde.beta_max, "num_steps": prior.sde.N},
            net_config=dict(prior.net.config),
            prior_sha256=sha,
        )

    def make_sde(self) -> SubVPSDE:
        return SubVPSDE(**self.sde)

    def to_json(self) -> str:
        return json.dumps({
            "format": META_FORMAT,
            "layout": self.layout,
            "net_config": self.net_config,
            "sde": self.sde,
            "prior_sha256": self.prior_sha256,
            # float32 -> Python float -> JSON repr round-trips exactly back to the same float32
            "mean": [float(v) for v in self.mean.tolist()],
            "std": [float(v) for v in self.std.tolist()],
        })

    @classmethod
    def from_json(cls, text: str, source: str) -> PriorMeta:
        """Parse and validate; `source` (a file name) goes into every error message."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as err:
            raise BackendError(f"{source}: prior metadata is not valid JSON ({err})") from err
        if not isinstance(data, dict) or data.get("format") != META_FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise BackendError(f"{source}: prior metadata format {got!r}, expected {META_FORMAT!r}")
        layout = data.get("layout", {})
        if layout.get("parts") != list(PARTS) or layout.get("dims") != dict(PART_DIMS):
            raise BackendError(f"{source}: part layout {layout} does not match this code's {dict(PART_DIMS)}")
        try:
            mean = torch.tensor(data["mean"], dtype=torch.float32)
            std = torch.tensor(data["std"], dtype=torch.float32)
            meta = cls(mean, std, dict(data["sde"]), dict(data["net_config"]), str(data["prior_sha256"]), layout)
            meta.make_sde()
        except (KeyError, TypeError, ValueError) as err:
            raise BackendError(f"{source}: incomplete prior metadata ({type(err).__name__}: {err})") from err
        for key, value in (("mean", mean), ("std", std)):
            if value.shape != (DIM,) or not torch.isfinite(value).all():
                raise BackendError(f"{source}: normalisation '{key}' must be {DIM} finite numbers, got shape {tuple(value.shape)}")
        return meta
