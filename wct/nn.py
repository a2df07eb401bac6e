"""Modules for the layers of :mod:`wct.functional`: :class:`GroupWCT`, :class:`ZCANorm2d`, :class:`CovPool`."""

from __future__ import annotations

import torch
from torch import nn

from wct import functional as F

__all__ = ["GroupWCT", "ZCANorm2d", "CovPool"]

_F64 = torch.float64


class GroupWCT(nn.Module):
    """Group-wise whitening and colouring transform, module form of :func:`wct.functional.wct`.

    Holds the options; ``alpha`` is a plain float default (a network that learns the blend keeps its own
    parameter and passes it to :meth:`forward`).

    Args:
        num_channels: expected ``C`` (checked at construction against ``groups`` and at every call), or
            ``None`` for any ``C`` divisible by ``groups``.
        groups: number of groups ``G``; group size ``d = C // G``.
        alpha: default blend in ``[0, 1]`` (1 = full transfer, 0 = content).
        eps, backward, k, eps_mode: see :func:`wct.functional.whiten`.

    Shape:
        content ``(B, C, H, W)``, style ``(B or 1, C, Hs, Ws)`` or :class:`wct.functional.GroupStats`,
        output ``(B, C, H, W)``.

    Example:
        >>> m = GroupWCT(16, groups=4)
        >>> m(torch.randn(2, 16, 8, 8), torch.randn(2, 16, 4, 4), alpha=torch.tensor([0.3, 0.9])).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(
        self,
        num_channels: int | None = None,
        *,
        groups: int = 8,
        alpha: float = 1.0,
        eps: float = 1e-5,
        backward: str = "taylor",
        k: int | None = None,
        eps_mode: str = "trace",
    ) -> None:
        super().__init__()
        F._check_common(groups, eps, backward, eps_mode, k)
        if num_channels is not None and (num_channels < 1 or num_channels % groups != 0):
            raise ValueError(f"num_channels={num_channels} is not divisible by groups={groups}")
        F._alpha_tensor(alpha, 1, torch.empty(0))
        self.num_channels = num_channels
        self.groups = groups
        self.alpha = float(alpha)
        self.eps = eps
        self.backward = backward
        self.k = k
        self.eps_mode = eps_mode

    def forward(self, content: torch.Tensor, style, alpha: float | torch.Tensor | None = None) -> torch.Tensor:
        if self.num_channels is not None and content.dim() == 4 and content.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupWCT expects content (B, {self.num_channels}, H, W), got shape {tuple(content.shape)}"
            )
        return F.wct(
            content,
            style,
            groups=self.groups,
            alpha=self.alpha if alpha is None else alpha,
            eps=self.eps,
            backward=self.backward,
            k=self.k,
            eps_mode=self.eps_mode,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, groups={self.groups}, alpha={self.alpha}, eps={self.eps}, "
            f"backward={self.backward!r}, k={self.k}, eps_mode={self.eps_mode!r}"
        )


def _distributed(process_group) -> bool:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size(process_group) > 1


def _all_reduce(t: torch.Tensor, process_group) -> torch.Tensor:
    """Differentiable sum over processes (its backward sums the gradients, as SyncBatchNorm does)."""
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_reduce

    if process_group is None:
        process_group = dist.group.WORLD
    return all_reduce(t, op=dist.ReduceOp.SUM, group=process_group)


class ZCANorm2d(nn.Module):
    r"""Decorrelated batch normalisation with ZCA whitening (Huang et al., CVPR 2018; seed paper Alg. 2).

    Drop-in replacement for :class:`torch.nn.BatchNorm2d` (e.g. ``torchvision.models.resnet18(norm_layer=
    ZCANorm2d)``): ``ZCANorm2d(num_features)`` works with the defaults. Channels are split into ``groups``
    groups of ``d = num_features // groups`` channels (or give ``group_size=d`` instead, convenient when
    one constructor serves layers of different widths: ``groups = max(1, C // d)``); each group is
    whitened with :math:`(\Sigma + \epsilon_{\rm eff} I)^{-1/2}` through :func:`wct.linalg.eigh`, then a
    learnable per-channel affine ``weight * y + bias`` is applied.

    * **Training**: mean and biased covariance over all ``B*H*W`` positions of the batch (as
      :func:`wct.functional.zca_whiten`). When ``torch.distributed`` is initialised with more than one
      process, the sums are all-reduced (differentiably) so every process whitens with the global batch
      statistics, like :class:`torch.nn.SyncBatchNorm`.
    * **Running statistics** (``track_running_stats=True``): ``running_mean`` and, with
      ``track="covariance"`` (default), ``running_cov`` (unbiased, ``n/(n-1)``), updated as
      ``r <- (1 - momentum) r + momentum * batch`` (``momentum=None``: cumulative average). The seed paper
      (Sec. 3.4) finds the running covariance more stable than the reference code's running whitening matrix,
      which ``track="whitening"`` keeps instead (``running_whitening``).
    * **Eval**: whitens with the running statistics (the matrix is cached until the buffers change).

    Args:
        num_features: ``C``.
        groups: number of channel groups ``G`` (``C % G == 0``); ignored when ``group_size`` is given.
        group_size: channels per group ``d``; ``C`` must be divisible by ``d`` when ``C > d``.
        eps: regularisation (see ``eps_mode``; :mod:`wct.functional`).
        momentum: running-statistics momentum, or ``None`` for a cumulative average.
        affine: learnable per-channel ``weight`` (init 1) and ``bias`` (init 0).
        track_running_stats: keep running statistics and use them in eval (else batch statistics always).
        backward: backward mode of :func:`wct.linalg.eigh` (``"taylor"`` default, ``"exact"``, ``"pade"``,
            ``"power_iteration"``, ``"clip"``, or ``"spectral"``).
        track: ``"covariance"`` or ``"whitening"``.
        eps_mode: ``"trace"`` (eps relative to ``tr(Sigma)/d``, default) or ``"absolute"`` (kornia's
            ``rsqrt(lambda + eps)``).
        k: keep only the top-``k`` principal components of each group (PCA-subspace whitening).
        process_group: process group for the distributed averaging (default: the world).

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H, W)``.

    Raises:
        ValueError: wrong channel count / shape, a single value per channel in training, NaN/inf input when
            batch statistics are used (in eval with running statistics they propagate to the output), bad
            options.

    Example:
        >>> m = ZCANorm2d(8, groups=2)
        >>> m(torch.randn(4, 8, 5, 5)).shape
        torch.Size([4, 8, 5, 5])
    """

    def __init__(
        self,
        num_features: int,
        *,
        groups: int = 1,
        group_size: int | None = None,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        backward: str = "taylor",
        track: str = "covariance",
        eps_mode: str = "trace",
        k: int | None = None,
        process_group=None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if group_size is not None:
            if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
                raise ValueError(f"group_size must be a positive int, got {group_size!r}")
            if num_features <= group_size:
                groups = 1
            elif num_features % group_size != 0:
                raise ValueError(f"num_features={num_features} is not divisible by group_size={group_size}")
            else:
                groups = num_features // group_size
        F._check_common(groups, eps, backward, eps_mode, k)
        if num_features % groups != 0:
            raise ValueError(f"num_features={num_features} (C) is not divisible by groups={groups}")
        if track not in ("covariance", "whitening"):
            raise ValueError(f"track must be 'covariance' or 'whitening', got {track!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
        self.num_features = num_features
        self.groups = groups
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.backward = backward
        self.track = track
        self.eps_mode = eps_mode
        self.k = k
        self.process_group = process_group
        d = num_features // groups
        fk = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **fk))
            self.bias = nn.Parameter(torch.zeros(num_features, **fk))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            eye = torch.eye(d, **fk).expand(groups, d, d).clone()
            self.register_buffer("running_mean", torch.zeros(num_features, **fk))
            if track == "covariance":
                self.register_buffer("running_cov", eye)
            else:
                self.register_buffer("running_whitening", eye)
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        self._cache = None
        self._last = None

    # ------------------------------------------------------------------------------------------------------
    def _roots(self, cov, *, isqrt=True, sqrt=False):
        return F._roots(cov, eps=self.eps, backward=self.backward, eps_mode=self.eps_mode, k=self.k,
                        isqrt=isqrt, sqrt=sqrt)

    def _batch_stats(self, xg: torch.Tensor):
        """xg float64 (G, d, n_local) -> mean (G, d, 1), centred xg, cov (G, d, d), total count n."""
        n_local = xg.shape[-1]
        if _distributed(self.process_group):
            s1 = xg.sum(-1)
            cnt = torch.full((1,), float(n_local), dtype=xg.dtype, device=xg.device)
            packed = _all_reduce(torch.cat([s1.reshape(-1), cnt]), self.process_group)
            n = float(packed[-1])
            mean = (packed[:-1] / n).reshape(s1.shape).unsqueeze(-1)
            xc = xg - mean
            cov = _all_reduce(xc @ xc.mT, self.process_group) / n
            return mean, xc, cov, n
        mean, xc, cov = F._moments(xg)
        return mean, xc, cov, float(n_local)

    def _eval_whitening(self) -> torch.Tensor:
        if self.track == "whitening":
            return self.running_whitening.to(_F64)
        try:
            version = self.running_cov._version
        except RuntimeError:  # inference tensors (module built under torch.inference_mode) have no version
            version = None
        key = (self.running_cov.data_ptr(), version, self.running_cov.device, self.eps, self.backward,
               self.eps_mode, self.k)
        if version is None or self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                w, _ = self._roots(self.running_cov.to(_F64))
            self._cache = (key, w) if version is not None else None
            return w
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch = self.training or not self.track_running_stats
        # NaN/inf: a clear ValueError when batch statistics are computed; with running statistics (eval) they
        # propagate to the output like in nn.BatchNorm2d, so callers' own non-finite checks still see them
        F._check_feature_map(x, "x", finite=use_batch)
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"ZCANorm2d({self.num_features}) expects input (B, {self.num_features}, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        b, c, h, w = x.shape
        g, d = self.groups, c // self.groups
        with torch.autocast(device_type=x.device.type, enabled=False):
            xg = x.to(_F64).permute(1, 0, 2, 3).reshape(g, d, b * h * w)
            if use_batch:
                mean, xc, cov, n = self._batch_stats(xg)
                if self.training and n <= 1:
                    raise ValueError(
                        f"ZCANorm2d needs more than 1 value per channel in training, got input shape {tuple(x.shape)}"
                    )
                wm, _ = self._roots(cov)
                self._last = (mean.detach(), cov.detach())
                if self.training and self.track_running_stats:
                    self._update_running(mean.detach(), cov.detach(), wm.detach(), n)
            else:
                mean = self.running_mean.to(_F64).reshape(g, d, 1)
                xc = xg - mean
                wm = self._eval_whitening()
                self._last = None
            y = (wm @ xc).reshape(c, b, h, w).permute(1, 0, 2, 3).to(x.dtype)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y

    @torch.no_grad()
    def _update_running(self, mean, cov, wm, n: float) -> None:
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        rm = self.running_mean
        rm.lerp_(mean.reshape(-1).to(rm.dtype), m)
        if self.track == "covariance":
            rc = self.running_cov
            rc.lerp_((cov * (n / (n - 1))).to(rc.dtype), m)
        else:
            rw = self.running_whitening
            rw.lerp_(wm.to(rw.dtype), m)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Undo the last transform: ``x = (Sigma + eps_eff I)^(1/2) (y - bias) / weight + mean``.

        Uses the statistics of the last training-mode forward call (batch statistics), or the running
        statistics in eval mode. Exact for any ``eps`` (the colouring matrix is the inverse of the
        whitening matrix); with ``k`` it is the pseudo-inverse (projection on the kept components).

        Args:
            y: ``(B, C, H, W)`` output of :meth:`forward`.

        Returns:
            ``(B, C, H, W)`` in ``y``'s dtype.

        Raises:
            RuntimeError: in training mode before any forward call.
        """
        F._check_feature_map(y, "y")
        if y.shape[1] != self.num_features:
            raise ValueError(f"expected (B, {self.num_features}, H, W), got shape {tuple(y.shape)}")
        b, c, h, w = y.shape
        g, d = self.groups, c // self.groups
        if self.affine:
            y = (y - self.bias.view(1, c, 1, 1)) / self.weight.view(1, c, 1, 1)
        with torch.autocast(device_type=y.device.type, enabled=False):
            if self.training or not self.track_running_stats:
                if self._last is None:
                    raise RuntimeError("ZCANorm2d.inverse needs a forward call with batch statistics first")
                mean, cov = self._last
                _, cm = self._roots(cov, isqrt=False, sqrt=True)
            else:
                mean = self.running_mean.to(_F64).reshape(g, d, 1)
                if self.track == "whitening":
                    cm = torch.linalg.pinv(self.running_whitening.to(_F64))
                else:
                    _, cm = self._roots(self.running_cov.to(_F64), isqrt=False, sqrt=True)
            yg = y.to(_F64).permute(1, 0, 2, 3).reshape(g, d, b * h * w)
            x = (cm @ yg + mean).reshape(c, b, h, w).permute(1, 0, 2, 3)
        return x.to(y.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, groups={self.groups}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}, "
            f"backward={self.backward!r}, track={self.track!r}, eps_mode={self.eps_mode!r}, k={self.k}"
        )


