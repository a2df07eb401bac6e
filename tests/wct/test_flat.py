"""Near-flat (near-constant) feature groups in wct.functional's trace eps convention.

``eps_mode="trace"`` regularises with ``eps * s``, ``s = max(tr(Sigma)/d, tau * E[x^2]) + 1e-12``,
``tau = F.TRACE_REL_FLOOR = 2**-23``. Without the ``tau`` floor, a group whose variance is float32 rounding
noise got ``s ~ 1e-12``: whitening gain ``(eps * 1e-12)^(-1/2) ~ 3e8`` (forward: rounding noise whitened to
unit variance; backward: gradients x 3e8 per WCT module).
"""

from __future__ import annotations

import pytest
import torch

from wct import functional as F

D64 = torch.float64
TAU = F.TRACE_REL_FLOOR


def _flat32(b=2, c=16, h=12, w=12, level=0.5, seed=0):
    """float32 constant + noise at the float32 rounding level (relative std ~1e-7) in every channel."""
    g = torch.Generator().manual_seed(seed)
    base = level * (1 + torch.rand(b, c, 1, 1, generator=g))
    return (base + base * 1e-7 * torch.randn(b, c, h, w, generator=g)).float()


def _old_scale(cov):
    """The convention before the floor: tr(Sigma)/d + 1e-12."""
    return cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(0.0) + F.TRACE_FLOOR


# ---------------------------------------------------------------------------------------------- oracle
def test_scale_oracle_and_floor_only_below_tau():
    torch.manual_seed(0)
    a = torch.randn(6, 4, 4, 9, dtype=D64)
    cov = a @ a.mT / 9
    mean = torch.randn(6, 4, 4, dtype=D64) * 3
    cov[:2] *= 1e-12  # relative variance ~1e-13 < tau: floored
    _, s = F._regularised(cov, eps=1e-5, eps_mode="trace", mean=mean)
    tr_d = cov.diagonal(dim1=-2, dim2=-1).mean(-1)
    msq = (cov.diagonal(dim1=-2, dim2=-1).sum(-1) + (mean**2).sum(-1)) / 4
    expect = torch.where(tr_d >= TAU * msq, tr_d, TAU * msq) + 1e-12
    assert torch.allclose(s[..., 0, 0], expect, rtol=1e-14, atol=0)
    assert bool((s[:2, ..., 0, 0] > 1e3 * _old_scale(cov[:2])).all())  # flat: floored
    assert torch.equal(s[2:, ..., 0, 0], _old_scale(cov[2:]))  # ordinary: bit for bit the old scale
    # (..., d, 1) means are accepted; mean=None and "absolute" keep the old conventions
    assert torch.equal(F._regularised(cov, eps=1e-5, eps_mode="trace", mean=mean[..., None])[1], s)
    assert torch.equal(F._regularised(cov, eps=1e-5, eps_mode="trace")[1][..., 0, 0], _old_scale(cov))
    assert torch.equal(F._regularised(cov, eps=1e-5, eps_mode="absolute", mean=mean)[1],
                       torch.ones_like(s))


def test_regularised_rejects_mean_of_the_wrong_shape():
    cov = torch.eye(3, dtype=D64).expand(2, 3, 3)
    with pytest.raises(ValueError, match=r"mean must have shape \(2, 3\)"):
        F._regularised(cov, eps=1e-5, eps_mode="trace", mean=torch.zeros(2, 4, dtype=D64))


