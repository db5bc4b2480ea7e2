"""A prior made exactly left-right symmetric at inference: the mirror image of a pose is as likely as the pose.

Mirror augmentation in training asks the network to be mirror-equivariant but does not make it so: the shipped
CPU prior's denoised poses differ from the mirror images of its denoised mirrored poses by 0.14 rad per body joint
on average, and its typical pose (t = 1) holds the right shoulder 0.6 rad higher than the left, a sideways pull on
every fit. Averaging the prediction with the mirrored prediction of the mirrored input removes it by construction:
    eps_sym(x_t) = 1/2 [eps(x_t) + D^-1 eps(D x_t + mean(t) c)],
where, in the normalised coordinates of the network, the mirror image is the affine map x -> D x + c (D a scaled
signed permutation, c from the normalisation's own asymmetry; on the condition entries, which are not diffused,
c is not scaled by mean(t)). One batched call of twice the batch.
"""

from __future__ import annotations

import torch

from .engine import Engine
from .layout import DIFFUSED, mirror_part_mask, mirror_vector_map


class MirrorSymmetric:
    """Wraps any engine with `eps`, `mean`, `std`, `sde` (a `PosePrior`, ONNX Runtime, TensorRT)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.mean, self.std, self.sde = engine.mean, engine.std, engine.sde
        self.name = f"{getattr(engine, 'name', type(engine).__name__)}+mirror"
        perm, sign = mirror_vector_map()
        mean, std = engine.mean.float(), engine.std.float()
        self._perm = perm
        self._inverse = torch.argsort(perm)
        self._scale = sign * std[perm] / std  # D x = scale * x[perm]
        self._offset = (sign * mean[perm] - mean) / std  # c
        self._diffused = DIFFUSED.bool()

    def eps(self, x: torch.Tensor, t: torch.Tensor, part_mask: torch.Tensor) -> torch.Tensor:
        mean_t = self.sde.mean_std(t)[0].to(x)[:, None]
        mean_t = torch.where(self._diffused, mean_t, 1.0)  # condition entries are not scaled by the SDE
        mirrored = self._scale * x[:, self._perm] + mean_t * self._offset
        both = torch.as_tensor(self.engine.eps(torch.cat([x, mirrored]), torch.cat([t, t]),
                                               torch.cat([part_mask, mirror_part_mask(part_mask)])))
        own, other = both[: x.shape[0]], both[x.shape[0] :]
        return 0.5 * (own + (other / self._scale)[:, self._inverse])