class CovPool(nn.Module):
    r"""Second-order (covariance) pooling, module form of :func:`wct.functional.cov_pool`.

    ``(B, C, H, W) -> (B, C*(C+1)/2)``: upper triangle of :math:`f(\Sigma) = \Sigma^{p}` of each sample's
    ``C x C`` covariance (MPN-COV, Li et al. ICCV 2017; seed paper Sec. 5.2, eqs. 28-29).

    Args:
        power: matrix power ``p`` (0.5 = square root).
        normalize: ``"trace"`` (divide by the trace first, eq. 29) or ``"none"``.
        backward: backward mode of :func:`wct.linalg.sym_power`.
        eps: eigenvalue floor.

    Example:
        >>> CovPool()(torch.randn(2, 8, 7, 7)).shape
        torch.Size([2, 36])
    """

    def __init__(self, *, power: float = 0.5, normalize: str = "trace", backward: str = "taylor",
                 eps: float = 1e-5) -> None:
        super().__init__()
        F._check_common(None, eps, backward, "trace")
        if normalize not in ("trace", "none"):
            raise ValueError(f"normalize must be 'trace' or 'none', got {normalize!r}")
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not abs(power) < float("inf"):
            raise ValueError(f"power must be a finite float, got {power!r}")
        self.power = power
        self.normalize = normalize
        self.backward = backward
        self.eps = eps

    @staticmethod
    def output_dim(num_channels: int) -> int:
        """Length ``C*(C+1)/2`` of the pooled vector for ``C`` channels."""
        return num_channels * (num_channels + 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.cov_pool(x, power=self.power, normalize=self.normalize, backward=self.backward, eps=self.eps)

    def extra_repr(self) -> str:
        return f"power={self.power}, normalize={self.normalize!r}, backward={self.backward!r}, eps={self.eps}"
