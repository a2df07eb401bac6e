"""Artefact detectors wct.metrics.grid_score / ripple_score (used to judge the demo checkpoints, issue 9)."""

import math

import pytest
import torch

from wct import metrics as demo_grid


def _natural(b: int = 2, size: int = 128, seed: int = 0) -> torch.Tensor:
    """Smooth random images with a 1/f-like spectrum (a stand-in for photos), RGB in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.fftfreq(size)[None, :]
    amp = 1.0 / (torch.sqrt(fy**2 + fx**2) + 1.0 / size)
    phase = torch.rand(b, 3, size, size, generator=g) * 2 * math.pi
    x = torch.fft.ifft2(amp * torch.exp(1j * phase)).real
    x = x - x.amin(dim=(-2, -1), keepdim=True)
    return (x / x.amax(dim=(-2, -1), keepdim=True)).float()


def _stripes(size: int, period: float, angle_deg: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    t = math.radians(angle_deg)
    return torch.sin(2 * math.pi * (xx * math.cos(t) + yy * math.sin(t)) / period)


def test_ripple_score_separates_oriented_stripes():
    x = _natural()
    base = demo_grid.ripple_score(x)
    assert base.shape == (2,) and base.dtype == torch.float64
    assert (base < 200).all(), base
    for period, angle in [(5.0, 30.0), (4.0, 45.0), (9.0, 100.0)]:
        y = (x + 0.05 * _stripes(128, period, angle)).clamp(0, 1)
        s = demo_grid.ripple_score(y)
        assert (s > 10 * base).all(), (period, angle, s, base)


def test_ripple_score_ignores_stripes_outside_the_band():
    x = _natural(seed=1)
    y = (x + 0.05 * _stripes(128, 30.0, 20.0)).clamp(0, 1)  # period 30 px > max_period 12
    assert torch.allclose(demo_grid.ripple_score(y), demo_grid.ripple_score(x), rtol=0.5)


def test_grid_score_flags_checkerboard_not_stripes_at_odd_angles():
    x = _natural(seed=2)
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    checker = (((yy // 2) + (xx // 2)) % 2).float() * 2 - 1  # period 4 px on the axes
    assert (demo_grid.grid_score((x + 0.03 * checker).clamp(0, 1)) > 5 * demo_grid.grid_score(x)).all()
    # the lattice detector misses a 5-px stripe at 30 degrees; the ripple detector does not
    y = (x + 0.05 * _stripes(128, 5.0, 30.0)).clamp(0, 1)
    assert (demo_grid.grid_score(y) < 3 * demo_grid.grid_score(x)).all()
    assert (demo_grid.ripple_score(y) > 20 * demo_grid.ripple_score(x)).all()


@pytest.mark.parametrize("kwargs, shape, msg", [
    ({}, (2, 1, 64, 64), "shape"),
    ({}, (1, 3, 40, 64), "at least"),
    ({"min_period": 1.0}, (1, 3, 64, 64), "min_period"),
    ({"min_period": 8.0, "max_period": 6.0}, (1, 3, 64, 64), "min_period"),
    ({"top": 0}, (1, 3, 64, 64), "top"),
])
def test_ripple_score_errors(kwargs, shape, msg):
    with pytest.raises(ValueError, match=msg):
        demo_grid.ripple_score(torch.rand(shape), **kwargs)