def test_ordinary_inputs_are_bit_for_bit_unchanged(monkeypatch):
    torch.manual_seed(1)
    c = torch.randn(2, 16, 9, 9) * 2 + 1
    s = torch.relu(torch.randn(1, 16, 5, 7)) + 0.1  # post-ReLU-like: large mean, variance ratio ~0.3
    x64 = c.double()
    new = (F.wct(c, s, groups=4), F.whiten(x64, groups=4), F.color(x64, s, groups=4),
           F.zca_whiten(c, groups=2), F.wct(x64, s.double(), groups=4, backward="spectral"))
    monkeypatch.setattr(F, "TRACE_REL_FLOOR", 0.0)  # no floor = the previous convention
    old = (F.wct(c, s, groups=4), F.whiten(x64, groups=4), F.color(x64, s, groups=4),
           F.zca_whiten(c, groups=2), F.wct(x64, s.double(), groups=4, backward="spectral"))
    for a, b in zip(new, old, strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- invariants
def test_scale_invariance_including_tiny_and_flat_groups():
    torch.manual_seed(2)
    x = torch.randn(2, 8, 10, 10, dtype=D64)
    x[:, 4:] = 3 + 1e-5 * x[:, 4:]  # group 2: relative variance ~1e-11 < tau (floored)
    y = F.whiten(x, groups=2)
    for c in (1e-4, 1e4):  # the ordinary group at any scale
        assert torch.allclose(F.whiten(x * c, groups=2)[:, :4], y[:, :4], rtol=0, atol=1e-8)
    # the floored group (s = tau * E[x^2] ~ 1e-6 here) up to the 1e-12 floor's relative share 1e-12 / s
    assert torch.allclose(F.whiten(x * 1e4, groups=2), y, rtol=0, atol=1e-6)
    assert torch.allclose(F.whiten(x * 1e4, groups=2), F.whiten(x * 1e6, groups=2), rtol=0, atol=1e-8)
    x32 = torch.randn(2, 8, 10, 10) * 1e-4  # 1e-4-magnitude float32 features
    assert torch.allclose(F.whiten(x32, groups=2), F.whiten(x32 * 1e4, groups=2), atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, D64])
def test_constant_content_gives_exactly_the_style_mean(dtype):
    c = torch.full((2, 8, 6, 6), 0.37, dtype=dtype).requires_grad_(True)
    s = torch.randn(2, 8, 5, 5, dtype=dtype)
    y = F.wct(c, s, groups=2)
    mean_s = F.group_stats(s, groups=2).mean[..., None, None].expand_as(y)
    assert torch.equal(y, mean_s)
    y.pow(2).sum().backward()
    assert torch.isfinite(c.grad).all()


