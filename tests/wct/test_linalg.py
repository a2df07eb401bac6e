"""Tests of wct.linalg: smoke, exceptions, shapes, oracles, gradcheck (float64), robustness on ties."""

from __future__ import annotations

import math

import pytest
import torch

from wct import linalg
from wct.linalg import BACKWARDS, SYM_POWER_BACKWARDS, eigh, k_bound, sym_power, taylor_k

F64 = torch.float64
ROBUST = tuple(m for m in BACKWARDS if m != "exact")


def spd(n: int, *batch: int, samples: int | None = None, dtype=F64) -> torch.Tensor:
    """Random covariance (..., n, n) of `samples` samples (default 3n: well conditioned)."""
    x = torch.randn(*batch, n, samples or 3 * n, dtype=dtype)
    return x @ x.mT / x.shape[-1]


def with_spectrum(lam: torch.Tensor) -> torch.Tensor:
    """Symmetric matrix with eigenvalues `lam` (n,) and a random orthogonal basis."""
    q, _ = torch.linalg.qr(torch.randn(lam.shape[-1], lam.shape[-1], dtype=F64))
    return (q * lam) @ q.T


def grad_of(a: torch.Tensor, fn) -> torch.Tensor:
    a = a.detach().clone().requires_grad_(True)
    fn(a).backward()
    return a.grad


def eig_grad(a, mode, loss, **kw):
    def fn(x):
        lam, v = eigh(x, backward=mode, **kw)
        return loss(lam, v)

    return grad_of(a, fn)


def torch_eig_grad(a, loss):
    return grad_of(a, lambda x: loss(*torch.linalg.eigh(0.5 * (x + x.mT))))


def sign_free_loss(g_v: torch.Tensor, g_l: torch.Tensor):
    """Loss invariant to eigenvector signs: sum(G o V diag(w) V^T) + <g_l, lambda>."""

    def loss(lam, v):
        return (g_v * (v * g_l.unsqueeze(-2)) @ v.mT).sum() + (lam * g_l).sum()

    return loss


# ------------------------------------------------------------------------------------------------ smoke
def test_contract_names():
    assert BACKWARDS == ("exact", "taylor", "pade", "power_iteration", "clip")
    assert SYM_POWER_BACKWARDS == BACKWARDS + ("spectral",)


