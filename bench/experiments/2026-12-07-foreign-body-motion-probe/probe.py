"""Round 49 probe: the target of every hidden body joint of a moving person from motion (not the legs alone), from a
network given the seen joints now and a second of the track's answers, on validation.

    python bench/experiments/2026-12-07-foreign-body-motion-probe/probe.py

Trains once (scratch/body_motion_net.pt, about 10 minutes on one thread): like `dposer_ros.prior.motion` (lags
0.1-1 s flagged available, random history lengths, mirrored, a fitted body's noise), but the input holds all 21 body
joints now with the hidden ones zeroed and flagged (masks drawn as `prior.completion.random_hidden`: subtrees such as
a limb or both legs, single joints, both), and the output is all 21 joints, scored on the hidden ones. Then streams
12 validation clips per corruption with the package's few_step (version 0.6.1: the leg model for hidden legs), the
same with the body model's target for every hidden body joint of a moving person (the package's gate), and
few_step without any motion model. A probe: nothing of it is in the package (NOTES.md).
"""

from __future__ import annotations

import os
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
from dposer_ros.evaluation.methods import DEFAULT_MOTION, method_settings
from dposer_ros.evaluation.runner import run_stream, stream_seed
from dposer_ros.paths import config_path, default_mocap_dir
from dposer_ros.prior.completion import random_hidden
from dposer_ros.prior.layout import mirror_pose
from dposer_ros.prior.model import PosePrior
from dposer_ros.prior.motion import LegMotion, six
from dposer_ros.solvers.gauss_newton import Pull
from dposer_ros.solvers.history import at_lags
from dposer_ros.solvers.refine import FewStepRefiner

BODY = list(range(1, 22))
LAGS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
FRAMES = [3, 6, 9, 12, 15, 21, 30]
NET = Path("scratch/body_motion_net.pt")
# ARMS=1: the spine counts as seen in the network's input (the refiner leaves it to the prior by design), and only
# hidden arm joints (collars, shoulders, elbows, wrists) take the network's target
ARMS = os.environ.get("ARMS") == "1"
ARM_JOINTS = [13, 14, 16, 17, 18, 19, 20, 21]
SPINE = [3, 6, 9]
STEPS = 6000


def features(now, hidden, past, velocity, available, up) -> torch.Tensor:
    """now (B, 22, 3, 3), hidden (B, 21) bool, past (B, L, 22, 3, 3), velocity (B, L, 3), available (B, L), up (B, 3)."""
    root_t = now[:, 0].transpose(-1, -2)
    batch, lags = available.shape
    seen = (~hidden).float()
    body_now = now[:, 1:][..., :2].reshape(batch, 21, 6) * seen[..., None]
    flag = available.float()[..., None]
    moved = (root_t[:, None] @ velocity[..., None])[..., 0] * flag
    turned = (root_t[:, None] @ past[:, :, 0])[..., :2].reshape(batch, lags, 6) * flag
    then = past[:, :, 1:][..., :2].reshape(batch, lags, -1) * flag
    return torch.cat([body_now.flatten(1), hidden.float(), (root_t @ up[..., None])[..., 0],
                      torch.cat([moved, turned, then, flag], -1).flatten(1)], 1)


def network() -> torch.nn.Module:
    width = 21 * 6 + 21 + 3 + len(LAGS) * (3 + 6 + 21 * 6 + 1)
    return torch.nn.Sequential(torch.nn.Linear(width, 768), torch.nn.SiLU(), torch.nn.Linear(768, 768),
                               torch.nn.SiLU(), torch.nn.Linear(768, 21 * 6))


