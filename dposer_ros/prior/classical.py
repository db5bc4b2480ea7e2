"""Classical pose priors to compare against, fitted on the same training split: a GMM (SMPLify) and a VAE (VPoser).

Both work per part group, like the diffusion prior: the body (63 values) and a hand (45 values, left hands
mirrored into right ones, so one hand model serves both slots of the pose vector).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..dataset.poses import PoseDataset
from .checkpoint import CheckpointError, load_network, read_arrays, read_checkpoint
from .layout import PARTS, SLICES, mirror_part_mask, mirror_pose, to_vector

GROUPS = {"body": ("body",), "hand": ("left_hand", "right_hand")}


def group_samples(data: PoseDataset) -> dict[str, torch.Tensor]:
    """Training samples per group: body vectors (63) and hand vectors (45; both slots, left already mirrored)."""
    pose = torch.from_numpy(data.pose)
    mask = torch.from_numpy(data.part_mask)
    vec = torch.cat([to_vector(pose), to_vector(mirror_pose(pose))])
    mask = torch.cat([mask, mirror_part_mask(mask)])
    out = {}
    for group, parts in GROUPS.items():
        rows = [vec[mask[:, PARTS.index(p)], SLICES[p]] for p in parts]
        out[group] = torch.cat(rows)
    return out


@dataclass
class GMMPrior:
    """Per group: mixture weights (C,), means (C, D), precision Cholesky factors (C, D, D) (SMPLify's pose GMM)."""

    weights: dict[str, np.ndarray]
    means: dict[str, np.ndarray]
    precisions: dict[str, np.ndarray]

    @classmethod
    def fit(cls, data: PoseDataset, components: int = 8, max_samples: int = 100_000, seed: int = 0) -> GMMPrior:
        from sklearn.mixture import GaussianMixture

        weights, means, precisions = {}, {}, {}
        rng = np.random.default_rng(seed)
        for group, samples in group_samples(data).items():
            x = samples.numpy().astype(np.float64)
            x = x[rng.permutation(len(x))[:max_samples]]
            gmm = GaussianMixture(components, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(x)
            weights[group], means[group], precisions[group] = gmm.weights_, gmm.means_, gmm.precisions_
        return cls(weights, means, precisions)

    def save(self, path: Path) -> None:
        arrays = {f"{k}_{g}": v for k, d in (("weights", self.weights), ("means", self.means),
                                             ("precisions", self.precisions)) for g, v in d.items()}
        np.savez(path, **arrays)  # type: ignore[arg-type]  # mypy: a key of arrays could be allow_pickle

    @classmethod
    def load(cls, path: Path) -> GMMPrior:
        arrays = read_arrays(path, "GMM prior", "fit one with `dposer baselines`")
        try:
            parts = {k: {g: arrays[f"{k}_{g}"] for g in GROUPS} for k in ("weights", "means", "precisions")}
        except KeyError as err:
            raise CheckpointError(f"{path}: not a GMM prior (no array {err})") from None
        if not all(np.isfinite(v).all() for d in parts.values() for v in d.values()):
            raise CheckpointError(f"{path}: GMM prior with non-finite numbers")
        return cls(**parts)

    def nearest(self, group: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For (B, D) poses: the mean and precision of the component with the highest weighted likelihood."""
        means = torch.as_tensor(self.means[group], dtype=torch.float32)
        prec = torch.as_tensor(self.precisions[group], dtype=torch.float32)
        d = x[:, None] - means[None]
        maha = torch.einsum("bci,cij,bcj->bc", d, prec, d)
        logdet = torch.logdet(prec.double()).float()
        score = torch.log(torch.as_tensor(self.weights[group], dtype=torch.float32)) + 0.5 * logdet - 0.5 * maha
        k = score.argmax(1)
        return means[k], prec[k]


class PoseVAE(nn.Module):
    """VPoser-style VAE for one group (input normalised), latent 32."""

    def __init__(self, dim: int, hidden: int = 512, latent: int = 32) -> None:
        super().__init__()
        self.dim, self.latent = dim, latent
        self.enc = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        self.mu, self.logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.enc(x)
        return self.mu(h), self.logvar(h).clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The closest pose the VAE can produce: decode(mean of encode(x))."""
        return self.decode(self.encode(x)[0])


@dataclass
class VAEPrior:
    """Per group VAE over z-scored vectors (the statistics travel with the weights)."""

    vaes: dict[str, PoseVAE]
    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]

    @classmethod
    def fit(cls, data: PoseDataset, steps: int = 3000, batch: int = 512, kl_weight: float = 5e-3, seed: int = 0,
            progress: bool = True) -> VAEPrior:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        vaes, means, stds = {}, {}, {}
        for group, x in group_samples(data).items():
            mean, std = x.mean(0), x.std(0).clamp(min=1e-3)
            xn = (x - mean) / std
            vae = PoseVAE(x.shape[1])
            opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
            for _ in tqdm(range(steps), desc=f"VAE {group}", disable=not progress, leave=False):
                xb = xn[torch.randint(len(xn), (batch,), generator=gen)]
                mu, logvar = vae.encode(xb)
                z = mu + torch.randn(mu.shape, generator=gen) * (0.5 * logvar).exp()
                rec = (vae.decode(z) - xb).square().sum(1).mean()
                kl = (-0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1)).mean()
                loss = rec + kl_weight * kl * x.shape[1]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            vaes[group], means[group], stds[group] = vae.eval(), mean, std
        return cls(vaes, means, stds)

    def save(self, path: Path) -> None:
        torch.save({"state": {g: v.state_dict() for g, v in self.vaes.items()}, "mean": self.mean, "std": self.std,
                    "dims": {g: v.dim for g, v in self.vaes.items()}}, path)

    @classmethod
    def load(cls, path: Path) -> VAEPrior:
        payload = read_checkpoint(path, "VAE prior", "train one with `dposer baselines`")
        try:
            vaes = {g: load_network(PoseVAE, {"dim": payload["dims"][g]}, state, path) for g, state in payload["state"].items()}
            return cls(vaes, payload["mean"], payload["std"])
        except (KeyError, AttributeError) as err:
            raise CheckpointError(f"{path}: not a VAE prior (no {err})") from None

    @torch.no_grad()
    def project(self, group: str, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)); entries the training data never varied (e.g. the wrists of body captures) are fed
        to the encoder at their mean: z-scored by a ~0 std, any rotation of them would blow its input up."""
        m, s = self.mean[group], self.std[group]
        z = torch.where(s > 1e-2, (x - m) / s, 0.0)
        return self.vaes[group].project(z) * s + m
