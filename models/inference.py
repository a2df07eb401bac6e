"""Inference engines shared by the Gradio app (``app.py``) and the batch CLI (``stylize.py``).

Two kinds of engine, one interface (:class:`Engine`):

* ``color`` (:class:`ColorEngine`): WCT on the RGB pixels (``wct.functional.color_transfer`` semantics: one
  group of 3 channels, result clamped to [0, 1]). No weights, always available; needs a style image.
* SVD-WCT network (:class:`NetworkEngine`): one :class:`models.Generator` per target domain, from
  ``checkpoints/<name>.safetensors`` (+ ``.json``) or a user path. Without a style image it uses the
  checkpoint's **style bank** (``extra["style_bank"]``: ``encode_style`` outputs of N training paintings,
  named ``extra["style_bank_names"]``, e.g. "Monet #1" ... "Monet #4"), so no painting has to be shipped.

Options of :meth:`Engine.stylize` (all engines):

* ``alpha``: strength in [0, 1]. Network: overrides the learned blend of every WCT module
  (``Generator.decode(alpha=...)``); ``None`` keeps the learned blends. Colour: the WCT blend (``None`` = 1).
* ``preserve_color``: **luminance-only transfer** (Gatys et al., "Preserving Color in Neural Artistic Style
  Transfer", 2016, Sec. 2.2): the output keeps its luma ``Y`` and takes the content's chroma ``Cb, Cr``
  (ITU-R BT.601 YCbCr, ``kornia.color``). Pointwise, so it works with tiles and masks.
* ``style`` may be a list (images and/or style-bank indices) with ``style_weights``: **style interpolation**
  by a convex combination of the *transformed features* after every WCT module (Li et al., "Universal Style
  Transfer via Feature Transforms", NeurIPS 2017, Sec. 4), i.e. ``sum_k w_k WCT(f, s_k)``; the colour engine
  has a single WCT layer, so this is ``sum_k w_k color_transfer(x, s_k)``.
* ``mask``: stylise only where the mask is white; the mask (any mode, resized to the content) is feathered
  with a Gaussian blur of radius ``mask_feather`` px and used as blend weight ``m*out + (1-m)*content``.
* ``max_side``: the content is downscaled so that its longer side fits (with a notice).
* ``tile``: high-resolution mode of the network engine, see below.

Tiling with global statistics (network engine)
----------------------------------------------
Every normalisation in the generator depends on statistics of the *whole* feature map: instance norm in
the content encoder (per-channel mean/variance), the WCT modules of the decoder (per-group content mean
and covariance, whose inverse square root whitens) and the layer norms of the upsampling path. Stylising
tiles independently would give each tile its own whitening and visible seams, so tiles are run with
*frozen global statistics*:

1. **Thumbnail pass** (``stats_size``, default 1024 px on the longer side): the whole image, downscaled,
   is run once and every normalisation layer records its statistics (Thumbnail Instance Normalization,
   Chen et al., "Towards Ultra-Resolution Neural Style Transfer via Thumbnail Instance Normalization",
   AAAI 2022). Statistics of a downscaled image are biased (features respond to a different scale), so:
   When the image's longer side is at most ``stats_size`` the "thumbnail" is the image itself and the
   statistics are exactly the full-image ones. Statistics of a *downscaled* image are biased (features
   respond to a different scale), hence the option:
2. **Exact statistics** (``stats_mode="exact"``): the layers are measured one at a time, in execution
   order. In pass ``p`` every tile is run up to layer ``p`` only (the forward stops there): the layers before
   it apply their already exact statistics and layer ``p`` *accumulates* the sums ``sum x`` and
   ``sum x x^T`` of its input over the tiles' non-overlapping cores (float64). Mean and covariance are sums
   over positions, so the result is exactly the full-resolution statistics (up to tile-border effects on
   the input). ``L`` passes (``L`` = normalisation layers, 18 for the default generator), each cheaper than
   a full forward because it stops early (about 6 full tile passes in all for the default generator).
3. **Output pass**: tiles of ``tile`` px overlapping by ``tile_overlap`` px, blended with linear ramps.
   Remaining differences to an untiled run come from the tile borders (zero context beyond the receptive
   field's reach into the neighbour tile), reduced by a larger overlap.

Measured (PSNR of the tiled against the untiled output, random generators): width 8, ``n_res`` 1, 150 x 110
image, 64 px tiles, 16 px overlap: thumbnail = full image 42.4 dB; thumbnail 2.3x smaller 26.4 dB; exact
42.4 dB. Width 16, ``n_res`` 4, 512 x 512, 256 px tiles, 64 px overlap: thumbnail = image 47.4 dB, thumbnail
2x smaller 22.4 dB. So tile borders cost little and thumbnail statistics of a much smaller thumbnail are a
real approximation: use ``stats_mode="exact"`` (CLI ``--tile-stats exact``) for final renders.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import nn

from wct import functional as WF
from wct.io import ImageLoadError, list_images, load_image, pil_to_tensor, tensor_to_pil

__all__ = [
    "DEFAULT_CHECKPOINT_DIR",
    "DEFAULT_MODEL",
    "ColorEngine",
    "Engine",
    "NetworkEngine",
    "available_engines",
    "describe_engines",
    "load_engine",
    "resolve_device",
    "compute_style_bank",
    "add_style_bank",
]

#: ``checkpoints/`` of the repository (independent of the working directory).
DEFAULT_CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
#: The shipped checkpoint a user gets by default (``app.py``'s first screen, ``stylize.py --model auto``):
#: the Van Gogh demo model, the one that beats colour transfer (checkpoints/README.md). Used only if present.
DEFAULT_MODEL = "vangogh"

StyleItem = Union[Image.Image, int, str, Path]
ProgressFn = Callable[[float, str], None]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"`` without a GPU raises ``ValueError``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu or auto")
    return dev


# ----------------------------------------------------------------------------------------------------------
# shared pixel-space helpers
# ----------------------------------------------------------------------------------------------------------
def _luminance_only(out: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Keep the luma of ``out`` and the chroma of ``content`` (both (B, 3, H, W) in [0, 1])."""
    from kornia.color import rgb_to_ycbcr, ycbcr_to_rgb

    y = rgb_to_ycbcr(out)[:, :1]
    cbcr = rgb_to_ycbcr(content)[:, 1:]
    return ycbcr_to_rgb(torch.cat([y, cbcr], dim=1)).clamp(0.0, 1.0)