def train() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    ds = load_dataset(default_dataset_path())
    sources = list(ds.meta["sources"])
    rows = np.arange(len(ds.take))
    ok = ds.split_mask("train") & ds.part_mask[:, 0].astype(bool)
    ok &= ~np.isin(ds.source, [sources.index("reactidle"), sources.index("manipnet_hands")])
    reach = np.zeros((len(rows), len(FRAMES)), bool)
    for i, lag in enumerate(FRAMES):
        j = np.clip(rows - lag, 0, None)
        reach[:, i] = (rows >= lag) & (ds.take[j] == ds.take) & (ds.frame - ds.frame[j] == lag)
    depth = np.cumprod(reach, 1).sum(1)
    usable = rows[ok & (depth > 0)]
    pose, transl = torch.as_tensor(ds.pose[:, :22]).float(), torch.as_tensor(ds.transl).float()
    lag_frames, lag_s, up = torch.tensor(FRAMES), torch.tensor(LAGS), torch.tensor([0.0, 1.0, 0.0])

    def batch(rows_np):
        idx = torch.as_tensor(rows_np)
        have = torch.as_tensor(depth[rows_np])
        full = torch.rand(len(idx)) < 0.5
        count = torch.where(full, have, (torch.rand(len(idx)) * have.float()).long() + 1)
        available = torch.arange(len(FRAMES))[None] < count[:, None]
        then = (idx[:, None] - lag_frames[None]).clamp(min=0) * available + idx[:, None] * ~available
        body = torch.cat([pose[idx][:, None], pose[then]], 1)
        where = torch.cat([transl[idx][:, None], transl[then]], 1)
        mirror = torch.rand(len(idx)) < 0.5
        padded = torch.zeros(*body.shape[:2], 55, 3)
        padded[:, :, :22] = body
        body = torch.where(mirror[:, None, None, None], mirror_pose(padded)[:, :, :22], body)
        where = torch.where(mirror[:, None, None], where * torch.tensor([-1.0, 1.0, 1.0]), where)
        truth = roma.rotvec_to_rotmat(body[:, 0, 1:])
        rot = roma.rotvec_to_rotmat(body) @ roma.rotvec_to_rotmat(torch.randn(*body.shape) * 0.08 / 3**0.5)
        where = where + torch.randn(*where.shape) * 0.01 / 3**0.5
        velocity = (where[:, :1] - where[:, 1:]) / lag_s[None, :, None]
        hidden = random_hidden(len(idx), gen).bool()
        x = features(rot[:, 0], hidden, rot[:, 1:], velocity, available, up.expand(len(idx), 3))
        return x, six(truth).reshape(len(idx), 21, 6), hidden

    net = network()
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=STEPS)
    t0 = time.time()
    for step in range(STEPS):
        x, y, hidden = batch(usable[rng.integers(len(usable), size=1024)])
        err = (net(x).reshape(-1, 21, 6) - y).square().mean(-1)
        loss = (err * hidden).sum() / hidden.sum().clamp(min=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % 1000 == 0:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    torch.save(net.state_dict(), NET)
    print(f"trained in {time.time() - t0:.0f} s, final loss {loss.item():.4f}", flush=True)


class BodyMotionRefiner(FewStepRefiner):
    """few_step whose hidden body joints of a moving person are pulled to the body model's answer (once a frame)."""

    net: torch.nn.Module

    def _history(self, init, seconds):
        self._h = super()._history(init, seconds)
        return self._h

    def prior_pulls(self, pose, t, generator, carry):
        pulls = super().prior_pulls(pose, t, generator, carry)
        if "body_motion" not in carry:
            carry["body_motion"] = None
            up = carry.get("up")
            hidden = ~carry["seen"][:, 1:22]
            if ARMS:
                hidden[:, [j - 1 for j in SPINE]] = False
            if self._h is not None and up is not None and bool(hidden.any()):
                gate = self._motion_input(self._h, up, None)
                if gate is not None:
                    lagged = at_lags(self._h, self.motion_lags, self.motion_tolerance)
                    with torch.no_grad():
                        out = self.net(features(roma.rotvec_to_rotmat(pose[:, :22].float()), hidden, lagged.past,
                                                lagged.velocity, lagged.available, up.float()))
                    body = roma.rotmat_to_rotvec(roma.special_gramschmidt(out.reshape(-1, 21, 3, 2)))
                    use = hidden & gate["moving"][:, None]
                    if ARMS:
                        use[:, [j - 1 for j in range(1, 22) if j not in ARM_JOINTS]] = False
                    carry["body_motion"] = (body, use)
        if carry["body_motion"] is None:
            return pulls
        body, use = carry["body_motion"]
        target = pulls[0].target.clone()
        target[:, 1:22] = torch.where(use[..., None], body, target[:, 1:22])
        return [Pull(target, pulls[0].scale), *pulls[1:]]


def main() -> None:
    torch.set_num_threads(1)
    if not NET.exists():
        train()
    BodyMotionRefiner.net = network()
    BodyMotionRefiner.net.load_state_dict(torch.load(NET))
    BodyMotionRefiner.net.eval()
    prior, motion = PosePrior.load("models/dposer_cpu/prior.pt"), LegMotion.load(DEFAULT_MOTION)
    settings = method_settings("few_step")
    no_motion = method_settings("few_step", motion_legs=False)
    corruptions = load_corruptions(config_path("eval/corruptions_foreign.yaml"))
    fk = ForwardKinematics()
    for name in sys.argv[1:] or ["cam_occl_limb", "cam_occl_legs", "cam_occl_legs_late", "cam_occl_random30"]:
        cor = corruptions[name]
        fmt = cor.format
        solvers = {"few_step": lambda: FewStepRefiner(prior, fmt, settings, motion=motion),
                   "body_motion": lambda: BodyMotionRefiner(prior, fmt, settings, motion=motion),
                   "no_motion": lambda: FewStepRefiner(prior, fmt, no_motion)}
        errors: dict[str, list[float]] = {k: [] for k in solvers}
        for clip in foreign_clips(default_mocap_dir(), 12, 40, "val", 0, ("h36m17",)):
            truth = clip.keypoint_truth(fmt)
            data = cor.apply_keypoints(truth, stream_seed(0, cor.name, clip.name))
            t = truth[data.frames].double()
            hidden = ~data.visible & torch.isfinite(t).all(-1)
            for key, make in solvers.items():
                outs, _ = run_stream(make(), fmt, data, clip.up, clip.floor, cor.fps)
                posed = fk(torch.cat([o.pose for o in outs]).double(), torch.cat([o.transl for o in outs]).double(),
                           _rest_joints(outs, fk))
                offsets = torch.cat([o.keypoint_offsets for o in outs]).double()
                frames = offset_frames(fmt.joints, fmt.offsets, fk.skeleton.parents)
                predicted = fmt.from_posed(posed) + (posed.rotations[:, frames] @ offsets[..., None])[..., 0]
                errors[key].append(float((predicted - t).norm(dim=-1)[hidden].mean()) * 1000)
            print(f"{name} {clip.name.split('/')[-1][:36]:36s}", " ".join(f"{e[-1]:.0f}" for e in errors.values()),
                  flush=True)
        print(f"{name} mean", " ".join(f"{k} {np.mean(e):.1f}" for k, e in errors.items()), flush=True)


if __name__ == "__main__":
    main()
