"""Baselines under the same few-step solver, differing only in the prior term: none, GMM (SMPLify), VAE (VPoser)."""

from __future__ import annotations

import torch

from ..body.skeleton import PART_JOINTS
from ..prior.classical import GMMPrior, VAEPrior
from ..prior.layout import SLICES, from_vector, to_vector
from .gauss_newton import Pull
from .refine import FREE_JOINTS, FewStepRefiner, RefineSettings

_GROUP_SLOTS = {"body": ("body",), "hand": ("left_hand", "right_hand")}


class NoPriorRefiner(FewStepRefiner):
    """Keypoints, a weak pull to the rest pose and the temporal pull only."""

    evals_per_step = 0

    def prior_pulls(self, pose, t, generator, carry) -> list[Pull]:
        return []


class _VectorPullRefiner(FewStepRefiner):
    """Helpers to build pulls on slots of the prior vector (body, mirrored left hand, right hand)."""

    evals_per_step = 0

    def _slot_joints(self, slot: str) -> torch.Tensor:
        joints = PART_JOINTS["body" if slot == "body" else slot]
        free = {j: k for k, j in enumerate(FREE_JOINTS)}
        return torch.tensor([free[j] for j in joints])


class GMMRefiner(_VectorPullRefiner):
    """SMPLify's prior: a pull towards the mean of the most likely mixture component, weighted by its precision."""

    def __init__(self, prior, fmt, gmm: GMMPrior, settings: RefineSettings = RefineSettings()) -> None:
        super().__init__(prior, fmt, settings)
        self.gmm = gmm

    def prior_pulls(self, pose, t, generator, carry) -> list[Pull]:
        batch = pose.shape[0]
        vec = to_vector(pose)
        n = 3 * len(FREE_JOINTS)
        precision = torch.zeros(batch, n, n)
        target_vec = vec.clone()
        for group, slots in _GROUP_SLOTS.items():
            for slot in slots:
                mean, prec = self.gmm.nearest(group, vec[:, SLICES[slot]])
                target_vec[:, SLICES[slot]] = mean
                cols = (3 * self._slot_joints(slot)[:, None] + torch.arange(3)).reshape(-1)
                sign = torch.tensor([1.0, -1.0, -1.0]).repeat(15) if slot == "left_hand" else torch.ones(len(cols))
                block = prec * sign[None, :, None] * sign[None, None, :]  # the mirror flips y, z of left hands
                precision[:, cols[:, None], cols[None, :]] = block
        target = from_vector(target_vec, pose)[0][:, list(FREE_JOINTS)]
        return [Pull(target, precision=precision)]


class VAERefiner(_VectorPullRefiner):
    """VPoser's prior as a projection: a pull towards decode(encode(pose)), weighted like the diffusion prior
    (per-entry 1 / std)."""

    def __init__(self, prior, fmt, vae: VAEPrior, settings: RefineSettings = RefineSettings()) -> None:
        super().__init__(prior, fmt, settings)
        self.vae = vae

    def prior_pulls(self, pose, t, generator, carry) -> list[Pull]:
        vec = to_vector(pose)
        target_vec = vec.clone()
        for group, slots in _GROUP_SLOTS.items():
            for slot in slots:
                target_vec[:, SLICES[slot]] = self.vae.project(group, vec[:, SLICES[slot]])
        target = from_vector(target_vec, pose)[0][:, list(FREE_JOINTS)]
        return [Pull(target, self.prior_scale)]
