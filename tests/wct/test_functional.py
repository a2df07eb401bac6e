"""Tests of wct.functional: oracles, gradcheck (float64), exceptions, degenerate inputs."""

from __future__ import annotations

import pytest
import torch

from wct import functional as F

D64 = torch.float64


def _eye_like(cov):
    return torch.eye(cov.shape[-1], dtype=cov.dtype).expand_as(cov)


# ---------------------------------------------------------------------------------------------- whiten
def test_whiten_gives_identity_covariance_per_sample_and_group():
    x = torch.randn(3, 12, 10, 10, dtype=D64) * torch.linspace(0.1, 5, 12, dtype=D64).view(1, 12, 1, 1) + 2
    x[:, 1] += 0.9 * x[:, 0]  # correlated channels
    y = F.whiten(x, groups=3, eps=1e-5)
    st = F.group_stats(y, groups=3)
    assert torch.allclose(st.mean, torch.zeros_like(st.mean), atol=1e-12)
    # tolerance: with trace-relative eps, eigenvalue lambda maps to lambda/(lambda + eps*tr/d): 1e-3 here
    assert (st.cov - _eye_like(st.cov)).abs().max() < 1e-3
    y0 = F.whiten(x, groups=3, eps=0.0)
    assert (F.group_stats(y0, groups=3).cov - _eye_like(st.cov)).abs().max() < 1e-9


def test_whiten_is_per_sample_and_scale_invariant():
    x = torch.randn(4, 8, 6, 6, dtype=D64)
    y = F.whiten(x, groups=2)
    assert torch.allclose(F.whiten(x[1:2], groups=2), y[1:2], atol=1e-12)
    for scale in (1e-4, 1e4):
        assert torch.allclose(F.whiten(x * scale, groups=2), y, atol=1e-8)


def test_whiten_float32_large_feature_map_matches_float64():
    x = torch.randn(2, 64, 16, 16)
    y = F.whiten(x, groups=8)
    assert y.dtype == torch.float32
    assert torch.allclose(y.double(), F.whiten(x.double(), groups=8), atol=1e-5)


# ---------------------------------------------------------------------------------------------- wct
def test_wct_alpha_one_gives_style_statistics_and_alpha_zero_the_content():
    c = torch.randn(2, 16, 12, 12, dtype=D64) * 3 - 1
    s = torch.randn(2, 16, 7, 9, dtype=D64)
    s[:, 4:8] = s[:, 4:8] * 4 + s[:, 0:4]  # correlated, different scales
    y = F.wct(c, s, groups=4, alpha=1.0, eps=1e-5)
    ys, ss = F.group_stats(y, groups=4), F.group_stats(s, groups=4)
    assert torch.allclose(ys.mean, ss.mean, atol=1e-10)
    rel = (ys.cov - ss.cov).abs().max() / ss.cov.abs().max()
    assert rel < 1e-3  # regularised: (Sigma_s + eps*tr/d) vs Sigma_s
    y0 = F.wct(c, s, groups=4, alpha=0.0, eps=0.0)
    assert torch.allclose(F.group_stats(F.wct(c, s, groups=4, eps=0.0), groups=4).cov, ss.cov, atol=1e-9)
    assert torch.equal(F.wct(c, s, groups=4, alpha=0.0), c)
    assert torch.equal(F.wct(c, s, groups=4, alpha=torch.zeros(2, dtype=D64)), c)
    assert y0 is not c


def test_wct_self_transfer_is_identity_and_per_sample():
    x = torch.randn(3, 8, 5, 5, dtype=D64)
    assert torch.allclose(F.wct(x, x, groups=2, eps=0.1), x, atol=1e-10)
    s = torch.randn(3, 8, 4, 4, dtype=D64)
    full = F.wct(x, s, groups=2)
    assert torch.allclose(F.wct(x[2:], s[2:], groups=2), full[2:], atol=1e-12)
    # batch-1 style broadcasts; precomputed statistics give the same result
    one = F.wct(x, s[:1], groups=2)
    assert torch.allclose(one[0], full[0], atol=1e-12)
    assert torch.allclose(F.wct(x, F.group_stats(s, groups=2), groups=2), full, atol=1e-10)