def _mask_tensor(mask: Image.Image | str | Path, size: tuple[int, int], feather: float | None) -> torch.Tensor:
    """Mask image -> (1, 1, H, W) float weights in [0, 1] (white = stylise), feathered."""
    if not isinstance(mask, Image.Image):
        mask = load_image(mask, name=f"mask '{mask}'")
    m = mask.convert("L")
    if m.size != size:
        m = m.resize(size, Image.Resampling.BILINEAR)
    radius = 0.01 * max(size) if feather is None else float(feather)
    if radius > 0:
        m = m.filter(ImageFilter.GaussianBlur(radius))
    return pil_to_tensor(m.convert("RGB"))[:, :1]


def _weights(style_weights: Sequence[float] | None, k: int) -> list[float]:
    if style_weights is None:
        return [1.0 / k] * k
    w = [float(x) for x in style_weights]
    if len(w) != k:
        raise ValueError(f"got {len(w)} style weights for {k} styles; give one weight per style")
    if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"style weights must be >= 0 with a positive sum, got {w}")
    s = sum(w)
    return [x / s for x in w]


def _check_alpha(alpha: float | None) -> float | None:
    if alpha is None:
        return None
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha (strength) must be in [0, 1], got {alpha}")
    return a


@dataclass
class PreparedStyle:
    """Style statistics computed once and reused for many content images (see :meth:`Engine.prepare_style`).

    Attributes:
        items: per style, the engine's representation (colour: ``GroupStats`` of the pixels; network:
            the style feature map ``(1, 4w, h, w)``).
        weights: convex weights of the styles (sum 1).
        label: short name used in output file names (e.g. ``"starry"`` or ``"Monet-1"``).
    """

    items: list[Any]
    weights: list[float]
    label: str = "style"
    notices: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------
