"""The forward power-iteration ("PI") baseline: oracle, gradcheck, exceptions, repeated eigenvalues."""

from __future__ import annotations

import pytest
import torch

from wct import linalg
from wct.classification.pi import pi_eigh, pi_sym_power


def _spd(n: int, batch: tuple[int, ...] = (), gap: float = 1.0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(*batch, n, n, dtype=torch.float64))
    lam = 1.0 + gap * torch.arange(n, dtype=torch.float64)
    return (q * lam.unsqueeze(-2)) @ q.mT


def test_pi_eigh_matches_eigh_on_separated_spectrum():
    a = _spd(5, (3,), gap=2.0)  # ratios <= 9/11 per step: converges in 200 iterations
    lam, v = pi_eigh(a, iters=200)
    lam_ref, v_ref = linalg.eigh(a, backward="exact")
    torch.testing.assert_close(lam, lam_ref, atol=1e-8, rtol=1e-8)
    # eigenvectors up to sign
    torch.testing.assert_close((v * v_ref).sum(-2).abs(), torch.ones(3, 5, dtype=torch.float64), atol=1e-6, rtol=0)


def test_pi_sym_power_is_inverse_sqrt_and_batched():
    a = _spd(4, (2, 3), gap=3.0)
    w = pi_sym_power(a, -0.5, iters=200)
    eye = torch.eye(4, dtype=torch.float64).expand(2, 3, 4, 4)
    torch.testing.assert_close(w @ a @ w, eye, atol=1e-6, rtol=0)
    assert w.shape == a.shape and w.dtype == a.dtype


def test_pi_is_inaccurate_with_few_iterations_on_close_eigenvalues():
    # the reason the baseline fails in the paper: slow convergence for close eigenvalues
    a = torch.diag(torch.tensor([1.0, 1.0 + 1e-3, 2.0], dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    a = q @ a @ q.T
    _, v = pi_eigh(a, iters=30)
    _, v_ref = linalg.eigh(a, backward="exact")
    assert (v[:, 1] @ v_ref[:, 1]).abs() < 0.999


def test_gradcheck_float64():
    a = _spd(3, gap=2.0).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: pi_sym_power(x, -0.5, iters=60), (a,), atol=1e-6)


def test_repeated_eigenvalues_give_finite_gradients():
    for a in (torch.eye(4, dtype=torch.float64), torch.diag(torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)),
              torch.zeros(3, 3, dtype=torch.float64)):
        a = a.clone().requires_grad_(True)
        pi_sym_power(a, -0.5, eps=1e-3).sum().backward()
        assert torch.isfinite(a.grad).all()


def test_float32_in_float32_out():
    lam, v = pi_eigh(_spd(3).float())
    assert lam.dtype == v.dtype == torch.float32


@pytest.mark.parametrize(
    "bad, err",
    [(torch.zeros(3, 4), ValueError), (torch.zeros(3), ValueError), (torch.zeros(2, 2, dtype=torch.int64), TypeError)],
)
def test_bad_input(bad, err):
    with pytest.raises(err, match="n, n|floating"):
        pi_eigh(bad)


def test_bad_options():
    with pytest.raises(ValueError, match="iters"):
        pi_eigh(torch.eye(2), iters=0)
    with pytest.raises(ValueError, match="eps"):
        pi_sym_power(torch.eye(2), -0.5, eps=0.0)
