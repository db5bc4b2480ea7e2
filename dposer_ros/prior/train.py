"""`dposer train`: masked multi-part denoising score matching on the retargeted dataset, resumable, with EMA."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..dataset.poses import WORLD_UP, PoseDataset, default_dataset_path, load_dataset
from .layout import DIFFUSED, PARTS, dim_mask, mirror_part_mask, mirror_pose, to_vector, with_conditions
from .model import Normalizer, PosePrior
from .network import ScoreNet
from .sde import SubVPSDE


@dataclass
class TrainConfig:
    """Training settings (config/train/*.yaml)."""

    out: str = "runs/prior"  # run folder: training state, loss plot, final prior.pt
    dataset: str | None = None  # default: the cache path of `dposer data build`
    net: dict = field(default_factory=lambda: {"hidden": 512, "blocks": 3, "time_dim": 128, "groups": 32, "dropout": 0.1})
    sde: dict = field(default_factory=lambda: {"beta_min": 0.1, "beta_max": 20.0})
    steps: int = 20000
    batch_size: int = 512
    lr: float = 1e-3
    warmup: int = 500
    min_lr_ratio: float = 0.02
    ema: float = 0.999
    grad_clip: float = 1.0
    part_drop: float = 0.2  # chance that an available part is hidden from the input (and the loss) of a sample
    hand_fraction: float = 0.3  # share of each batch drawn from frames with hands (balances body-only and hand data)
    mirror: bool = True  # left-right mirror augmentation
    t_eps: float = 1e-5
    checkpoint_every: int = 500
    val_every: int = 1000
    val_batches: int = 8
    seed: int = 0
    threads: int = 2
    max_frames: int | None = None  # use at most this many training frames (tiny runs for tests)

    @classmethod
    def from_yaml(cls, path: Path) -> TrainConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown training settings {sorted(unknown)}")
        return cls(**raw)


class _Batches:
    """Random batches of (normalised vector, available-part mask), mixing body-only and hand frames. The gravity part
    is available wherever the body is (the dataset's world is the sources' own, `WORLD_UP`)."""

    def __init__(self, data: PoseDataset, cfg: TrainConfig, normalizer: Normalizer | None, generator: torch.Generator):
        pose = torch.from_numpy(data.pose)
        mask = with_conditions(torch.from_numpy(data.part_mask), True)
        up = torch.tensor(WORLD_UP)
        vectors, masks = [to_vector(pose, up=up)], [mask]
        if cfg.mirror:  # the mirror is left-right: the up direction stays
            vectors.append(to_vector(mirror_pose(pose), up=up))
            masks.append(mirror_part_mask(mask))
        self.vectors, self.masks = torch.cat(vectors), torch.cat(masks).float()
        self.normalizer = normalizer or Normalizer.fit(self.vectors, self.masks)
        self.vectors = self.normalizer.normalize(self.vectors)
        has_hand = self.masks[:, [PARTS.index("left_hand"), PARTS.index("right_hand")]].any(1)
        self.hand_idx = torch.nonzero(has_hand).squeeze(1)
        self.other_idx = torch.nonzero(~has_hand).squeeze(1)
        self.cfg, self.gen = cfg, generator

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_hand = round(self.cfg.hand_fraction * batch) if len(self.hand_idx) and len(self.other_idx) else 0
        pools = [(self.hand_idx, n_hand), (self.other_idx, batch - n_hand)]
        idx = torch.cat([pool[torch.randint(len(pool), (n,), generator=self.gen)] for pool, n in pools if n > 0])
        return self.vectors[idx], self.masks[idx]


def visible_parts(available: torch.Tensor, drop: float, generator: torch.Generator) -> torch.Tensor:
    """Hide each available part with probability `drop`, keeping at least one per sample."""
    keep = (torch.rand(available.shape, generator=generator) >= drop).float() * available
    empty = keep.sum(1) == 0
    keep[empty] = available[empty]
    return keep


def denoising_loss(net: ScoreNet, sde: SubVPSDE, x0: torch.Tensor, mask: torch.Tensor, t_eps: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Epsilon matching on the visible diffused parts: ||eps(x_t, t) - z||^2, t ~ U(t_eps, 1); condition parts are
    given clean."""
    t = t_eps + torch.rand(x0.shape[0], generator=generator) * (1.0 - t_eps)
    z = torch.randn(x0.shape, generator=generator)
    mean, std = sde.mean_std(t)
    x_t = torch.where(DIFFUSED.bool(), mean[:, None] * x0 + std[:, None] * z, x0)
    m = dim_mask(mask) * DIFFUSED
    return ((net(x_t, t, mask) - z).square() * m).sum() / m.sum()


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _loss_plot(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps, losses = np.array(history["step"]), np.array(history["loss"])
    if len(losses):
        k = max(1, len(losses) // 100)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, label="train (smoothed)")
    if history["val_step"]:
        ax.plot(history["val_step"], history["val_loss"], "o-", label="val (EMA weights)")
    ax.set_xlabel("step")
    ax.set_ylabel("denoising loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True) -> Path:
    """Train (or resume) a prior; returns the path of the final EMA prior checkpoint."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(Path(cfg.dataset) if cfg.dataset else default_dataset_path())
    train_data = data.subset(data.split_mask("train"))
    val_data = data.subset(data.split_mask("val"))
    if cfg.max_frames is not None:
        rng = np.random.default_rng(cfg.seed)
        train_data = train_data.subset(np.sort(rng.permutation(len(train_data))[: cfg.max_frames]))
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = _Batches(train_data, cfg, None, gen)
    val_batches = _Batches(val_data, cfg, batches.normalizer, torch.Generator().manual_seed(cfg.seed + 1))

    net = ScoreNet(**cfg.net)
    sde = SubVPSDE(**cfg.sde)
    ema = copy.deepcopy(net).eval()
    opt = torch.optim.RAdam(net.parameters(), lr=cfg.lr)
    state_path = out / "train_state.pt"
    history: dict[str, Any] = {"step": [], "loss": [], "val_step": [], "val_loss": [], "seconds": 0.0}
    step = 0
    if resume and state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["rng"])
        step, history = state["step"], state["history"]
        tqdm.write(f"resuming {state_path} at step {step}")

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "rng": gen.get_state(),
                    "step": step, "history": history, "config": asdict(cfg)}, tmp)
        tmp.replace(state_path)

    def val_loss() -> float:
        g = torch.Generator().manual_seed(1234)
        val_batches.gen = torch.Generator().manual_seed(4321)
        with torch.no_grad():
            losses = [denoising_loss(ema, sde, *val_batches.sample(cfg.batch_size), cfg.t_eps, g).item()
                      for _ in range(cfg.val_batches)]
        return float(np.mean(losses))

    started = time.perf_counter() - history["seconds"]
    bar = tqdm(total=cfg.steps, initial=step, desc="train prior", disable=not progress, unit="step")
    net.train()
    while step < cfg.steps:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg)
        x0, available = batches.sample(cfg.batch_size)
        loss = denoising_loss(net, sde, x0, visible_parts(available, cfg.part_drop, gen), cfg.t_eps, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - decay)
        step += 1
        history["step"].append(step)
        history["loss"].append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.val_every == 0 or step == cfg.steps:
            history["val_step"].append(step)
            history["val_loss"].append(val_loss())
            bar.write(f"step {step}: val loss {history['val_loss'][-1]:.4f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            history["seconds"] = time.perf_counter() - started
            save_state()
            _loss_plot(history, out / "loss.png")
    bar.close()
    history["seconds"] = time.perf_counter() - started
    prior = PosePrior(ema, sde, batches.normalizer, meta={
        "train_config": asdict(cfg),
        "steps": step,
        "train_seconds": round(history["seconds"], 1),
        "final_val_loss": history["val_loss"][-1] if history["val_loss"] else None,
        "dataset": {"path": str(cfg.dataset or default_dataset_path()), "frames": len(train_data),
                    "sources": data.meta["sources"], "licences": data.meta["licences"]},
    })
    final = out / "prior.pt"
    prior.save(final)
    save_state()
    _loss_plot(history, out / "loss.png")
    return final
