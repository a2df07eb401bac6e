"""Tests of wct.metrics: sharpness (hand-computed values, oracle, gradcheck, errors) and offline LPIPS."""

from __future__ import annotations

import math

import kornia
import numpy as np
import pytest
import torch

from wct.metrics import LPIPSDistance, Sharpness, load_state_dict_file, lpips_distance, sharpness

pytestmark = pytest.mark.usefixtures("one_thread")  # one intra-op thread (see tests/conftest.py)


def _numpy_sharpness(img: np.ndarray) -> float:
    """Independent oracle: BT.601 luma, replicate padding, central differences / 2, mean gradient norm."""
    y = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2] if img.shape[0] == 3 else img[0]
    p = np.pad(y, 1, mode="edge")
    gx = (p[1:-1, 2:] - p[1:-1, :-2]) / 2
    gy = (p[2:, 1:-1] - p[:-2, 1:-1]) / 2
    return float(np.sqrt(gx**2 + gy**2).mean())


# --------------------------------------------------------------------------------------- sharpness: values


@pytest.mark.parametrize("value", [0.0, 0.3, 1.0])
def test_constant_image_is_zero(value):
    assert torch.equal(sharpness(torch.full((2, 3, 9, 7), value)), torch.zeros(2))
    assert torch.equal(sharpness(torch.full((1, 1, 4, 4), value)), torch.zeros(1))


def test_ramp_hand_computed():
    # Y = 0.1 * x on a 6x6 image: interior columns have |g| = 0.1, the two border columns 0.05 (replicate pad).
    ramp = (torch.arange(6.0) * 0.1).expand(1, 1, 6, 6)
    expected = (4 * 0.1 + 2 * 0.05) / 6
    assert sharpness(ramp).item() == pytest.approx(expected, abs=1e-7)
    # same ramp along y
    assert sharpness(ramp.transpose(-1, -2)).item() == pytest.approx(expected, abs=1e-7)
    # a ramp in the red channel only is seen through the BT.601 luma weight 0.299
    red = torch.zeros(1, 3, 6, 6)
    red[:, 0] = ramp[0, 0]
    assert sharpness(red).item() == pytest.approx(0.299 * expected, abs=1e-6)
    # a grey ramp (R = G = B) has luminance equal to the ramp
    assert sharpness(ramp.expand(1, 3, 6, 6)).item() == pytest.approx(expected, abs=1e-6)


def test_diagonal_ramp_hand_computed():
    # Y = 0.05 x + 0.1 y on 5x5: interior |g| = sqrt(0.05^2 + 0.1^2); border rows/columns halve a component.
    x = torch.arange(5.0)
    img = (0.05 * x[None, :] + 0.1 * x[:, None])[None, None]
    gx = torch.tensor([0.025, 0.05, 0.05, 0.05, 0.025])[None, :].expand(5, 5)
    gy = torch.tensor([0.05, 0.1, 0.1, 0.1, 0.05])[:, None].expand(5, 5)
    expected = torch.sqrt(gx**2 + gy**2).mean().item()
    assert sharpness(img).item() == pytest.approx(expected, abs=1e-7)


def test_checkerboard_hand_computed():
    # 8x8 checkerboard of 2x2 squares: along each axis the central difference is |0.5| except on the first and
    # last row/column (0 there). Pixels with both components 0.5: 6*6 = 36 -> sqrt(0.5); one: 2*6*2 = 24 -> 0.5.
    a = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1], dtype=torch.float32)
    board = (a[None, :] - a[:, None]).abs()[None, None]
    expected = (36 * math.sqrt(0.5) + 24 * 0.5) / 64
    assert sharpness(board).item() == pytest.approx(expected, abs=1e-6)
    # documented limitation: a one-pixel checkerboard is at the Nyquist frequency; central differences see 0
    # everywhere except on the border rows and columns (replicate padding)
    b = torch.arange(8) % 2
    board1 = (b[None, :] ^ b[:, None]).float()[None, None]
    interior = kornia.filters.spatial_gradient(board1, mode="diff")[..., 1:-1, 1:-1]
    assert torch.equal(interior, torch.zeros_like(interior))