@pytest.mark.parametrize("mode", BACKWARDS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_shapes_dtypes_batch(mode, dtype):
    a = spd(5, 2, 3, dtype=dtype).requires_grad_(True)
    lam, v = eigh(a, backward=mode)
    assert lam.shape == (2, 3, 5) and v.shape == (2, 3, 5, 5)
    assert lam.dtype == dtype and v.dtype == dtype
    assert bool((lam[..., 1:] >= lam[..., :-1]).all())  # ascending
    ref_l, ref_v = torch.linalg.eigh(a.detach().to(F64))
    torch.testing.assert_close(lam.to(F64), ref_l, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(((v * lam.unsqueeze(-2)) @ v.mT).to(F64), a.detach().to(F64), rtol=1e-4, atol=1e-5)
    (v.sum() + lam.sum()).backward()
    assert a.grad.shape == a.shape and a.grad.dtype == dtype and bool(torch.isfinite(a.grad).all())
    torch.testing.assert_close(a.grad, a.grad.mT)  # symmetric gradient


def test_forward_returns_true_eigenvalues_below_eps():
    lam = torch.tensor([-2.0, 0.0, 1e-9, 3.0], dtype=F64)
    a = with_spectrum(lam)
    for mode in BACKWARDS:
        out, _ = eigh(a, backward=mode, eps=1e-3)
        torch.testing.assert_close(out, lam, atol=1e-12, rtol=0)


def test_nonsymmetric_input_is_symmetrised():
    a = torch.randn(4, 4, dtype=F64)
    lam, v = eigh(a)
    ref_l, _ = torch.linalg.eigh(0.5 * (a + a.T))
    torch.testing.assert_close(lam, ref_l)
    g = eig_grad(a, "exact", lambda lam, v: (v ** 2 * torch.arange(4.0, dtype=F64)).sum())
    torch.testing.assert_close(g, g.T)


def test_autocast_runs_outside():
    a = spd(6, 3, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lam, v = eigh(a)
        p = sym_power(a, -0.5)
    assert lam.dtype == v.dtype == p.dtype == torch.float32
    torch.testing.assert_close(lam, torch.linalg.eigvalsh(a.double()).float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", BACKWARDS)
def test_compute_dtype_float32(mode):
    # float32 LAPACK on request: float64 input is returned as float64, values to float32 accuracy
    a = spd(6, 3)
    loss = sign_free_loss(torch.randn(6, 6, dtype=F64), torch.randn(6, dtype=F64))
    lam, v = eigh(a, backward=mode, compute_dtype=torch.float32)
    assert lam.dtype == v.dtype == F64
    ref_l, _ = torch.linalg.eigh(a)
    torch.testing.assert_close(lam, ref_l, rtol=1e-5, atol=1e-5)
    assert float((lam - ref_l).abs().max()) > 0  # really computed in float32
    g32 = eig_grad(a, mode, loss, compute_dtype=torch.float32)
    torch.testing.assert_close(g32, eig_grad(a, mode, loss), rtol=1e-3, atol=1e-4)


def test_half_precision_input():
    a = spd(4, 2).to(torch.bfloat16)
    lam, v = eigh(a)
    assert lam.dtype == v.dtype == torch.bfloat16


def test_empty_batch():
    lam, v = eigh(torch.zeros(0, 3, 3, dtype=F64))
    assert lam.shape == (0, 3) and v.shape == (0, 3, 3)


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (torch.zeros(3), ValueError, r"\(\.\.\., n, n\)"),
        (torch.zeros(2, 3), ValueError, r"square"),
        (torch.zeros(2, 0, 0), ValueError, r"n >= 1"),
        (torch.zeros(3, 3, dtype=torch.int64), TypeError, r"floating"),
        (torch.zeros(3, 3, dtype=torch.complex64), TypeError, r"floating"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), ValueError, r"NaN or inf"),
        (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), ValueError, r"NaN or inf"),
        ([[1.0, 0.0], [0.0, 1.0]], TypeError, r"torch.Tensor"),
    ],
)
def test_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        eigh(bad)
    with pytest.raises(exc, match=match):
        sym_power(bad, 0.5)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"backward": "svd"}, "backward must be one of"),
        ({"backward": "spectral"}, "backward must be one of"),  # sym_power only
        ({"degree": -1}, "degree"),
        ({"degree": 2.5}, "degree"),
        ({"eps": 0.0}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"clip": -1.0}, "clip"),
    ],
)
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        eigh(torch.eye(3), **kw)


def test_bad_sym_power_options():
    with pytest.raises(ValueError, match="p must be"):
        sym_power(torch.eye(3), float("nan"))
    with pytest.raises(ValueError, match="backward must be one of"):
        sym_power(torch.eye(3), 0.5, backward="newton")
    with pytest.raises(TypeError, match="compute_dtype"):
        eigh(torch.eye(3), compute_dtype=torch.float16)


# ----------------------------------------------------------------------------------------------- oracles
def test_exact_matches_torch_well_separated():
    a = with_spectrum(torch.tensor([0.5, 1.0, 2.0, 3.5, 5.0], dtype=F64)).expand(2, 5, 5).clone()
    g = torch.randn(2, 5, 5, dtype=F64)
    loss = lambda lam, v: (v * g).sum() + (lam * g[..., 0]).sum()  # noqa: E731  (sign-dependent on purpose)
    torch.testing.assert_close(eig_grad(a, "exact", loss), torch_eig_grad(a, loss), rtol=1e-10, atol=1e-12)
    # clip == exact when every |K_ij| < clip
    torch.testing.assert_close(eig_grad(a, "clip", loss), torch_eig_grad(a, loss), rtol=1e-10, atol=1e-12)


def test_gradcheck_exact_and_spectral():
    a = with_spectrum(torch.tensor([0.3, 1.0, 2.2, 4.0], dtype=F64)).requires_grad_(True)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)

    def f(x):
        lam, v = eigh(x, backward="exact")
        return (v * w) @ v.mT, lam

    assert torch.autograd.gradcheck(f, (a,))
    for p in (-0.5, 0.5, 2.0):
        assert torch.autograd.gradcheck(lambda x, p=p: sym_power(x, p, backward="spectral"), (a,))
        assert torch.autograd.gradcheck(lambda x, p=p: sym_power(x, p, backward="exact"), (a,))


