"""Round 43 probe: the target of hidden legs from a second of the track's answers (an MLP trained here on the
dataset's train split, as bench/leg_history_probe.py's `history` regressor), on validation hidden legs.

    python bench/experiments/2026-12-07-foreign-leg-motion-probe/probe.py cam_occl_legs 0.08 0.3
    python bench/experiments/2026-12-07-foreign-leg-motion-probe/probe.py cam_occl_legs 0.08 0.3 40 short

argv: corruption, rotation noise of training (rad), speed gate (m/s over the last 0.5 s; 0: none), frames per clip
(90), "short" for lags of 0.1-0.5 s instead of 0.1-1 s. Trains the net once (2-4 minutes,
scratch/leg_history_net[_short]_<noise>.pt), then streams 12 validation clips with few_step, few_step + the motion
target, no prior, scoring hidden keypoints of the frames after the longest lag (where the history exists).
A probe: the refiner is subclassed here, nothing of it is in the package (NOTES.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import roma
import torch

from dposer_ros.body import ForwardKinematics
from dposer_ros.body.jacobian import offset_frames
from dposer_ros.dataset.poses import default_dataset_path, load_dataset
from dposer_ros.evaluation import load_corruptions
from dposer_ros.evaluation.foreign import _rest_joints, foreign_clips
from dposer_ros.evaluation.methods import method_settings
from dposer_ros.evaluation.runner import run_stream, stream_seed
from dposer_ros.paths import config_path, default_mocap_dir
from dposer_ros.prior.model import PosePrior
from dposer_ros.solvers.baselines import NoPriorRefiner
from dposer_ros.solvers.gauss_newton import Pull
from dposer_ros.solvers.refine import FewStepRefiner

LEGS = [1, 2, 4, 5, 7, 8, 10, 11]  # SMPL-X hips, knees, ankles, feet (free index == joint index up to 21)
UPPER = [j for j in range(1, 22) if j not in LEGS]
CORRUPTION = sys.argv[1] if len(sys.argv) > 1 else "cam_occl_legs"
NOISE = float(sys.argv[2]) if len(sys.argv) > 2 else 0.08
GATE = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
FRAMES = int(sys.argv[4]) if len(sys.argv) > 4 else 90
SHORT = len(sys.argv) > 5 and sys.argv[5] == "short"
LAGS = [3, 6, 9, 12, 15] if SHORT else [3, 6, 9, 12, 15, 21, 30]  # frames at 30 Hz
NET = Path(f"scratch/leg_history_net{'_short' if SHORT else ''}_{NOISE}.pt")


def six(r: torch.Tensor) -> torch.Tensor:
    return r[..., :2].reshape(r.shape[0], -1)


def features(now, past, position, past_positions, up) -> torch.Tensor:
    """now (B, 22, 3, 3) rotations, past: one (B, 22, 3, 3) per lag, root positions (B, 3) and per lag, up (B, 3)."""
    root_t = now[:, 0].transpose(-1, -2)
    x = [six(now[:, UPPER]), (root_t @ up[..., None])[..., 0]]
    for lag, rotations, before in zip(LAGS, past, past_positions):
        x.append((root_t @ (position - before)[..., None])[..., 0] * (30.0 / lag))
        x += [six((root_t @ rotations[:, 0])[:, None]), six(rotations[:, UPPER])]
    return torch.cat(x, 1)


def network(width: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(width, 512), torch.nn.SiLU(), torch.nn.Linear(512, 512), torch.nn.SiLU(),
                               torch.nn.Linear(512, 6 * len(LEGS)))


def train() -> None:
    ds = load_dataset(default_dataset_path())
    sources = list(ds.meta["sources"])
    idx = np.arange(len(ds.take))
    ok = ds.part_mask[:, 0] & ~np.isin(ds.source, [sources.index("reactidle"), sources.index("manipnet_hands")])
    for lag in LAGS:
        j = np.clip(idx - lag, 0, None)
        ok &= (idx >= lag) & (ds.take[j] == ds.take) & (ds.frame - ds.frame[j] == lag)
    rotations = roma.rotvec_to_rotmat(torch.as_tensor(ds.pose[:, :22]).float())
    transl = torch.as_tensor(ds.transl).float()
    rows_train = idx[ok & ds.split_mask("train")]

    def noisy(r: torch.Tensor) -> torch.Tensor:
        return r @ roma.rotvec_to_rotmat(torch.randn(*r.shape[:-2], 3) * NOISE / 3**0.5)

    def position(rows: torch.Tensor) -> torch.Tensor:
        return transl[rows] + torch.randn(len(rows), 3) * 0.01 / 3**0.5

    def batch(rows_np: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(rows_np)
        up = torch.tensor([0.0, 1.0, 0.0]).expand(len(rows), 3)
        x = features(noisy(rotations[rows]), [noisy(rotations[rows - lag]) for lag in LAGS], position(rows),
                     [position(rows - lag) for lag in LAGS], up)
        return x, six(rotations[rows][:, LEGS])

    net = network(batch(rows_train[:2])[0].shape[1])
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=3000)
    t0 = time.time()
    for _ in range(3000):
        x, y = batch(rows_train[np.random.randint(len(rows_train), size=1024)])
        loss = (net(x) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    torch.save(net.state_dict(), NET)
    print(f"trained in {time.time() - t0:.0f} s", flush=True)


class HistoryRefiner(FewStepRefiner):
    """few_step with the hidden legs' target from the regressor, given the track's answers of the last second."""

    net: torch.nn.Module

    def __call__(self, obs, init=None):
        if init is None:
            self.history: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.up = obs.up
        out = super().__call__(obs, init)
        self.history.append((roma.rotvec_to_rotmat(out.pose[:, :22].float()), out.transl.float()))
        return out

    def prior_pulls(self, pose, t, generator, carry):
        pulls = super().prior_pulls(pose, t, generator, carry)
        if len(self.history) < LAGS[-1] + 1 or self.up is None:
            return pulls
        up = self.up.float()
        moved = self.history[-1][1] - self.history[-16][1]
        speed = (moved - (moved * up).sum(-1, keepdim=True) * up).norm(dim=-1) * 2.0  # m/s over the last 0.5 s
        hidden = ~carry["seen"][:, LEGS] & (speed > GATE)[:, None]
        if not bool(hidden.any()):
            return pulls
        now = roma.rotvec_to_rotmat(pose[:, :22].float())
        x = features(now, [self.history[-lag][0] for lag in LAGS], self.history[-1][1],
                     [self.history[-1 - lag][1] for lag in LAGS], up)
        with torch.no_grad():
            legs = roma.rotmat_to_rotvec(roma.special_gramschmidt(self.net(x).reshape(-1, len(LEGS), 3, 2)))
        target = pulls[0].target.clone()
        for k, joint in enumerate(LEGS):
            target[:, joint] = torch.where(hidden[:, k : k + 1], legs[:, k], target[:, joint])
        return [Pull(target, pulls[0].scale), *pulls[1:]]


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if not NET.exists():
        train()
    HistoryRefiner.net = network(81 + 87 * len(LAGS))
    HistoryRefiner.net.load_state_dict(torch.load(NET))
    HistoryRefiner.net.eval()
    prior = PosePrior.load("models/dposer_cpu/prior.pt")
    cor = load_corruptions(config_path("eval/corruptions_foreign.yaml"))[CORRUPTION]
    fmt, fk = cor.format, ForwardKinematics()
    solvers = [(FewStepRefiner, method_settings("few_step")), (HistoryRefiner, method_settings("few_step")),
               (NoPriorRefiner, method_settings("no_prior"))]
    errors: list[list[float]] = [[] for _ in solvers]
    for clip in foreign_clips(default_mocap_dir(), 12, FRAMES, "val", 0, ("h36m17",)):
        truth = clip.keypoint_truth(fmt)
        data = cor.apply_keypoints(truth, stream_seed(0, cor.name, clip.name))
        t = truth[data.frames].double()
        hidden = ~data.visible & torch.isfinite(t).all(-1)
        hidden[: LAGS[-1] + 1] = False  # scored where the history exists
        for i, (cls, settings) in enumerate(solvers):
            outs, _ = run_stream(cls(prior, fmt, settings), fmt, data, clip.up, clip.floor, cor.fps)
            posed = fk(torch.cat([o.pose for o in outs]).double(), torch.cat([o.transl for o in outs]).double(),
                       _rest_joints(outs, fk))
            offsets = torch.cat([o.keypoint_offsets for o in outs]).double()
            frames = offset_frames(fmt.joints, fmt.offsets, fk.skeleton.parents)
            predicted = fmt.from_posed(posed) + (posed.rotations[:, frames] @ offsets[..., None])[..., 0]
            errors[i].append(float((predicted - t).norm(dim=-1)[hidden].mean()) * 1000)
        print(f"{clip.name.split('/')[-1][:34]:34s}", " ".join(f"{e[-1]:.0f}" for e in errors), flush=True)
    print("mean", " ".join(f"{np.mean(e):.1f}" for e in errors))


if __name__ == "__main__":
    main()
