r"""Robust differentiable eigendecomposition of symmetric (PSD) matrices.

Everything in this project stands on the eigendecomposition of covariance matrices of deep features.
``torch.linalg.eigh`` is exact in the forward pass, but its backward pass multiplies by

.. math:: K_{ij} = \frac{1}{\lambda_j - \lambda_i}\quad(i \ne j),

which is infinite for equal eigenvalues (``diag(1, 1, 2)`` gives an all-NaN gradient) and huge for close ones
(covariances of fewer samples than dimensions). :func:`eigh` keeps the exact decomposition in the forward pass
(one batched LAPACK / cuSOLVER call in float64) and lets the caller choose how ``K`` is treated in the
backward pass (``backward=``, see :data:`BACKWARDS`):

========================  ===================================================================================
``"exact"``               the analytic formula of ``torch.linalg.eigh`` (unbounded for close eigenvalues).
                          Only bitwise-equal eigenvalues differ from torch (which returns NaN): they get
                          :math:`K_{ij} = 0`. For a loss invariant to rotations inside the degenerate
                          eigenspace the factor it multiplies is 0 there, so this only removes torch's
                          :math:`0\cdot\infty`; like every eigenvector route (taylor too) it still misses
                          the :math:`f'(\lambda)` term that the true derivative of a spectral function
                          :math:`V f(\Lambda) V^\top` has inside a degenerate eigenspace (use
                          :func:`sym_power` with ``backward="spectral"`` for that). Close but not
                          bitwise-equal eigenvalues explode exactly as in torch.
``"taylor"`` (default)    degree-``K`` Taylor expansion around the larger eigenvalue (Wang, Dang, Hu, Fua,
                          Salzmann, "Robust Differentiable SVD", TPAMI 2021, eqs. 9-12):
                          :math:`\tilde K_{ij} = \pm\frac{1}{\lambda_L}\sum_{k=0}^{K} q^k`,
                          :math:`q = \lambda_S/\lambda_L \in [0, 1]`, with eigenvalues clamped at ``eps``.
                          Bounded: :math:`|\tilde K_{ij}| \le (K+1)/\lambda_L \le (K+1)/\epsilon`; equal
                          eigenvalues get the finite limit :math:`(K+1)/\lambda`.
``"pade"``                a two-point Padé approximant of the same series (beyond the seed; after Song, Sebe,
                          Wang, ICCV 2021), see below. Bound :math:`2(K+1)/\lambda_L`.
``"power_iteration"``     SVD-PI (Wang et al., "Backpropagation-Friendly Eigendecomposition", NeurIPS 2019):
                          the gradient of ``K + 1`` power iterations per eigenvector, started at the ``eigh``
                          eigenvector, with Hotelling deflation and the paper's breaking conditions.
``"clip"``                SVD-Clip: the exact ``K`` with :math:`|K_{ij}|` truncated at ``clip`` (paper: 100).
========================  ===================================================================================

:func:`sym_power` computes :math:`A^p` (``p = -1/2`` whitening, ``1/2`` colouring and pooling) through
:func:`eigh` with any of these modes, or with ``backward="spectral"`` (beyond the seed): the exact gradient of
the spectral function :math:`f(\lambda) = \max(\lambda, \epsilon)^p` by the Daleckii-Krein formula.

**Where eps enters.** The forward pass always returns the true eigenvalues of (the symmetrised) ``A``; ``eps``
only clamps the eigenvalues *used in* :math:`\tilde K` (``"taylor"``/``"pade"``), the threshold of the
power-iteration breaking conditions, and, in :func:`sym_power`, the eigenvalue floor of
:math:`\max(\lambda, \epsilon)^p`. Callers who want a regularised matrix add ``eps * I`` themselves.

**The bound (paper eq. 15).** With :math:`c = \sup_{ij}|\tilde K_{ij}|` (:func:`k_bound`), the gradient of
:func:`eigh` satisfies
:math:`\|\partial L/\partial A\|_F \le \sqrt{\|\bar\lambda\|_2^2 + c^2\,\|\bar V\|_F^2}`,
for taylor :math:`c = (K+1)/\epsilon`, a constant that depends only on ``K`` and ``eps``.

**Padé.** :math:`1/(1-q)` is itself rational, so the classical (one-point) Padé approximant :math:`[m/n]`,
:math:`n \ge 1`, built from :math:`\ge m+n+1` Taylor terms *is* :math:`1/(1-q)` and reproduces the pole at
:math:`q = 1` (the authors' released [50/50] matches the exact gradient to ~1e-14 and needs an inf guard). We
use the two-point :math:`[K/1]` approximant that matches the Taylor coefficients at :math:`q=0` through
order ``K`` *and* takes the finite value :math:`2(K+1)` at :math:`q = 1`:

.. math:: R_K(q) = \frac{1 + (1-b)(q + \dots + q^K)}{1 - bq}
          = \sum_{k=0}^{K} q^k + \frac{b\,q^{K+1}}{1 - bq},\qquad b = \frac{K+1}{K+2}.

Its relative error against the exact :math:`1/(1-q)` is :math:`q^{K+1}(1-b)/(1-bq)`, strictly below Taylor's
:math:`q^{K+1}` (eq. 10) for every :math:`q < 1`, and its pole sits at :math:`q = 1/b > 1`. So, in accuracy and
in the bound, it sits between taylor (:math:`(K+1)/\lambda_L`) and exact (unbounded):
:math:`|\tilde K^{pade}_{ij}| \le 2(K+1)/\lambda_L \le 2(K+1)/\epsilon`.

**Power iteration vs Taylor (paper Sec. 3.3).** ``T`` power iterations :math:`v \leftarrow Mv/\|Mv\|` started at
the exact dominant eigenvector have the gradient of the Taylor polynomial with ``T`` terms
(:math:`\sum_{k<T} q^k`), so ``backward="power_iteration"`` runs ``degree + 1`` iterations: for the dominant
eigenvector it equals ``backward="taylor"`` with the same ``degree`` (tested). The smaller eigenvectors go
through deflation, whose gradient accumulates the errors of every earlier one; that is the paper's point.

Complexity: one batched ``eigh`` (forward), three batched matmuls plus :math:`O(n^2 K)` work per matrix
(backward, taylor/pade/clip/exact/spectral); power_iteration is :math:`O(n^3 K)` per matrix and sequential in
the eigenvector index (batched across matrices).
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
from torch.autograd.function import once_differentiable

__all__ = ["BACKWARDS", "SYM_POWER_BACKWARDS", "eigh", "sym_power", "k_bound", "taylor_k", "PI_ENERGY_TOL",
           "PI_RAYLEIGH_TOL"]

#: Backward modes of :func:`eigh` (contract: other parts iterate over it).
BACKWARDS: tuple[str, ...] = ("exact", "taylor", "pade", "power_iteration", "clip")
#: Backward modes of :func:`sym_power`: those of :func:`eigh` plus the Daleckii-Krein ``"spectral"`` gradient.
SYM_POWER_BACKWARDS: tuple[str, ...] = BACKWARDS + ("spectral",)

#: SVD-PI breaking condition: stop when the energy left after deflation, sum of the remaining eigenvalues
#: over the trace, is below this (NeurIPS 2019).
PI_ENERGY_TOL = 1e-4
#: SVD-PI breaking condition: stop when the Rayleigh quotient of the iterated vector is off the ``eigh``
#: eigenvalue by more than this fraction (NeurIPS 2019).
PI_RAYLEIGH_TOL = 0.1

# The fast Taylor path sums the series by a small matmul of powers of lambda / lambda_max; it needs
# (lambda_max / lambda_min)^(K+1) to stay representable, otherwise the closed form (log1p/expm1) is used.
_FAST_LOG_RANGE = {torch.float64: 600.0, torch.float32: 70.0}


# ----------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------
def _check_matrix(a, name: str = "A") -> None:
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., n, n), got {type(a).__name__}")
    if a.is_complex() or not a.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor of shape (..., n, n) "
                        f"(float16/bfloat16/float32/float64), got dtype {a.dtype}")
    if a.dim() < 2:
        raise ValueError(f"{name} must have shape (..., n, n) with at least 2 dimensions, got shape {tuple(a.shape)}")
    if a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must be square, shape (..., n, n), got shape {tuple(a.shape)}")
    if a.shape[-1] == 0:
        raise ValueError(f"{name} must have n >= 1, shape (..., n, n), got shape {tuple(a.shape)}")
    if a.numel() and not bool(torch.isfinite(a).all()):
        raise ValueError(f"{name} (shape {tuple(a.shape)}) contains NaN or inf; expected finite (..., n, n) matrices")


def _check_options(backward: str, degree, eps, clip, compute_dtype, allowed: tuple[str, ...]) -> None:
    if backward not in allowed:
        raise ValueError(f"backward must be one of {allowed}, got {backward!r}")
    if isinstance(degree, bool) or not isinstance(degree, numbers.Integral) or degree < 0:
        raise ValueError(f"degree must be an int >= 0 (Taylor degree K), got {degree!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (0 < float(eps) < math.inf):
        raise ValueError(f"eps must be a finite float > 0, got {eps!r}")
    if isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not (0 < float(clip) <= math.inf):
        raise ValueError(f"clip must be a float > 0, got {clip!r}")
    if compute_dtype not in (torch.float32, torch.float64):
        raise TypeError(f"compute_dtype must be torch.float32 or torch.float64, got {compute_dtype!r}")


# ----------------------------------------------------------------------------------------------------------
# K matrices.  Ascending eigenvalues, so for j > i (upper triangle) lambda_j >= lambda_i: the "upper" formula
# K_up[i, j] is evaluated on the whole matrix and only its strict upper triangle is used.
# ----------------------------------------------------------------------------------------------------------
def k_bound(backward: str = "taylor", *, degree: int = 9, eps: float = 1e-5, clip: float = 100.0) -> float:
    r"""Supremum of :math:`|\tilde K_{ij}|` over all spectra for a backward mode (paper eq. 15).

    Args:
        backward: one of :data:`BACKWARDS`.
        degree: Taylor degree ``K``.
        eps: eigenvalue clamp.
        clip: SVD-Clip threshold.

    Returns:
        ``(K+1)/eps`` (taylor, and power_iteration for the dominant eigenvector), ``2(K+1)/eps`` (pade),
        ``clip`` (clip), ``inf`` (exact).

    Raises:
        ValueError: unknown ``backward``, ``degree < 0``, ``eps <= 0``, ``clip <= 0``.

    Example:
        >>> round(k_bound("taylor", degree=9, eps=1e-5))  # (K+1)/eps
        1000000
    """
    _check_options(backward, degree, eps, clip, torch.float64, BACKWARDS)
    if backward == "exact":
        return math.inf
    if backward == "clip":
        return float(clip)
    if backward == "pade":
        return 2.0 * (degree + 1) / eps
    return (degree + 1) / eps


def _series_closed(lc: torch.Tensor, degree: int, pade: bool) -> torch.Tensor:
    """Upper-triangle K from the closed form, accurate for close and equal eigenvalues.

    With ``d = (l_j - l_i) / l_j`` and ``q = 1 - d``:
    ``sum_{k<=K} q^k = (1 - q^(K+1)) / d = -expm1((K+1) log1p(-d)) / d``; the limit at ``d = 0`` is ``K+1``.
    """
    hi = lc.unsqueeze(-2)  # l_j (column index)
    lo = lc.unsqueeze(-1)  # l_i (row index)
    d = ((hi - lo) / hi).clamp(0.0, 1.0)  # in [0, 1] on the upper triangle
    t = torch.expm1((degree + 1) * torch.log1p(-d))  # q^(K+1) - 1, accurate for small d
    tiny = torch.finfo(lc.dtype).tiny
    s = torch.where(d > 0, -t / d.clamp_min(tiny), torch.full_like(d, float(degree + 1)))
    if pade:
        b = (degree + 1.0) / (degree + 2.0)
        s = s + b * (1.0 + t) / ((1.0 - b) + b * d)  # + b q^(K+1) / (1 - b q)
    return s / hi


def _taylor_up_fast(lc: torch.Tensor, degree: int, scale: float = 1.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """Upper-triangle Taylor K as a sum of K+1 positive terms by one small batched matmul.

    ``K_up[i, j] = (1/l_j) sum_k (l_i/l_j)^k = sum_k mu_i^k * mu_j^-(k+1) / l_max`` with ``mu = l / l_max``.
    No cancellation, exact at ties; needs ``mu_min^-(K+1)`` to be representable (checked by the caller).
    """
    lmax = lc[..., -1:]
    mu = lc / lmax
    inv = 1.0 / mu
    def powers(x: torch.Tensor) -> torch.Tensor:  # x^k, k = 0..K  (..., n, K+1)
        return torch.linalg.vander(x, N=degree + 1) if degree else torch.ones_like(x).unsqueeze(-1)

    a = powers(mu)
    b = powers(inv).mul_((inv * (scale / lmax)).unsqueeze(-1))  # mu_j^-(k+1)/lmax
    if out is not None and lc.dim() == 2:
        return torch.bmm(a, b.mT, out=out)
    return a @ b.mT


def taylor_k(lam: torch.Tensor, *, degree: int = 9, eps: float = 1e-5, backward: str = "taylor") -> torch.Tensor:
    r"""The matrix :math:`\tilde K` used by :func:`eigh`'s backward pass, for inspection and plots.

    Args:
        lam: ascending eigenvalues ``(..., n)``.
        degree: Taylor degree ``K``.
        eps: eigenvalue clamp (taylor/pade).
        backward: ``"taylor"``, ``"pade"`` or ``"exact"``.

    Returns:
        ``(..., n, n)`` antisymmetric matrix approximating :math:`K_{ij} = 1/(\lambda_j - \lambda_i)`
        (zero diagonal), same dtype as ``lam``. ``"exact"`` is that formula with 0 at bitwise-equal
        eigenvalues (the convention of :func:`eigh`'s ``"exact"`` mode).

    Raises:
        ValueError: unknown ``backward``.

    Example:
        >>> k = taylor_k(torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64), degree=9)
        >>> round(k[0, 1].item(), 6), round(k[0, 2].item(), 6)  # (K+1)/1 for the tie; 1/2 sum (1/2)^k
        (10.0, 0.999023)
    """
    if backward == "exact":
        e = lam.unsqueeze(-2) - lam.unsqueeze(-1)
        return torch.where(e == 0, torch.zeros_like(e), 1.0 / e)
    if backward not in ("taylor", "pade"):
        raise ValueError(f"backward must be 'taylor', 'pade' or 'exact', got {backward!r}")
    up = _series_closed(lam.clamp_min(eps), degree, backward == "pade")
    up = up.triu(1)
    return up - up.mT


@functools.lru_cache(maxsize=64)
def _upper_mask(n: int, device: torch.device) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


def _sym_from_upper(h: torch.Tensor) -> torch.Tensor:
    """Symmetric matrix whose strict upper triangle is that of ``h`` (diagonal: that of ``h``)."""
    mask = _upper_mask(h.shape[-1], h.device)
    return torch.where(mask, h, h.mT)


def _inner(lam: torch.Tensor, m: torch.Tensor, backward: str, degree: int, eps: float, clip: float) -> torch.Tensor:
    """``S = K~ o (M - M^T) / 2`` (symmetric) for ``M = V^T dL/dV``; diagonal left arbitrary (overwritten).

    ``m`` is used as scratch space (overwritten): the backward pass allocates as few ``(B, n, n)`` tensors
    as possible, since on CPU each fresh multi-MB tensor costs page faults comparable to the arithmetic.
    """
    skew = m - m.mT  # the 1/2 is folded into K below; m is free from here on (scratch for K)
    if backward == "exact":
        e2 = torch.sub(lam.unsqueeze(-2), lam.unsqueeze(-1), out=m).mul_(2.0)
        skew.div_(e2)
        # exact ties (bitwise equal eigenvalues): K = 0, the degenerate-subspace convention (torch: NaN)
        return skew.masked_fill_(e2 == 0, 0.0)
    if backward == "clip":
        e = torch.sub(lam.unsqueeze(-2), lam.unsqueeze(-1), out=m)  # >= 0 on the upper triangle
        k_up = e.clamp_min_(1.0 / clip).reciprocal_().mul_(0.5)  # min(1/e, clip) / 2; ties -> clip / 2
    elif backward == "taylor":
        lc = lam.clamp_min(eps)
        fast = lc.numel() == 0 or (
            float((lc[..., -1] / lc[..., 0]).max()) < math.exp(_FAST_LOG_RANGE.get(lc.dtype, 70.0) / (degree + 1))
        )
        k_up = _taylor_up_fast(lc, degree, 0.5, out=m) if fast else 0.5 * _series_closed(lc, degree, pade=False)
    else:  # pade
        k_up = 0.5 * _series_closed(lam.clamp_min(eps), degree, pade=True)
    skew.mul_(k_up)  # valid on the strict upper triangle; mirror it
    return torch.where(_upper_mask(m.shape[-1], m.device), skew, skew.mT, out=m)


# ----------------------------------------------------------------------------------------------------------
# SVD-PI backward (NeurIPS 2019), hand-written reverse pass of the unrolled iterations (tested against
# autograd of the unrolled iterations), O(B n^2) memory instead of autograd's O(B n^3).
# ----------------------------------------------------------------------------------------------------------
def _pi_vjp(a: torch.Tensor, lam: torch.Tensor, v: torch.Tensor, gv: torch.Tensor, iters: int,
            eps: float) -> torch.Tensor:
    """Gradient w.r.t. ``a`` (B, n, n) of ``sum_i <gv[:, :, i], u_i>`` where ``u_i`` are the PI eigenvectors.

    Forward (per eigenvector, largest first, r = 0..n-1, column i = n-1-r):
        x0 = v_i (constant), x_{k+1} = M_r x_k / ||M_r x_k|| (k < iters), u = x_iters, rho = u^T M_r u,
        M_{r+1} = M_r - rho u u^T.
    Breaking conditions (then this and all smaller eigenvectors get no gradient): lambda_i <= eps, remaining
    energy sum_{j<=i} lambda_j / trace < PI_ENERGY_TOL, |rho - lambda_i| > PI_RAYLEIGH_TOL * lambda_i.
    """
    bsz, n, _ = a.shape
    tiny = torch.finfo(a.dtype).tiny ** 0.5

    u_all = torch.zeros_like(a)  # row r: u of the r-th processed eigenvector
    rho = torch.zeros(bsz, n, dtype=a.dtype, device=a.device)
    ok_all = torch.zeros(bsz, n, dtype=torch.bool, device=a.device)

    def matvec(x: torch.Tensor, r: int) -> torch.Tensor:  # M_r x = A x - U_<r diag(rho_<r) U_<r^T x
        y = (a @ x.unsqueeze(-1)).squeeze(-1)
        if r:
            ur = u_all[:, :r]  # (B, r, n)
            c = rho[:, :r] * (ur @ x.unsqueeze(-1)).squeeze(-1)
            y = y - (c.unsqueeze(-2) @ ur).squeeze(-2)
        return y

    def iterate(r: int, i: int):
        xs, norms = [v[:, :, i]], []
        for _ in range(iters):
            y = matvec(xs[-1], r)
            nrm = y.norm(dim=-1, keepdim=True).clamp_min(tiny)
            xs.append(y / nrm)
            norms.append(nrm)
        return xs, norms

    lam_pos = lam.clamp_min(0.0)
    total = lam_pos.sum(-1)
    energy = lam_pos.cumsum(-1) / total.clamp_min(torch.finfo(a.dtype).tiny).unsqueeze(-1)  # sum_{j<=i}
    active = torch.ones(bsz, dtype=torch.bool, device=a.device)
    for r in range(n):
        i = n - 1 - r
        xs, _ = iterate(r, i)
        u = xs[-1]
        rq = (u * matvec(u, r)).sum(-1)
        li = lam[:, i]
        ok = active & (li > eps) & (energy[:, i] >= PI_ENERGY_TOL) & ((rq - li).abs() <= PI_RAYLEIGH_TOL * li)
        active = ok
        u_all[:, r] = u
        rho[:, r] = rq
        ok_all[:, r] = ok

    g = torch.zeros_like(a)  # running adjoint of M_r
    last = int(ok_all.any(0).nonzero().max()) if bool(ok_all.any()) else -1
    for r in range(last, -1, -1):
        i = n - 1 - r
        u, rq, ok = u_all[:, r], rho[:, r], ok_all[:, r]
        ubar = torch.where(ok.unsqueeze(-1), gv[:, :, i], torch.zeros_like(u))
        # M_{r+1} = M_r - rho u u^T
        gu = (g @ u.unsqueeze(-1)).squeeze(-1)
        gtu = (g.mT @ u.unsqueeze(-1)).squeeze(-1)
        rho_bar = -(u * gu).sum(-1)
        ubar = ubar - rq.unsqueeze(-1) * (gu + gtu)
        # rho = u^T M_r u
        ubar = ubar + 2.0 * rho_bar.unsqueeze(-1) * matvec(u, r)
        g = torch.baddbmm(g, (rho_bar.unsqueeze(-1) * u).unsqueeze(-1), u.unsqueeze(-2))
        # the power iterations, recomputed (O(B n) memory per step)
        xs, norms = iterate(r, i)
        xbar = ubar
        ybars = []
        for k in range(iters - 1, -1, -1):
            xk = xs[k + 1]
            ybar = (xbar - xk * (xk * xbar).sum(-1, keepdim=True)) / norms[k]
            ybars.append(ybar)
            xbar = matvec(ybar, r)  # M_r is symmetric
        ybars.reverse()
        g = torch.baddbmm(g, torch.stack(ybars, -1), torch.stack(xs[:-1], -2))  # + sum_k ybar_k x_k^T
    return g


# ----------------------------------------------------------------------------------------------------------
# autograd Functions
# ----------------------------------------------------------------------------------------------------------
class _Eigh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, backward, degree, eps, clip):
        a = 0.5 * (a + a.mT)
        lam, v = torch.linalg.eigh(a)
        ctx.save_for_backward(lam, v, a if backward == "power_iteration" else None)
        ctx.opts = (backward, degree, eps, clip)
        return lam, v

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lam, g_v):
        lam, v, a = ctx.saved_tensors
        backward, degree, eps, clip = ctx.opts
        if g_v is None:
            s = torch.zeros_like(v)
        elif backward == "power_iteration":
            shp = v.shape
            n = shp[-1]
            ga = _pi_vjp(a.reshape(-1, n, n), lam.reshape(-1, n), v.reshape(-1, n, n), g_v.reshape(-1, n, n),
                         degree + 1, eps).reshape(shp)
            ga = 0.5 * (ga + ga.mT)
            if g_lam is not None:
                ga = ga + (v * g_lam.unsqueeze(-2)) @ v.mT
            return ga, None, None, None, None
        else:
            shp, n = v.shape, v.shape[-1]
            v3 = v.reshape(-1, n, n)
            s = _inner(lam.reshape(-1, n), torch.bmm(v3.mT, g_v.reshape(-1, n, n)), backward, degree, eps, clip)
            diag = s.diagonal(dim1=-2, dim2=-1)  # s is a fresh tensor: fill its diagonal in place
            if g_lam is not None:
                diag.copy_(g_lam.reshape(-1, n))
            else:
                diag.zero_()
            return torch.bmm(torch.bmm(v3, s), v3.mT, out=s).reshape(shp), None, None, None, None
        diag = s.diagonal(dim1=-2, dim2=-1)
        if g_lam is not None:
            diag.copy_(g_lam)
        return v @ s @ v.mT, None, None, None, None


def _stable_dd(lc: torch.Tensor, p: float) -> torch.Tensor:
    """Divided differences of f(x) = x^p on clamped eigenvalues (all > 0): (f(a) - f(b)) / (a - b), f' on ties.

    With lo = min(a, b), x = log(hi / lo) = log1p((hi - lo) / lo):
    (hi^p - lo^p) / (hi - lo) = lo^(p-1) * expm1(p x) / expm1(x), limit p lo^(p-1) at x = 0.
    """
    a, b = lc.unsqueeze(-1), lc.unsqueeze(-2)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    x = torch.log1p((hi - lo) / lo)
    ratio = torch.where(x > 0, torch.expm1(p * x) / torch.expm1(x).clamp_min(torch.finfo(lc.dtype).tiny),
                        torch.full_like(x, p))
    return lo.pow(p - 1.0) * ratio


class _SymPowerSpectral(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, p, eps):
        a = 0.5 * (a + a.mT)
        lam, v = torch.linalg.eigh(a)
        f = lam.clamp_min(eps).pow(p)
        ctx.save_for_backward(lam, v)
        ctx.opts = (p, eps)
        return (v * f.unsqueeze(-2)) @ v.mT

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        lam, v = ctx.saved_tensors
        p, eps = ctx.opts
        lc = lam.clamp_min(eps)
        dd = _stable_dd(lc, p)  # divided differences of x^p at the clamped eigenvalues
        # g(l) = max(l, eps)^p: (g(li) - g(lj)) / (li - lj) = dd(lci, lcj) * (lci - lcj) / (li - lj)
        num = lc.unsqueeze(-1) - lc.unsqueeze(-2)
        den = lam.unsqueeze(-1) - lam.unsqueeze(-2)
        above = (lam > eps).to(lam.dtype)
        tie = (above.unsqueeze(-1) * above.unsqueeze(-2)).expand_as(den)  # g' = f' above eps, 0 below
        frac = torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), tie)
        l_mat = dd * frac
        gs = 0.5 * (g + g.mT)
        return v @ ((v.mT @ gs @ v) * l_mat) @ v.mT, None, None


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------
def eigh(
    A: torch.Tensor,
    *,
    backward: str = "taylor",
    degree: int = 9,
    eps: float = 1e-5,
    clip: float = 100.0,
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Eigendecomposition of symmetric matrices with a robust backward pass.

    Forward: ``torch.linalg.eigh`` of :math:`(A + A^\top)/2` in ``compute_dtype``, one batched call, outside
    autocast. Backward: :math:`\bar A = V\,(\mathrm{diag}(\bar\lambda) + \tilde K \circ \tfrac12(V^\top\bar V -
    \bar V^\top V))\,V^\top` with :math:`\tilde K` chosen by ``backward`` (module docstring; Wang et al. TPAMI
    2021 eqs. 9-12). The gradient is symmetric.

    Args:
        A: symmetric matrices ``(..., n, n)``, any batch shape, float16/bfloat16/float32/float64, CPU or CUDA,
            finite. Non-symmetric input is symmetrised as ``(A + A^T) / 2`` (so the gradient is symmetric).
        backward: one of :data:`BACKWARDS`: ``"exact"``, ``"taylor"``, ``"pade"``, ``"power_iteration"``,
            ``"clip"``. ``"exact"`` is torch's formula :math:`K_{ij} = 1/(\lambda_j - \lambda_i)` with one
            deliberate difference: **bitwise-equal** eigenvalues get :math:`K_{ij} = 0` instead of torch's
            NaN (:math:`\infty \cdot 0`). For losses invariant to rotations inside the degenerate eigenspace
            the factor multiplied by :math:`K_{ij}` is 0 there, so the result is finite; but, as with taylor,
            the gradient through ``(eigenvalues, eigenvectors)`` lacks the :math:`f'(\lambda)` term that the
            true derivative of a spectral function :math:`V f(\Lambda) V^\top` has inside the degenerate
            eigenspace (for ``A = I``, ``sym_power(A, 0.5)[0, 1]`` gets 0 instead of 0.25; only
            :func:`sym_power`'s ``backward="spectral"`` has it). For other losses (e.g. ``V.sum()``) the
            gradient is undefined at a tie and that part is dropped. Eigenvalues that are close but not
            bitwise equal still give :math:`1/|\lambda_j - \lambda_i|`, exactly as torch (about 1e16 for
            the covariance of 8 samples in 16 dimensions); use a robust mode for those.
        degree: Taylor degree ``K >= 0`` (taylor, pade; power_iteration runs ``K + 1`` iterations).
        eps: ``> 0``; eigenvalues used in :math:`\tilde K` are clamped at ``eps`` (taylor, pade) and
            power_iteration stops at eigenvalues ``<= eps``. The returned eigenvalues are never changed.
        clip: threshold of ``"clip"`` (SVD-Clip, paper: 100).
        compute_dtype: ``torch.float64`` (default) or ``torch.float32``.

    Returns:
        ``(eigenvalues, eigenvectors)`` with ``torch.linalg.eigh``'s conventions: eigenvalues ``(..., n)``
        ascending, eigenvectors ``(..., n, n)`` in the columns, both in ``A``'s dtype and device.

    Raises:
        TypeError: ``A`` not a tensor, integer/bool/complex dtype, bad ``compute_dtype``.
        ValueError: ``A`` not of shape ``(..., n, n)`` (ndim < 2, non-square, n = 0), NaN/inf entries,
            unknown ``backward``, ``degree < 0``, ``eps <= 0``, ``clip <= 0``.

    Example:
        >>> A = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 2]], requires_grad=True)
        >>> lam, V = eigh(A)                     # taylor, K = 9
        >>> lam.tolist()
        [1.0, 1.0, 2.0]
        >>> V.sum().backward()                   # torch.linalg.eigh gives NaN here
        >>> bool(torch.isfinite(A.grad).all())
        True
    """
    _check_matrix(A)
    _check_options(backward, degree, eps, clip, compute_dtype, BACKWARDS)
    dtype = A.dtype
    with torch.autocast(device_type=A.device.type, enabled=False):
        lam, v = _Eigh.apply(A.to(compute_dtype), backward, int(degree), float(eps), float(clip))
    return lam.to(dtype), v.to(dtype)


