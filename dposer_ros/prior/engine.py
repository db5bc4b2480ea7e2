"""`Engine`: the part of a prior the solvers use, whatever runs it (a `PosePrior`, ONNX Runtime, TensorRT)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .sde import SubVPSDE


@runtime_checkable
class Engine(Protocol):
    """`name`, `mean` (DIM,), `std` (DIM,), `sde` and `eps(x, t, part_mask)`: exactly what `FewStepRefiner` and
    `FullOptimizer` use of a prior. `PosePrior` satisfies it; `dposer_ros.backends` runs the network elsewhere."""

    name: str
    mean: torch.Tensor
    std: torch.Tensor
    sde: SubVPSDE

    def eps(self, x: torch.Tensor, t: torch.Tensor, part_mask: torch.Tensor) -> torch.Tensor: ...
