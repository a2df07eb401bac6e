"""Tests of models.inference: engines, style bank, options, tiling with global statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from models import Generator, GeneratorConfig, load_checkpoint, save_checkpoint
from models.inference import (
    ColorEngine,
    NetworkEngine,
    add_style_bank,
    available_engines,
    compute_style_bank,
    describe_engines,
    load_engine,
)
from wct.functional import color_transfer
from wct.io import ImageLoadError, pil_to_tensor


def _content(size=(52, 40), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8)
    return Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1))


def _style(seed=1, size=(48, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.array([rng.integers(0, 256) for _ in range(3)], dtype=np.float64)
    arr = np.clip(base + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _psnr(a: Image.Image, b: Image.Image) -> float:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    mse = (d**2).mean()
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _make_ckpt(path, *, transform="svd", n_res=1, bank=True, seed=0):
    torch.manual_seed(seed)
    g = Generator(GeneratorConfig(width=8, n_res=n_res, groups=4, transform=transform)).eval()
    extra = {}
    if bank:
        with torch.no_grad():
            extra = {"style_bank": g.encode_style(torch.rand(3, 3, 32, 32) * 2 - 1),
                     "style_bank_names": ["Tiny #1", "Tiny #2", "Tiny #3"]}
    save_checkpoint(path, {"generator": g}, {"generator": g.config}, extra)
    return g


pytestmark = pytest.mark.usefixtures("one_thread")  # one intra-op thread (see tests/conftest.py)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    _make_ckpt(d / "tiny.safetensors")
    return d


@pytest.fixture(scope="module")
def net(ckpt_dir) -> NetworkEngine:
    return load_engine("tiny", checkpoint_dir=ckpt_dir)


# ----------------------------------------------------------------------------------------- registry
def test_registry(ckpt_dir, tmp_path):
    assert available_engines(ckpt_dir) == ["color", "tiny"]
    assert available_engines(tmp_path / "none") == ["color"]
    (tmp_path / "half.safetensors").write_bytes(b"x" * 16)
    info = {d["name"]: d for d in describe_engines(tmp_path)}
    assert info["half"]["kind"] == "missing" and "half.json is missing" in info["half"]["note"]
    assert available_engines(tmp_path) == ["color"]
    assert "only colour transfer" in describe_engines(tmp_path / "none")[0]["note"]
    assert isinstance(load_engine("color"), ColorEngine)
    eng = load_engine(ckpt_dir / "tiny.safetensors")
    assert eng.name == "tiny" and eng.kind == "network" and eng.style_names == ["Tiny #1", "Tiny #2", "Tiny #3"]
    with pytest.raises(ValueError, match=r"unknown engine 'monet'.*\['color', 'tiny'\]"):
        load_engine("monet", checkpoint_dir=ckpt_dir)
    with pytest.raises(FileNotFoundError):
        load_engine(tmp_path / "nope.safetensors")


# ----------------------------------------------------------------------------------------- colour engine
def test_color_engine_matches_color_transfer():
    c, s = _content(), _style()
    eng = ColorEngine()
    out = eng.stylize(c, s)
    assert out.size == c.size and out.mode == "RGB" and _psnr(out, c) < 30
    ref = color_transfer(pil_to_tensor(c), pil_to_tensor(s))
    got = pil_to_tensor(out)
    assert (got - ref).abs().max() <= 1.0 / 255 + 1e-6
    # alpha = 0 keeps the content, alpha = 0.5 is half way
    assert _psnr(eng.stylize(c, s, alpha=0.0), c) == math.inf
    half = pil_to_tensor(eng.stylize(c, s, alpha=0.5))
    ref_half = color_transfer(pil_to_tensor(c), pil_to_tensor(s), alpha=0.5)
    assert (half - ref_half).abs().max() <= 1.0 / 255 + 1e-6
    with pytest.raises(ValueError, match="needs a style image"):
        eng.stylize(c)
    with pytest.raises(ValueError, match=r"alpha.*\[0, 1\]"):
        eng.stylize(c, s, alpha=1.5)


def test_color_style_interpolation():
    c, s1, s2 = _content(), _style(1), _style(2)
    eng = ColorEngine()
    o1, o2 = pil_to_tensor(eng.stylize(c, s1)), pil_to_tensor(eng.stylize(c, s2))
    assert torch.equal(pil_to_tensor(eng.stylize(c, [s1, s2], style_weights=[1, 0])), o1)
    mix = pil_to_tensor(eng.stylize(c, [s1, s2], style_weights=[3, 1]))
    assert (mix - (0.75 * o1 + 0.25 * o2)).abs().max() <= 1.5 / 255
    with pytest.raises(ValueError, match="2 style weights for 1 styles"):
        eng.stylize(c, [s1], style_weights=[1, 2])
    with pytest.raises(ValueError, match=">= 0"):
        eng.stylize(c, [s1, s2], style_weights=[1, -1])


def test_preserve_color_keeps_content_chroma():
    from kornia.color import rgb_to_ycbcr

    c, s = _content(), _style()
    eng = ColorEngine()
    plain = pil_to_tensor(eng.stylize(c, s))
    kept = pil_to_tensor(eng.stylize(c, s, preserve_color=True))
    yc, yp, yk = rgb_to_ycbcr(pil_to_tensor(c)), rgb_to_ycbcr(plain), rgb_to_ycbcr(kept)
    err_chroma = (yk[:, 1:] - yc[:, 1:]).abs().mean()
    assert err_chroma < 0.01 < (yp[:, 1:] - yc[:, 1:]).abs().mean()
    assert (yk[:, :1] - yp[:, :1]).abs().mean() < 0.01


def test_mask_blend_and_feather():
    c, s = _content((60, 40)), _style()
    eng = ColorEngine()
    full = eng.stylize(c, s)
    assert _psnr(eng.stylize(c, s, mask=Image.new("L", (60, 40), 0)), c) == math.inf
    assert _psnr(eng.stylize(c, s, mask=Image.new("L", (6, 4), 255)), full) == math.inf  # resized mask
    half = Image.new("L", (60, 40), 0)
    half.paste(255, (30, 0, 60, 40))
    out = np.asarray(eng.stylize(c, s, mask=half, mask_feather=4), np.float64)
    a, f = np.asarray(c, np.float64), np.asarray(full, np.float64)
    assert np.abs(out[:, :15] - a[:, :15]).max() <= 1 and np.abs(out[:, 45:] - f[:, 45:]).max() <= 1
    t = np.clip((out[:, 28:32] - a[:, 28:32]) / (f[:, 28:32] - a[:, 28:32] + 1e-9), 0, 1)
    big = np.abs(f[:, 28:32] - a[:, 28:32]) > 20
    assert 0.1 < t[big].mean() < 0.9  # feathered: in between at the edge


def test_small_and_large_images(net):
    with pytest.raises(ImageLoadError, match="at least 16"):
        net.stylize(_content((12, 40)), _style())
    with pytest.raises(ImageLoadError, match="at least 16"):
        net.stylize(_content(), _style(size=(10, 10)))
    assert ColorEngine().stylize(_content((8, 8)), _style()).size == (8, 8)
    out = ColorEngine().stylize(_content((80, 40)), _style(), max_side=40)
    assert out.size == (40, 20) and any("downscaled" in n for n in out.info["notices"])


# ----------------------------------------------------------------------------------------- network engine
def test_network_matches_generator(net):
    g = net.generator
    c, s = _content(), _style()
    x, y = pil_to_tensor(c) * 2 - 1, pil_to_tensor(s) * 2 - 1
    with torch.no_grad():
        ref = ((g(x, y) + 1) / 2).clamp(0, 1)
        ref_bank = ((g.decode(g.encode_content(x), net.style_bank[1:2], size=x.shape[-2:]) + 1) / 2).clamp(0, 1)
    assert (pil_to_tensor(net.stylize(c, s)) - ref).abs().max() <= 1.0 / 255 + 1e-5
    assert (pil_to_tensor(net.stylize(c, style_index=1)) - ref_bank).abs().max() <= 1.0 / 255 + 1e-5
    assert (pil_to_tensor(net.stylize(c, 1)) - ref_bank).abs().max() <= 1.0 / 255 + 1e-5
    with pytest.raises(ValueError, match="out of range"):
        net.stylize(c, style_index=3)
    # odd sizes are padded and cropped back
    assert net.stylize(_content((37, 21)), s).size == (37, 21)


def test_network_alpha_override(net):
    c, s = _content(), _style()
    g = net.generator
    x, y = pil_to_tensor(c) * 2 - 1, pil_to_tensor(s) * 2 - 1
    with torch.no_grad():
        ref0 = ((g(x, y, alpha=0.0) + 1) / 2).clamp(0, 1)
    assert (pil_to_tensor(net.stylize(c, s, alpha=0.0)) - ref0).abs().max() <= 1.0 / 255 + 1e-5
    assert _psnr(net.stylize(c, s, alpha=0.0), net.stylize(c, s, alpha=1.0)) < 40


def test_network_batch_equals_single(net):
    imgs = [_content(seed=i) for i in range(3)]
    s = net.prepare_style(_style())
    batch = net.stylize_batch(imgs, s)
    for im, out in zip(imgs, batch, strict=True):
        assert np.abs(np.asarray(out, int) - np.asarray(net.stylize(im, s), int)).max() <= 1
    with pytest.raises(ValueError, match="one size"):
        net.stylize_batch([_content((52, 40)), _content((40, 52))], s)


def test_network_style_interpolation_oracle(tmp_path):
    # n_res = 0: a single WCT module, so feature interpolation is up(sum_k w_k WCT(c, s_k)).
    g = _make_ckpt(tmp_path / "one.safetensors", n_res=0, bank=False)
    eng = load_engine(tmp_path / "one.safetensors")
    c, s1, s2 = _content(), _style(1), _style(2)
    p1, p2 = eng.prepare_style(s1), eng.prepare_style(s2)
    out = pil_to_tensor(eng.stylize(c, [s1, s2], style_weights=[0.25, 0.75]))
    with torch.no_grad():
        x = pil_to_tensor(c) * 2 - 1
        feat = g.encode_content(x)
        f1, f2 = p1.items[0], p2.items[0]
        w = g.decoder.wcts[0]
        m = 0.25 * w(feat, f1, f1.mean((2, 3)))[0] + 0.75 * w(feat, f2, f2.mean((2, 3)))[0]
        ref = ((g.decoder.up(m) + 1) / 2).clamp(0, 1)
    assert (out - ref).abs().max() <= 1.0 / 255 + 1e-5
    single = pil_to_tensor(eng.stylize(c, s1))
    assert torch.equal(pil_to_tensor(eng.stylize(c, [s1, s2], style_weights=[1, 0])), single)


# ----------------------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("transform", ["svd", "gdwct"])
def test_frozen_statistics_reproduce_the_modules(tmp_path, transform):
    """One tile covering the image, statistics from the image itself: identical to the plain forward."""
    _make_ckpt(tmp_path / "t.safetensors", transform=transform, bank=False)
    eng = load_engine(tmp_path / "t.safetensors")
    c, s = _content((56, 44)), _style()
    x = pil_to_tensor(c) * 2 - 1
    sf, k = eng._styles(eng.prepare_style(s), 1)
    with torch.no_grad():
        tiled = eng._tiled(x, sf, k, None, 64, 8, None)
        eng._hooks.mode = "off"
        plain = eng._forward(x, sf, k, None)
    assert (tiled - plain).abs().max() < 1e-4


def test_tiles_with_global_statistics(net):
    c, s = _content((120, 96), seed=3), _style()
    prep = net.prepare_style(s)
    ref = net.stylize(c, prep)
    seen = []
    tiled = net.stylize(c, prep, tile=64, tile_overlap=24, progress=lambda f, m: seen.append(f))
    assert tiled.size == c.size and seen and seen[-1] == pytest.approx(1.0)
    good = _psnr(tiled, ref)
    # Per-tile statistics (what tiling without global statistics gives) are much worse.
    x = pil_to_tensor(c) * 2 - 1
    sf, k = net._styles(prep, 1)
    out = torch.zeros_like(x)
    with torch.no_grad():
        for y0, x0 in [(0, 0), (0, 56), (32, 0), (32, 56)]:
            t = net._forward(x[..., y0:y0 + 64, x0:x0 + 64], sf, k, None)
            out[..., y0:y0 + 64, x0:x0 + 64] = t
    naive = Image.fromarray((((out[0] + 1) / 2).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    assert good > 35 and good > _psnr(naive, ref) + 10


def test_thumbnail_vs_exact_statistics(ckpt_dir):
    eng = NetworkEngine(ckpt_dir / "tiny.safetensors", stats_size=48, stats_mode="exact")
    c, s = _content((120, 96), seed=3), _style()
    prep = eng.prepare_style(s)
    ref = eng.stylize(c, prep)
    exact = _psnr(eng.stylize(c, prep, tile=64, tile_overlap=24), ref)
    eng.stats_mode = "thumbnail"
    thumb = _psnr(eng.stylize(c, prep, tile=64, tile_overlap=24), ref)
    assert exact > 35 and exact > thumb
    with pytest.raises(ValueError, match="stats_mode"):
        NetworkEngine(ckpt_dir / "tiny.safetensors", stats_mode="fast")
    with pytest.raises(ValueError, match="multiple of 4"):
        eng.stylize(c, prep, tile=30)


# ----------------------------------------------------------------------------------------- style bank
def test_compute_and_add_style_bank(tmp_path):
    folder = tmp_path / "paintings"
    folder.mkdir()
    for i in range(6):
        _style(seed=10 + i, size=(40 + 4 * i, 36)).save(folder / f"p{i}.png")
    path = tmp_path / "m.safetensors"
    g = _make_ckpt(path, bank=False)
    bank, names, sources = compute_style_bank(g, folder, n=3, size=32, prefix="Monet")
    assert bank.shape[0] == 3 and bank.shape[1] == 32 and names == ["Monet #1", "Monet #2", "Monet #3"]
    assert len(set(sources)) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no paintings"):
        compute_style_bank(g, tmp_path / "empty", n=2)
    assert add_style_bank(path, folder, n=2, size=32) == ["M #1", "M #2"]
    ckpt = load_checkpoint(path)
    assert ckpt["extra"]["style_bank"].shape[0] == 2 and len(ckpt["extra"]["style_bank_sources"]) == 2
    eng = load_engine(path)
    assert eng.style_names == ["M #1", "M #2"]
    with torch.no_grad():
        x = pil_to_tensor(_content()) * 2 - 1
        ref = ((g.decode(g.encode_content(x), ckpt["extra"]["style_bank"][1:2], size=x.shape[-2:]) + 1) / 2)
    assert (pil_to_tensor(eng.stylize(_content(), style_index=1)) - ref.clamp(0, 1)).abs().max() < 1.5 / 255


def test_device_validation():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            load_engine("color", device="cuda")
    assert load_engine("color", device="auto").device.type in ("cpu", "cuda")
    assert F is not None


def test_concurrent_calls_do_not_share_tiling_state(net):
    """The app runs requests in threads: tiled / interpolated / plain calls must not interfere."""
    from concurrent.futures import ThreadPoolExecutor

    c, s1, s2 = _content((72, 64), seed=5), _style(1), _style(2)
    jobs = [dict(style=s1, tile=32, tile_overlap=8), dict(style=[s1, s2], style_weights=[0.5, 0.5]),
            dict(style=s2), dict(style=s1, tile=48, tile_overlap=8)] * 2
    ref = [np.asarray(net.stylize(c, **j)) for j in jobs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda j: np.asarray(net.stylize(c, **j)), jobs))
    for r, g in zip(ref, got, strict=True):
        assert np.abs(r.astype(int) - g.astype(int)).max() <= 1