def test_wct_equals_color_of_whiten():
    x, s = torch.randn(2, 8, 6, 6, dtype=D64), torch.randn(2, 8, 3, 5, dtype=D64)
    ref = F.color(F.whiten(x, groups=4), s, groups=4)
    assert torch.allclose(F.wct(x, s, groups=4), ref, atol=1e-10)


def test_wct_alpha_tensor_blend_and_gradient():
    x, s = torch.randn(2, 8, 6, 6, dtype=D64), torch.randn(2, 8, 5, 5, dtype=D64)
    full = F.wct(x, s, groups=2)
    a = torch.tensor([0.25, 0.75], dtype=D64, requires_grad=True)
    y = F.wct(x, s, groups=2, alpha=a)
    assert torch.allclose(y[0], 0.25 * full[0] + 0.75 * x[0])
    assert torch.allclose(y[1], 0.75 * full[1] + 0.25 * x[1])
    assert torch.autograd.gradcheck(lambda t: F.wct(x, s, groups=2, alpha=t), (a,))


def test_gradcheck_wct_float64():
    x = torch.randn(2, 4, 4, 4, dtype=D64, requires_grad=True)
    s = torch.randn(2, 4, 3, 3, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: F.wct(a, b, groups=2, backward="exact"), (x, s))


@pytest.mark.parametrize("bad", [{"groups": 3}, {"groups": 0}, {"eps": -1.0}, {"backward": "nope"},
                                 {"eps_mode": "rel"}, {"alpha": 1.5}, {"alpha": torch.ones(3)}, {"k": 0}])
def test_wct_rejects_bad_options(bad):
    x, s = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    with pytest.raises(ValueError):
        F.wct(x, s, **bad)


def test_shape_errors_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"C=10 .*groups=4"):
        F.whiten(torch.randn(1, 10, 4, 4), groups=4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        F.whiten(torch.randn(10, 4, 4), groups=2)
    with pytest.raises(ValueError, match="C=8"):
        F.wct(torch.randn(1, 8, 4, 4), torch.randn(1, 16, 4, 4), groups=2)
    with pytest.raises(ValueError, match="batch size"):
        F.wct(torch.randn(3, 8, 4, 4), torch.randn(2, 8, 4, 4), groups=2)
    with pytest.raises(TypeError):
        F.whiten(torch.ones(1, 8, 4, 4, dtype=torch.long), groups=2)
    bad = torch.randn(1, 8, 4, 4)
    bad[0, 3, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"content \(B, C, H, W\) = \(1, 8, 4, 4\) contains NaN"):
        F.wct(bad, torch.randn(1, 8, 4, 4), groups=2)
    with pytest.raises(ValueError, match=r"style .* contains NaN"):
        F.wct(torch.randn(1, 8, 4, 4), bad * float("inf"), groups=2)
    with pytest.raises(ValueError, match=r"x .* contains NaN"):
        F.cov_pool(bad)


# ---------------------------------------------------------------------------------------------- structure
def test_wct_uses_one_batched_eigh_call(monkeypatch):
    from wct import linalg

    calls = []
    real = linalg.eigh

    def spy(a, **kw):
        calls.append(tuple(a.shape))
        return real(a, **kw)

    monkeypatch.setattr(linalg, "eigh", spy)
    F.wct(torch.randn(3, 16, 8, 8), torch.randn(3, 16, 5, 5), groups=4)
    assert calls == [(24, 4, 4)]  # 3 samples x 4 groups, content and style together
    calls.clear()
    F.wct(torch.randn(3, 16, 8, 8), torch.randn(1, 16, 5, 5), groups=4, k=3)
    assert calls == [(16, 4, 4)]
    calls.clear()
    F.whiten(torch.randn(3, 16, 8, 8), groups=4)
    assert calls == [(3, 4, 4, 4)]


def test_low_precision_and_autocast_keep_dtype():
    x, s = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = F.wct(x.bfloat16(), s.bfloat16(), groups=2)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), F.wct(x.bfloat16().float(), s.bfloat16().float(), groups=2), atol=0.05)


