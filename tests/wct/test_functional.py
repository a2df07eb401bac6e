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
