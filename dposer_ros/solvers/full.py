"""The published DPoser optimisation, kept as the accuracy reference: hundreds of Adam steps per frame.

Each of `loops` passes runs `steps` Adam steps while t falls over the truncated schedule; every step noises the
current pose, denoises it with the prior (no gradient through the network) and minimises
    data(theta) + w(t) ||x(theta) - x0_hat||^2,   w(t) = 0.5 sqrt(1 + mean(t) / std(t)),
with x the normalised pose vector and the data term the same confidence-weighted robust keypoint term as the
few-step refiner, here differentiated by autograd through the kinematics.
"""

from __future__ import annotations

from dataclasses import dataclass

import roma
import torch

from ..body.jacobian import AttachedPoints
from ..body.kinematics import ForwardKinematics
from ..body.skeleton import NUM_JOINTS
from ..prior.layout import POSE_PARTS, to_vector
from ..prior.schedule import TruncatedSchedule
from .refine import FREE_JOINTS, FewStepRefiner, RefineSettings, cold_start, prior_targets
from .types import BodyState, Observation, Refined


@dataclass(frozen=True)
class FullSettings:
    """Published settings for motion denoising with occlusions (3 x 80 steps, 0.25 -> 0.05, Adam lr 0.03)."""

    loops: int = 3
    steps: int = 80
    t_max: float = 0.25
    t_min: float = 0.05
    lr: float = 0.03
    prior_weight: float = 1.0
    rest_weight: float = 0.01
    sigma_cm: float = 5.0
    seed: int = 0


class FullOptimizer:
    """Callable like `FewStepRefiner`: (Observation, BodyState | None) -> Refined, with loops * steps prior calls."""

    def __init__(self, prior, fmt, settings: FullSettings = FullSettings()) -> None:
        self.prior, self.format, self.settings = prior, fmt, settings
        self.fk = ForwardKinematics()
        self.points = AttachedPoints(self.fk, fmt.joints, fmt.offsets, FREE_JOINTS)
        self.schedule = TruncatedSchedule(settings.t_max, settings.t_min)
        self.free = torch.tensor(FREE_JOINTS)
        # the few-step refiner's helpers: part bookkeeping, cold start and rest pull are shared
        self._few = FewStepRefiner(prior, fmt, RefineSettings(rest_weight=settings.rest_weight, sigma_cm=settings.sigma_cm))

    def _loss(self, pose, transl, obs: Observation, target_vec, w_t):
        s = self.settings
        posed = self.fk(pose, transl)
        diff = ((self.points.positions(posed) - obs.points) * 100.0).square().sum(-1)  # cm^2
        data = (obs.confidence * diff * s.sigma_cm**2 / (diff + s.sigma_cm**2)).sum()
        x = (to_vector(pose) - self.prior.mean) / self.prior.std
        prior = w_t * ((x - target_vec)[:, :153]).square().sum()  # body and hands; the face has no prior
        rest = s.rest_weight * pose[:, 1:].square().sum()
        return data + s.prior_weight * prior + rest

    def __call__(self, obs: Observation, init: BodyState | None = None) -> Refined:
        s = self.settings
        gen = torch.Generator().manual_seed(s.seed)
        if init is None:
            local, transl0 = cold_start(self.fk, self.points, obs, self._few.rest_scale, self._few.settings)
            pose0 = roma.rotmat_to_rotvec(local)
        else:
            pose0, transl0 = init.pose.float(), init.transl.float()
        mask = torch.zeros(NUM_JOINTS, 1)
        mask[self.free] = 1.0
        free = pose0[:, self.free].clone().requires_grad_(True)
        transl = transl0.clone().requires_grad_(True)
        opt = torch.optim.Adam([free, transl], lr=s.lr)
        evals = 0
        for _ in range(s.loops):
            for t in self.schedule.timesteps(s.steps).tolist():
                pose = pose0.index_copy(1, self.free, free)
                with torch.no_grad():
                    target, _ = prior_targets(self.prior, pose.detach(), t, gen, noise=True, up=obs.up)
                    target_vec = (to_vector(target) - self.prior.mean) / self.prior.std
                    mean, std = self.prior.sde.mean_std(torch.tensor(t))
                    w_t = 0.5 * torch.sqrt(1.0 + mean / std)
                evals += 1
                opt.zero_grad(set_to_none=True)
                loss = self._loss(pose, transl, obs, target_vec, w_t)
                loss.backward()
                with torch.no_grad():  # NaN guard: skip a step that would poison the pose
                    if not torch.isfinite(free.grad).all():
                        continue
                opt.step()
        with torch.no_grad():
            pose = pose0.index_copy(1, self.free, free.detach())
            joints = self.fk(pose, transl.detach()).joints
            observed = self._few.observed_parts(obs.confidence)
            completed = ~observed
            completed[:, POSE_PARTS.index("face")] = False
        return Refined(pose, transl.detach(), joints, observed, completed, network_evals=evals)
