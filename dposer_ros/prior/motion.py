"""Hidden legs from motion: the rotations of the 8 leg joints (hips, knees, ankles, feet) regressed from up to a
second of the rest of the body's motion, where a single-frame prior can only guess them from one upper-body pose.

Input, all in the pelvis frame of now: the 13 other body joints' rotations and the up direction now, and for each
lag of `lags` (seconds) the root's velocity over the lag, the root's rotation then relative to now and the other
body joints' rotations then, with a flag that says whether the track's history reaches that far back (a new track
has only its first lags). Rotations go in as their first two columns (6D), the output comes back through
Gram-Schmidt. Trained on the dataset's body takes (train split; sources whose root does not move left out) with
mirrored copies, the given rotations and positions perturbed as a fitted upper body's are, and random history
lengths (`dposer motion`, config/train/motion.yaml; bench/experiments/2026-12-07-foreign-leg-motion*). The few-step
refiner uses it as the target of hidden legs of a moving person (`FewStepRefiner(..., motion=...)`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import roma
import torch
import yaml
from torch import nn
from tqdm import tqdm

from .checkpoint import CheckpointError, load_network, read_checkpoint
from .layout import mirror_pose

LEGS = (1, 2, 4, 5, 7, 8, 10, 11)  # SMPL-X hips, knees, ankles, feet
UPPER = tuple(j for j in range(1, 22) if j not in LEGS)  # the other 13 body joints
FORMAT = "dposer_ros.motion/1"
MotionError = CheckpointError  # a motion model file is missing, corrupt or does not match this code


def six(r: torch.Tensor) -> torch.Tensor:
    """(B, J, 3, 3) rotations -> (B, 6 J): the first two columns of each."""
    return r[..., :2].reshape(r.shape[0], -1)


def features(now: torch.Tensor, past: torch.Tensor, velocity: torch.Tensor, available: torch.Tensor,
             up: torch.Tensor) -> torch.Tensor:
    """The network's input. now (B, 22, 3, 3) body rotations (root first), past (B, L, 22, 3, 3) the same at each
    lag, velocity (B, L, 3) the root's world velocity over each lag (m/s), available (B, L) bool, up (B, 3)."""
    root_t = now[:, 0].transpose(-1, -2)
    batch, lags = available.shape
    flag = available.float()[..., None]
    moved = (root_t[:, None] @ velocity[..., None])[..., 0] * flag  # (B, L, 3) in the pelvis frame
    turned = (root_t[:, None] @ past[:, :, 0])[..., :2].reshape(batch, lags, 6) * flag
    then = past[:, :, list(UPPER)][..., :2].reshape(batch, lags, -1) * flag
    per_lag = torch.cat([moved, turned, then, flag], -1).flatten(1)
    return torch.cat([six(now[:, list(UPPER)]), (root_t @ up[..., None])[..., 0], per_lag], 1)


def input_width(lags: int) -> int:
    return 6 * len(UPPER) + 3 + lags * (3 + 6 + 6 * len(UPPER) + 1)


