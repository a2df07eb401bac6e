"""GDWCT-style image translation networks with group-wise SVD-WCT (Wang et al., TPAMI 2021, Sec. 5.3.2).

Architecture per domain (Cho et al., "Image-to-Image Translation via Group-wise Deep Whitening-and-Coloring
Transformation", CVPR 2019; the layout of their ``model.py``):

* content encoder: 7x7 conv (3 -> w), two stride-2 downsamplings (-> 2w -> 4w), ``n_res`` residual
  blocks; instance norm, ReLU, reflection padding. Output ``(B, 4w, H/4, W/4)``.
* style encoder: 7x7 conv (no norm), stride-2 downsamplings w -> 2w -> 4w -> 4w -> 4w with group norm.
  Its last feature map ``(B, 4w, H/16, W/16)`` gives the colouring statistics; its spatial mean is the
  ``4w``-d style code (GDWCT's pooled code, used by its MLPs and by the latent style loss).
* decoder: ``n_res`` residual blocks without norm, a WCT module before the first block and after each block
  (``n_res + 1`` modules), two x2 upsamplings (upsample + 5x5 conv, layer norm, ReLU), 7x7 conv + tanh.

WCT modules (``GeneratorConfig.transform``):

* ``"svd"``: :class:`SVDWCT`, per-sample, per-group whitening ``C_c^{-1/2}`` and colouring ``C_s^{1/2}`` +
  style mean (eqs. 30-33) computed by ``wct.nn.GroupWCT`` (exact float64 eigh forward, robust backward),
  with the style statistics taken from a per-module, identity-initialised 1x1 projection of the style
  feature map (``style_proj=True``) or from the map itself.
* ``"gdwct"``: :class:`GDWCTBlock`, GDWCT's learned colouring ``U diag(D) U^T`` and mean from MLPs of the
  pooled style code; the content is only centred, whitening is pushed towards identity by a regulariser.

Both blend ``alpha * transformed + (1 - alpha) * content`` with a learnable ``alpha`` (:class:`BlendAlpha`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiscriminatorConfig, GeneratorConfig

MIN_SIZE = 16  # smallest accepted image side in pixels (the style encoder reaches 1x1 at 16 px)
CONTENT_STRIDE = 4  # total stride of the content encoder


# ----------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------
def pad2d(x: torch.Tensor, pad: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` by ``(left, right, top, bottom)`` with ``mode`` in reflect | replicate | zeros.

    Reflection needs ``pad < size``; maps too small for it fall back to replicate padding (so tiny
    feature maps, e.g. the 1x1 style map of a 16 px image, never crash).
    """
    if not any(pad):
        return x
    if mode == "zeros":
        return F.pad(x, pad)
    if mode == "reflect" and (max(pad[:2]) >= x.shape[-1] or max(pad[2:]) >= x.shape[-2]):
        mode = "replicate"
    return F.pad(x, pad, mode=mode)


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "in":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "gn":
        return nn.GroupNorm(math.gcd(groups, channels), channels)
    if kind == "ln":  # GDWCT's 'ln' = GroupNorm(1, C): layer norm over (C, H, W) with per-channel affine
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def _act(kind: str, slope: float = 0.01) -> nn.Module:
    return {"relu": lambda: nn.ReLU(inplace=True), "lrelu": lambda: nn.LeakyReLU(slope, inplace=True),
            "tanh": nn.Tanh, "none": nn.Identity}[kind]()


