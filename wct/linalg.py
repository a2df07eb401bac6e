"""Robust differentiable symmetric eigendecomposition (SEED VERSION, to be completed under issue 2).

Forward pass: the exact ``torch.linalg.eigh`` in float64. Backward pass: selectable treatment of
``K_ij = 1 / (lambda_j - lambda_i)`` (Wang et al., "Robust Differentiable SVD", TPAMI 2021, eqs. 9-12).
"""

from __future__ import annotations

import torch

BACKWARDS = ("exact", "taylor", "clip")


def _k_matrix(lam: torch.Tensor, backward: str, degree: int, eps: float, clip: float) -> torch.Tensor:
    # E_ij = lambda_j - lambda_i (ascending eigenvalues, so j > i means lambda_j >= lambda_i).
    if backward == "taylor":
        lc = lam.clamp_min(eps)
        hi = torch.maximum(lc.unsqueeze(-2), lc.unsqueeze(-1))
        lo = torch.minimum(lc.unsqueeze(-2), lc.unsqueeze(-1))
        q = lo / hi
        s = torch.ones_like(q)
        for _ in range(degree):
            s = s * q + 1.0
        n = lam.shape[-1]
        idx = torch.arange(n, device=lam.device)
        sign = torch.sign(idx.unsqueeze(0) - idx.unsqueeze(1)).to(lam.dtype)  # +1 above diagonal
        return sign * s / hi
    e = lam.unsqueeze(-2) - lam.unsqueeze(-1)
    k = 1.0 / e
    k.diagonal(dim1=-2, dim2=-1).zero_()
    if backward == "clip":
        k = k.nan_to_num(nan=0.0, posinf=clip, neginf=-clip).clamp(-clip, clip)
    return k


class _Eigh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, backward, degree, eps, clip):
        lam, v = torch.linalg.eigh(a)
        ctx.save_for_backward(lam, v)
        ctx.opts = (backward, degree, eps, clip)
        return lam, v

    @staticmethod
    def backward(ctx, g_lam, g_v):
        lam, v = ctx.saved_tensors
        backward, degree, eps, clip = ctx.opts
        inner = torch.zeros_like(v)
        if g_v is not None:
            vtg = v.mT @ g_v
            k = _k_matrix(lam, backward, degree, eps, clip)
            inner = k * (0.5 * (vtg - vtg.mT))
        if g_lam is not None:
            inner = inner + torch.diag_embed(g_lam)
        return v @ inner @ v.mT, None, None, None, None


def eigh(a, *, backward="taylor", degree=9, eps=1e-5, clip=100.0, compute_dtype=torch.float64):
    """Eigendecomposition of symmetric matrices ``(..., n, n)`` with a robust backward pass (seed)."""
    dtype = a.dtype
    with torch.autocast(device_type=a.device.type, enabled=False):
        a64 = a.to(compute_dtype)
        a64 = 0.5 * (a64 + a64.mT)
        lam, v = _Eigh.apply(a64, backward, degree, eps, clip)
    return lam.to(dtype), v.to(dtype)


def sym_power(a, p, *, backward="taylor", eps=1e-5, degree=9, clip=100.0, compute_dtype=torch.float64):
    """``A^p`` for symmetric PSD ``A`` (seed): eigenvalues clamped at ``eps``."""
    dtype = a.dtype
    with torch.autocast(device_type=a.device.type, enabled=False):
        lam, v = eigh(a.to(compute_dtype), backward=backward, degree=degree, eps=eps, clip=clip,
                      compute_dtype=compute_dtype)
        out = (v * lam.clamp_min(eps).pow(p).unsqueeze(-2)) @ v.mT
    return out.to(dtype)
