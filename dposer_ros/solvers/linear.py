"""Batched symmetric positive definite solves written as plain tensor arithmetic, for graphs that must export.

`torch.linalg.cholesky` and `cholesky_solve` have no ONNX form, and TensorRT has no factorisation layer. The
Gauss-Newton system of a keypoint format has a fixed size (3 per moved joint + 3), so its Cholesky factorisation
and the two triangular solves unroll into a fixed sequence of matrix products, square roots and divisions (the
column-by-column, left-looking order): an exported graph of O(n) nodes, every one an ONNX operator TensorRT parses
(`backends/tensorrt_onnx_ops.yaml`). Eager torch runs the same code, which is how it is checked against LAPACK.
"""

from __future__ import annotations

import torch


def cholesky_unrolled(a: torch.Tensor, floor: float = 1e-12) -> torch.Tensor:
    """Lower factor L (B, n, n) of symmetric positive definite `a` (B, n, n), L L^T = a. A pivot below `floor` is
    raised to it (a semi-definite system stays finite, as a damped one never needs)."""
    n = a.shape[-1]
    below = torch.tril(torch.ones(n, n, dtype=a.dtype, device=a.device), diagonal=-1)  # column j: rows > j ...
    eye = torch.eye(n, dtype=a.dtype, device=a.device)  # ... and its pivot on the diagonal
    low = a[:, :, :0]  # the columns so far (B, n, j), grown one at a time: one Concat per column when exported
    for j in range(n):
        v = a[:, :, j : j + 1]
        if j:
            v = v - low @ low[:, j : j + 1, :].transpose(1, 2)
        pivot = v[:, j : j + 1].clamp(min=floor).sqrt()
        low = torch.cat([low, v / pivot * below[:, j : j + 1] + pivot * eye[:, j : j + 1]], dim=2)
    return low


def cholesky_solve_unrolled(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (B, n, m) with a x = b for symmetric positive definite `a` (B, n, n): L y = b forward, L^T x = y back."""
    low = cholesky_unrolled(a)
    n = a.shape[-1]
    y = b[:, :0]  # rows solved so far
    for j in range(n):
        r = b[:, j : j + 1]
        if j:
            r = r - low[:, j : j + 1, :j] @ y
        y = torch.cat([y, r / low[:, j : j + 1, j : j + 1]], dim=1)
    x = y[:, n:]  # rows j+1 .. n-1, solved from the last up
    for j in reversed(range(n)):
        r = y[:, j : j + 1]
        if j < n - 1:
            r = r - low[:, j + 1 :, j : j + 1].transpose(1, 2) @ x
        x = torch.cat([r / low[:, j : j + 1, j : j + 1], x], dim=1)
    return x