# ---------------------------------------------------------------------------------------------- gradients
def test_gradcheck_whiten_color_zca_float64():
    x = torch.randn(2, 4, 3, 3, dtype=D64, requires_grad=True)
    s = torch.randn(1, 4, 4, 4, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: F.whiten(t, groups=2, backward="exact"), (x,))
    assert torch.autograd.gradcheck(lambda t: F.color(x, t, groups=2, backward="exact"), (s,))
    assert torch.autograd.gradcheck(lambda t: F.zca_whiten(t, groups=2, backward="exact"), (x,))
    # precomputed statistics are differentiable too
    st = F.group_stats(s.detach(), groups=2)
    mean = st.mean.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: F.wct(x, F.GroupStats(m, st.cov), groups=2), (mean,))


@pytest.mark.parametrize("backward", ["taylor", "pade", "power_iteration", "clip", "spectral"])
def test_robust_backwards_match_exact_on_well_separated_spectrum(backward):
    x = torch.randn(2, 6, 8, 8, dtype=D64) * torch.tensor([0.5, 1, 2, 3, 4, 5], dtype=D64).view(1, 6, 1, 1)
    g = torch.randn_like(x)
    grads = {}
    for bw in ("exact", backward):
        xx = x.clone().requires_grad_(True)
        (F.whiten(xx, groups=2, backward=bw) * g).sum().backward()
        grads[bw] = xx.grad
    rel = (grads[backward] - grads["exact"]).norm() / grads["exact"].norm()
    # measured (seed 0): clip, spectral ~1e-16 (same formula here); taylor 5e-4, pade 2e-4 (truncation,
    # pade closer); power_iteration 2e-3 (deflation). Bounds ~10x above.
    tol = {"clip": 1e-10, "spectral": 1e-10, "taylor": 5e-3, "pade": 2e-3, "power_iteration": 2e-2}[backward]
    assert rel < tol, rel


def _hadamard(n):
    h = torch.ones(1, 1, dtype=D64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h


def _identical_groups(scale=(1.0, 4.0), gap=0.0, rotate=False):
    """(1, 4, 2, 4): two uncorrelated groups of 2 channels with identical covariances diag(scale) (exactly,
    up to ``gap`` added to the second group's first variance), so that the full 4 x 4 covariance (groups=1)
    has every eigenvalue twice. ``rotate`` mixes the channels by a random rotation (ties up to roundoff)."""
    rows = _hadamard(8)[1:5]  # zero-mean, orthogonal, exact
    sc = torch.tensor([scale[0], scale[1], scale[0] + gap, scale[1]], dtype=D64).sqrt()
    x = sc[:, None] * rows
    if rotate:
        q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=D64, generator=torch.Generator().manual_seed(5)))
        x = q @ x
    return x.reshape(1, 4, 2, 4)


def _grad_of(op, x0, backward, k=None):
    x = x0.clone().requires_grad_(True)
    if op == "whiten":
        y = F.whiten(x, groups=1, backward=backward, k=k)
    elif op == "wct":
        y = F.wct(x, torch.randn(1, 4, 3, 3, dtype=D64, generator=torch.Generator().manual_seed(1)), groups=1,
                  backward=backward, k=k)
    elif op == "color":
        y = F.color(torch.randn(1, 4, 3, 3, dtype=D64, generator=torch.Generator().manual_seed(2)), x,
                    groups=1, backward=backward)
    elif op == "zca":
        y = F.zca_whiten(x.permute(2, 1, 0, 3), backward=backward, k=k)  # rows of the map as the batch
    else:
        y = F.cov_pool(x, backward=backward, normalize="none")
    (y * torch.randn(y.shape, dtype=D64, generator=torch.Generator().manual_seed(3))).sum().backward()
    return x.grad


@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("op", ["whiten", "wct", "color", "zca", "cov_pool"])
def test_identical_groups_every_eigenvalue_twice_gradients_finite(op, rotate):
    x0 = _identical_groups(rotate=rotate)
    for backward in ("taylor", "pade", "power_iteration", "clip", "spectral"):
        grad = _grad_of(op, x0, backward)
        assert torch.isfinite(grad).all() and grad.abs().max() > 0, backward
    if not rotate:
        # bitwise ties: wct.linalg's "exact" uses K = 0 there (torch.linalg.eigh: NaN, see the next test) and
        # taylor agrees with it; both lack the within-eigenspace f' term (test_whiten_ties_vs_torch_and_fd)
        exact, taylor = _grad_of(op, x0, "exact"), _grad_of(op, x0, "taylor")
        assert torch.isfinite(exact).all()
        assert torch.allclose(taylor, exact, rtol=1e-4, atol=1e-6)


