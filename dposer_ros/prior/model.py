"""The pose prior: score network + SDE + normalisation, its denoiser, and validated checkpoint files."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError, finite_vector, load_network, read_checkpoint
from .layout import DIM, PART_DIMS, PARTS, dim_mask
from .network import ScoreNet
from .sde import SubVPSDE

CHECKPOINT_FORMAT = "dposer_ros.prior/1"


@dataclass
class Normalizer:
    """Per-entry z-score statistics of the pose vector (entries of parts never seen keep mean 0, std 1)."""

    mean: torch.Tensor  # (DIM,)
    std: torch.Tensor  # (DIM,)

    @classmethod
    def fit(cls, vectors: torch.Tensor, part_mask: torch.Tensor, min_std: float = 1e-3) -> Normalizer:
        m = dim_mask(part_mask)
        count = m.sum(0).clamp(min=1)
        mean = (vectors * m).sum(0) / count
        var = ((vectors - mean).square() * m).sum(0) / count
        seen = m.sum(0) > 1
        return cls(torch.where(seen, mean, 0.0), torch.where(seen, var.sqrt().clamp(min=min_std), 1.0))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean


class PosePrior(torch.nn.Module):
    """A diffusion prior over normalised pose vectors, usable through `denoise` without gradients."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, net: ScoreNet, sde: SubVPSDE, normalizer: Normalizer, meta: dict | None = None) -> None:
        super().__init__()
        self.net, self.sde = net, sde
        self.register_buffer("mean", normalizer.mean.clone())
        self.register_buffer("std", normalizer.std.clone())
        self.meta = dict(meta or {})

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer(self.mean, self.std)

    def eps(self, x: torch.Tensor, t: torch.Tensor, part_mask: torch.Tensor) -> torch.Tensor:
        """Predicted noise at normalised x_t."""
        return self.net(x, t, part_mask)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, part_mask: torch.Tensor) -> torch.Tensor:
        """One-step estimate of x_0 from normalised x_t: (x_t - std(t) eps) / mean(t) (Tweedie)."""
        mean, std = self.sde.mean_std(t)
        return (x_t - std[:, None] * self.eps(x_t, t, part_mask)) / mean[:, None]

    def save(self, path: Path, extra: dict | None = None) -> None:
        """Write weights, normalisation, SDE and network settings and metadata in one file."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "layout": {"parts": list(PARTS), "dims": dict(PART_DIMS)},
            "net_config": self.net.config,
            "sde": {"beta_min": self.sde.beta_min, "beta_max": self.sde.beta_max, "num_steps": self.sde.N},
            "state_dict": self.net.state_dict(),
            "mean": self.mean,
            "std": self.std,
            "meta": {**self.meta, **(extra or {})},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PosePrior:
        """Load and validate a checkpoint written by `save` (or the `prior` entry of a training checkpoint)."""
        path = Path(path)
        payload = read_checkpoint(path, "prior checkpoint", "train one with `dposer train`, or use models/")
        if "prior" in payload and "format" not in payload:  # a training checkpoint
            payload = payload["prior"]
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise CheckpointError(f"{path}: not a dposer prior checkpoint (format {got!r}, expected {CHECKPOINT_FORMAT!r})")
        layout = payload.get("layout", {})
        if layout.get("parts") != list(PARTS) or layout.get("dims") != dict(PART_DIMS):
            raise CheckpointError(f"{path}: part layout {layout} does not match this code's {dict(PART_DIMS)}")
        mean, std = (finite_vector(payload, key, DIM, path) for key in ("mean", "std"))
        net = load_network(ScoreNet, payload.get("net_config"), payload.get("state_dict"), path)
        sde = SubVPSDE(**payload["sde"])
        prior = cls(net, sde, Normalizer(mean, std), payload.get("meta"))
        prior.meta["sha256"] = file_sha256(path)
        return prior.eval()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_bytes(module: torch.nn.Module) -> bytes:
    """Serialised weights (for hashing a model independently of its file)."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.getvalue()