class ConvBlock(nn.Module):
    """pad -> conv -> norm -> activation (GDWCT's ``ConvBlock``).

    Even kernels use GDWCT's symmetric padding ``k // 2 - 1`` (4x4 stride 2 -> pad 1, output ``floor(H/2)``);
    odd kernels ``k // 2`` (3x3 stride 2 -> output ``ceil(H/2)``).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *, padding: str = "reflect",
                 norm: str = "none", act: str = "relu", groups: int = 8, slope: float = 0.01) -> None:
        super().__init__()
        p = kernel // 2 - 1 if kernel % 2 == 0 else kernel // 2
        self.pad, self.padding = (p, p, p, p), padding
        self.conv = nn.Conv2d(cin, cout, kernel, stride)
        self.norm = _norm(norm, cout, groups)
        self.act = _act(act, slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(pad2d(x, self.pad, self.padding))))


class BlurPool(nn.Module):
    """Anti-aliased stride-2 subsampling: ``[1, 2, 1]^T [1, 2, 1] / 16`` depthwise blur, then stride 2.

    Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019 (filter size 3). Own code rather
    than ``kornia.filters.blur_pool2d`` because that one zero-pads (dark borders); this one uses the
    network's padding mode. ``(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))``.
    """

    def __init__(self, padding: str = "reflect") -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16.0)[None, None], persistent=False)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        w = self.kernel.to(x.dtype).expand(c, 1, 3, 3)
        return F.conv2d(pad2d(x, (1, 1, 1, 1), self.padding), w, stride=2, groups=c)


def down_block(cin: int, cout: int, mode: str, *, padding: str, norm: str, act: str = "relu",
               groups: int = 8, slope: float = 0.01) -> nn.Module:
    """Stride-2 downsampling: ``conv4`` (4x4 s2 conv, GDWCT), ``conv3`` (3x3 s2) or ``blurpool``."""
    kw = dict(padding=padding, norm=norm, act=act, groups=groups, slope=slope)
    if mode == "conv4":
        return ConvBlock(cin, cout, 4, 2, **kw)
    if mode == "conv3":
        return ConvBlock(cin, cout, 3, 2, **kw)
    if mode == "blurpool":
        return nn.Sequential(ConvBlock(cin, cout, 3, 1, **kw), BlurPool(padding))
    raise ValueError(f"unknown downsample {mode!r}")


class ResBlock(nn.Module):
    """``x + conv3x3(act(norm(conv3x3(x))))`` with norm after each conv (GDWCT's ``ResidualBlock``)."""

    def __init__(self, dim: int, *, norm: str, padding: str, groups: int = 8) -> None:
        super().__init__()
        self.main = nn.Sequential(ConvBlock(dim, dim, 3, padding=padding, norm=norm, act="relu", groups=groups),
                                  ConvBlock(dim, dim, 3, padding=padding, norm=norm, act="none", groups=groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class Upsample(nn.Module):
    """x2 upsampling, ``nearest`` (GDWCT) or ``bilinear`` (``align_corners=False``)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


# ----------------------------------------------------------------------------------------------------------
# encoders
# ----------------------------------------------------------------------------------------------------------
class ContentEncoder(nn.Module):
    """``(B, 3, H, W) -> (B, 4w, H/4, W/4)`` for ``H, W`` multiples of 4 (GDWCT ``Content_Encoder``).

    Instance norm without running statistics (GDWCT tracks them; per-image statistics keep eval-mode output
    independent of training batches and of the rest of the batch).
    """

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        w, pad = cfg.width, cfg.padding
        layers: list[nn.Module] = [ConvBlock(3, w, 7, padding=pad, norm="in")]
        for i in range(2):
            layers.append(down_block(w * 2**i, w * 2 ** (i + 1), cfg.downsample, padding=pad, norm="in"))
        layers += [ResBlock(4 * w, norm="in", padding=pad) for _ in range(cfg.n_res)]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class StyleEncoder(nn.Module):
    """``(B, 3, H, W) -> (B, 4w, ~H/2^n, ~W/2^n)`` style feature map, ``n = style_n_down`` (GDWCT ``Style_Encoder``
    without its final global pooling; :meth:`Generator.style_code` pools)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        w, pad, g = cfg.width, cfg.padding, cfg.groups
        layers: list[nn.Module] = [ConvBlock(3, w, 7, padding=pad, norm="none")]
        dims = [w, 2 * w, 4 * w] + [4 * w] * (cfg.style_n_down - 2)
        for cin, cout in zip(dims[:-1], dims[1:], strict=True):
            layers.append(down_block(cin, cout, cfg.downsample, padding=pad, norm="gn", groups=g))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


# ----------------------------------------------------------------------------------------------------------
# WCT modules
# ----------------------------------------------------------------------------------------------------------
class BlendAlpha(nn.Module):
    """Learnable WCT blend ``alpha`` in [0, 1] (GDWCT: ``alpha * (colour + mu) + (1 - alpha) * content``).

    ``"clamp"``: ``alpha = clamp(s * p, 0, 1)`` with a straight-through gradient (``d alpha / d p = s``
    everywhere, so the gradient is never dead at or beyond the bounds); :meth:`clamp_` projects ``p`` back
    like GDWCT's ``clamping_alpha``. ``"sigmoid"``: ``alpha = sigmoid(s * p)``.
    With Adam, ``s`` (``alpha_scale``) multiplies the effective learning rate of alpha.
    """

    def __init__(self, init: float = 0.6, param: str = "clamp", scale: float = 1.0) -> None:
        super().__init__()
        self.param, self.scale = param, float(scale)
        raw = init if param == "clamp" else math.log(init / (1.0 - init))
        self.p = nn.Parameter(torch.tensor(raw / self.scale, dtype=torch.float32))

    def forward(self) -> torch.Tensor:
        v = self.scale * self.p
        if self.param == "sigmoid":
            return torch.sigmoid(v)
        return v + (v.clamp(0.0, 1.0) - v).detach()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Project the raw parameter so that ``s * p`` lies in [0, 1] (no-op for ``"sigmoid"``)."""
        if self.param == "clamp":
            self.p.clamp_(0.0, 1.0 / self.scale)

    def extra_repr(self) -> str:
        return f"param={self.param}, scale={self.scale}, alpha={float(self.forward().detach()):.4f}"


def _blend(out: torch.Tensor, content: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    return alpha * out + (1.0 - alpha) * content


class SVDWCT(nn.Module):
    """Group-wise SVD-WCT module: whiten the content with ``C_c^{-1/2}``, colour with ``C_s^{1/2}`` and the
    style mean (Wang et al., TPAMI 2021, eqs. 30-33), blend with a learnable alpha.

    The style statistics come from ``proj(style_feat)``, an identity-initialised 1x1 conv per module
    (``style_proj=True``), so each of the ``n_res + 1`` modules can learn which style statistics to impose
    (the role of GDWCT's per-module MLP), or from ``style_feat`` itself (``style_proj=False``).
    The eigendecompositions run in ``wct.nn.GroupWCT`` (float64, outside autocast, batched over samples and
    groups).
    """

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        from wct.nn import GroupWCT

        c = cfg.content_dim
        self.proj: nn.Module = nn.Identity()
        if cfg.style_proj:
            self.proj = nn.Conv2d(c, c, 1)
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(c)[:, :, None, None])
                self.proj.bias.zero_()
        self.wct = GroupWCT(c, groups=cfg.groups, alpha=1.0, eps=cfg.eps, backward=cfg.backward,
                            eps_mode=cfg.eps_mode)
        self.alpha = BlendAlpha(cfg.alpha_init, cfg.alpha_param, cfg.alpha_scale)

    def forward(self, content: torch.Tensor, style_feat: torch.Tensor, style_code: torch.Tensor,
                alpha: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        a = self.alpha() if alpha is None else alpha
        return self.wct(content, self.proj(style_feat), alpha=a), {}


class _MLP(nn.Sequential):
    """GDWCT's ``MLP``: Linear+LeakyReLU(0.01) blocks, plain Linear output."""

    def __init__(self, din: int, dout: int, hidden: int, n_blocks: int) -> None:
        layers: list[nn.Module] = [nn.Linear(din, hidden), nn.LeakyReLU(0.01, inplace=True)]
        for _ in range(n_blocks):
            layers += [nn.Linear(hidden, hidden), nn.LeakyReLU(0.01, inplace=True)]
        layers.append(nn.Linear(hidden, dout))
        super().__init__(*layers)


class GDWCTBlock(nn.Module):
    """GDWCT's learned group-wise colouring (Cho et al., CVPR 2019, Sec. 3, Fig. 3; their ``WCT`` class).

    A shared MLP maps each group's slice of the pooled style code ``(n,)`` to ``S (n, n)``; with ``D`` the
    column norms and ``U = S / D``, the colouring matrix is ``S U^T = U diag(D) U^T``; a second MLP gives the
    mean. The content is centred but not whitened; ``aux`` returns the regularisers that push the content
    covariance towards ``I`` (``whitening_reg``) and ``U`` towards orthogonality (``coloring_reg``,
    ``mean |U^T U - I|`` as in the paper's eq. 7; GDWCT's code uses ``mean |U - I|``).
    Deviation from GDWCT's code: statistics are per sample (theirs pool the batch), so eval-mode output does
    not depend on the rest of the batch.
    """

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        c, self.groups, self.eps = cfg.content_dim, cfg.groups, cfg.eps
        n = cfg.group_size
        self.mlp_ct = _MLP(n, n * n, cfg.gdwct_mlp_dim, 3)
        self.mlp_mu = _MLP(c, c, c, 1)
        self.alpha = BlendAlpha(cfg.alpha_init, cfg.alpha_param, cfg.alpha_scale)

    def forward(self, content: torch.Tensor, style_feat: torch.Tensor, style_code: torch.Tensor,
                alpha: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b, c, h, w = content.shape
        g, n = self.groups, c // self.groups
        style_code = style_code.expand(b, -1)
        s = self.mlp_ct(style_code.reshape(b * g, n)).view(b, g, n, n)
        d = s.norm(dim=-2, keepdim=True).clamp_min(1e-8)  # column-wise L2 norms ("eigenvalues")
        u = s / d
        colour = s @ u.mT  # U diag(D) U^T, (B, G, n, n)
        mu = self.mlp_mu(style_code).view(b, c, 1, 1)
        x = content.reshape(b, g, n, h * w)
        xc = x - x.mean(dim=-1, keepdim=True)
        out = (colour @ xc).view(b, c, h, w) + mu
        cov = xc @ xc.mT / max(h * w - 1, 1) + self.eps * torch.eye(n, device=x.device, dtype=x.dtype)
        eye = torch.eye(n, device=x.device, dtype=x.dtype)
        aux = {"whitening_reg": (cov - eye).abs().mean(), "coloring_reg": (u.mT @ u - eye).abs().mean()}
        return _blend(out, content, self.alpha() if alpha is None else alpha), aux


# ----------------------------------------------------------------------------------------------------------
# decoder and generator
# ----------------------------------------------------------------------------------------------------------
class Decoder(nn.Module):
    """``(B, 4w, h, w)`` content + style -> ``(B, 3, 4h, 4w)`` image in [-1, 1] (GDWCT ``Decoder``)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        c, pad = cfg.content_dim, cfg.padding
        self.resblocks = nn.ModuleList(ResBlock(c, norm="none", padding=pad) for _ in range(cfg.n_res))
        wct_cls = SVDWCT if cfg.transform == "svd" else GDWCTBlock
        self.wcts = nn.ModuleList(wct_cls(cfg) for _ in range(cfg.n_res + 1))
        layers: list[nn.Module] = []
        for _ in range(2):
            layers += [Upsample(cfg.upsample), ConvBlock(c, c // 2, 5, padding=pad, norm="ln")]
            c //= 2
        layers.append(ConvBlock(c, 3, 7, padding=pad, norm="none", act="tanh"))
        self.up = nn.Sequential(*layers)

    def forward(self, content: torch.Tensor, style_feat: torch.Tensor, alpha: float | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        code = style_feat.mean(dim=(2, 3))
        x, regs = content, []
        for i, wct_module in enumerate(self.wcts):
            if i > 0:
                x = self.resblocks[i - 1](x)
            x, aux = wct_module(x, style_feat, code, alpha)
            regs.append(aux)
        zero = content.new_zeros(())
        aux_out = {k: (torch.stack([r[k] for r in regs]).mean() if regs and k in regs[0] else zero)
                   for k in ("whitening_reg", "coloring_reg")}
        return self.up(x), aux_out


def _check_image(x: Any, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B, 3, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.shape[-2] < MIN_SIZE or x.shape[-1] < MIN_SIZE:
        raise ValueError(f"{name} is {x.shape[-2]}x{x.shape[-1]} px; the minimum size is "
                         f"{MIN_SIZE}x{MIN_SIZE} px (H, W >= {MIN_SIZE})")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor in [-1, 1], got dtype {x.dtype}")


class Generator(nn.Module):
    """One domain's content encoder + style encoder + decoder (GDWCT/MUNIT layout).

    Translation A -> B with two per-domain generators:
    ``gen_b.decode(gen_a.encode_content(x_a), gen_b.encode_style(x_b), size=x_a.shape[-2:])``.

    Args:
        config: :class:`models.GeneratorConfig` (defaults = the paper configuration). Keyword-only
            overrides are applied on top, e.g. ``Generator(width=8, groups=4)``.

    Example:
        >>> g = Generator(GeneratorConfig(width=8, n_res=1, groups=4)).eval()
        >>> x = torch.rand(1, 3, 21, 30) * 2 - 1
        >>> g(x, x).shape
        torch.Size([1, 3, 21, 30])
    """

    def __init__(self, config: GeneratorConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = GeneratorConfig(**overrides)
        elif overrides:
            config = GeneratorConfig.from_dict({**config.to_dict(), **overrides})
        if not isinstance(config, GeneratorConfig):
            raise TypeError(f"config must be a models.GeneratorConfig, got {type(config).__name__}")
        self.config = config
        self.content_encoder = ContentEncoder(config)
        self.style_encoder = StyleEncoder(config)
        self.decoder = Decoder(config)

    # -- encoders --------------------------------------------------------------------------------------
    def encode_content(self, x: torch.Tensor) -> torch.Tensor:
        """Content features of images ``x`` (B, 3, H, W) in [-1, 1], ``H, W >= 16``.

        The image is reflection-padded (about symmetrically) to multiples of 4 first, so the result is
        ``(B, 4w, ceil(H/4), ceil(W/4))``; pass ``size=(H, W)`` to :meth:`decode` to crop back.

        Raises:
            ValueError: wrong shape or an image smaller than 16 px. TypeError: not a float tensor.
        """
        _check_image(x, "content image")
        h, w = x.shape[-2:]
        ph, pw = (-h) % CONTENT_STRIDE, (-w) % CONTENT_STRIDE
        x = pad2d(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), "reflect")
        return self.content_encoder(x)

    def encode_style(self, x: torch.Tensor) -> torch.Tensor:
        """Style feature map ``(B, 4w, h, w)`` of images ``x`` (B, 3, H, W) in [-1, 1], ``H, W >= 16``, with
        ``h ~ H / 2**style_n_down`` (1x1 at 16 px). Its spatial mean is :meth:`style_code`."""
        _check_image(x, "style image")
        return self.style_encoder(x)

    @staticmethod
    def style_code(style_feat: torch.Tensor) -> torch.Tensor:
        """Pooled ``(B, 4w)`` style code of a style feature map (GDWCT's global average pooling)."""
        return style_feat.mean(dim=(2, 3))

    # -- decoder ---------------------------------------------------------------------------------------
    def decode(self, content_feat: torch.Tensor, style_feat: torch.Tensor, *, alpha: float | None = None,
               size: tuple[int, int] | torch.Size | None = None, return_aux: bool = False):
        """Decode content features coloured with a style feature map.

        Args:
            content_feat: ``(B, 4w, h, w)`` from :meth:`encode_content` (any domain's generator).
            style_feat: ``(B, 4w, h', w')`` or ``(1, 4w, h', w')`` (broadcast over the batch) from
                :meth:`encode_style`.
            alpha: float in [0, 1] overriding the learned blend of every WCT module (strength slider);
                ``None`` uses the learned values.
            size: ``(H, W)`` of the original content image: the output is centre-cropped to it (undoing the
                padding of :meth:`encode_content`). ``None`` returns ``(B, 3, 4h, 4w)``.
            return_aux: also return ``{"whitening_reg", "coloring_reg"}`` (scalar tensors; GDWCT's
                regularisers, means over modules; zeros for ``transform="svd"``).

        Returns:
            Image ``(B, 3, H, W)`` in [-1, 1] (and the aux dict when ``return_aux``).
        """
        c = self.config.content_dim
        if content_feat.dim() != 4 or content_feat.shape[1] != c:
            raise ValueError(f"content_feat must have shape (B, {c}, h, w), got {tuple(content_feat.shape)}")
        if style_feat.dim() != 4 or style_feat.shape[1] != c:
            raise ValueError(f"style_feat must have shape (B, {c}, h, w), got {tuple(style_feat.shape)}")
        b = content_feat.shape[0]
        if style_feat.shape[0] not in (1, b):  # a batch of 1 is broadcast (its statistics computed once)
            raise ValueError(f"style_feat batch {style_feat.shape[0]} must be 1 or match the content batch {b}")
        if alpha is not None:
            alpha = float(alpha)
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        out, aux = self.decoder(content_feat, style_feat, alpha)
        if size is not None:
            h, w = int(size[0]), int(size[1])
            if h > out.shape[-2] or w > out.shape[-1]:
                raise ValueError(f"size {(h, w)} is larger than the decoded image {tuple(out.shape[-2:])}")
            top, left = (out.shape[-2] - h) // 2, (out.shape[-1] - w) // 2
            out = out[..., top:top + h, left:left + w]
        return (out, aux) if return_aux else out

    def forward(self, content_image: torch.Tensor, style_image: torch.Tensor, *, alpha: float | None = None,
                return_aux: bool = False):
        """Stylise ``content_image`` (B, 3, H, W) with ``style_image`` (B or 1, 3, H', W'), both in [-1, 1],
        ``H, W, H', W' >= 16``. Returns ``(B, 3, H, W)`` in [-1, 1] (exactly the content's size)."""
        content = self.encode_content(content_image)
        style = self.encode_style(style_image)
        return self.decode(content, style, alpha=alpha, size=content_image.shape[-2:], return_aux=return_aux)

    # -- alpha helpers -----------------------------------------------------------------------------------
    def alphas(self) -> list[float]:
        """Current learned blend of each WCT module (for logging)."""
        return [float(m.alpha().detach()) for m in self.decoder.wcts]

    def clamp_alpha_(self) -> None:
        """Project every ``alpha_param="clamp"`` blend parameter into [0, 1] (call after an optimiser step;
        GDWCT's ``clamping_alpha``)."""
        for m in self.decoder.wcts:
            m.alpha.clamp_()

    @classmethod
    def compose(cls, content_from: Generator, style_from: Generator) -> Generator:
        """A single-direction translator: ``content_from``'s content encoder + ``style_from``'s style encoder
        and decoder (copies; e.g. photo generator + Monet generator -> the shipped photo -> Monet model).

        Raises:
            ValueError: the two generators have different ``width`` (their content features do not fit).
        """
        import copy

        if content_from.config.content_dim != style_from.config.content_dim:
            raise ValueError(f"content widths differ: {content_from.config.content_dim} vs "
                             f"{style_from.config.content_dim} channels")
        out = cls(style_from.config)
        out.content_encoder = copy.deepcopy(content_from.content_encoder)
        out.style_encoder = copy.deepcopy(style_from.style_encoder)
        out.decoder = copy.deepcopy(style_from.decoder)
        return out

    # -- loading -----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", *,
                        name: str | None = None) -> Generator:
        """Load a generator saved with :func:`models.save_checkpoint` (never unpickles), in eval mode.

        Args:
            path: ``X.safetensors`` (with ``X.json`` beside it), ``X.json`` or ``X``.
            device: target device.
            name: which net of the checkpoint (default: ``"generator"``, else the only net whose name starts
                with ``gen``).

        The generator config is the checkpoint config itself when it has GeneratorConfig keys, else its
        ``"generator"`` entry (or ``"gen"``). float16-stored weights come back as float32.

        Raises:
            FileNotFoundError, ValueError: missing files, no/ambiguous generator, incompatible weights.
        """
        from .checkpoint import load_checkpoint

        ckpt = load_checkpoint(path, device="cpu")
        nets = ckpt["nets"]
        if name is None:
            cands = ["generator"] if "generator" in nets else [k for k in nets if k.startswith("gen")]
            if len(cands) != 1:
                raise ValueError(f"{path}: cannot pick a generator among nets {sorted(nets)}; pass name=")
            name = cands[0]
        if name not in nets:
            raise ValueError(f"{path}: no net {name!r}; available: {sorted(nets)}")
        cfg = _generator_config_from(ckpt.get("config"), path, name)
        gen = cls(cfg)
        try:
            gen.load_state_dict(nets[name], strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path}: weights of {name!r} do not fit the generator config: {e}") from None
        return gen.to(device).eval()


def _generator_config_from(config: Any, path: Any, name: str) -> GeneratorConfig:
    if isinstance(config, dict):
        keys = set(GeneratorConfig.__dataclass_fields__)
        if config and set(config) <= keys:
            return GeneratorConfig.from_dict(config)
        for k in (name, "generator", "gen"):
            if isinstance(config.get(k), dict):
                return GeneratorConfig.from_dict(config[k])
    raise ValueError(f"{path}: the checkpoint config has no generator configuration "
                     f"(expected GeneratorConfig keys or a 'generator' entry)")


# ----------------------------------------------------------------------------------------------------------
# discriminator
# ----------------------------------------------------------------------------------------------------------
class MultiScaleDiscriminator(nn.Module):
    """Multi-scale LSGAN patch discriminator (GDWCT/MUNIT ``Discriminator``).

    Per scale: ``n_layers`` 4x4 stride-2 convs ``w -> 2w -> ...`` with LeakyReLU (no norm), then a 1x1 conv to
    a 1-channel patch map; 3x3 average pooling (stride 2, ``count_include_pad=False``) between scales
    (``scale_pool="avg3"``, GDWCT) or an anti-aliasing blur + stride 2 (``scale_pool="blur"``).

    Args:
        config: :class:`models.DiscriminatorConfig`; keyword overrides as for :class:`Generator`.

    ``forward(x)`` takes ``(B, 3, H, W)`` in [-1, 1] with ``H, W >= min_size = 2**(n_layers + n_scales - 1)``
    (64 px by default: the coarsest scale must still reach 1x1) and returns a list of ``n_scales`` patch maps
    ``(B, 1, h_k, w_k)``. Smaller inputs raise ``ValueError``.
    """

    def __init__(self, config: DiscriminatorConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = DiscriminatorConfig(**overrides)
        elif overrides:
            config = DiscriminatorConfig.from_dict({**config.to_dict(), **overrides})
        self.config = config
        self.min_size = 2 ** (config.n_layers + config.n_scales - 1)
        self.nets = nn.ModuleList(self._make_net(config) for _ in range(config.n_scales))
        self.blur = BlurPool(config.padding) if config.scale_pool == "blur" else None

    @staticmethod
    def _make_net(cfg: DiscriminatorConfig) -> nn.Sequential:
        kw = dict(padding=cfg.padding, norm="none", act="lrelu", slope=cfg.lrelu_slope)
        dim = cfg.width
        layers = [down_block(3, dim, cfg.downsample, **kw)]
        for _ in range(cfg.n_layers - 1):
            layers.append(down_block(dim, dim * 2, cfg.downsample, **kw))
            dim *= 2
        layers.append(nn.Conv2d(dim, 1, 1))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"discriminator input must be a (B, 3, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"discriminator input is {x.shape[-2]}x{x.shape[-1]} px; the minimum size is "
                             f"{self.min_size} px (2**(n_layers + n_scales - 1))")
        outs = []
        for i, net in enumerate(self.nets):
            if i:
                x = self.blur(x) if self.blur is not None else \
                    F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(net(x))
        return outs

    def dis_loss(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """LSGAN discriminator loss ``sum_scales mean(D(fake)^2) + mean((D(real) - 1)^2)`` (Mao et al. 2017)."""
        return sum(torch.mean(f**2) + torch.mean((r - 1) ** 2)
                   for f, r in zip(self(fake), self(real), strict=True))  # type: ignore[return-value]

    def gen_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """LSGAN generator loss ``sum_scales mean((D(fake) - 1)^2)``."""
        return sum(torch.mean((f - 1) ** 2) for f in self(fake))  # type: ignore[return-value]