@pytest.mark.parametrize("mode", ["taylor", "pade"])
def test_series_converges_to_exact_with_degree(mode):
    a = with_spectrum(torch.tensor([0.2, 0.5, 1.0, 1.6, 2.0], dtype=F64))
    loss = sign_free_loss(torch.randn(5, 5, dtype=F64), torch.randn(5, dtype=F64))
    ref = eig_grad(a, "exact", loss)
    errs = [float((eig_grad(a, mode, loss, degree=k) - ref).abs().max()) for k in (1, 5, 9, 20, 60, 200)]
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 1e-12 < errs[0]


def test_truncation_ratio_eq10_and_pade_between():
    # relative error of the degree-K Taylor K~ against the exact K is q^(K+1) (paper eq. 10); pade's is
    # q^(K+1) (1-b)/(1-bq), strictly smaller, and both are bounded at q = 1 where exact is infinite.
    lam = torch.tensor([0.05, 0.3, 0.9, 1.0, 1.0, 2.0, 7.0], dtype=F64)
    K = 9
    b = (K + 1) / (K + 2)
    ex, ta, pa = (taylor_k(lam, degree=K, eps=1e-12, backward=m) for m in ("exact", "taylor", "pade"))
    i, j = torch.triu_indices(7, 7, 1)
    q = lam[i] / lam[j]
    sep = q < 1
    torch.testing.assert_close(((ex - ta) / ex)[i, j][sep], q[sep] ** (K + 1), rtol=1e-9, atol=1e-15)
    pade_rel = ((ex - pa) / ex)[i, j][sep]
    torch.testing.assert_close(pade_rel, q[sep] ** (K + 1) * (1 - b) / (1 - b * q[sep]), rtol=1e-9, atol=1e-15)
    assert bool((pade_rel.abs() < q[sep] ** (K + 1)).all())
    # the tie lambda_3 = lambda_4 = 1: exact 1/0 -> 0 by convention; taylor (K+1)/lambda; pade 2(K+1)/lambda
    assert ta[3, 4].item() == pytest.approx(K + 1) and pa[3, 4].item() == pytest.approx(2 * (K + 1))
    assert ta[4, 3].item() == pytest.approx(-(K + 1))
    # pade matches the Taylor coefficients through q^K: R - P_K = b q^(K+1) / (1 - b q) = O(q^(K+1))
    for qq in (0.3, 0.5, 0.7):
        lam2 = torch.tensor([qq, 1.0], dtype=F64)
        r = taylor_k(lam2, degree=K, eps=1e-12, backward="pade")[0, 1]
        p = taylor_k(lam2, degree=K, eps=1e-12, backward="taylor")[0, 1]
        assert ((r - p) / qq ** (K + 1)).item() == pytest.approx(b / (1 - b * qq), rel=1e-5)


def test_fast_series_agrees_with_closed_form_and_limit():
    # the matmul-summed series (fast path), the closed form with the exact (K+1)/lambda limit at ties, and
    # a plain Horner evaluation agree, including equal and nearly equal eigenvalues
    lam = torch.tensor([[1e-5, 1e-5, 0.3, 1.0, 1.0 + 1e-12, 1.0 + 1e-9, 1.0 + 1e-6, 2.0, 50.0]], dtype=F64)
    n = lam.shape[-1]
    mask = torch.ones(n, n, dtype=torch.bool).triu(1)
    for K in (0, 3, 9, 30):
        fast = linalg._taylor_up_fast(lam, K)[0][mask]
        closed = linalg._series_closed(lam, K, pade=False)[0][mask]
        hi, lo = lam[0].unsqueeze(0).expand(n, n)[mask], lam[0].unsqueeze(1).expand(n, n)[mask]
        q, horner = lo / hi, torch.ones_like(hi)
        for _ in range(K):
            horner = horner * q + 1
        horner = horner / hi
        torch.testing.assert_close(fast, horner, rtol=1e-12, atol=0)
        torch.testing.assert_close(closed, horner, rtol=1e-12, atol=0)
    # the backward takes the closed form when (lam_max/lam_min)^(K+1) is out of range; same gradients
    a = with_spectrum(torch.tensor([1e-30, 1e-3, 1.0, 1.0, 1e3], dtype=F64))
    loss = sign_free_loss(torch.randn(5, 5, dtype=F64), torch.randn(5, dtype=F64))
    g_closed = eig_grad(a, "taylor", loss, eps=1e-40, degree=40)  # range 1e33^41: closed form
    assert bool(torch.isfinite(g_closed).all())
    g1 = eig_grad(a, "taylor", loss, eps=1e-4, degree=9)  # fast path
    lam_a, v = torch.linalg.eigh(a)
    m = v.T @ torch.randn(5, 5, dtype=F64)
    s_fast = linalg._inner(lam_a, m.clone(), "taylor", 9, 1e-4, 100.0)
    s_closed = 0.5 * linalg._series_closed(lam_a.clamp_min(1e-4), 9, False)
    s_closed = linalg._sym_from_upper(s_closed * (m - m.T))
    torch.testing.assert_close(s_fast, s_closed, rtol=1e-12, atol=1e-12)
    assert bool(torch.isfinite(g1).all())