def test_whiten_ties_vs_torch_and_fd():
    # identical groups, every eigenvalue twice (bitwise): whitening differentiated through torch.linalg.eigh
    # gives an all-NaN gradient; taylor is finite. The true gradient (finite differences of the smooth map
    # x -> Sigma^(-1/2) x) is matched by backward="spectral" only: the eigenvector route (taylor, exact with
    # its K = 0 tie convention) misses the f'(lambda) term inside each repeated eigenspace (issue 2).
    x0 = _identical_groups()
    w = torch.randn(x0.shape, dtype=D64, generator=torch.Generator().manual_seed(3))
    x = x0.clone().requires_grad_(True)
    xc = x.reshape(4, -1) - x.reshape(4, -1).mean(-1, keepdim=True)
    lam, v = torch.linalg.eigh(xc @ xc.T / xc.shape[1] + 1e-5 * torch.eye(4, dtype=D64))
    y_torch = ((v * lam.rsqrt()) @ v.T @ xc).reshape(x0.shape)
    (y_torch * w).sum().backward()
    assert torch.isnan(x.grad).all()
    assert torch.allclose(y_torch.detach(), F.whiten(x0, groups=1), atol=1e-4)  # same map up to eps convention

    def f(t, backward="spectral"):
        return (F.whiten(t, groups=1, backward=backward) * w).sum()

    h, fd = 1e-6, torch.zeros_like(x0)
    for i in range(x0.numel()):
        e = torch.zeros(x0.numel(), dtype=D64)
        e[i] = h
        fd.view(-1)[i] = (f(x0 + e.view_as(x0)) - f(x0 - e.view_as(x0))) / (2 * h)
    grads = {}
    for bw in ("spectral", "taylor", "exact"):
        t = x0.clone().requires_grad_(True)
        f(t, bw).backward()
        grads[bw] = t.grad
    assert torch.allclose(grads["spectral"], fd, atol=1e-6)
    assert torch.isfinite(grads["taylor"]).all()
    assert (grads["taylor"] - fd).abs().max() > 0.1 and (grads["exact"] - fd).abs().max() > 0.1


@pytest.mark.parametrize("op", ["whiten", "wct", "zca"])
def test_near_tie_split_by_top_k_exact_explodes_taylor_bounded(op):
    # eigenvalues (1, 1 + 1e-9, 4, 4); keeping k = 3 splits the near-tie: 1/(lambda_i - lambda_j) = 1e9
    x0 = _identical_groups(gap=1e-9, rotate=True)
    exact, taylor = _grad_of(op, x0, "exact", k=3), _grad_of(op, x0, "taylor", k=3)
    assert torch.isfinite(taylor).all() and taylor.abs().max() < 100
    assert not torch.isfinite(exact).all() or exact.abs().max() > 1e5 * taylor.abs().max()


def test_top_k_whitening_never_divides_by_dropped_eigenvalues():
    # rank-2 groups of 4 channels (channels 2, 3 are combinations of 0, 1), eps = 0
    base = torch.randn(2, 2, 6, 6, dtype=D64)
    mix = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]], dtype=D64)
    x = torch.einsum("cj,bjhw->bchw", mix, base).requires_grad_(True)
    y = F.whiten(x, groups=1, eps=0.0, k=2)
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    lam = torch.linalg.eigvalsh(F.group_stats(y, groups=1).cov)
    assert torch.allclose(lam, torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=D64).expand_as(lam), atol=1e-8)
    # without k the zero eigenvalues are divided by: the output explodes
    assert F.whiten(x.detach(), groups=1, eps=0.0).abs().max() > 1e3
    with pytest.raises(ValueError, match="spectral"):
        F.whiten(x, groups=1, k=2, backward="spectral")