def test_self_transfer_is_identity_with_flat_groups():
    torch.manual_seed(3)
    x = torch.randn(2, 12, 7, 7, dtype=D64)
    x[:, :4] = 1.5 + 1e-6 * x[:, :4]  # floored group
    x[:, 4:8] = 0.25  # exactly constant group
    assert torch.allclose(F.wct(x, x, groups=3), x, rtol=0, atol=1e-12)
    assert torch.allclose(F.wct(x, F.group_stats(x, groups=3), groups=3), x, rtol=0, atol=1e-12)
    x32 = _flat32(1, 8, 8, 8)
    assert torch.allclose(F.wct(x32, x32, groups=2), x32, rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------- float32 noise
def _whiten_rms_and_grad(x, r, eps):
    x = x.clone().requires_grad_(True)
    y = F.whiten(x, groups=4, eps=eps)
    (y * r).sum().backward()
    return float(y.detach().pow(2).mean().sqrt()), x.grad


def test_float32_rounding_noise_is_not_whitened_up_and_gradients_are_bounded(monkeypatch):
    """Bound: every eigenvalue of Sigma + eps*s*I is >= eps*s, so |W| <= (eps*s)^(-1/2) with
    s >= tau * E[x^2]; the covariance path adds at most |W| again (|W (x - mu)| <= 1 per position and
    channel direction), so the whitening Jacobian is at most 2 (eps * tau * E[x^2])^(-1/2) per group
    (~2.6e6 here). Without the floor the gain is (Sigma + eps*1e-12)^(-1/2) ~ 1/std(noise) ~ 1.4e7, and
    (eps * 1e-12)^(-1/2) = 3.2e8 for an exactly constant group."""
    x, eps = _flat32(), 1e-5
    r = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    rms, grad = _whiten_rms_and_grad(x, r, eps)
    msq = x.double().pow(2).mean((2, 3))
    bound = 2 * float(r.norm()) / float((eps * TAU * msq.min()) ** 0.5)
    assert torch.isfinite(grad).all() and 0 < float(grad.norm()) < bound
    # forward: rounding noise (relative std 1e-7) stays small instead of becoming unit-variance noise
    assert rms < 0.2
    monkeypatch.setattr(F, "TRACE_REL_FLOOR", 0.0)  # the previous convention, for comparison
    rms_old, grad_old = _whiten_rms_and_grad(x, r, eps)
    assert rms_old > 0.9 and float(grad_old.norm()) > 5 * float(grad.norm())
    # exactly constant groups: the gain is (eps * s)^(-1/2) exactly (covariance path zero)
    c = torch.full((1, 8, 5, 5), 0.5).requires_grad_(True)
    g = torch.autograd.grad((F.whiten(c, groups=2, eps=eps) * r[:1, :8, :5, :5]).sum(), c)[0]
    monkeypatch.setattr(F, "TRACE_REL_FLOOR", 2.0**-23)
    g_new = torch.autograd.grad((F.whiten(c, groups=2, eps=eps) * r[:1, :8, :5, :5]).sum(), c)[0]
    assert float(g.norm()) / float(g_new.norm()) == pytest.approx((TAU * 0.25 / 1e-12 + 1) ** 0.5, rel=1e-3)


@pytest.mark.parametrize("backward", ["taylor", "exact", "pade", "power_iteration", "clip", "spectral"])
def test_flat_groups_repeated_eigenvalues_have_finite_gradients(backward):
    # exactly constant group: Sigma/s + eps I = eps I (all eigenvalues equal); float32 noise group with two
    # identical channels (a repeated eigenvalue inside the floored group)
    x = _flat32(2, 8, 6, 6)
    x[:, 5] = x[:, 4]
    x[:, :4] = 0.8
    x.requires_grad_(True)
    s = _flat32(1, 8, 4, 4, level=-0.3, seed=1).requires_grad_(True)  # flat style too
    y = F.wct(x, s, groups=2, backward=backward)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all() and torch.isfinite(s.grad).all()
    g2 = torch.autograd.grad(F.whiten(x, groups=2, backward=backward).pow(2).sum(), x)[0]
    assert torch.isfinite(g2).all()


# ---------------------------------------------------------------------------------------------- gradcheck
def test_gradcheck_with_the_floor_active_float64():
    torch.manual_seed(4)
    # relative variance ~1e-12 < tau: s = tau * E[x^2]; eps = 0.1 keeps the check in the smooth regime
    x = (2 + 1e-6 * torch.randn(1, 4, 3, 3, dtype=D64)).requires_grad_(True)
    s = torch.randn(1, 4, 3, 4, dtype=D64, requires_grad=True)
    eps = 0.1
    for fn in (lambda a: F.whiten(a, groups=2, eps=eps, backward="exact"),
               lambda a: F.zca_whiten(a, groups=2, eps=eps, backward="exact")):
        assert torch.autograd.gradcheck(fn, (x,), eps=1e-9, atol=1e-5, rtol=1e-4)
    assert torch.autograd.gradcheck(lambda a, b: F.wct(a, b, groups=2, eps=eps, backward="exact"), (x, s),
                                    eps=1e-9, atol=1e-5, rtol=1e-4)
    # the helper models.inference uses, floor active through the mean (tr/d = 0.3 tau E[x^2])
    a = torch.randn(2, 3, 5, dtype=D64)
    mean = torch.randn(2, 3, dtype=D64)
    cov = a @ a.mT / 5
    tr = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
    k = (0.3 * TAU * (mean**2).sum(-1) / (tr * (1 - 0.3 * TAU)))[:, None, None]  # cov = k * (a a^T / 5)
    _, scale = F._regularised(k * cov, eps=eps, eps_mode="trace", mean=mean)
    assert bool((scale[..., 0, 0] > 3 * _old_scale(k * cov)).all())
    cov.requires_grad_(True)
    mean.requires_grad_(True)
    for p in (-0.5, 0.5):  # outputs rescaled to O(1); inputs O(1) so one gradcheck step size fits both
        assert torch.autograd.gradcheck(
            lambda c, m, p=p: F._reg_root(k * c, p, eps=eps, mean=m, backward="spectral") * k.pow(-p),
            (cov, mean), eps=1e-6, atol=1e-5, rtol=1e-4)