# engine base
# ----------------------------------------------------------------------------------------------------------
class Engine:
    """Common interface. Subclasses implement :meth:`_prepare_one` and :meth:`_run`."""

    name: str = "engine"
    kind: str = "engine"
    min_side: int = 1
    description: str = ""
    style_names: list[str]

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(device)
        self.style_names = []

    # -- style ---------------------------------------------------------------------------------------
    def prepare_style(
        self,
        style: StyleItem | Sequence[StyleItem] | PreparedStyle | None = None,
        *,
        style_index: int = 0,
        style_weights: Sequence[float] | None = None,
        style_max_side: int | None = 1024,
    ) -> PreparedStyle:
        """Compute the style statistics once.

        Args:
            style: a style image (PIL or path), a style-bank index (int), a list of those (interpolation),
                an already :class:`PreparedStyle`, or ``None`` (the style bank entry ``style_index``).
            style_index: bank entry used when ``style`` is ``None``.
            style_weights: one non-negative weight per style (normalised to sum 1); default equal weights.
            style_max_side: style images are downscaled to this longer side (``None``: keep).

        Raises:
            ValueError: no style and no style bank, a bad bank index, wrong number of weights, an
                unreadable or too small style image (:class:`wct.io.ImageLoadError`).
        """
        if isinstance(style, PreparedStyle):
            return style
        if style is None:
            if not self.style_names:
                raise ValueError(f"engine '{self.name}' needs a style image (it has no style bank)")
            style = [int(style_index)]
        elif isinstance(style, (Image.Image, int, str, Path)):
            style = [style]
        styles = list(style)
        if not styles:
            raise ValueError("style list is empty")
        weights = _weights(style_weights, len(styles))
        items, labels, notices = [], [], []
        for s in styles:
            if isinstance(s, bool):
                raise ValueError(f"bad style {s!r}")
            if isinstance(s, int):
                if not 0 <= s < len(self.style_names):
                    raise ValueError(
                        f"style bank index {s} out of range: engine '{self.name}' has "
                        f"{len(self.style_names)} bank styles {self.style_names}")
                items.append(self._bank_item(s))
                labels.append(self.style_names[s].replace(" #", "-").replace(" ", "-"))
                continue
            label = Path(s).stem if isinstance(s, (str, Path)) else "style"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                img = load_image(s, max_side=style_max_side, min_side=self.min_side,
                                 name=None if isinstance(s, (str, Path)) else "style image")
            notices += [str(w.message) for w in caught]
            items.append(self._prepare_one(img))
            labels.append(label)
        return PreparedStyle(items, weights, "+".join(labels), notices)

    def _bank_item(self, index: int) -> Any:  # pragma: no cover - overridden by engines with a bank
        raise ValueError(f"engine '{self.name}' has no style bank")

    def _prepare_one(self, img: Image.Image) -> Any:
        raise NotImplementedError

    # -- stylise -------------------------------------------------------------------------------------
    def stylize(
        self,
        content: Image.Image | str | Path,
        style: StyleItem | Sequence[StyleItem] | PreparedStyle | None = None,
        *,
        alpha: float | None = None,
        preserve_color: bool = False,
        style_index: int = 0,
        style_weights: Sequence[float] | None = None,
        mask: Image.Image | str | Path | None = None,
        mask_feather: float | None = None,
        max_side: int | None = None,
        tile: int | None = None,
        tile_overlap: int = 64,
        progress: ProgressFn | None = None,
    ) -> Image.Image:
        """Stylise one content image; returns an RGB ``PIL.Image`` of the content's size (after ``max_side``).

        Args:
            content: RGB image (any mode is converted) or a path.
            style: see :meth:`prepare_style`.
            alpha: strength in [0, 1]; ``None``: the network's learned blends (colour: 1).
            preserve_color: luminance-only transfer (the content's colours are kept).
            style_index, style_weights: see :meth:`prepare_style`.
            mask: white = stylise, black = keep the content; feathered by ``mask_feather`` px
                (default 1% of the longer side).
            max_side: downscale the content so that its longer side is at most this (notice in
                ``result.info["notices"]``).
            tile, tile_overlap: tile size and overlap in px for high resolution (network engine).
            progress: optional callback ``progress(fraction, message)``.

        Raises:
            ValueError: bad arguments, unreadable/too small images (:class:`wct.io.ImageLoadError`).
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            img = load_image(content, max_side=max_side, min_side=self.min_side,
                             name=None if isinstance(content, (str, Path)) else "content image")
        prepared = self.prepare_style(style, style_index=style_index, style_weights=style_weights)
        out = self.stylize_batch([img], prepared, alpha=alpha, preserve_color=preserve_color, mask=mask,
                                 mask_feather=mask_feather, tile=tile, tile_overlap=tile_overlap,
                                 progress=progress)[0]
        out.info["notices"] = [str(w.message) for w in caught] + prepared.notices
        return out

    @torch.no_grad()
    def stylize_batch(
        self,
        contents: Sequence[Image.Image],
        style: PreparedStyle | StyleItem | Sequence[StyleItem] | None = None,
        *,
        alpha: float | None = None,
        preserve_color: bool = False,
        mask: Image.Image | str | Path | None = None,
        mask_feather: float | None = None,
        tile: int | None = None,
        tile_overlap: int = 64,
        progress: ProgressFn | None = None,
    ) -> list[Image.Image]:
        """Stylise several RGB images **of the same size** in one batch (one forward pass).

        Raises:
            ValueError: images of different sizes, or any error of :meth:`stylize`.
        """
        if not contents:
            return []
        sizes = {im.size for im in contents}
        if len(sizes) != 1:
            raise ValueError(f"stylize_batch needs images of one size, got sizes {sorted(sizes)}")
        w, h = contents[0].size
        if min(w, h) < self.min_side:
            raise ImageLoadError(f"content image is {w}x{h} px; the shorter side must be at least "
                                 f"{self.min_side} px for engine '{self.name}'")
        alpha = _check_alpha(alpha)
        prepared = self.prepare_style(style)
        ts = [pil_to_tensor(im) for im in contents]
        x = (ts[0] if len(ts) == 1 else torch.cat(ts)).to(self.device)
        y = self._run(x, prepared, alpha=alpha, tile=tile, tile_overlap=tile_overlap, progress=progress)
        if preserve_color:
            y = _luminance_only(y, x)
        if mask is not None:
            m = _mask_tensor(mask, (w, h), mask_feather).to(y)
            y = m * y + (1.0 - m) * x
        return [tensor_to_pil(t) for t in y.cpu()]

    def _run(self, x: torch.Tensor, style: PreparedStyle, *, alpha: float | None, tile: int | None,
             tile_overlap: int, progress: ProgressFn | None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device})"


# ----------------------------------------------------------------------------------------------------------
# colour transfer
# ----------------------------------------------------------------------------------------------------------
class ColorEngine(Engine):
    """WCT on RGB pixels (``wct.functional.color_transfer``); no weights, always available.

    The style's colour statistics (mean, 3 x 3 covariance) are computed once per style
    (``wct.functional.group_stats``) and passed to ``wct.functional.wct(groups=1)`` followed by a clamp to
    [0, 1], which is exactly what ``color_transfer`` computes.
    """

    name = "color"
    kind = "color"
    min_side = 1
    description = "Colour transfer: mean and colour covariance of the style image (no network)"

    def __init__(self, device: str | torch.device = "cpu", *, eps: float = 1e-5) -> None:
        super().__init__(device)
        self.eps = eps

    def _prepare_one(self, img: Image.Image) -> WF.GroupStats:
        return WF.group_stats(pil_to_tensor(img).to(self.device), groups=1)

    def _run(self, x, style, *, alpha, tile, tile_overlap, progress):
        # color_transfer(x, s) = clamp(alpha * [C_s^(1/2) C_c^(-1/2) (x - mu_c) + mu_s] + (1 - alpha) * x):
        # an affine map per image; its 3 x 3 matrix is built in float64 from the statistics and applied in
        # float32 in one pass (4x less memory traffic than float64 on a 4K image).
        a = 1.0 if alpha is None else alpha
        b, c, h, w = x.shape
        cs = WF.group_stats(x, groups=1)
        cov_c = cs.cov.to(torch.float64)[:, 0]  # (B, 3, 3)
        w_c = WF._reg_root(cov_c, -0.5, eps=self.eps)
        xf = x.reshape(b, c, h * w)
        out = torch.zeros_like(xf)
        eye = torch.eye(3, dtype=torch.float64, device=x.device)
        for k, (stats, wk) in enumerate(zip(style.items, style.weights, strict=True)):
            c_s = WF._reg_root(stats.cov.to(torch.float64)[:, 0], 0.5, eps=self.eps)  # (1, 3, 3)
            m = a * (c_s @ w_c) + (1 - a) * eye  # (B, 3, 3)
            t = a * (stats.mean.to(torch.float64) - (c_s @ w_c @ cs.mean.to(torch.float64).unsqueeze(-1))[..., 0])
            y = torch.baddbmm(t.to(x.dtype).unsqueeze(-1), m.to(x.dtype), xf)
            out += wk * y.clamp_(0.0, 1.0)
            if progress is not None:
                progress((k + 1) / len(style.items), "colour transfer")
        return out.reshape(b, c, h, w)


# ----------------------------------------------------------------------------------------------------------
# network engine: statistics hooks for tiling and style interpolation
# ----------------------------------------------------------------------------------------------------------
class _Acc:
    """Running float64 sums of one normalisation layer's input over tile cores."""

    __slots__ = ("s1", "s2", "n")

    def __init__(self) -> None:
        self.s1: torch.Tensor | None = None
        self.s2: torch.Tensor | None = None
        self.n = 0

    def add(self, s1: torch.Tensor, s2: torch.Tensor | None, n: int) -> None:
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        if s2 is not None:
            self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += n


