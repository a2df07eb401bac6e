"""The paper's "PI" baseline: eigendecomposition by power iteration with deflation in the forward pass.

Wang, Dang, Hu, Fua, Salzmann, "Robust Differentiable SVD" (TPAMI 2021), Sec. 5.1 compares SVD-Taylor with
"PI", where the eigenvectors are computed by power iteration and Hotelling deflation in the *forward* pass
and the gradient is obtained by differentiating through the iterations (Wang et al., "Backpropagation-
Friendly Eigendecomposition", NeurIPS 2019, Sec. 3, without their SVD forward pass). Power iteration
converges slowly when two eigenvalues are close (rate λ_{k+1}/λ_k per iteration) and deflation accumulates
the error of every earlier eigenvector into the later, smaller ones; the paper reports that this makes the
"PI" whitening inaccurate and its training unstable for large groups. This module reproduces that baseline
faithfully; it is not meant as a robust method (use ``wct.linalg.eigh`` for that).

``wct.linalg`` (issue 2) only offers power iteration in the *backward* pass ("power_iteration" = the
paper's "SVD-PI"), so the forward-PI baseline lives here, next to the classification study that uses it.
"""

from __future__ import annotations

import torch

__all__ = ["pi_eigh", "pi_sym_power"]


def _check_square(a: torch.Tensor) -> None:
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of shape (..., n, n), got {type(a).__name__}")
    if not a.is_floating_point():
        raise TypeError(f"expected a floating-point tensor of shape (..., n, n), got dtype {a.dtype}")
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"expected square matrices of shape (..., n, n), got shape {tuple(a.shape)}")


def pi_eigh(a: torch.Tensor, *, iters: int = 30, compute_dtype: torch.dtype = torch.float64):
    """Eigendecomposition of symmetric PSD matrices by power iteration with deflation (the "PI" baseline).

    For k = 1..n: ``v <- M v / ||M v||`` repeated ``iters`` times from a fixed start vector, ``λ_k = vᵀ M v``,
    then Hotelling deflation ``M <- M - λ_k v vᵀ`` (Wang et al. NeurIPS 2019, eqs. 4-5). Every step is an
    ordinary differentiable tensor operation, so autograd differentiates through the iterations. All
    matrices of the batch are iterated together (batched matmuls, no loop over matrices).

    Args:
        a: symmetric positive semi-definite matrices ``(..., n, n)``, float32 or float64. Non-symmetric
            input is symmetrised as ``(A + Aᵀ) / 2``.
        iters: power iterations per eigenvector (>= 1).
        compute_dtype: dtype of the iterations (float64 by default).

    Returns:
        ``(eigenvalues (..., n), eigenvectors (..., n, n))`` in ``torch.linalg.eigh``'s convention
        (ascending eigenvalues, eigenvectors in the columns), dtype of ``a``. Unlike ``eigh`` the result is
        only as accurate as the iteration has converged; that inaccuracy is the point of the baseline.

    Raises:
        TypeError: ``a`` is not a floating-point tensor.
        ValueError: ``a`` is not a batch of square matrices, or ``iters < 1``.

    Example:
        >>> a = torch.diag(torch.tensor([1.0, 4.0, 9.0]))
        >>> lam, v = pi_eigh(a)
        >>> torch.allclose(lam, torch.tensor([1.0, 4.0, 9.0]), atol=1e-4)
        True
    """
    _check_square(a)
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    dtype = a.dtype
    n = a.shape[-1]
    with torch.autocast(device_type=a.device.type, enabled=False):
        m = a.to(compute_dtype)
        m = 0.5 * (m + m.mT)
        # Fixed, dense start vector (a deterministic pseudo-random one: a constant vector can be exactly
        # orthogonal to an eigenvector of structured matrices).
        gen = torch.Generator(device="cpu").manual_seed(0)
        v0 = torch.rand(n, 1, generator=gen, dtype=compute_dtype).add_(0.5).to(m.device)
        v0 = (v0 / v0.norm()).expand(*m.shape[:-2], n, 1)
        lams, vecs = [], []
        for _ in range(n):
            v = v0
            for _ in range(iters):
                v = m @ v
                # The tiny floor only avoids 0/0 once the deflated matrix is exactly zero.
                v = v / v.norm(dim=-2, keepdim=True).clamp_min(1e-30)
            lam = (v.mT @ m @ v).squeeze(-1)  # (..., 1)
            lams.append(lam)
            vecs.append(v)
            m = m - lam.unsqueeze(-1) * (v @ v.mT)
        lam = torch.cat(lams[::-1], dim=-1)  # found in descending order; eigh's convention is ascending
        vec = torch.cat(vecs[::-1], dim=-1)
    return lam.to(dtype), vec.to(dtype)


def pi_sym_power(a: torch.Tensor, p: float, *, eps: float = 1e-5, iters: int = 30) -> torch.Tensor:
    """``A^p`` of symmetric PSD matrices through :func:`pi_eigh` (forward and backward by power iteration).

    ``V diag(max(λ, eps)^p) Vᵀ`` with ``(V, λ)`` from power iteration with deflation; ``p = -1/2`` is the
    ZCA whitening matrix of decorrelated batch norm (seed paper Alg. 2).

    Args:
        a: symmetric PSD matrices ``(..., n, n)``, float32 or float64.
        p: the power (e.g. -0.5 for whitening, 0.5 for colouring / pooling).
        eps: eigenvalues are clamped at ``eps`` before the power (> 0 for negative ``p``).
        iters: power iterations per eigenvector.

    Returns:
        ``(..., n, n)`` tensor, dtype of ``a``.

    Raises:
        TypeError / ValueError: as :func:`pi_eigh`; ValueError if ``eps <= 0`` with ``p < 0``.

    Example:
        >>> a = torch.diag(torch.tensor([4.0, 9.0]))
        >>> torch.allclose(pi_sym_power(a, -0.5), torch.diag(torch.tensor([0.5, 1 / 3])), atol=1e-4)
        True
    """
    _check_square(a)
    if p < 0 and eps <= 0:
        raise ValueError(f"eps must be > 0 for a negative power, got eps={eps}, p={p}")
    dtype = a.dtype
    with torch.autocast(device_type=a.device.type, enabled=False):
        lam, v = pi_eigh(a.to(torch.float64), iters=iters)
        out = (v * lam.clamp_min(eps).pow(p).unsqueeze(-2)) @ v.mT
    return out.to(dtype)
