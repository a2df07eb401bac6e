"""Configuration dataclasses of the image translation networks (GDWCT layout, Cho et al., CVPR 2019).

Every field has a default that reproduces the paper configuration (GDWCT's ``configs/config.yaml`` with
``N_GROUP: 8``, as used by Wang et al., TPAMI 2021, Sec. 5.3.2). The fields marked *artefact options*
exist so that the checkerboard/grid pattern seen in small CPU runs can be removed without changing code
(see ``docs/DESIGN.md``, models section, "Checkerboard causes").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

TRANSFORMS = ("svd", "gdwct")
ALPHA_PARAMS = ("clamp", "sigmoid")
UPSAMPLES = ("nearest", "bilinear")
DOWNSAMPLES = ("conv4", "conv3", "blurpool")
PADDINGS = ("reflect", "replicate", "zeros")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


class _ConfigMixin:
    """``to_dict`` / ``from_dict`` (JSON round trip; unknown keys raise)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build from a dict (e.g. a checkpoint's JSON); unknown keys raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)


@dataclass
class GeneratorConfig(_ConfigMixin):
    """Hyper-parameters of one domain's :class:`models.Generator`.

    Defaults = the paper configuration (GDWCT with 8 groups x 32 channels at 256 bottleneck channels).

    Attributes:
        width: base channels of the first 7x7 conv (GDWCT ``FIRST_DIM`` = 64). The content bottleneck and
            the style feature map have ``4 * width`` channels (256 by default).
        n_res: residual blocks in the content encoder and in the decoder each (GDWCT ``N_RES_BLOCKS``/2 = 4).
            The decoder has ``n_res + 1`` WCT modules.
        groups: channel groups of every WCT module; ``4 * width`` must be divisible by it (8 -> 32 channels
            per group at width 64).
        transform: ``"svd"`` = non-parametric group-wise WCT on ``wct.nn.GroupWCT`` (exact eigh forward,
            robust backward; Wang et al. TPAMI 2021, eqs. 30-33) or ``"gdwct"`` = GDWCT's learned colouring
            (an MLP maps the pooled style code to per-group ``U diag(D) U^T`` and a mean; whitening is only
            pushed towards identity by a regulariser, see ``Generator.decode(..., return_aux=True)``).
        backward: backward pass of the eigendecomposition for ``transform="svd"``: ``"taylor"`` (SVD-WCT),
            ``"pade"``, ``"power_iteration"`` (PI-WCT), ``"clip"`` (Clip-WCT) or ``"exact"``.
        eps: ridge added to every covariance before ``C^{-1/2}`` / ``C^{1/2}``; with ``eps_mode="trace"``
            relative to the group's mean variance (``(C + eps * tr(C)/d * I)^p``), with ``"absolute"`` as is.
        eps_mode: ``"trace"`` (default of ``wct.functional``: scale-invariant, so near-null directions of the
            content are never amplified by more than ``1/sqrt(eps)`` relative to the mean variance) or
            ``"absolute"``.
        alpha_init: initial WCT blend ``alpha`` of every module (GDWCT: ``1 - w_alpha = 0.6``).
        alpha_param: parameterisation of the learnable blend. ``"clamp"`` (GDWCT): ``alpha = clamp(s*p, 0, 1)``
            with a straight-through gradient (the gradient is never cut at the bounds; call
            ``Generator.clamp_alpha_()`` after an optimiser step to project like GDWCT's ``clamping_alpha``).
            ``"sigmoid"``: ``alpha = sigmoid(s * p)`` (always inside (0, 1), never a dead gradient).
        alpha_scale: ``s`` above. With Adam the step of ``p`` is about ``lr`` whatever the gradient size, so
            ``s`` multiplies the effective learning rate of alpha (GDWCT: 1; the demo configurations use a
            larger value because alpha barely moved, 0.600 -> 0.593 in 2,279 steps at lr 2e-4).
        style_proj: ``transform="svd"`` only: each WCT module colours with the statistics of its own learned
            1x1 projection of the style feature map (identity-initialised). ``False`` = every module uses the
            raw style feature map (fully non-parametric colouring).
        style_n_down: stride-2 convs of the style encoder (GDWCT: 4, 64->128->256->256->256, so the
            colouring statistics come from an ``H/16 x W/16`` map). Fewer = more samples per covariance.
        gdwct_mlp_dim: hidden width of GDWCT's colouring MLP (``MLP_DIM``; 256 for 8 groups in GDWCT's notes).
        upsample: *artefact option*: decoder x2 upsampling before its 5x5 conv, ``"nearest"`` (GDWCT) or
            ``"bilinear"``.
        downsample: *artefact option*: encoder downsampling, ``"conv4"`` = 4x4 stride-2 conv (GDWCT),
            ``"conv3"`` = 3x3 stride-2 conv, ``"blurpool"`` = 3x3 conv + [1,2,1]^2 blur + stride 2
            (Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019).
        padding: *artefact option*: padding of every conv, ``"reflect"`` (GDWCT "mirror"), ``"replicate"``
            or ``"zeros"``. Maps too small to reflect fall back to replicate padding.
        image_size: training crop size in pixels (informative; any size >= 16 works at inference).
    """

    width: int = 64
    n_res: int = 4
    groups: int = 8
    transform: str = "svd"
    backward: str = "taylor"
    eps: float = 1e-5
    eps_mode: str = "trace"
    alpha_init: float = 0.6
    alpha_param: str = "clamp"
    alpha_scale: float = 1.0
    style_proj: bool = True
    style_n_down: int = 4
    gdwct_mlp_dim: int = 256
    upsample: str = "nearest"
    downsample: str = "conv4"
    padding: str = "reflect"
    image_size: int = 256

    def __post_init__(self) -> None:
        _check_int("width", self.width, 1)
        _check_int("n_res", self.n_res, 0)
        _check_int("groups", self.groups, 1)
        _check_int("style_n_down", self.style_n_down, 2)
        _check_int("gdwct_mlp_dim", self.gdwct_mlp_dim, 1)
        _check_int("image_size", self.image_size, 16)
        if (4 * self.width) % self.groups:
            raise ValueError(
                f"4 * width = {4 * self.width} channels must be divisible by groups = {self.groups}")
        _check_choice("transform", self.transform, TRANSFORMS)
        _check_choice("backward", self.backward, ("exact", "taylor", "pade", "power_iteration", "clip"))
        _check_choice("eps_mode", self.eps_mode, ("trace", "absolute"))
        _check_choice("alpha_param", self.alpha_param, ALPHA_PARAMS)
        _check_choice("upsample", self.upsample, UPSAMPLES)
        _check_choice("downsample", self.downsample, DOWNSAMPLES)
        _check_choice("padding", self.padding, PADDINGS)
        if not 0.0 <= float(self.alpha_init) <= 1.0:
            raise ValueError(f"alpha_init must be in [0, 1], got {self.alpha_init}")
        if self.alpha_param == "sigmoid" and not 0.0 < float(self.alpha_init) < 1.0:
            raise ValueError(f"alpha_param='sigmoid' needs 0 < alpha_init < 1, got {self.alpha_init}")
        if not float(self.alpha_scale) > 0:
            raise ValueError(f"alpha_scale must be > 0, got {self.alpha_scale}")
        if not float(self.eps) > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    @property
    def content_dim(self) -> int:
        """Channels of the content bottleneck and of the style feature map (``4 * width``)."""
        return 4 * self.width

    @property
    def group_size(self) -> int:
        """Channels per WCT group (``4 * width // groups``)."""
        return self.content_dim // self.groups


@dataclass
class DiscriminatorConfig(_ConfigMixin):
    """Hyper-parameters of :class:`models.MultiScaleDiscriminator` (GDWCT/MUNIT LSGAN discriminator).

    Attributes:
        width: channels of the first conv (GDWCT ``D.FIRST_DIM`` = 64); doubled at every layer.
        n_layers: 4x4 stride-2 convs per scale (GDWCT ``N_LAYER`` = 4: 64 -> 128 -> 256 -> 512).
        n_scales: image scales, 3x3 average pooling (stride 2) between them (GDWCT ``NUM_SCALES`` = 3).
        lrelu_slope: negative slope of the LeakyReLUs (GDWCT's ``lrelu`` = 0.01; MUNIT uses 0.2).
        downsample: *artefact option*: ``"conv4"`` (GDWCT) or ``"blurpool"`` (3x3 conv + blur + stride 2).
        scale_pool: *artefact option*: downsampling between scales, ``"avg3"`` (GDWCT: 3x3 average pooling,
            stride 2, whose gradient covers pixels 1 or 2 times alternately -> a period-2 grid in the
            gradient G receives) or ``"blur"`` ([1, 2, 1]^2 / 16 blur, stride 2: even coverage).
        padding: *artefact option*: ``"reflect"`` (GDWCT "mirror"), ``"replicate"`` or ``"zeros"``.
    """

    width: int = 64
    n_layers: int = 4
    n_scales: int = 3
    lrelu_slope: float = 0.01
    downsample: str = "conv4"
    scale_pool: str = "avg3"
    padding: str = "reflect"

    def __post_init__(self) -> None:
        _check_int("width", self.width, 1)
        _check_int("n_layers", self.n_layers, 1)
        _check_choice("scale_pool", self.scale_pool, ("avg3", "blur"))
        _check_int("n_scales", self.n_scales, 1)
        _check_choice("downsample", self.downsample, ("conv4", "blurpool"))
        _check_choice("padding", self.padding, PADDINGS)
        if not 0.0 <= float(self.lrelu_slope) < 1.0:
            raise ValueError(f"lrelu_slope must be in [0, 1), got {self.lrelu_slope}")