@pytest.mark.parametrize("case", ["constant", "tiny_trace", "rank_deficient"])
def test_wct_degenerate_features_are_finite(case):
    if case == "constant":
        c = torch.full((8, 16, 4, 4), 0.7)
    elif case == "tiny_trace":
        c = torch.randn(8, 16, 4, 4) * (1e-8 / 16) ** 0.5 - 2
    else:  # 2 positions, 8 channels per group
        c = torch.randn(8, 16, 1, 2)
    c.requires_grad_(True)
    s = torch.randn(8, 16, 1, 3, requires_grad=True)  # rank-deficient style as well
    y = F.wct(c, s, groups=2)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(c.grad).all() and torch.isfinite(s.grad).all()
    if case == "constant":  # nothing to whiten: the style mean
        assert torch.allclose(y, F.group_stats(s.detach(), groups=2).mean[..., None, None].expand_as(y), atol=1e-5)


# ---------------------------------------------------------------------------------------------- color_transfer
def test_color_transfer_matches_style_colour_statistics():
    content = torch.rand(2, 3, 24, 24)
    style = 0.5 + 0.08 * torch.randn(2, 3, 16, 20)  # narrow colour distribution: no clamping happens
    style[:, 0] += 0.05 * style[:, 1]
    out = F.color_transfer(content, style.clamp(0, 1))
    raw = F.wct(content, style.clamp(0, 1), groups=1)
    assert torch.equal(out, raw.clamp(0, 1)) and out.min() >= 0 and out.max() <= 1
    so, ss = F.group_stats(out.double(), groups=1), F.group_stats(style.clamp(0, 1).double(), groups=1)
    assert torch.allclose(so.mean, ss.mean, atol=1e-4)
    assert torch.allclose(so.cov, ss.cov, atol=1e-4)
    assert torch.equal(F.color_transfer(content, style.clamp(0, 1), alpha=0.0), content)


def test_color_transfer_errors():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        F.color_transfer(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        F.color_transfer(torch.rand(1, 3, 8, 8) * 255, torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError):
        F.color_transfer(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), alpha=2.0)


# ---------------------------------------------------------------------------------------------- cov_pool
@pytest.mark.parametrize("normalize", ["trace", "none"])
@pytest.mark.parametrize("power", [0.5, 1.0, 0.25])
def test_cov_pool_matches_numpy_oracle(normalize, power):
    import numpy as np

    x = torch.randn(2, 5, 6, 6, dtype=D64) * 3
    out = F.cov_pool(x, power=power, normalize=normalize)
    assert out.shape == (2, 15)
    for i in range(2):
        xi = x[i].reshape(5, -1).numpy()
        cov = np.cov(xi, bias=True)
        if normalize == "trace":
            cov = cov / np.trace(cov)
        w, v = np.linalg.eigh(cov)
        ref = (v * np.maximum(w, 1e-5) ** power) @ v.T
        iu = np.triu_indices(5)
        assert np.allclose(out[i].numpy(), ref[iu], atol=1e-10)


def test_cov_pool_gradcheck_and_errors():
    x = torch.randn(2, 3, 4, 4, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: F.cov_pool(t, backward="exact"), (x,))
    with pytest.raises(ValueError, match="normalize"):
        F.cov_pool(x, normalize="frobenius")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        F.cov_pool(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="eps"):
        F.cov_pool(x, eps=-1.0)


def test_wct_float32_fast_path_matches_float64():
    """float32 content is centred/transformed in float32 (speed); it must agree with the float64 path."""
    c = torch.randn(2, 32, 24, 20) * 3 + 1.5
    s = torch.randn(2, 32, 9, 11) * 0.5 - 2
    y32 = F.wct(c, s, groups=4)
    y64 = F.wct(c.double(), s.double(), groups=4)
    assert y32.dtype == torch.float32
    assert torch.allclose(y32.double(), y64, rtol=1e-4, atol=1e-4)
    # a constant float32 map centres to exactly 0 (a float32-accumulated mean leaves ~1e-8 here, which the
    # whitening would amplify into noise)
    flat = torch.full((1, 32, 7, 9), 0.123)
    out = F.wct(flat, s[:1], groups=4)
    assert torch.allclose(out, F.group_stats(s[:1], groups=4).mean[..., None, None].expand_as(out), atol=1e-5)