def test_matches_numpy_oracle():
    img = torch.rand(3, 3, 13, 17, dtype=torch.float64)
    got = sharpness(img)
    for i in range(3):
        assert got[i].item() == pytest.approx(_numpy_sharpness(img[i].numpy()), rel=1e-12)
    assert got.dtype == torch.float64


def test_blurred_is_less_sharp_than_sharp():
    a = torch.tensor([0, 0, 1, 1] * 8, dtype=torch.float32)
    board = (a[None, :] - a[:, None]).abs().expand(1, 3, 32, 32)
    noise = torch.rand(1, 3, 32, 32)
    for img in (board, noise):
        s0 = sharpness(img)
        s1 = sharpness(kornia.filters.gaussian_blur2d(img, (5, 5), (1.0, 1.0), border_type="replicate"))
        s2 = sharpness(kornia.filters.gaussian_blur2d(img, (9, 9), (2.5, 2.5), border_type="replicate"))
        assert s0 > s1 > s2 > 0


def test_resolution_behaviour_as_documented():
    # smooth content sampled at 32 px and upsampled x2: the per-pixel score halves, the per-image one stays
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    img = (0.5 + 0.25 * torch.sin(2 * math.pi * x) * torch.cos(math.pi * y))[None, None].expand(1, 3, 32, 32)
    big = torch.nn.functional.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False).clamp(0, 1)
    ratio_pixel = (sharpness(img) / sharpness(big)).item()
    ratio_image = (sharpness(img, unit="image") / sharpness(big, unit="image")).item()
    assert ratio_pixel == pytest.approx(2.0, rel=0.05)
    assert ratio_image == pytest.approx(1.0, rel=0.05)
    assert sharpness(img, unit="image").item() == pytest.approx(32 * sharpness(img).item(), rel=1e-6)


def test_range_bound():
    # the maximum per-pixel value is 1/sqrt(2): |g_x|, |g_y| <= 1/2
    a = torch.tensor([0, 0, 1, 1] * 4, dtype=torch.float32)
    board = (a[None, :] - a[:, None]).abs()[None, None]
    assert 0 < sharpness(board).item() <= 1 / math.sqrt(2)


def test_module_matches_function():
    img = torch.rand(2, 3, 10, 10)
    assert torch.equal(Sharpness()(img), sharpness(img))
    assert torch.equal(Sharpness(unit="image")(img), sharpness(img, unit="image"))
    assert "unit='image'" in repr(Sharpness(unit="image"))


# ------------------------------------------------------------------------------------ sharpness: gradients


def test_gradcheck_float64():
    img = torch.rand(1, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sharpness, (img,))
    assert torch.autograd.gradcheck(lambda t: sharpness(t, unit="image"), (img,))


def test_gradient_finite_at_zero_gradient():
    # the norm is not differentiable at 0 (constant image); the documented subgradient there is 0
    img = torch.full((1, 3, 5, 5), 0.5, dtype=torch.float64, requires_grad=True)
    sharpness(img).sum().backward()
    assert torch.isfinite(img.grad).all()
    assert torch.equal(img.grad, torch.zeros_like(img.grad))


# --------------------------------------------------------------------------------------- sharpness: errors


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (torch.rand(3, 8, 8), ValueError, r"\(B, C, H, W\)"),
        (torch.rand(1, 2, 8, 8), ValueError, r"C in \(1, 3\)"),
        (torch.rand(1, 3, 1, 8), ValueError, "at least 2x2"),
        (torch.rand(0, 3, 8, 8), ValueError, "empty batch"),
        (torch.full((1, 3, 4, 4), float("nan")), ValueError, "NaN"),
        (torch.rand(1, 3, 4, 4) * 255, ValueError, r"\[0, 1\]"),
        (torch.rand(1, 3, 4, 4) * 2 - 1, ValueError, r"\[-1, 1\]"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), TypeError, "floating-point"),
        (np.zeros((1, 3, 4, 4)), TypeError, "torch.Tensor"),
    ],
)
def test_sharpness_rejects_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        sharpness(bad)


