"""Tests of models.networks / models.config: shapes, sizes, gradients, alpha, variants, discriminator."""

from __future__ import annotations

import pytest
import torch

from models import DiscriminatorConfig, Generator, GeneratorConfig, MultiScaleDiscriminator
from models.networks import BlendAlpha

TINY = dict(width=8, n_res=1, groups=4)  # 32 channels, 4 groups of 8


def tiny(**kw) -> Generator:
    return Generator(GeneratorConfig(**{**TINY, **kw}))


def img(b=1, h=32, w=32):
    return torch.rand(b, 3, h, w) * 2 - 1


# ---------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("transform", ["svd", "gdwct"])
@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (33, 18)])
def test_output_has_exactly_the_input_size(transform, hw):
    g = tiny(transform=transform).eval()
    x = img(2, *hw)
    with torch.no_grad():
        y = g(x, img(1, 19, 25))  # style batch 1 broadcast, other size
    assert y.shape == x.shape
    assert torch.isfinite(y).all() and y.abs().max() <= 1


def test_encoder_shapes():
    g = tiny()
    c = g.encode_content(img(2, 18, 30))  # padded to 20 x 32
    assert c.shape == (2, 32, 5, 8)
    s = g.encode_style(img(2, 64, 48))
    assert s.shape == (2, 32, 4, 3)
    assert g.style_code(s).shape == (2, 32)
    assert g.decode(c, s).shape == (2, 3, 20, 32)
    assert g.decode(c, s, size=(18, 30)).shape == (2, 3, 18, 30)


def test_paper_default_config():
    cfg = GeneratorConfig()
    assert (cfg.width, cfg.n_res, cfg.groups, cfg.transform, cfg.backward, cfg.alpha_init) == \
        (64, 4, 8, "svd", "taylor", 0.6)
    assert cfg.content_dim == 256 and cfg.group_size == 32
    assert (cfg.upsample, cfg.downsample, cfg.padding, cfg.alpha_param) == ("nearest", "conv4", "reflect", "clamp")


def test_too_small_and_bad_inputs_raise():
    g = tiny()
    with pytest.raises(ValueError, match="minimum size is 16"):
        g(img(1, 15, 40), img())
    with pytest.raises(ValueError, match="minimum size is 16"):
        g(img(), img(1, 40, 12))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        g(torch.rand(1, 4, 32, 32), img())
    with pytest.raises(TypeError):
        g(torch.zeros(1, 3, 32, 32, dtype=torch.long), img())
    c, s = g.encode_content(img()), g.encode_style(img())
    with pytest.raises(ValueError, match="style_feat batch"):
        g.decode(c.expand(3, -1, -1, -1), s.expand(2, -1, -1, -1))
    with pytest.raises(ValueError, match="content_feat must have shape"):
        g.decode(c[:, :16], s)
    with pytest.raises(ValueError, match="alpha must be in"):
        g.decode(c, s, alpha=1.5)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible by groups"):
        GeneratorConfig(width=8, groups=5)
    with pytest.raises(ValueError, match="transform"):
        GeneratorConfig(transform="adain")
    with pytest.raises(ValueError, match="upsample"):
        GeneratorConfig(upsample="transposed")
    with pytest.raises(ValueError, match="unknown GeneratorConfig keys"):
        GeneratorConfig.from_dict({"width": 8, "widht": 8})
    cfg = GeneratorConfig(width=8, groups=4)
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    assert Generator(cfg, n_res=2).config.n_res == 2