class _StopForward(Exception):
    """Ends a statistics pass once the layer being measured has seen its input."""


class _Hooks:
    """Patches the normalisation layers and WCT modules of a generator's content encoder and decoder.

    ``mode``: ``"off"`` (original forward), ``"collect"`` (original forward with the layer's own
    statistics, accumulate; records the execution order), ``"exact"`` (layers before ``target`` use frozen
    statistics, layer ``target`` accumulates its input, then the pass stops), ``"apply"`` (frozen).
    ``mix``: ``(K, weights)`` -> after every WCT module, the K blocks of the batch are replaced by their
    weighted sum (style interpolation).
    """

    def __init__(self, gen: nn.Module) -> None:
        from models.networks import SVDWCT, GDWCTBlock

        self._tls = threading.local()  # per-thread state: concurrent app requests do not interfere
        self._patched: list[nn.Module] = []
        self._types = (SVDWCT, GDWCTBlock)
        for part in (gen.content_encoder, gen.decoder):
            for m in part.modules():
                if isinstance(m, (nn.InstanceNorm2d, nn.GroupNorm)):
                    if isinstance(m, nn.InstanceNorm2d) and m.track_running_stats and not m.training:
                        continue  # running statistics are global already
                    m.forward = self._norm_forward(m)
                    self._patched.append(m)
                elif isinstance(m, self._types):
                    m.forward = self._wct_forward(m)
                    self._patched.append(m)
                elif "norm" in type(m).__name__.lower() and not isinstance(m, nn.modules.batchnorm._BatchNorm):
                    warnings.warn(f"tiling: unknown normalisation layer {type(m).__name__}; its statistics "
                                  "are per tile", stacklevel=2)

    def _state(self) -> threading.local:
        t = self._tls
        if not hasattr(t, "mode"):
            t.mode = "off"
            t.mix = None  # (K, weights)
            t.core = None  # (y0, y1, x0, x1) in tile image px
            t.tile_hw = (1, 1)
            t.frozen = {}
            t.acc = {}
            t.order = {}  # id(module) -> execution index
            t.target = -1
        return t

    mode = property(lambda self: self._state().mode, lambda self, v: setattr(self._state(), "mode", v))
    mix = property(lambda self: self._state().mix, lambda self, v: setattr(self._state(), "mix", v))
    core = property(lambda self: self._state().core, lambda self, v: setattr(self._state(), "core", v))
    tile_hw = property(lambda self: self._state().tile_hw, lambda self, v: setattr(self._state(), "tile_hw", v))
    frozen = property(lambda self: self._state().frozen, lambda self, v: setattr(self._state(), "frozen", v))
    acc = property(lambda self: self._state().acc, lambda self, v: setattr(self._state(), "acc", v))

    def remove(self) -> None:
        for m in self._patched:
            del m.forward  # the instance attribute shadows the class method
        self._patched.clear()

    # -- accumulation over the current tile's core ---------------------------------------------------
    def _core(self, x: torch.Tensor) -> torch.Tensor:
        if self.core is None:
            return x
        th, tw = self.tile_hw
        h, w = x.shape[-2:]
        y0, y1, x0, x1 = self.core
        return x[..., round(y0 * h / th):round(y1 * h / th), round(x0 * w / tw):round(x1 * w / tw)]

    def _accumulate(self, m: nn.Module, x: torch.Tensor, groups: int, cov: bool) -> None:
        xc = self._core(x).to(torch.float64)
        b, c = xc.shape[:2]
        xg = xc.reshape(b, groups, c // groups, -1)
        n = xg.shape[-1]
        s1 = xg.sum(-1)  # (B, G, d)
        s2 = xg @ xg.mT if cov else (xg * xg).sum((-1, -2))  # (B, G, d, d) or (B, G)
        self.acc.setdefault(id(m), _Acc()).add(s1, s2, n)

    def _seq_step(self, m: nn.Module, x: torch.Tensor, groups: int, cov: bool) -> bool:
        """Accumulate ``x``'s statistics when this layer is being measured; stop an exact pass there.

        ``collect``: every layer accumulates (execution order recorded). ``exact``: the layer number
        ``target`` accumulates and raises :class:`_StopForward` (later layers are not needed in this pass;
        earlier ones apply their already exact statistics). Returns False (apply frozen statistics)."""
        st = self._state()
        if st.mode == "collect":
            if id(m) not in st.order:
                st.order[id(m)] = len(st.order)
            self._accumulate(m, x, groups, cov)
        elif st.mode == "exact":
            i = st.order[id(m)]
            if i == st.target:
                self._accumulate(m, x, groups, cov)
                raise _StopForward
        return False

    def finalize(self) -> None:
        """Accumulated sums -> frozen statistics (mean, second moment-derived variance/covariance)."""
        frozen = {}
        for key, a in self.acc.items():
            mean = a.s1 / a.n  # (B, G, d)
            if a.s2.dim() == 4:  # covariance
                cov = a.s2 / a.n - mean.unsqueeze(-1) @ mean.unsqueeze(-2)
                frozen[key] = (mean, cov)
            else:  # group variance over (d, positions)
                d = mean.shape[-1]
                gmean = mean.mean(-1)
                var = a.s2 / (a.n * d) - gmean**2
                frozen[key] = (gmean, var.clamp_min(0.0))
        self.frozen.update(frozen)
        self.acc = {}

    # -- patched forwards ------------------------------------------------------------------------------
    def _norm_forward(self, m: nn.Module):
        orig = type(m).forward
        groups_of = (lambda x: x.shape[1]) if isinstance(m, nn.InstanceNorm2d) else (lambda x: m.num_groups)

        def forward(x: torch.Tensor) -> torch.Tensor:
            if self.mode == "off":
                return orig(m, x)
            g = groups_of(x)
            if self._seq_step(m, x, g, cov=False) or self.mode == "collect":
                return orig(m, x)
            mean, var = self.frozen[id(m)]
            b, c, h, w = x.shape
            xg = x.reshape(b, g, c // g, h, w)
            y = ((xg - mean.to(x)[:, :, None, None, None]) *
                 torch.rsqrt(var.to(x) + m.eps)[:, :, None, None, None]).reshape(b, c, h, w)
            if m.affine:
                y = y * m.weight[None, :, None, None] + m.bias[None, :, None, None]
            return y

        return forward

    def _wct_forward(self, m: nn.Module):
        orig = type(m).forward
        is_svd = type(m).__name__ == "SVDWCT"

        def forward(content, style_feat, style_code, alpha=None):
            if self.mode != "off":
                self._seq_step(m, content, m.wct.groups if is_svd else m.groups, cov=True)
            if self.mode in ("off", "collect"):
                out, aux = orig(m, content, style_feat, style_code, alpha)
            else:
                out, aux = (self._svd_frozen if is_svd else self._gdwct_frozen)(
                    m, content, style_feat, style_code, alpha)
            if self.mix is not None:
                k, w = self.mix
                blocks = out.reshape(k, -1, *out.shape[1:])
                wt = torch.tensor(w, dtype=out.dtype, device=out.device).reshape(k, *([1] * (blocks.dim() - 1)))
                out = (blocks * wt).sum(0, keepdim=True).expand_as(blocks).reshape(out.shape)
            return out, aux

        return forward

    def _svd_frozen(self, m, content, style_feat, style_code, alpha):
        """SVDWCT with frozen content statistics: same formula as ``wct.functional.wct``."""
        gw = m.wct
        mean, cov = self.frozen[id(m)]  # (B, G, d), (B, G, d, d) float64
        b, c, h, w = content.shape
        g, d = gw.groups, c // gw.groups
        w_isqrt = WF._reg_root(cov, -0.5, eps=gw.eps, eps_mode=gw.eps_mode)
        xg = content.to(torch.float64).reshape(b, g, d, h * w) - mean.unsqueeze(-1)
        x_white = (w_isqrt @ xg).reshape(b, c, h, w).to(content.dtype)
        out = WF.color(x_white, m.proj(style_feat), groups=g, eps=gw.eps, backward=gw.backward,
                       eps_mode=gw.eps_mode)
        a = m.alpha() if alpha is None else alpha
        return a * out + (1.0 - a) * content, {}

    def _gdwct_frozen(self, m, content, style_feat, style_code, alpha):
        """GDWCTBlock with a frozen content mean (its only content statistic)."""
        b, c, h, w = content.shape
        g, n = m.groups, c // m.groups
        s = m.mlp_ct(style_code.reshape(b * g, n)).view(b, g, n, n)
        u = s / s.norm(dim=-2, keepdim=True).clamp_min(1e-8)
        colour = s @ u.mT
        mu = m.mlp_mu(style_code).view(b, c, 1, 1)
        mean = self.frozen[id(m)][0].to(content)  # (B, G, n) per-channel means
        xc = content.reshape(b, g, n, h * w) - mean.unsqueeze(-1)
        out = (colour @ xc).view(b, c, h, w) + mu
        a = m.alpha() if alpha is None else alpha
        return a * out + (1.0 - a) * content, {}


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile start positions (multiples of 4) covering ``[0, size)`` with at least ``overlap`` px overlap."""
    if size <= tile:
        return [0]
    stride = max(4, (tile - overlap) // 4 * 4)
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def _ramp(starts: list[int], i: int, tile: int, size: int) -> tuple[torch.Tensor, int, int]:
    """1-D blend weights of tile ``i`` and its core ``[c0, c1)`` (cores partition ``[0, size)``)."""
    s, e = starts[i], min(starts[i] + tile, size)
    wgt = torch.ones(e - s)
    c0, c1 = s, e
    if i > 0:
        prev_end = min(starts[i - 1] + tile, size)
        ov = prev_end - s
        if ov > 0:
            wgt[:ov] = torch.minimum(wgt[:ov], (torch.arange(ov) + 0.5) / ov)
        c0 = (s + prev_end) // 8 * 4  # multiples of 4: exact partition at 1/2 and 1/4 resolution
    if i + 1 < len(starts):
        nxt = starts[i + 1]
        ov = e - nxt
        if ov > 0:
            wgt[e - s - ov:] = torch.minimum(wgt[e - s - ov:], (torch.arange(ov, 0, -1) - 0.5) / ov)
        c1 = (nxt + e) // 8 * 4
    return wgt, c0 - s, c1 - s


# ----------------------------------------------------------------------------------------------------------
# network engine
# ----------------------------------------------------------------------------------------------------------
class NetworkEngine(Engine):
    """SVD-WCT generator from a checkpoint (``X.safetensors`` + ``X.json``), with its style bank if any.

    Args:
        path: checkpoint file.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        name: engine name (default: the file stem).
        stats_size: longer side of the thumbnail for the statistics of tiled runs (px).
        stats_mode: ``"thumbnail"`` (one pass on the downscaled image) or ``"exact"`` (plus one accumulation
            pass over the tiles per normalisation layer); see the module docstring.

    Raises:
        FileNotFoundError, ValueError: missing files or a checkpoint without a usable generator.
    """

    kind = "network"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", *, name: str | None = None,
                 stats_size: int = 1024, stats_mode: str = "thumbnail") -> None:
        super().__init__(device)
        from models import Generator, load_checkpoint
        from models.networks import MIN_SIZE

        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".safetensors")
        self.path = path
        self.name = name or path.stem
        self.generator = Generator.from_pretrained(path, device=self.device).eval()
        self.min_side = MIN_SIZE
        extra = load_checkpoint(path, device="cpu").get("extra") or {}
        bank = extra.get("style_bank")
        self.style_bank: torch.Tensor | None = None
        if isinstance(bank, torch.Tensor) and bank.dim() == 4 and len(bank):
            self.style_bank = bank.float().to(self.device)
            names = extra.get("style_bank_names") or []
            if len(names) != len(bank):
                names = [f"{self.name.capitalize()} #{i + 1}" for i in range(len(bank))]
            self.style_names = [str(n) for n in names]
        if stats_mode not in ("thumbnail", "exact"):
            raise ValueError(f"stats_mode must be 'thumbnail' or 'exact', got {stats_mode!r}")
        if int(stats_size) < 16:
            raise ValueError(f"stats_size must be >= 16 px, got {stats_size}")
        self.stats_size, self.stats_mode = int(stats_size), stats_mode
        cfg = self.generator.config
        #: free-text quality status from the model card (``extra["status"]`` of the checkpoint JSON), e.g.
        #: "early CPU preview"; shown next to the model in the app. Empty when the checkpoint has none.
        self.status = str(extra.get("status") or "")
        self.description = (f"SVD-WCT network '{self.name}' ({cfg.transform}, width {cfg.width}, "
                            f"{len(self.style_names)} bank styles)" + (f" [{self.status}]" if self.status else ""))
        self._hooks = _Hooks(self.generator)

    def _bank_item(self, index: int) -> torch.Tensor:
        assert self.style_bank is not None
        return self.style_bank[index : index + 1]

    @torch.no_grad()
    def _prepare_one(self, img: Image.Image) -> torch.Tensor:
        x = pil_to_tensor(img).to(self.device) * 2 - 1
        return self.generator.encode_style(x)

    def _styles(self, style: PreparedStyle, b: int) -> tuple[torch.Tensor, int]:
        """Style feature maps of the K styles repeated for the batch: (K*B, C, h, w)."""
        feats = style.items
        hw = {tuple(f.shape[-2:]) for f in feats}
        if len(hw) > 1:  # the WCT statistics do not depend on the map size: resample to a common one
            h = max(s[0] for s in hw)
            w = max(s[1] for s in hw)
            feats = [F.interpolate(f, size=(h, w), mode="nearest") for f in feats]
        s = torch.cat(feats).to(self.device)
        return s.repeat_interleave(b, dim=0), len(feats)

    @torch.no_grad()
    def _forward(self, x: torch.Tensor, style_feat: torch.Tensor, k: int, alpha: float | None) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1], H, W multiples of 4 -> (B, 3, H, W) in [-1, 1]."""
        gen = self.generator
        c = gen.encode_content(x)
        if k > 1:
            c = c.repeat(k, 1, 1, 1)
        y = gen.decode(c, style_feat, alpha=alpha, size=x.shape[-2:])
        return y[: x.shape[0]]

    def _run(self, x, style, *, alpha, tile, tile_overlap, progress):
        b, _, h, w = x.shape
        s, k = self._styles(style, b)
        hooks = self._hooks
        hooks.mix = (k, style.weights) if k > 1 else None
        # pad to multiples of 4 like Generator.encode_content (so tiles need no padding of their own)
        ph, pw = (-h) % 4, (-w) % 4
        xp = x * 2 - 1
        if ph or pw:
            xp = F.pad(xp, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="reflect" if min(h, w) > 4
                       else "replicate")
        hp, wp = xp.shape[-2:]
        try:
            if not tile or (hp <= tile and wp <= tile):
                hooks.mode = "off"
                y = self._forward(xp, s, k, alpha)
            else:
                y = self._tiled(xp, s, k, alpha, int(tile), int(tile_overlap), progress)
        finally:
            hooks.mode, hooks.mix, hooks.core, hooks.frozen, hooks.acc = "off", None, None, {}, {}
        y = y[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        return ((y + 1) / 2).clamp(0.0, 1.0)

    def _tiled(self, xp, s, k, alpha, tile, overlap, progress) -> torch.Tensor:
        if tile < 32 or tile % 4:
            raise ValueError(f"tile must be a multiple of 4 and >= 32 px, got {tile}")
        if not 0 <= overlap < tile // 2:
            raise ValueError(f"tile_overlap must be in [0, tile/2), got {overlap} for tile {tile}")
        hooks = self._hooks
        b, _, hp, wp = xp.shape
        th, tw = min(tile, hp), min(tile, wp)
        ys, xs = _starts(hp, th, overlap), _starts(wp, tw, overlap)
        n_tiles = len(ys) * len(xs)
        sc = min(1.0, self.stats_size / max(hp, wp))
        # the thumbnail IS the image when it fits: its statistics are exact already
        passes = len(hooks._patched) if self.stats_mode == "exact" and sc < 1.0 else 0
        total = 1 + n_tiles * (passes + 1)
        done = 0

        def tick(msg: str) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done / total, msg)

        # 1. thumbnail statistics
        size = (max(16, round(hp * sc / 4) * 4), max(16, round(wp * sc / 4) * 4))
        thumb = xp if size == (hp, wp) else F.interpolate(xp, size=size, mode="bilinear", antialias=True,
                                                          align_corners=False)
        hooks.mode, hooks.core = "collect", None
        hooks._state().order = {}
        self._forward(thumb, s, k, alpha)
        hooks.finalize()
        passes = min(passes, len(hooks._state().order))
        tick("statistics (thumbnail)")

        def tiles():
            for i, y0 in enumerate(ys):
                wy, cy0, cy1 = _ramp(ys, i, th, hp)
                for j, x0 in enumerate(xs):
                    wx, cx0, cx1 = _ramp(xs, j, tw, wp)
                    yield (y0, x0, wy, wx, (cy0, cy1, cx0, cx1))

        hooks.tile_hw = (th, tw)
        # 2. exact statistics, one layer at a time in execution order (each pass stops at its layer)
        for p in range(passes):
            hooks.mode = "exact"
            hooks._state().target = p
            for y0, x0, _, _, core in tiles():
                hooks.core = core
                try:
                    self._forward(xp[..., y0 : y0 + th, x0 : x0 + tw], s, k, alpha)
                except _StopForward:
                    pass
                tick(f"exact statistics, layer {p + 1}/{passes}")
            hooks.finalize()
        # 3. output
        hooks.mode, hooks.core = "apply", None
        out = torch.zeros_like(xp)
        wsum = torch.zeros(1, 1, hp, wp, dtype=xp.dtype, device=xp.device)
        for y0, x0, wy, wx, _ in tiles():
            wt = (wy[:, None] * wx[None, :]).to(xp)[None, None]
            yt = self._forward(xp[..., y0 : y0 + th, x0 : x0 + tw], s, k, alpha)
            out[..., y0 : y0 + th, x0 : x0 + tw] += yt * wt
            wsum[..., y0 : y0 + th, x0 : x0 + tw] += wt
            tick("stylising tiles")
        return out / wsum


# ----------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------
def available_engines(checkpoint_dir: str | Path | None = None) -> list[str]:
    """Engine names: ``"color"`` and the stem of every ``<checkpoint_dir>/*.safetensors`` with a ``.json``
    beside it (default ``checkpoints/`` of the repository), sorted."""
    d = Path(checkpoint_dir) if checkpoint_dir is not None else DEFAULT_CHECKPOINT_DIR
    names = sorted(p.stem for p in d.glob("*.safetensors") if p.with_suffix(".json").is_file()) if d.is_dir() \
        else []
    return ["color"] + [n for n in names if n != "color"]


def describe_engines(checkpoint_dir: str | Path | None = None) -> list[dict[str, str]]:
    """``[{"name", "kind", "path", "note"}]`` for the app's selector; also lists half-present checkpoints
    (a ``.safetensors`` without ``.json`` or the reverse) with a note saying what is missing."""
    d = Path(checkpoint_dir) if checkpoint_dir is not None else DEFAULT_CHECKPOINT_DIR
    out = [{"name": "color", "kind": "color", "path": "", "note": ColorEngine.description}]
    if not d.is_dir():
        out[0]["note"] += f" (no checkpoint folder {d}: only colour transfer is available)"
        return out
    stems = sorted({p.stem for p in d.glob("*.safetensors")} | {p.stem for p in d.glob("*.json")})
    for stem in stems:
        st, js = d / f"{stem}.safetensors", d / f"{stem}.json"
        if st.is_file() and js.is_file():
            out.append({"name": stem, "kind": "network", "path": str(st), "note": "SVD-WCT network"})
        elif st.is_file() or (js.is_file() and stem != "color"):
            missing = js.name if st.is_file() else st.name
            out.append({"name": stem, "kind": "missing", "path": str(st),
                        "note": f"checkpoint incomplete: {missing} is missing"})
    return out


def load_engine(name_or_path: str | Path, *, device: str | torch.device = "cpu",
                checkpoint_dir: str | Path | None = None, **kwargs: Any) -> Engine:
    """Build an engine: ``"color"``, a checkpoint name in ``checkpoint_dir`` (e.g. ``"monet"``), or a path.

    Raises:
        ValueError: unknown name (the message lists the available engines) or an unusable checkpoint.
        FileNotFoundError: a path that does not exist.
    """
    key = str(name_or_path)
    if key == "color":
        return ColorEngine(device)
    p = Path(key)
    if p.suffix in (".safetensors", ".json") or p.exists() or "/" in key or "\\" in key:
        if not p.with_suffix(".safetensors").is_file():
            raise FileNotFoundError(f"checkpoint '{p}' not found (a checkpoint is X.safetensors + X.json)")
        return NetworkEngine(p, device, **kwargs)
    d = Path(checkpoint_dir) if checkpoint_dir is not None else DEFAULT_CHECKPOINT_DIR
    cand = d / f"{key}.safetensors"
    if cand.is_file():
        return NetworkEngine(cand, device, name=key, **kwargs)
    raise ValueError(f"unknown engine '{key}'; available: {available_engines(d)} (checkpoints in {d}; "
                     "--model also takes a path to a .safetensors checkpoint)")


# ----------------------------------------------------------------------------------------------------------
# style bank
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def compute_style_bank(
    generator: nn.Module,
    paintings: str | Path | Iterable[str | Path | Image.Image],
    *,
    n: int = 4,
    size: int = 256,
    prefix: str = "Style",
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> tuple[torch.Tensor, list[str], list[str]]:
    """Pick ``n`` diverse paintings and return their style feature maps for a checkpoint's style bank.

    Every painting is resized (shorter side ``size``) and centre-cropped to ``size x size`` so that all
    ``encode_style`` maps have one shape. Selection: the painting whose pooled style code is closest to the
    mean code (the most typical) first, then farthest-point sampling on the codes (each next painting is
    the one farthest from those already chosen), which spreads the bank over the domain's styles.

    Args:
        generator: a :class:`models.Generator` (the target domain's style encoder is used).
        paintings: a folder (searched recursively) or a list of paths / PIL images.
        n: bank size (at most the number of paintings).
        size: square size in px the paintings are encoded at (>= 16).
        prefix: names are ``f"{prefix} #{i}"``, i = 1..n.

    Returns:
        ``(bank (n, 4w, h, w) float32 CPU, names, sources)``; ``sources`` are the chosen files (or
        ``"<image k>"``) for the model card.

    Raises:
        ValueError: no paintings, ``n < 1`` or ``size < 16``.
    """
    from wct.io import center_crop, resize_shorter_side

    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    items = list_images(paintings) if isinstance(paintings, (str, Path)) else list(paintings)
    if not items:
        raise ValueError(f"no paintings found in {paintings}")
    dev = resolve_device(device)
    generator = generator.to(dev).eval()
    feats, sources = [], []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        imgs = []
        for j, it in enumerate(chunk):
            img = load_image(it)
            imgs.append(center_crop(resize_shorter_side(img, size), size))
            sources.append(str(it) if not isinstance(it, Image.Image) else f"<image {i + j}>")
        x = torch.cat([pil_to_tensor(im) for im in imgs]).to(dev) * 2 - 1
        feats.append(generator.encode_style(x).float().cpu())
    allf = torch.cat(feats)
    codes = allf.mean(dim=(2, 3)).double()
    n = min(n, len(allf))
    chosen = [int((codes - codes.mean(0)).norm(dim=1).argmin())]
    dist = (codes - codes[chosen[0]]).norm(dim=1)
    while len(chosen) < n:
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, (codes - codes[nxt]).norm(dim=1))
    bank = allf[chosen].contiguous()
    return bank, [f"{prefix} #{i + 1}" for i in range(n)], [sources[c] for c in chosen]


def add_style_bank(checkpoint: str | Path, paintings: str | Path | Iterable[str | Path | Image.Image], *,
                   n: int = 4, size: int = 256, prefix: str | None = None,
                   device: str | torch.device = "cpu") -> list[str]:
    """Compute a style bank (:func:`compute_style_bank`) and write it into ``checkpoint`` (in place,
    atomically, through :func:`models.save_checkpoint`). Returns the bank names."""
    from models import Generator, load_checkpoint, save_checkpoint

    path = Path(checkpoint)
    ckpt = load_checkpoint(path)
    gen = Generator.from_pretrained(path)
    prefix = prefix or path.stem.capitalize()
    bank, names, sources = compute_style_bank(gen, paintings, n=n, size=size, prefix=prefix, device=device)
    extra = dict(ckpt.get("extra") or {})
    extra.update(style_bank=bank, style_bank_names=names, style_bank_sources=sources)
    # keep the storage dtype (an fp16 shipped checkpoint stays fp16)
    save_checkpoint(path, ckpt["nets"], ckpt.get("config"), extra, dtype=ckpt.get("storage_dtype"))
    return names