def sym_power(
    A: torch.Tensor,
    p: float,
    *,
    backward: str = "taylor",
    eps: float = 1e-5,
    degree: int = 9,
    clip: float = 100.0,
    compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r""":math:`A^p = V \max(\Lambda, \epsilon)^p V^\top` for symmetric positive semi-definite ``A``.

    ``p = -1/2`` whitens, ``p = 1/2`` colours / pools. With a mode of :data:`BACKWARDS` the gradient flows
    through :func:`eigh` (the seed's way). ``backward="spectral"`` uses the exact gradient of the spectral
    function :math:`g(\lambda) = \max(\lambda, \epsilon)^p` (Daleckii-Krein):
    :math:`\bar A = V[(V^\top \bar G V) \circ L]V^\top`, :math:`L_{ij} = (g(\lambda_i)-g(\lambda_j))/(\lambda_i-
    \lambda_j)`, :math:`L_{ii} = g'(\lambda_i)`, divided differences evaluated stably (``log1p``/``expm1``) for
    close eigenvalues. It is exact where Taylor truncates and bounded at repeated eigenvalues,
    :math:`|L_{ij}| \le \max_{\lambda \ge \epsilon}|g'| = |p|\epsilon^{p-1}` for ``p <= 1``. The eigenvector route
    loses the :math:`g'` term of repeated eigenvalues (there Taylor gives 0 where the true derivative is
    :math:`g'`). Below ``eps`` the function is constant, so its derivative there is 0.

    ``A`` is symmetrised as ``(A + A^T)/2``, so gradients are symmetric: for ``A = I`` and
    ``loss = sym_power(A, 0.5)[0, 1]`` the spectral gradient is 0.25 at (0, 1) and (1, 0), 0 elsewhere.

    Args:
        A: symmetric PSD matrices ``(..., n, n)`` (see :func:`eigh`).
        p: real exponent.
        backward: one of :data:`SYM_POWER_BACKWARDS`.
        eps: eigenvalue floor ``> 0`` (also :func:`eigh`'s ``eps``).
        degree, clip, compute_dtype: as in :func:`eigh`.

    Returns:
        ``(..., n, n)`` tensor of ``A``'s dtype and device.

    Raises:
        TypeError / ValueError: as :func:`eigh`; ValueError for a non-finite or non-real ``p``.

    Example:
        >>> A = torch.diag(torch.tensor([4.0, 9.0]))
        >>> sym_power(A, 0.5, backward="spectral").diagonal().tolist()
        [2.0, 3.0]
    """
    _check_matrix(A)
    _check_options(backward, degree, eps, clip, compute_dtype, SYM_POWER_BACKWARDS)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(float(p)):
        raise ValueError(f"p must be a finite real exponent, got {p!r}")
    p = float(p)
    dtype = A.dtype
    with torch.autocast(device_type=A.device.type, enabled=False):
        a = A.to(compute_dtype)
        if backward == "spectral":
            out = _SymPowerSpectral.apply(a, p, float(eps))
        else:
            lam, v = eigh(a, backward=backward, degree=degree, eps=eps, clip=clip, compute_dtype=compute_dtype)
            out = (v * lam.clamp_min(eps).pow(p).unsqueeze(-2)) @ v.mT
    return out.to(dtype)