def test_eval_output_does_not_depend_on_the_batch():
    for transform in ("svd", "gdwct"):
        g = tiny(transform=transform).eval()
        x, s = img(3, 24, 28), img(3, 24, 28)
        with torch.no_grad():
            full = g(x, s)
            single = g(x[1:2], s[1:2])
        torch.testing.assert_close(full[1:2], single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("opts", [dict(upsample="bilinear"), dict(downsample="conv3"),
                                  dict(downsample="blurpool", padding="zeros"), dict(padding="replicate"),
                                  dict(style_proj=False, style_n_down=2, eps_mode="absolute")])
def test_artefact_options_build_and_run(opts):
    g = tiny(**opts).eval()
    x = img(1, 19, 26)
    with torch.no_grad():
        y = g(x, img(1, 16, 16))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_alpha_override_changes_the_output():
    g = tiny().eval()
    x, s = img(), img()
    with torch.no_grad():
        y0, y1, yl = g(x, s, alpha=0.0), g(x, s, alpha=1.0), g(x, s)
    assert (y0 - y1).abs().mean() > 1e-3
    assert (yl - y1).abs().mean() > 1e-4


# ------------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("transform", ["svd", "gdwct"])
def test_gradients_reach_every_parameter(transform):
    g = tiny(transform=transform, backward="taylor")
    x, s = img(2, 24, 24), img(2, 32, 32)
    y, aux = g(x, s, return_aux=True)
    loss = (y - x).abs().mean() + aux["whitening_reg"] + aux["coloring_reg"]
    loss.backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert missing == []
    if transform == "gdwct":
        assert aux["whitening_reg"] > 0 and aux["coloring_reg"] > 0
    else:
        assert aux["whitening_reg"] == 0 and aux["coloring_reg"] == 0


@pytest.mark.parametrize("backward", ["taylor", "exact", "clip", "pade", "power_iteration"])
def test_gradients_finite_when_two_groups_are_identical(backward):
    import wct.linalg

    if backward not in wct.linalg.BACKWARDS:
        pytest.skip(f"wct.linalg has no backward={backward!r} yet")
    torch.manual_seed(1)
    g = tiny(backward=backward)
    c = torch.randn(2, 32, 6, 6)
    c[:, 8:16] = c[:, 0:8]  # groups 0 and 1 identical -> identical covariances (repeated spectra)
    c[:, 17] = c[:, 16]  # two identical channels inside group 2 -> a zero eigenvalue
    s = torch.randn(2, 32, 3, 3)
    s[:, 8:16] = s[:, 0:8]
    c.requires_grad_(True)
    s.requires_grad_(True)
    y = g.decode(c, s)
    y.square().mean().backward()
    for t in [c.grad, s.grad, *(p.grad for p in g.decoder.parameters())]:
        assert t is not None and torch.isfinite(t).all()
    assert c.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------- alpha
def test_alpha_clamp_gradient_flows_at_and_beyond_the_bounds():
    for init in (0.6, 1.0, 0.0):
        a = BlendAlpha(init, "clamp", 1.0)
        assert float(a().detach()) == pytest.approx(init)
        a().backward()
        assert a.p.grad is not None and float(a.p.grad) == 1.0
    a = BlendAlpha(0.6, "clamp", 1.0)
    with torch.no_grad():
        a.p.fill_(1.3)
    assert float(a().detach()) == 1.0
    a().backward()
    assert float(a.p.grad) == 1.0  # straight-through: not dead outside [0, 1]
    a.clamp_()
    assert float(a.p.detach()) == 1.0


def test_alpha_sigmoid_and_scale():
    a = BlendAlpha(0.6, "sigmoid", 10.0)
    assert float(a().detach()) == pytest.approx(0.6, abs=1e-6)
    a().backward()
    assert float(a.p.grad) == pytest.approx(10 * 0.6 * 0.4, rel=1e-5)
    b = BlendAlpha(0.6, "clamp", 20.0)
    assert float(b.p.detach()) == pytest.approx(0.03) and float(b().detach()) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="sigmoid"):
        GeneratorConfig(alpha_param="sigmoid", alpha_init=1.0)


def test_alpha_learns_with_adam_and_alpha_scale():
    """The blend moves ~lr per Adam step; alpha_scale multiplies that (the 0.600 -> 0.593 stall)."""
    moved = {}
    for scale in (1.0, 25.0):
        torch.manual_seed(0)
        g = tiny(alpha_scale=scale)
        with torch.no_grad():
            c, s = g.encode_content(img(1, 16, 16)), g.encode_style(img(1, 16, 16))
            target = g.decode(c, s, alpha=1.0)
        params = [m.alpha.p for m in g.decoder.wcts]
        for p in g.parameters():
            p.requires_grad_(any(p is q for q in params))
        opt = torch.optim.Adam(params, lr=2e-4)
        for _ in range(6):
            opt.zero_grad()
            (g.decode(c, s) - target).square().mean().backward()
            opt.step()
        moved[scale] = min(a - 0.6 for a in g.alphas())
    assert 0 < moved[1.0] < 6 * 2e-4 * 1.01
    assert moved[25.0] > 10 * moved[1.0]


# --------------------------------------------------------------------------------------------- discriminator
def test_discriminator_shapes_losses_and_min_size():
    d = MultiScaleDiscriminator(DiscriminatorConfig(width=4))
    outs = d(img(2, 64, 80))
    assert [tuple(o.shape) for o in outs] == [(2, 1, 4, 5), (2, 1, 2, 2), (2, 1, 1, 1)]
    fake, real = img(2, 70, 70), img(2, 70, 70)
    for loss in (d.dis_loss(fake, real), d.gen_loss(fake)):
        assert loss.dim() == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="minimum size is 64"):
        d(img(1, 48, 64))
    d2 = MultiScaleDiscriminator(width=4, downsample="blurpool", scale_pool="blur", n_scales=2)
    assert [tuple(o.shape) for o in d2(img(1, 32, 40))] == [(1, 1, 2, 3), (1, 1, 1, 2)]
    with pytest.raises(ValueError, match="scale_pool"):
        DiscriminatorConfig(scale_pool="max")
    assert MultiScaleDiscriminator().config.lrelu_slope == 0.01


def test_one_float64_eigh_call_per_wct_module_even_under_autocast(monkeypatch):
    import wct.linalg

    calls = []
    orig = wct.linalg.eigh

    def counting(a, **kw):
        calls.append((a.dtype, tuple(a.shape), torch.is_autocast_enabled("cpu")))
        return orig(a, **kw)

    monkeypatch.setattr(wct.linalg, "eigh", counting)
    g = tiny(n_res=2).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = g(img(2, 16, 16), img(1, 16, 16))
    assert torch.isfinite(y).all()
    assert len(calls) == 3  # n_res + 1 modules, content and style covariances batched together
    for dtype, shape, autocast_on in calls:
        assert dtype == torch.float64 and not autocast_on
        assert shape == (2 * 4 + 1 * 4, 8, 8)  # B*G content + 1*G style matrices of 8 x 8