def test_sharpness_rejects_unknown_unit():
    with pytest.raises(ValueError, match="unit"):
        sharpness(torch.rand(1, 3, 4, 4), unit="mm")
    with pytest.raises(ValueError, match="unit"):
        Sharpness(unit="mm")


# -------------------------------------------------------------------------------------------------- LPIPS
# These tests check the plumbing (offline construction, weight loading, shapes, errors), not LPIPS's numbers:
# the backbone file is a randomly initialised torchvision alexnet written by the test.


@pytest.fixture(scope="module")
def alexnet_weights(tmp_path_factory):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(1)
    state = torchvision.models.alexnet(weights=None).features.state_dict()
    state = {f"features.{k}": v.contiguous() for k, v in state.items()}
    d = tmp_path_factory.mktemp("lpips")
    torch.save(state, d / "alexnet-random.pth")
    save_file(state, str(d / "alexnet-random.safetensors"))
    torch.save({k: v * 1.5 for k, v in state.items()}, d / "alexnet-other.pth")
    return d


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_lpips_loads_backbone_from_file_without_download(alexnet_weights, no_network):
    path = alexnet_weights / "alexnet-random.pth"
    model = LPIPSDistance(path)
    state = load_state_dict_file(path)
    assert torch.equal(model.model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(model.model.net.slice5, "10").bias, state["features.10.bias"])
    # the calibrated linear layers come from the lpips package (not random: all weights are >= 0 there)
    assert (model.model.lin0.model[1].weight >= 0).all()
    a, b = torch.rand(2, 3, 32, 40), torch.rand(2, 3, 32, 40)
    d = model(a, b)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(model(a, a), torch.zeros(2), atol=1e-6)
    assert torch.allclose(model(b, a), d, atol=1e-6)
    # .safetensors and .pth give the same model; another backbone gives another distance
    assert torch.allclose(lpips_distance(a, b, weights_path=alexnet_weights / "alexnet-random.safetensors"), d)
    assert not torch.allclose(lpips_distance(a, b, weights_path=alexnet_weights / "alexnet-other.pth"), d)


@pytest.mark.filterwarnings("ignore::UserWarning:torchvision")  # lpips passes pretrained= to torchvision
def test_lpips_matches_the_package_on_minus_one_one_inputs(alexnet_weights):
    # oracle: lpips.LPIPS itself, its backbone loaded by hand, called on [-1, 1] images (its native range)
    import lpips

    path = alexnet_weights / "alexnet-random.pth"
    state = load_state_dict_file(path)
    ref = lpips.LPIPS(pretrained=True, net="alex", pnet_rand=True, verbose=False).eval()
    ref.net.load_state_dict({k: state[f"features.{k.split('.')[1]}.{k.split('.')[2]}"]
                             for k in ref.net.state_dict()})
    torch.manual_seed(2)
    a, b = torch.rand(2, 3, 36, 33), torch.rand(2, 3, 36, 33)
    with torch.no_grad():
        expected = ref(a * 2 - 1, b * 2 - 1).flatten()
    assert torch.allclose(LPIPSDistance(path)(a, b), expected, rtol=1e-5, atol=1e-7)


def test_lpips_errors(alexnet_weights, tmp_path):
    path = alexnet_weights / "alexnet-random.pth"
    a = torch.rand(1, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        lpips_distance(a, a, weights_path=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="at least 31x31"):
        lpips_distance(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), weights_path=path)
    with pytest.raises(ValueError, match="same shape"):
        lpips_distance(a, torch.rand(1, 3, 32, 33), weights_path=path)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lpips_distance(a * 2 - 1, a, weights_path=path)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="not a torchvision alexnet state dict"):
        LPIPSDistance(wrong)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        LPIPSDistance(junk)
    with pytest.raises(ValueError, match="net must be"):
        LPIPSDistance(path, net="squeeze")