# ---------------------------------------------------------------------------------- repeated eigenvalues
def _rank3():
    x = torch.zeros(15, 15, dtype=F64)
    x[0, :5], x[1, 5:10], x[2, 10:] = 1.0, 2.0, 3.0
    return x.T @ x  # A^T A, eigenvalues 0 (x12), 5, 20, 45


CASES = {
    "diag112_sumV": (lambda: torch.diag(torch.tensor([1.0, 1.0, 2.0], dtype=F64)), lambda lam, v: v.sum()),
    "identity": (lambda: torch.eye(4, dtype=F64), lambda lam, v: (v * torch.arange(16.0).view(4, 4)).sum()),
    "zero": (lambda: torch.zeros(4, 4, dtype=F64), lambda lam, v: v.sum() + lam.sum()),
    "rank3": (_rank3, lambda lam, v: ((v * lam.unsqueeze(-2)) @ v.mT).sum()),
    "cov16of8": (lambda: spd(16, samples=8), lambda lam, v: v.sum()),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("mode", ROBUST)
def test_finite_gradients_on_ties(case, dtype, mode):
    make, loss = CASES[case]
    a = make().to(dtype)
    g = eig_grad(a, mode, loss)
    assert bool(torch.isfinite(g).all()), (case, mode, g)
    if case in ("cov16of8",) and dtype == F64:
        # bounded by eq. 15 (taylor: (K+1)/eps per K entry), unlike torch's ~1e16
        assert float(g.norm()) <= math.sqrt(16) * k_bound(mode if mode != "power_iteration" else "taylor") * 1.01


def test_torch_nan_on_diag112_taylor_finite():
    # the motivating case of the issue: torch.linalg.eigh's backward is all-NaN for diag(1, 1, 2), sum(V)
    a = torch.diag(torch.tensor([1.0, 1.0, 2.0], dtype=F64))
    loss = lambda lam, v: v.sum()  # noqa: E731
    assert bool(torch.isnan(torch_eig_grad(a, loss)).all())
    for mode in ROBUST:
        assert bool(torch.isfinite(eig_grad(a, mode, loss)).all()), mode
    # V = I and dL/dV = ones: V^T dL/dV is symmetric, its skew part is 0, so every finite K gives 0 (torch
    # gets inf * 0 = NaN). The tie is bitwise, so "exact" uses K = 0 there (documented) and is finite too
    zero = torch.zeros(3, 3, dtype=F64)
    torch.testing.assert_close(eig_grad(a, "taylor", loss), zero, rtol=0, atol=0)
    torch.testing.assert_close(eig_grad(a, "exact", loss), zero, rtol=0, atol=0)


@pytest.mark.parametrize("samples", [8, 12])
def test_near_ties_exact_explodes_like_torch_taylor_bounded(samples):
    # the premise: the covariance of fewer samples than dimensions has 16 - samples eigenvalues ~1e-16
    # apart, NOT bitwise equal, so the K = 0 tie convention plays no role: exact == torch, both ~1e15
    a = spd(16, samples=samples)
    lam = torch.linalg.eigvalsh(a)
    assert not bool((lam[1:] == lam[:-1]).any())
    loss = lambda lam, v: v.sum()  # noqa: E731
    g_torch, g_exact = torch_eig_grad(a, loss), eig_grad(a, "exact", loss)
    assert float(g_torch.abs().max()) > 1e13
    assert float((g_exact - g_torch).norm() / g_torch.norm()) < 1e-10
    # taylor: finite and under eq. 15 (||dL/dV||_F = 16 for sum(V)), about 1e9 times smaller than torch's
    g_taylor = eig_grad(a, "taylor", loss)
    assert bool(torch.isfinite(g_taylor).all())
    assert float(g_taylor.norm()) <= 16 * k_bound("taylor")
    assert float(g_taylor.abs().max()) < 1e-6 * float(g_torch.abs().max())


@pytest.mark.parametrize("gap", [1e-6, 1e-9, 1e-12])
def test_exact_mode_grows_as_one_over_gap(gap):
    # two eigenvalues gap apart (relative): exact == torch and grows like 1/gap; taylor does not move
    a = with_spectrum(torch.tensor([0.5, 1.0, 1.0 + gap, 2.0], dtype=F64))
    loss = lambda lam, v: v.sum()  # noqa: E731
    g_exact, g_torch = eig_grad(a, "exact", loss), torch_eig_grad(a, loss)
    assert float((g_exact - g_torch).norm() / g_torch.norm()) < 1e-9
    assert float(g_exact.abs().max()) > 1e-3 / gap
    g_taylor = eig_grad(a, "taylor", loss)
    assert bool(torch.isfinite(g_taylor).all()) and float(g_taylor.abs().max()) < 100


@pytest.mark.parametrize("mode", BACKWARDS)
def test_rank3_gradient_is_all_ones(mode):
    # loss = sum(V diag(lambda) V^T) = sum(A^T A): gradient all ones (exact to 1e-10, taylor < 1e-3).
    # The 12 zero eigenvalues come out bitwise equal (exact uses K = 0 there) and their eigenvectors are
    # orthogonal to the all-ones vector, so the within-tie f' term that the eigenvector route cannot give
    # (test_sqrt_identity) is 0 for this loss. In a random basis the ties become ~1e-15 apart: exact is
    # still right there ((lj - li) / (lj - li)), taylor is not (its K saturates at (K+1)/eps).
    err = float((eig_grad(_rank3(), mode, CASES["rank3"][1]) - 1).abs().max())
    assert err < {"taylor": 1e-3, "pade": 1e-3}.get(mode, 1e-10), err


def test_rank3_in_random_basis_exact_right_taylor_misses_within_cluster_term():
    # the same matrix in a random basis: 12 eigenvalues ~1e-15 apart (not bitwise equal). exact recovers
    # (lj - li) / (lj - li) = 1 inside the cluster; taylor's K saturates at (K+1)/eps, so it loses that term
    # whatever its degree (the documented limit of the eigenvector route at (near-)repeated eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(15, 15, dtype=F64))
    a = q @ _rank3() @ q.T
    loss = CASES["rank3"][1]
    assert float((eig_grad(a, "exact", loss) - 1).abs().max()) < 1e-8
    for degree in (9, 60):
        g = eig_grad(a, "taylor", loss, degree=degree)
        assert bool(torch.isfinite(g).all()) and float((g - 1).abs().max()) > 0.1


def test_sqrt_identity():
    def loss_grad(mode):
        return grad_of(torch.eye(3, dtype=F64), lambda a: sym_power(a, 0.5, backward=mode)[0, 1])

    expected = torch.zeros(3, 3, dtype=F64)
    expected[0, 1] = expected[1, 0] = 0.25  # d sqrt(A)/dA = 1/2 at A = I, symmetrised over (0,1),(1,0)
    torch.testing.assert_close(loss_grad("spectral"), expected)
    for mode in ROBUST:
        g = loss_grad(mode)
        assert bool(torch.isfinite(g).all()), mode
    # the eigenvector route loses f' on the tie: taylor gives 0 where the true derivative is 1/2, and so does
    # "exact" with its K = 0 convention for bitwise ties (torch.linalg.eigh: NaN)
    assert float(loss_grad("taylor").abs().max()) == 0.0
    assert float(loss_grad("exact").abs().max()) == 0.0
    def torch_sqrt01(a):
        lam, v = torch.linalg.eigh(a)
        return ((v * lam.sqrt()) @ v.T)[0, 1]

    assert bool(torch.isnan(grad_of(torch.eye(3, dtype=F64), torch_sqrt01)).any())


# ---------------------------------------------------------------------------------------------- spectral
def _fd_grad(f, a, h=1e-6):
    """Central finite differences of a scalar f w.r.t. symmetric perturbations (E_ij + E_ji)/2."""
    n = a.shape[-1]
    g = torch.zeros_like(a)
    for i in range(n):
        for j in range(i, n):
            e = torch.zeros_like(a)
            e[i, j] += 0.5
            e[j, i] += 0.5
            d = (f(a + h * e) - f(a - h * e)) / (2 * h)
            g[i, j] = g[j, i] = d  # <G, E> = (G_ij + G_ji) / 2 = G_ij for a symmetric gradient G
    return g


@pytest.mark.parametrize("p", [-0.5, 0.5])
def test_spectral_matches_exact_and_fd(p):
    a = with_spectrum(torch.tensor([0.4, 1.0, 1.7, 3.0], dtype=F64))
    w = torch.randn(4, 4, dtype=F64)
    loss = lambda x, mode: (sym_power(x, p, backward=mode) * w).sum()  # noqa: E731
    g_sp = grad_of(a, lambda x: loss(x, "spectral"))
    torch.testing.assert_close(g_sp, grad_of(a, lambda x: loss(x, "exact")), rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(g_sp, _fd_grad(lambda x: loss(x, "spectral"), a), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("p", [-0.5, 0.5])
def test_spectral_close_eigenvalues_vs_fd(p):
    a = with_spectrum(torch.tensor([0.5, 1.0, 1.0 + 1e-9, 2.0], dtype=F64))
    w = torch.randn(4, 4, dtype=F64)
    loss = lambda x: (sym_power(x, p, backward="spectral") * w).sum()  # noqa: E731
    g = grad_of(a, loss)
    assert bool(torch.isfinite(g).all())
    torch.testing.assert_close(g, _fd_grad(loss, a, h=1e-5), rtol=1e-5, atol=1e-7)


def test_spectral_below_eps_and_zero_matrix():
    g = grad_of(torch.zeros(3, 3, dtype=F64), lambda x: sym_power(x, -0.5, backward="spectral").sum())
    assert bool((g == 0).all())  # constant below eps
    a = with_spectrum(torch.tensor([1e-9, 0.5, 2.0], dtype=F64))
    loss = lambda x: (sym_power(x, -0.5, backward="spectral", eps=1e-4) * torch.eye(3, dtype=F64)).sum()  # noqa
    torch.testing.assert_close(grad_of(a, loss), _fd_grad(loss, a, h=1e-7), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------- power iteration
def _pi_reference(a, iters, eps):
    """Unrolled SVD-PI with autograd (plain torch ops): eigenvectors u (n, n), in ascending order, masked."""
    lam, v = torch.linalg.eigh(0.5 * (a + a.mT).detach())  # the same basis of a tied eigenspace as eigh()
    n = a.shape[-1]
    m, active = a, True
    energy = lam.clamp_min(0).cumsum(0) / lam.clamp_min(0).sum()
    cols = [None] * n
    for r in range(n):
        i = n - 1 - r
        x = v[:, i]
        for _ in range(iters):
            y = m @ x
            x = y / y.norm()
        rq = x @ m @ x
        ok = active and lam[i] > eps and energy[i] >= linalg.PI_ENERGY_TOL and abs(rq - lam[i]) <= 0.1 * lam[i]
        active = bool(ok)
        cols[i] = x if active else torch.zeros_like(x)
        m = m - rq * torch.outer(x, x)
    return torch.stack(cols, -1)


@pytest.mark.parametrize("spectrum", [[0.3, 0.9, 1.0, 2.5, 4.0], [0.0, 0.0, 1.0, 1.0, 3.0],
                                      [0.3, 0.5, 1.0, 3.0, 2e4]])
def test_power_iteration_backward_equals_unrolled_autograd(spectrum):
    a = with_spectrum(torch.tensor(spectrum, dtype=F64))
    g = torch.randn(5, 5, dtype=F64)
    K = 6
    ours = eig_grad(a, "power_iteration", lambda lam, v: (v * g).sum(), degree=K)
    ref = grad_of(a, lambda x: (_pi_reference(x, K + 1, 1e-5) * g).sum())
    torch.testing.assert_close(ours, 0.5 * (ref + ref.T), rtol=1e-8, atol=1e-10)
    # breaking conditions: eigenvalue <= eps (2nd spectrum), remaining energy < 1e-4 (3rd: 1.8 / 20004.8 at
    # the eigenvalue 1.0): that eigenvector and all smaller ones get no gradient
    n_dead = {0.0: 2, 0.3: 3 if spectrum[-1] > 1e3 else 0}[spectrum[0]]
    g_small = eig_grad(a, "power_iteration", lambda lam, v: (v[:, :n_dead] * g[:, :n_dead]).sum(), degree=K)
    assert float(g_small.abs().max()) == 0.0
    if n_dead < 4:
        g_next = eig_grad(a, "power_iteration", lambda lam, v: (v[:, n_dead] * g[:, n_dead]).sum(), degree=K)
        assert float(g_next.abs().max()) > 1e-6


def test_proposition_dominant_eigenvector_taylor_equals_power_iterations():
    # paper Sec. 3.3: the degree-K Taylor gradient of the dominant eigenvector = the gradient of the power
    # iterations started at the eigh eigenvector (K+1 iterations: sum_{k=0..K} q^k, x^(0) not counted)
    a = with_spectrum(torch.tensor([0.2, 0.7, 1.1, 1.5, 1.8, 2.0], dtype=F64))
    g = torch.randn(6, dtype=F64)
    for K in (0, 4, 9):
        taylor = eig_grad(a, "taylor", lambda lam, v: v[:, -1] @ g, degree=K)

        def pi(x, K=K):
            u = torch.linalg.eigh(0.5 * (x + x.mT).detach())[1][:, -1]
            for _ in range(K + 1):
                u = x @ u / (x @ u).norm()
            return u @ g

        ref = grad_of(a, pi)
        torch.testing.assert_close(taylor, 0.5 * (ref + ref.T), rtol=1e-10, atol=1e-12)
        assert float((taylor - eig_grad(a, "exact", lambda lam, v: v[:, -1] @ g)).abs().max()) > 1e-6 or K == 9


# --------------------------------------------------------------------------------------------- the bound
@pytest.mark.parametrize("mode", ["taylor", "pade", "clip"])
def test_bound_eq15_on_random_spectra(mode):
    K, eps = 9, 1e-3
    c = k_bound(mode, degree=K, eps=eps)
    for trial in range(20):
        n = 3 + trial % 6
        lam = torch.rand(n, dtype=F64) ** 4 * 10 ** torch.randint(-4, 3, (1,)).item()
        lam[: trial % 3] = lam[-1]  # ties with the largest
        a = with_spectrum(lam)
        gv, gl = torch.randn(n, n, dtype=F64), torch.randn(n, dtype=F64)
        g = eig_grad(a, mode, lambda lam, v, gv=gv, gl=gl: (v * gv).sum() + (lam * gl).sum(), degree=K, eps=eps)
        bound = math.sqrt(float(gl.norm()) ** 2 + c**2 * float(gv.norm()) ** 2)
        assert float(g.norm()) <= bound * (1 + 1e-9)
        if mode != "clip":
            lam_a = torch.linalg.eigvalsh(a)
            kk = taylor_k(lam_a, degree=K, eps=eps, backward=mode)
            assert float(kk.abs().max()) <= c * (1 + 1e-12)
            hi = torch.maximum(lam_a.clamp_min(eps).unsqueeze(0), lam_a.clamp_min(eps).unsqueeze(1))
            factor = 1 if mode == "taylor" else 2
            assert bool((kk.abs() <= factor * (K + 1) / hi * (1 + 1e-12)).all())


# -------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("mode", SYM_POWER_BACKWARDS)
def test_cuda_matches_cpu(mode):
    a = spd(6, 4)
    w = torch.randn(6, 6, dtype=F64)
    loss = lambda x: (sym_power(x, -0.5, backward=mode) * w.to(x.device)).sum()  # noqa: E731
    g_cpu = grad_of(a, loss)
    g_gpu = grad_of(a.cuda(), loss)
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-8, atol=1e-10)
