"""Whitening, colouring and covariance pooling on the robust eigendecomposition of :mod:`wct.linalg`.

Three layers of Wang, Dang, Hu, Fua, Salzmann, "Robust Differentiable SVD" (TPAMI 2021) that use the
eigendecomposition of a covariance matrix:

* group-wise whitening and colouring (WCT) for style transfer (Sec. 5.3.1, eqs. 30-33; Li et al.,
  "Universal Style Transfer via Feature Transforms", NeurIPS 2017): :func:`whiten`, :func:`color`,
  :func:`wct`, :func:`color_transfer`;
* ZCA whitening over a batch, the core of decorrelated batch normalisation (Sec. 5.1, Alg. 2; Huang et al.,
  "Decorrelated Batch Normalization", CVPR 2018): :func:`zca_whiten` (module :class:`wct.nn.ZCANorm2d`);
* second-order (covariance) pooling with matrix power normalisation (Sec. 5.2, Alg. 3, eqs. 28-29; Li et al.,
  "Is Second-order Information Helpful for Large-scale Visual Recognition?", ICCV 2017): :func:`cov_pool`.

Conventions shared by every function here:

* Feature maps are ``(B, C, H, W)``; ``groups`` is the **number of groups** ``G`` and must divide ``C``; the
  group size is ``d = C // G`` and group ``g`` holds channels ``g*d ... (g+1)*d - 1``. Each group gets its
  own ``d x d`` covariance (block-diagonal approximation of the full ``C x C`` covariance).
* Statistics, matrix roots and the transform are computed in float64 with autocast disabled; the output
  has the input's dtype. Exception for speed: :func:`wct` on non-float64 content centres it (with a
  float64-accumulated mean) and applies the final ``d x d`` transform over all positions in float32; the
  covariances' eigendecompositions and all ``d x d`` matrices stay float64. float64 input is float64
  throughout. All eigendecompositions of one call go through **one** batched
  :func:`wct.linalg.eigh` call (``(B*G, d, d)``), never a Python loop.
* Covariances are biased (divide by the number of positions ``N``).
* Regularisation (``eps_mode="trace"``, the default): with the scale
  ``s = max(tr(Sigma)/d, tau * E[x^2]) + 1e-12`` (the mean variance of the group, floored relative to the
  group's mean square ``E[x^2] = (tr(Sigma) + |mu|^2)/d`` and, so that an all-zero input gives no 0/0, by
  :data:`TRACE_FLOOR`), every matrix root is taken of ``Sigma/s + eps*I`` and rescaled, i.e.
  ``(Sigma + eps*s*I)^p``. The regularisation is relative to the feature scale: ``whiten(c*x) == whiten(x)``
  for every ``c > 0`` (up to the 1e-12 floor), so features of magnitude 1e-4 and 1e4 are treated alike, and
  the backward pass of :func:`wct.linalg.eigh` sees eigenvalues of order 1. ``tau`` =
  :data:`TRACE_REL_FLOOR` = 2**-23 (float32 machine epsilon): a variance below ``tau * E[x^2]`` is below
  what float32 features resolve (a float32 ``E[x^2] - E[x]^2`` has a rounding error of that size), so a
  near-constant group (e.g. the features of a uniform image) is no longer whitened by
  ``(eps * 1e-12)^(-1/2) ~ 3e8``, which amplified float32 rounding noise in the forward pass and the
  gradient by that factor per WCT module; its whitening gain is at most ``(eps * tau * E[x^2])^(-1/2)``.
  Groups whose variance is at least ``tau * E[x^2]`` (every ordinary feature map) get bit-for-bit the
  unfloored scale. The floor needs the mean: it is used wherever the features or :class:`GroupStats` are
  given (:func:`whiten`, :func:`color`, :func:`wct`, :func:`zca_whiten`); a covariance without its mean
  (:func:`_regularised` / :func:`_reg_root` with ``mean=None``) gets ``s = tr(Sigma)/d + 1e-12``.
  ``eps_mode="absolute"`` uses ``(Sigma + eps*I)^p`` (the convention of ``kornia.enhance.zca_mean`` and of
  the reference DBN code).
* Whitening uses ``(Sigma + eps_eff I)^(-1/2)`` and its inverse (colouring) ``(Sigma + eps_eff I)^(1/2)``,
  so that colouring with the statistics that were whitened returns the input exactly, for any ``eps``.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from wct import linalg

__all__ = [
    "GroupStats",
    "group_stats",
    "whiten",
    "color",
    "wct",
    "color_transfer",
    "zca_whiten",
    "cov_pool",
    "EPS_MODES",
]

EPS_MODES = ("trace", "absolute")
#: Floor (in variance units) added to the mean variance ``tr(Sigma)/d`` in ``eps_mode="trace"``.
TRACE_FLOOR = 1e-12
#: ``tau``: in ``eps_mode="trace"`` the scale ``s`` is at least ``tau * E[x^2]`` (the group's mean square,
#: mean included); float32 machine epsilon, the relative resolution of float32 second moments.
TRACE_REL_FLOOR = 2.0**-23
_F64 = torch.float64


class GroupStats(NamedTuple):
    """Per-sample, per-group first and second moments of a feature map.

    Attributes:
        mean: ``(B, C)`` channel means.
        cov: ``(B, G, d, d)`` biased covariance of each group of ``d = C // G`` channels.
    """

    mean: torch.Tensor
    cov: torch.Tensor


# ----------------------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------------------
def _valid_backwards() -> tuple[str, ...]:
    modes = getattr(linalg, "SYM_POWER_BACKWARDS", None)
    if modes is None:
        modes = tuple(linalg.BACKWARDS) + ("spectral",)
    return tuple(modes)


def _check_common(groups: int | None, eps: float, backward: str, eps_mode: str, k: int | None = None) -> None:
    if groups is not None and (isinstance(groups, bool) or not isinstance(groups, int) or groups < 1):
        raise ValueError(f"groups must be a positive int (number of groups), got {groups!r}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0 or eps == float("inf"):
        raise ValueError(f"eps must be a finite float >= 0, got {eps!r}")
    if backward not in _valid_backwards():
        raise ValueError(f"backward must be one of {_valid_backwards()}, got {backward!r}")
    if eps_mode not in EPS_MODES:
        raise ValueError(f"eps_mode must be one of {EPS_MODES}, got {eps_mode!r}")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k (number of kept components per group) must be a positive int, got {k!r}")
        if backward == "spectral":
            raise ValueError("k (top-k whitening) needs the eigenvectors; backward='spectral' does not give them")


def _check_feature_map(x: torch.Tensor, name: str, groups: int | None = None, finite: bool = True) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"{name} must be non-empty (B, C, H, W), got shape {tuple(x.shape)}")
    if groups is not None and x.shape[1] % groups != 0:
        raise ValueError(
            f"{name} has C={x.shape[1]} channels, which is not divisible by groups={groups} "
            f"(groups is the number of groups; the group size is C // groups)"
        )
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} (B, C, H, W) = {tuple(x.shape)} contains NaN or inf; expected finite features")


# ----------------------------------------------------------------------------------------------------------
# core numerics (float64)
# ----------------------------------------------------------------------------------------------------------
def _grouped(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, H, W) -> float64 (B, G, d, H*W)."""
    b, c, h, w = x.shape
    return x.to(_F64).reshape(b, groups, c // groups, h * w)


def _moments(xg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., d, N) -> mean (..., d, 1), centred (..., d, N), biased cov (..., d, d)."""
    mean = xg.mean(-1, keepdim=True)
    xc = xg - mean
    cov = xc @ xc.mT / xg.shape[-1]
    return mean, xc, cov


def _roots(
    cov: torch.Tensor,
    *,
    eps: float,
    backward: str,
    eps_mode: str,
    k: int | None = None,
    isqrt: bool = True,
    sqrt: bool = False,
    mean: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Regularised ``(Sigma + eps_eff I)^(-1/2)`` and/or ``^(1/2)`` of float64 ``(..., d, d)`` matrices.

    One batched eigendecomposition for all leading dimensions. With ``k``, only the ``k`` largest
    eigenpairs are used (PCA-subspace whitening / its pseudo-inverse); the dropped eigenvalues never enter
    a division, in the forward or the backward pass. ``mean`` (the features' mean, see
    :func:`_regularised`) enables the relative floor of the trace scale.
    """
    a, scale = _regularised(cov, eps=eps, eps_mode=eps_mode, mean=mean)
    if backward == "spectral":
        p_eps = eps if eps > 0 else 1e-12
        out_isqrt = linalg.sym_power(a, -0.5, backward="spectral", eps=p_eps) / scale.sqrt() if isqrt else None
        out_sqrt = linalg.sym_power(a, 0.5, backward="spectral", eps=p_eps) * scale.sqrt() if sqrt else None
        return out_isqrt, out_sqrt
    lam, v = linalg.eigh(a, backward=backward)
    return _from_eigh(lam, v, scale, k=k, isqrt=isqrt, sqrt=sqrt)


def _regularised(
    cov: torch.Tensor, *, eps: float, eps_mode: str, mean: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Sigma / s + eps I`` and the scale ``s`` (..., 1, 1) of the eps convention (module docstring).

    The single definition of the convention (``models.inference`` uses it through :func:`_reg_root`).

    Args:
        cov: float64 ``(..., d, d)`` covariances (symmetrised here).
        eps: ``>= 0``.
        eps_mode: ``"trace"`` or ``"absolute"``.
        mean: the features' mean, ``(..., d)`` or ``(..., d, 1)``; with it (``"trace"`` only) the scale is
            ``max(tr(Sigma)/d, TRACE_REL_FLOOR * (tr(Sigma) + |mean|^2)/d) + TRACE_FLOOR``, without it
            ``tr(Sigma)/d + TRACE_FLOOR``.
    """
    d = cov.shape[-1]
    cov = 0.5 * (cov + cov.mT)
    if eps_mode == "trace":
        diag = cov.diagonal(dim1=-2, dim2=-1)
        scale = diag.mean(-1).clamp_min(0.0)
        if mean is not None:
            if mean.shape == cov.shape[:-1] + (1,):
                mean = mean.squeeze(-1)
            if mean.shape != cov.shape[:-1]:
                raise ValueError(f"mean must have shape {tuple(cov.shape[:-1])} (or with a trailing 1) for a "
                                 f"covariance of shape {tuple(cov.shape)}, got {tuple(mean.shape)}")
            # E[x^2] = (tr(Sigma) + |mu|^2) / d; torch.maximum keeps tr/d bit-for-bit when it is the larger
            mean_sq = (diag.sum(-1).clamp_min(0.0) + mean.pow(2).sum(-1)) / d
            scale = torch.maximum(scale, TRACE_REL_FLOOR * mean_sq)
        scale = scale + TRACE_FLOOR
    else:
        scale = torch.ones(cov.shape[:-2], dtype=cov.dtype, device=cov.device)
    scale = scale[..., None, None]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    return cov / scale + eps * eye, scale


def _reg_root(
    cov: torch.Tensor,
    power: float,
    *,
    eps: float,
    eps_mode: str = "trace",
    mean: torch.Tensor | None = None,
    backward: str = "taylor",
) -> torch.Tensor:
    """``(Sigma + eps_eff I)^power`` of float64 ``(..., d, d)`` with this module's eps convention.

    Through :func:`wct.linalg.sym_power` (eigenvalue floor ``max(eps, 1e-12)`` of the scaled matrix);
    ``mean`` as in :func:`_regularised`. Used by ``models.inference`` so that the convention has one
    definition.
    """
    a, scale = _regularised(cov, eps=eps, eps_mode=eps_mode, mean=mean)
    return linalg.sym_power(a, power, backward=backward, eps=max(eps, 1e-12)) * scale.pow(power)


def _from_eigh(lam, v, scale, *, k=None, isqrt=True, sqrt=False):
    """Matrix roots from the eigenpairs of the regularised matrix (top-``k`` pairs when ``k`` is given)."""
    d = lam.shape[-1]
    if k is not None and k < d:
        lam, v = lam[..., d - k :], v[..., d - k :]  # ascending order: the k largest
    out_isqrt = out_sqrt = None
    if isqrt:
        tiny = torch.finfo(lam.dtype).tiny
        out_isqrt = (v * lam.clamp_min(tiny).rsqrt().unsqueeze(-2)) @ v.mT / scale.sqrt()
    if sqrt:
        out_sqrt = (v * lam.clamp_min(0.0).sqrt().unsqueeze(-2)) @ v.mT * scale.sqrt()
    return out_isqrt, out_sqrt


def _style_stats(style, b: int, c: int, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Style statistics as float64 mean (Bs, G, d, 1), cov (Bs, G, d, d), Bs in {1, b}."""
    d = c // groups
    if isinstance(style, GroupStats) or (isinstance(style, tuple) and len(style) == 2):
        mean, cov = style
        if not (isinstance(mean, torch.Tensor) and isinstance(cov, torch.Tensor)):
            raise TypeError("style statistics must be a GroupStats(mean, cov) of tensors")
        if mean.dim() != 2 or mean.shape[1] != c or cov.dim() != 4 or tuple(cov.shape[1:]) != (groups, d, d):
            raise ValueError(
                f"style statistics must be mean (B, {c}) and cov (B, {groups}, {d}, {d}) "
                f"(C={c}, groups={groups}), got mean {tuple(mean.shape)} and cov {tuple(cov.shape)}"
            )
        if mean.shape[0] != cov.shape[0]:
            raise ValueError(f"style mean and cov batch sizes differ: {mean.shape[0]} vs {cov.shape[0]}")
        bs = mean.shape[0]
        mean = mean.to(_F64).reshape(bs, groups, d, 1)
        cov = cov.to(_F64)
    else:
        _check_feature_map(style, "style")
        if style.shape[1] != c:
            raise ValueError(f"style must have C={c} channels like the content, got shape {tuple(style.shape)}")
        mean, _, cov = _moments(_grouped(style, groups))
        bs = style.shape[0]
    if bs not in (1, b):
        raise ValueError(f"style batch size must be 1 or the content batch size {b}, got {bs}")
    return mean, cov


def _alpha_tensor(alpha, b: int, like: torch.Tensor) -> float | torch.Tensor:
    if isinstance(alpha, torch.Tensor):
        if alpha.numel() not in (1, b):
            raise ValueError(
                f"alpha must be a float, a scalar tensor or one value per sample (shape (B,) or (B, 1, 1, 1) "
                f"with B={b}), got shape {tuple(alpha.shape)}"
            )
        return alpha.to(like.dtype).reshape(-1, 1, 1, 1) if alpha.numel() == b else alpha.to(like.dtype).reshape(())
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a float in [0, 1] or a tensor, got {type(alpha).__name__}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return float(alpha)


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------
def group_stats(x: torch.Tensor, *, groups: int = 8) -> GroupStats:
    """Per-sample, per-group channel mean and biased covariance of a feature map.

    Use it to precompute style statistics once (e.g. of a style image or of a style encoder's output) and
    pass them to :func:`color` / :func:`wct` as ``style``.

    Args:
        x: ``(B, C, H, W)`` floating-point feature map, ``C`` divisible by ``groups``.
        groups: number of groups ``G``; group size ``d = C // G``.

    Returns:
        :class:`GroupStats` with ``mean (B, C)`` and ``cov (B, G, d, d)`` (divided by ``H*W``), in ``x``'s
        dtype (computed in float64).

    Raises:
        ValueError: if ``x`` is not ``(B, C, H, W)`` or ``C % groups != 0``.

    Example:
        >>> s = group_stats(torch.randn(2, 8, 5, 5), groups=2)
        >>> tuple(s.mean.shape), tuple(s.cov.shape)
        ((2, 8), (2, 2, 4, 4))
    """
    _check_common(groups, 0.0, "taylor", "trace")
    _check_feature_map(x, "x", groups)
    with torch.autocast(device_type=x.device.type, enabled=False):
        mean, _, cov = _moments(_grouped(x, groups))
    b, c = x.shape[:2]
    return GroupStats(mean.reshape(b, c).to(x.dtype), cov.to(x.dtype))


def whiten(
    x: torch.Tensor,
    *,
    groups: int = 8,
    eps: float = 1e-5,
    backward: str = "taylor",
    k: int | None = None,
    eps_mode: str = "trace",
) -> torch.Tensor:
    r"""Group-wise ZCA whitening of each sample of a feature map (seed paper eq. 30-31).

    For every sample and every group of ``d = C // groups`` channels with positions as observations,
    :math:`\hat x = V (\Lambda + \epsilon_{\rm eff})^{-1/2} V^\top (x - \mu)` where
    :math:`\Sigma = V \Lambda V^\top` is the biased ``d x d`` covariance over the ``H*W`` positions. The
    result has zero mean and (up to the regularisation) identity covariance per group; one sample's output
    never depends on the other samples.

    Args:
        x: ``(B, C, H, W)`` floating-point features (any range).
        groups: number of groups ``G`` (``C % G == 0``); group size ``d = C // G``.
        eps: regularisation, relative to the mean variance ``tr(Sigma)/d`` (``eps_mode="trace"``) or
            absolute (``eps_mode="absolute"``); see the module docstring. ``>= 0``.
        backward: backward mode of :func:`wct.linalg.eigh` (``"taylor"``, ``"exact"``, ``"pade"``,
            ``"power_iteration"``, ``"clip"``) or ``"spectral"`` (:func:`wct.linalg.sym_power`). At repeated
            eigenvalues the eigenvector modes give finite gradients (``"exact"`` too, at bitwise ties) that
            lack the :math:`f'(\lambda)` term inside the repeated eigenspace; only ``"spectral"`` is exact
            there (and it has no ``k``).
        k: keep only the ``k`` largest principal components of each group (PCA-subspace whitening, output
            of rank ``k``); the dropped eigenvalues are never divided by. ``None`` keeps all ``d``.
        eps_mode: ``"trace"`` (scale-invariant, default) or ``"absolute"``.

    Returns:
        ``(B, C, H, W)`` whitened features, ``x``'s dtype.

    Raises:
        ValueError: bad shape, ``C % groups != 0``, NaN/inf entries, ``eps < 0``, unknown
            ``backward``/``eps_mode``, bad ``k``.
        TypeError: ``x`` not a floating-point tensor.

    Example:
        >>> x = torch.randn(2, 8, 16, 16, dtype=torch.float64) * 5 + 3
        >>> cov = group_stats(whiten(x, groups=2, eps=0.0), groups=2).cov
        >>> torch.allclose(cov, torch.eye(4, dtype=torch.float64).expand_as(cov), atol=1e-8)
        True
    """
    _check_common(groups, eps, backward, eps_mode, k)
    _check_feature_map(x, "x", groups)
    with torch.autocast(device_type=x.device.type, enabled=False):
        mean, xc, cov = _moments(_grouped(x, groups))
        w, _ = _roots(cov, eps=eps, backward=backward, eps_mode=eps_mode, k=k, mean=mean)
        out = w @ xc
    return out.reshape(x.shape).to(x.dtype)


def color(
    x_white: torch.Tensor,
    style: torch.Tensor | GroupStats,
    *,
    groups: int = 8,
    eps: float = 1e-5,
    backward: str = "taylor",
    eps_mode: str = "trace",
) -> torch.Tensor:
    r"""Group-wise colouring: give whitened features the style's per-group mean and covariance (eq. 32).

    :math:`y = (\Sigma_s + \epsilon_{\rm eff})^{1/2} \hat x + \mu_s` per sample and group.

    Args:
        x_white: ``(B, C, H, W)`` whitened features (e.g. from :func:`whiten`).
        style: a style feature map ``(B or 1, C, Hs, Ws)`` (any ``Hs, Ws``), or precomputed
            :class:`GroupStats` ``(mean (B or 1, C), cov (B or 1, G, d, d))``, e.g. from :func:`group_stats`
            or from a network that predicts them (``cov`` must be symmetric positive semi-definite). A batch
            of 1 is used for every content sample.
        groups, eps, backward, eps_mode: as in :func:`whiten` (``eps`` regularises the style covariance).

    Returns:
        ``(B, C, H, W)`` coloured features, ``x_white``'s dtype.

    Raises:
        ValueError: shape mismatches (channels, groups, batch sizes), bad options.

    Example:
        >>> style = torch.randn(1, 8, 9, 7)
        >>> y = color(whiten(torch.randn(3, 8, 16, 16), groups=2), style, groups=2)
        >>> y.shape
        torch.Size([3, 8, 16, 16])
    """
    _check_common(groups, eps, backward, eps_mode)
    _check_feature_map(x_white, "x_white", groups)
    b, c, h, w = x_white.shape
    with torch.autocast(device_type=x_white.device.type, enabled=False):
        mean_s, cov_s = _style_stats(style, b, c, groups)
        _, cm = _roots(cov_s, eps=eps, backward=backward, eps_mode=eps_mode, isqrt=False, sqrt=True, mean=mean_s)
        out = cm @ _grouped(x_white, groups) + mean_s
    return out.reshape(x_white.shape).to(x_white.dtype)


def wct(
    content: torch.Tensor,
    style: torch.Tensor | GroupStats,
    *,
    groups: int = 8,
    alpha: float | torch.Tensor = 1.0,
    eps: float = 1e-5,
    backward: str = "taylor",
    k: int | None = None,
    eps_mode: str = "trace",
) -> torch.Tensor:
    r"""Group-wise whitening and colouring transform (seed paper Sec. 5.3.1, eqs. 30-33).

    :math:`y = \alpha\,[(\Sigma_s + \epsilon_s)^{1/2} (\Sigma_c + \epsilon_c)^{-1/2} (x_c - \mu_c) + \mu_s]
    + (1 - \alpha)\, x_c`, per sample and per group of ``d = C // groups`` channels (block-diagonal
    approximation of full WCT; e.g. 8 groups of 32 channels at ``C = 256``). The content and style
    covariances of all samples and groups are decomposed in **one** batched :func:`wct.linalg.eigh` call.
    ``wct(x, x)`` returns ``x`` (same regularisation on both sides).

    Args:
        content: ``(B, C, H, W)`` content features.
        style: style features ``(B or 1, C, Hs, Ws)`` (``Hs, Ws`` may differ from the content's) or
            :class:`GroupStats` (see :func:`color`).
        groups: number of groups ``G``, ``C % G == 0``.
        alpha: blend between the transferred (1) and the content (0) features: a float in ``[0, 1]``, or a
            tensor of shape ``()``, ``(B,)`` or ``(B, 1, 1, 1)`` (differentiable, e.g. a learned parameter).
            ``alpha=0`` returns the content exactly.
        eps, backward, k, eps_mode: as in :func:`whiten` (``k`` applies to the content whitening).

    Returns:
        ``(B, C, H, W)`` transferred features, ``content``'s dtype.

    Raises:
        ValueError: bad shapes (``C % groups``, channel or batch mismatch), ``alpha`` outside ``[0, 1]``
            or of the wrong shape, bad options.

    Example:
        >>> c, s = torch.randn(2, 16, 8, 8, dtype=torch.float64), torch.randn(2, 16, 5, 6, dtype=torch.float64)
        >>> y = wct(c, s, groups=4)
        >>> torch.allclose(group_stats(y, groups=4).mean, group_stats(s, groups=4).mean)
        True
        >>> torch.equal(wct(c, s, groups=4, alpha=0.0), c)
        True
    """
    _check_common(groups, eps, backward, eps_mode, k)
    _check_feature_map(content, "content", groups)
    b, c, h, w = content.shape
    a = _alpha_tensor(alpha, b, content)
    if isinstance(a, float) and a == 0.0:
        return content.clone()
    with torch.autocast(device_type=content.device.type, enabled=False):
        mean_s, cov_s = _style_stats(style, b, c, groups)
        # The content pass over all H*W positions is the costly part: for non-float64 content, the centring
        # and the final transform run in float32 (the mean is accumulated in float64, so a constant map
        # centres to exactly 0); covariances, eigendecompositions and the d x d transform are float64.
        wd = _F64 if content.dtype == _F64 else torch.float32
        d = c // groups
        xg = content.to(wd).reshape(b, groups, d, h * w)
        mean_c = xg.mean(-1, keepdim=True, dtype=_F64)
        xc = xg - mean_c.to(wd)
        cov_c = (xc @ xc.mT).to(_F64) / (h * w)
        # content and style covariances of all samples and groups in ONE batched eigendecomposition
        both = torch.cat([cov_c.reshape(-1, d, d), cov_s.reshape(-1, d, d)])
        means = torch.cat([mean_c.reshape(-1, d), mean_s.reshape(-1, d)])
        nc = b * groups
        if backward == "spectral":
            isq, sq = _roots(both, eps=eps, backward=backward, eps_mode=eps_mode, isqrt=True, sqrt=True,
                             mean=means)
            wc, cs = isq[:nc], sq[nc:]
        else:
            reg, scale = _regularised(both, eps=eps, eps_mode=eps_mode, mean=means)
            lam, v = linalg.eigh(reg, backward=backward)
            wc, _ = _from_eigh(lam[:nc], v[:nc], scale[:nc], k=k)
            _, cs = _from_eigh(lam[nc:], v[nc:], scale[nc:], isqrt=False, sqrt=True)
        wc = wc.reshape(b, groups, d, d)
        cs = cs.reshape(-1, groups, d, d)
        out = ((cs @ wc).to(wd) @ xc + mean_s.to(wd)).reshape(content.shape).to(content.dtype)
    if isinstance(a, float) and a == 1.0:
        return out
    return a * out + (1 - a) * content


def color_transfer(content: torch.Tensor, style: torch.Tensor, *, alpha: float = 1.0, eps: float = 1e-5) -> torch.Tensor:
    """Colour transfer: WCT on the RGB pixels of images (seed paper Fig. 2d).

    Each content image gets the mean colour and the 3 x 3 colour covariance of its style image (one group
    of the 3 channels, pixels as observations), then the result is clamped to ``[0, 1]``.

    Args:
        content: ``(B, 3, H, W)`` RGB images in ``[0, 1]``.
        style: ``(B or 1, 3, Hs, Ws)`` RGB images in ``[0, 1]`` (any size).
        alpha: blend in ``[0, 1]`` between the transferred (1) and the original (0) colours.
        eps: relative regularisation (``eps_mode="trace"``) of the colour covariances.

    Returns:
        ``(B, 3, H, W)`` images in ``[0, 1]``, ``content``'s dtype.

    Raises:
        ValueError: not 3 channels, values outside ``[0, 1]``, batch mismatch, ``alpha`` outside ``[0, 1]``.

    Example:
        >>> out = color_transfer(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 20, 24))
        >>> out.shape, bool(out.min() >= 0 and out.max() <= 1)
        (torch.Size([1, 3, 32, 32]), True)
    """
    for name, img in (("content", content), ("style", style)):
        _check_feature_map(img, name)
        if img.shape[1] != 3:
            raise ValueError(f"{name} must be RGB images (B, 3, H, W), got shape {tuple(img.shape)}")
        lo, hi = float(img.min()), float(img.max())
        if not (lo >= -1e-6 and hi <= 1 + 1e-6):
            raise ValueError(f"{name} values must be in [0, 1] (RGB), got range [{lo:.4g}, {hi:.4g}]")
    out = wct(content, style, groups=1, alpha=alpha, eps=eps)
    return out.clamp(0.0, 1.0)


def zca_whiten(
    x: torch.Tensor,
    *,
    groups: int = 1,
    eps: float = 1e-5,
    backward: str = "taylor",
    k: int | None = None,
    eps_mode: str = "trace",
    return_stats: bool = False,
):
    r"""ZCA whitening of a feature map with statistics over the **batch** (decorrelated BN, seed Alg. 2).

    Channels are the variables and all ``B*H*W`` positions the observations (as in batch normalisation);
    each of the ``groups`` groups of ``d = C // groups`` channels is whitened with
    :math:`(\Sigma + \epsilon_{\rm eff} I)^{-1/2}` (Huang et al., CVPR 2018). This is the training-mode
    transform of :class:`wct.nn.ZCANorm2d` before its affine part; with ``groups=1`` and
    ``eps_mode="absolute"`` it equals ``kornia.enhance.ZCAWhitening(eps=eps, unbiased=False)`` fitted on the
    ``(B*H*W, C)`` matrix.

    Args:
        x: ``(B, C, H, W)`` features.
        groups: number of channel groups (``C % groups == 0``).
        eps, backward, k, eps_mode: as in :func:`whiten`.
        return_stats: also return ``(mean (C,), cov (G, d, d))`` (float64, biased) used for the whitening.

    Returns:
        ``(B, C, H, W)`` whitened features in ``x``'s dtype, or ``(y, mean, cov)`` with ``return_stats``.

    Raises:
        ValueError: bad shape or options.

    Example:
        >>> y = zca_whiten(torch.randn(16, 4, 3, 3), eps=0.0)
        >>> c = y.permute(1, 0, 2, 3).reshape(4, -1)
        >>> torch.allclose(c @ c.T / c.shape[1], torch.eye(4), atol=1e-4)
        True
    """
    _check_common(groups, eps, backward, eps_mode, k)
    _check_feature_map(x, "x", groups)
    b, c, h, w = x.shape
    d = c // groups
    with torch.autocast(device_type=x.device.type, enabled=False):
        xg = x.to(_F64).permute(1, 0, 2, 3).reshape(groups, d, b * h * w)
        mean, xc, cov = _moments(xg)
        wm, _ = _roots(cov, eps=eps, backward=backward, eps_mode=eps_mode, k=k, mean=mean)
        y = (wm @ xc).reshape(c, b, h, w).permute(1, 0, 2, 3).to(x.dtype)
    if return_stats:
        return y, mean.reshape(c), cov
    return y


def cov_pool(
    x: torch.Tensor,
    *,
    power: float = 0.5,
    normalize: str = "trace",
    backward: str = "taylor",
    eps: float = 1e-5,
) -> torch.Tensor:
    r"""Second-order (covariance) pooling with matrix power normalisation (MPN-COV; seed Alg. 3, eqs. 28-29).

    Per sample, :math:`\Sigma = \frac1N \tilde X \tilde X^\top` over the ``N = H*W`` positions (centred),
    optionally normalised by its trace (``normalize="trace"``, eq. 29: :math:`\Sigma / \mathrm{tr}\,\Sigma`,
    which makes the output invariant to the feature scale), then :math:`f(\Sigma) = V \max(\Lambda,
    \epsilon)^{p} V^\top` through :func:`wct.linalg.sym_power`; the upper triangle (row-major, diagonal
    included) is returned.

    Args:
        x: ``(B, C, H, W)`` features.
        power: exponent ``p`` of the matrix power (0.5 = matrix square root).
        normalize: ``"trace"`` or ``"none"``.
        backward: backward mode of :func:`wct.linalg.sym_power`.
        eps: eigenvalue floor of :func:`wct.linalg.sym_power`.

    Returns:
        ``(B, C*(C+1)/2)`` in ``x``'s dtype.

    Raises:
        ValueError: bad shape or options.

    Example:
        >>> cov_pool(torch.randn(2, 4, 6, 6)).shape
        torch.Size([2, 10])
    """
    _check_common(None, eps, backward, "trace")
    _check_feature_map(x, "x")
    if normalize not in ("trace", "none"):
        raise ValueError(f"normalize must be 'trace' or 'none', got {normalize!r}")
    if isinstance(power, bool) or not isinstance(power, (int, float)) or power != power:
        raise ValueError(f"power must be a finite float, got {power!r}")
    b, c, h, w = x.shape
    with torch.autocast(device_type=x.device.type, enabled=False):
        _, _, cov = _moments(x.to(_F64).reshape(b, c, h * w))
        if normalize == "trace":
            tr = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
            cov = cov / (tr + TRACE_FLOOR)[:, None, None]
        p = linalg.sym_power(cov, power, backward=backward, eps=eps)
        iu = torch.triu_indices(c, c, device=x.device)
        out = p[:, iu[0], iu[1]]
    return out.to(x.dtype)
