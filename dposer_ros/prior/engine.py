"""`Engine`: the part of a prior the solvers use, whatever runs it (a `PosePrior`, ONNX Runtime, TensorRT)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .sde import SubVPSDE


@runtime_checkable
class Engine(Protocol):
    """`name`, `mean` (DIM,), `std` (DIM,), `diffused` (DIM,), `sde` and `eps(x, t, part_mask)`: exactly what
    `FewStepRefiner` and `FullOptimizer` use of a prior (`diffused`: 1 on the entries it noises and predicts, 0 on
    its condition entries). `PosePrior` satisfies it; `dposer_ros.backends` runs the network elsewhere."""

    name: str
    mean: torch.Tensor
    std: torch.Tensor
    diffused: torch.Tensor
    sde: SubVPSDE

    def eps(self, x: torch.Tensor, t: torch.Tensor, part_mask: torch.Tensor) -> torch.Tensor: ...
