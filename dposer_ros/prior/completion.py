"""Conditional completion of hidden body joints: the rotations of the joints no keypoint sees, regressed from the
rotations of the seen ones (the mean of the hidden joints given the seen ones, amortised in one small network).

Trained on the same training split as the prior, with random masks of whole subtrees (a limb, both legs) and of
single joints, left-right mirrored. The few-step refiner can use it as the target of hidden body joints
(`FewStepRefiner(..., completion=...)`, method `few_step_completion` of `dposer eval`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..body.skeleton import PART_JOINTS, smplx_neutral
from .checkpoint import CheckpointError, finite_vector, load_network, read_checkpoint
from .layout import mirror_pose

BODY = tuple(PART_JOINTS["body"])  # the 21 body joints below the pelvis, in the prior vector's order
FORMAT = "dposer_ros.completion/1"


CompletionError = CheckpointError  # a completion file is missing, corrupt or does not match this code


def subtree_matrix() -> torch.Tensor:
    """(21, 21): entry [a, b] is 1 when body joint b is body joint a or below it."""
    parents, index = smplx_neutral().parents, {j: k for k, j in enumerate(BODY)}
    out = torch.zeros(len(BODY), len(BODY))
    for k, j in enumerate(BODY):
        while j > 0:
            if j in index:
                out[index[j], k] = 1.0
            j = parents[j]
    return out


def random_hidden(batch: int, generator: torch.Generator, max_cuts: int = 3, max_fraction: float = 0.6) -> torch.Tensor:
    """(B, 21) masks of hidden joints: a third 1-`max_cuts` whole subtrees, a third independent joints (each with a
    per-sample chance up to `max_fraction`), a third both together."""
    n = len(BODY)
    cuts = torch.zeros(batch, n)
    count = torch.randint(1, max_cuts + 1, (batch,), generator=generator)
    rows = torch.arange(batch)
    for i in range(max_cuts):
        cuts[rows, torch.randint(0, n, (batch,), generator=generator)] += (count > i).float()
    subtrees = ((cuts @ subtree_matrix()) > 0).float()
    single = (torch.rand(batch, n, generator=generator) < torch.rand(batch, 1, generator=generator) * max_fraction).float()
    kind = torch.randint(0, 3, (batch, 1), generator=generator)
    return torch.where(kind == 0, subtrees, torch.where(kind == 1, single, torch.maximum(subtrees, single)))


class CompletionNet(nn.Module):
    """MLP: (seen rotations, zeros where hidden; the hidden mask) -> all body rotations (normalised)."""

    def __init__(self, hidden: int = 512, layers: int = 3) -> None:
        super().__init__()
        self.config = {"hidden": hidden, "layers": layers}
        dims = [3 * len(BODY) + len(BODY)] + [hidden] * layers
        blocks = [m for a, b in zip(dims[:-1], dims[1:]) for m in (nn.Linear(a, b), nn.SiLU())]
        self.mlp = nn.Sequential(*blocks, nn.Linear(hidden, 3 * len(BODY)))

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        seen = (1.0 - hidden).repeat_interleave(3, dim=-1)
        out = self.mlp(torch.cat([x * seen, hidden], dim=-1))
        return x * seen + out * (1.0 - seen)


class Completion(nn.Module):
    """The network with its normalisation (per-entry mean and std of the body rotations)."""

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, net: CompletionNet, mean: torch.Tensor, std: torch.Tensor, meta: dict | None = None) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.meta = dict(meta or {})

    @torch.no_grad()
    def __call__(self, pose: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """pose (B, 55, 3) axis-angle, hidden (B, 21) bool over `BODY` -> (B, 21, 3) completed body rotations (the
        seen joints as given)."""
        x = (pose[:, list(BODY)].flatten(1) - self.mean) / self.std
        out = self.net(x, hidden.float()) * self.std + self.mean
        return out.unflatten(-1, (len(BODY), 3))

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": FORMAT, "net_config": self.net.config, "state_dict": self.net.state_dict(),
                    "mean": self.mean, "std": self.std, "meta": self.meta}, path)

    @classmethod
    def load(cls, path: Path) -> Completion:
        path = Path(path)
        payload = read_checkpoint(path, "completion model", "train one with `dposer completion`", FORMAT)
        mean, std = (finite_vector(payload, key, 3 * len(BODY), path) for key in ("mean", "std"))
        net = load_network(CompletionNet, payload.get("net_config"), payload.get("state_dict"), path)
        return cls(net, mean, std, payload.get("meta")).eval()


def train_completion(pose: torch.Tensor, steps: int = 15000, batch: int = 512, lr: float = 1e-3, hidden: int = 512,
                     layers: int = 3, seed: int = 0, progress: bool = True) -> Completion:
    """Fit on (N, 55, 3) training poses with body truth (mirrored copies added): mean squared error of the hidden
    joints' normalised rotations, one-cycle learning rate."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    pose = torch.cat([pose, mirror_pose(pose)]).float()
    body = pose[:, list(BODY)].flatten(1)
    mean, std = body.mean(0), body.std(0).clamp(min=1e-3)
    x = (body - mean) / std
    net = CompletionNet(hidden, layers)
    opt = torch.optim.AdamW(net.parameters(), lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    bar = tqdm(range(steps), desc="completion", disable=not progress, mininterval=2)
    for _ in bar:
        xb = x[torch.randint(len(x), (batch,), generator=gen)]
        h = random_hidden(batch, gen)
        h3 = h.repeat_interleave(3, dim=-1)
        loss = ((net(xb, h) - xb).square() * h3).sum() / h3.sum().clamp(min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return Completion(net.eval(), mean, std, {"steps": steps, "batch": batch, "lr": lr, "seed": seed,
                                              "frames": len(pose), "final_loss": round(loss.item(), 4)})
