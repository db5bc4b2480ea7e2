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


def block_jacobi_pcg(a: torch.Tensor, b: torch.Tensor, iterations: int) -> torch.Tensor:
    """x (B, n, 1) approximately solving a x = b for symmetric positive definite `a` (B, n, n), n a multiple of 3:
    conjugate gradients preconditioned with the inverses of a's 3 x 3 diagonal blocks (one joint's rotation, or the
    translation), a fixed number of iterations from x = 0. Each iteration is one batched matrix-vector product and a
    few vector operations: a short exported graph, where the unrolled Cholesky has a column step per unknown."""
    batch, n = a.shape[0], a.shape[-1]
    idx = torch.arange(n, device=a.device).reshape(-1, 3)
    blocks = a[:, idx[:, :, None], idx[:, None, :]]  # (B, n/3, 3, 3)
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(blocks).reshape(-1, 3, 3)
    inv = cholesky_solve_unrolled(blocks.reshape(-1, 3, 3), eye).reshape(batch, -1, 3, 3)

    def precondition(r: torch.Tensor) -> torch.Tensor:
        return (inv @ r.reshape(batch, -1, 3, 1)).reshape(batch, n, 1)

    x = torch.zeros_like(b)
    r = b
    z = precondition(r)
    p = z
    rz = (r * z).sum(1, keepdim=True)
    for _ in range(iterations):
        ap = a @ p
        alpha = rz / (p * ap).sum(1, keepdim=True).clamp(min=1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        z = precondition(r)
        rz_next = (r * z).sum(1, keepdim=True)
        p = z + rz_next / rz.clamp(min=1e-30) * p
        rz = rz_next
    return x