class MotionNet(nn.Module):
    """MLP: features -> the legs' rotations (6D each)."""

    def __init__(self, lags: int, hidden: int = 512, layers: int = 2) -> None:
        super().__init__()
        self.config = {"lags": lags, "hidden": hidden, "layers": layers}
        dims = [input_width(lags)] + [hidden] * layers
        blocks = [m for a, b in zip(dims[:-1], dims[1:]) for m in (nn.Linear(a, b), nn.SiLU())]
        self.mlp = nn.Sequential(*blocks, nn.Linear(hidden, 6 * len(LEGS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class LegMotion(nn.Module):
    """The network with its lags (seconds) and the rate of the takes it learnt from."""

    def __init__(self, net: MotionNet, lags: tuple[float, ...], fps: float, meta: dict | None = None) -> None:
        super().__init__()
        if len(lags) != net.config["lags"] or list(lags) != sorted(lags) or min(lags) <= 0:
            raise MotionError(f"lags must be {net.config['lags']} increasing positive seconds, got {list(lags)}")
        self.net, self.lags, self.fps, self.meta = net, tuple(float(x) for x in lags), float(fps), dict(meta or {})

    @torch.no_grad()
    def __call__(self, now: torch.Tensor, past: torch.Tensor, velocity: torch.Tensor, available: torch.Tensor,
                 up: torch.Tensor) -> torch.Tensor:
        """(`features`' arguments) -> (B, 8, 3) the legs' rotations (axis-angle), in `LEGS` order."""
        out = self.net(features(now.float(), past.float(), velocity.float(), available, up.float()))
        return roma.rotmat_to_rotvec(roma.special_gramschmidt(out.reshape(-1, len(LEGS), 3, 2)))

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": FORMAT, "net_config": self.net.config, "state_dict": self.net.state_dict(),
                    "lags": list(self.lags), "fps": self.fps, "meta": self.meta}, path)

    @classmethod
    def load(cls, path: Path) -> LegMotion:
        path = Path(path)
        payload = read_checkpoint(path, "motion model", "train one with `dposer motion`", FORMAT)
        net = load_network(MotionNet, payload.get("net_config"), payload.get("state_dict"), path)
        lags, fps = payload.get("lags"), payload.get("fps")
        if not isinstance(lags, list) or not isinstance(fps, float) or not fps > 0:
            raise MotionError(f"{path}: 'lags' (a list of seconds) and 'fps' (a positive number) are required")
        return cls(net, tuple(lags), fps, payload.get("meta")).eval()


@dataclass(frozen=True)
class MotionTrainConfig:
    """Training of the motion model (config/train/motion.yaml)."""

    lags: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)  # seconds; each a whole number of dataset frames
    left_out: tuple[str, ...] = ("reactidle", "manipnet_hands")  # sources with a pinned root or no body
    rotation_noise: float = 0.08  # rad of Gaussian error on every given rotation (a fitted body's)
    position_noise: float = 0.01  # m on every given root position
    full_history: float = 0.5  # share of samples with every lag their take has; the rest a random prefix of lags
    hidden: int = 512
    layers: int = 2
    steps: int = 5000
    batch: int = 1024
    lr: float = 2e-3  # peak of the one-cycle schedule
    seed: int = 0
    threads: int = 1

    @classmethod
    def from_yaml(cls, path: Path) -> MotionTrainConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown motion training settings {sorted(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def train_motion(ds, config: MotionTrainConfig = MotionTrainConfig(), progress: bool = True) -> LegMotion:
    """Fit on a `dataset.poses.PoseDataset`'s train split: mean squared error of the legs' 6D rotations."""
    torch.manual_seed(config.seed)
    gen = np.random.default_rng(config.seed)
    fps = float(ds.meta["fps"])
    frames = [round(lag * fps) for lag in config.lags]
    if any(abs(f - lag * fps) > 1e-6 or f < 1 for f, lag in zip(frames, config.lags)):
        raise ValueError(f"every lag must be a whole number of the dataset's frames (1/{fps:g} s), got {config.lags}")
    sources = list(ds.meta["sources"])
    rows = np.arange(len(ds.take))
    ok = ds.split_mask("train") & ds.part_mask[:, 0].astype(bool)
    ok &= ~np.isin(ds.source, [sources.index(s) for s in config.left_out if s in sources])
    reach = np.zeros((len(rows), len(frames)), bool)  # reach[i, l]: row i's take has the frame lag l back
    for i, lag in enumerate(frames):
        j = np.clip(rows - lag, 0, None)
        reach[:, i] = (rows >= lag) & (ds.take[j] == ds.take) & (ds.frame - ds.frame[j] == lag)
    depth = np.cumprod(reach, 1).sum(1)  # how many lags of history each row has
    usable = rows[ok & (depth > 0)]
    pose = torch.as_tensor(ds.pose[:, :22]).float()
    transl = torch.as_tensor(ds.transl).float()
    lag_frames, lag_s = torch.tensor(frames), torch.tensor(config.lags)
    up = torch.tensor([0.0, 1.0, 0.0])  # the dataset's frame is Y up

    def batch(rows_np: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(rows_np)
        have = torch.as_tensor(depth[rows_np])
        full = torch.rand(len(idx)) < config.full_history
        count = torch.where(full, have, (torch.rand(len(idx)) * have.float()).long() + 1)  # 1 .. have lags
        available = torch.arange(len(frames))[None] < count[:, None]  # (B, L)
        then = (idx[:, None] - lag_frames[None]).clamp(min=0) * available + idx[:, None] * ~available
        body = torch.cat([pose[idx][:, None], pose[then]], 1)  # (B, 1 + L, 22, 3)
        where = torch.cat([transl[idx][:, None], transl[then]], 1)
        mirror = torch.rand(len(idx)) < 0.5  # the mirror image: sides swapped, x negated
        full_pose = torch.zeros(*body.shape[:2], 55, 3)
        full_pose[:, :, :22] = body
        body = torch.where(mirror[:, None, None, None], mirror_pose(full_pose)[:, :, :22], body)
        where = torch.where(mirror[:, None, None], where * torch.tensor([-1.0, 1.0, 1.0]), where)
        truth = roma.rotvec_to_rotmat(body[:, 0, list(LEGS)])
        noise = torch.randn(*body.shape) * config.rotation_noise / 3**0.5
        rot = roma.rotvec_to_rotmat(body) @ roma.rotvec_to_rotmat(noise)
        where = where + torch.randn(*where.shape) * config.position_noise / 3**0.5
        velocity = (where[:, :1] - where[:, 1:]) / lag_s[None, :, None]
        x = features(rot[:, 0], rot[:, 1:], velocity, available, up.expand(len(idx), 3))
        return x, six(truth)

    net = MotionNet(len(frames), config.hidden, config.layers)
    opt = torch.optim.AdamW(net.parameters(), config.lr / 2)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.steps)
    bar = tqdm(range(config.steps), desc="motion", disable=not progress, mininterval=2)
    first = math.nan
    for _ in bar:
        x, y = batch(usable[gen.integers(len(usable), size=config.batch)])
        loss = (net(x) - y).square().mean()
        first = loss.item() if math.isnan(first) else first
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    meta = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
            "frames": int(len(usable)),
            "first_loss": round(first, 5), "final_loss": round(loss.item(), 5)}
    return LegMotion(net.eval(), config.lags, fps, meta)
