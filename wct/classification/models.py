"""Classification models of the seed paper's experiments (Wang et al., "Robust Differentiable SVD", TPAMI 2021).

- :class:`CifarResNet` / :func:`zca_resnet18` / :func:`zca_resnet50`: torchvision's ResNet with the CIFAR
  stem (3×3 convolution, stride 1, no max-pool) and a ZCA decorrelated-BN layer (:class:`wct.nn.ZCANorm2d`)
  between the stem convolution and the first block (paper Sec. 5.1, Table II). The ZCA layer takes the
  place of torchvision's ``bn1`` (the stem's norm); every other norm is ``norm_layer`` (BatchNorm2d), so
  the network is torchvision's own code, not a fork.
- :class:`CovPoolNet`: a ResNet or AlexNet backbone → 1×1 reduction → :class:`wct.nn.CovPool` (matrix
  square root of the covariance, MPN-COV) → FC (paper Sec. 5.2, Table VII).

The backward method names follow ``wct.linalg``: see :data:`METHODS` and :data:`PAPER_NAMES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from wct.classification.data import DictConfig
from wct.classification.pi import pi_sym_power
from wct.functional import _regularised
from wct.nn import CovPool, ZCANorm2d

__all__ = [
    "METHODS",
    "PAPER_NAMES",
    "CifarResNet",
    "CovPoolNet",
    "ModelConfig",
    "PIZCANorm2d",
    "build_model",
    "find_zca_layers",
    "zca_norm",
    "zca_resnet18",
    "zca_resnet50",
]

#: Backward methods of the study, named as in ``wct.linalg`` (plus "pi", the forward power-iteration baseline).
METHODS: tuple[str, ...] = ("exact", "pi", "power_iteration", "clip", "taylor", "pade", "spectral")

#: The names the seed paper (Tables III-VI) uses for the methods; "pade" and "spectral" are this project's.
PAPER_NAMES: dict[str, str] = {
    "exact": "SVD",
    "pi": "PI",
    "power_iteration": "SVD-PI",
    "clip": "SVD-Clip",
    "taylor": "SVD-Taylor",
    "pade": "SVD-Padé",
    "spectral": "SVD-Spectral",
}


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


class PIZCANorm2d(ZCANorm2d):
    """:class:`wct.nn.ZCANorm2d` whose whitening matrix comes from power iteration (the paper's "PI" baseline).

    Everything but the matrix root is ZCANorm2d's (seed paper Alg. 2: per group, statistics over all
    ``B·H·W`` positions, running covariance, eval with the running statistics, per-channel affine, the same
    trace-scaled regularisation ``Σ / s + eps·I`` with ``s = tr(Σ)/d``); ``(Σ/s + eps·I)^{-1/2}`` is
    computed by :func:`wct.classification.pi.pi_sym_power`: power iteration with deflation in the forward
    pass and gradients through the iterations, as in the "PI" rows of the paper's Tables III-VI.

    Args:
        num_features: channels C of the input ``(B, C, H, W)``.
        groups: number of channel groups (C divisible by groups); group size d = C / groups.
        eps: regulariser (ZCANorm2d's ``eps_mode="trace"`` convention).
        momentum: running-statistics momentum.
        iters: power iterations per eigenvector.
        **kwargs: other :class:`wct.nn.ZCANorm2d` options (``k`` is not supported).

    Raises:
        ValueError: as :class:`wct.nn.ZCANorm2d`; ``k`` given; ``eps_mode`` other than "trace".
    """

    def __init__(self, num_features: int, *, groups: int = 1, eps: float = 1e-5, momentum: float | None = 0.1,
                 iters: int = 30, **kwargs) -> None:
        if kwargs.get("k") is not None or kwargs.get("eps_mode", "trace") != "trace":
            raise ValueError("PIZCANorm2d supports neither k nor eps_mode other than 'trace'")
        super().__init__(num_features, groups=groups, eps=eps, momentum=momentum, **kwargs)
        self.backward = "pi"
        self.iters = iters

    def _roots(self, cov, *, isqrt=True, sqrt=False):
        a, scale = _regularised(cov, eps=self.eps, eps_mode="trace")  # wct.functional's eps convention
        out_isqrt = pi_sym_power(a, -0.5, eps=self.eps, iters=self.iters) / scale.sqrt() if isqrt else None
        out_sqrt = pi_sym_power(a, 0.5, eps=self.eps, iters=self.iters) * scale.sqrt() if sqrt else None
        return out_isqrt, out_sqrt


def zca_norm(num_features: int, *, group_size: int = 16, method: str = "taylor", eps: float = 1e-5,
             momentum: float = 0.1) -> nn.Module:
    """The ZCA layer of the study: :class:`wct.nn.ZCANorm2d` with group size d and a backward method.

    Args:
        num_features: channels C (divisible by ``group_size``).
        group_size: channels per group d (the paper's d = 4 … 64); ``groups = C // d``.
        method: one of :data:`METHODS`; "pi" gives :class:`PIZCANorm2d`, the others
            ``ZCANorm2d(..., backward=method)``.
        eps: the layer's regulariser.
        momentum: running-statistics momentum.

    Returns:
        An ``nn.Module`` mapping ``(B, C, H, W)`` to ``(B, C, H, W)``.

    Raises:
        ValueError: unknown method, or C not a multiple of ``group_size``.
    """
    _check_method(method)
    if group_size < 1 or num_features % group_size:
        raise ValueError(f"num_features={num_features} must be a positive multiple of group_size={group_size}")
    groups = num_features // group_size
    if method == "pi":
        return PIZCANorm2d(num_features, groups=groups, eps=eps, momentum=momentum)
    return ZCANorm2d(num_features, groups=groups, eps=eps, momentum=momentum, backward=method)


class CifarResNet(ResNet):
    """torchvision ResNet with the CIFAR stem and a ZCA layer after it (seed paper Table II).

    Layout: conv 3×3 (stride 1, ``width`` channels) → ``stem_norm`` (the ZCA layer) → ReLU →
    layer1 (stride 1) → layer2 (stride 2) → layer3 (stride 2) → layer4 (stride 2) → global average pool →
    FC. torchvision's ``ResNet.forward`` runs unchanged; the stem is adapted by replacing ``conv1``/``bn1``
    and setting ``maxpool`` to identity.

    Args:
        block: ``BasicBlock`` (ResNet18/34) or ``Bottleneck`` (ResNet50).
        layers: blocks per stage, e.g. ``[2, 2, 2, 2]`` for ResNet18.
        num_classes: classifier outputs.
        in_channels: input image channels (3 for RGB, 1 for grayscale).
        width: channels of the stem and of stage 1 (64 = torchvision; stages use width·(1, 2, 4, 8)).
            A smaller width gives the tiny networks of the CPU mini-study.
        stem_norm: ``num_features -> nn.Module`` for the norm after the stem (default BatchNorm2d).
        norm_layer: norm of every other layer (default BatchNorm2d), as in torchvision.

    Input ``(B, in_channels, H, W)`` float, any H, W >= 1 (CIFAR: 32×32); output logits ``(B, num_classes)``.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: Sequence[int], *, num_classes: int = 10,
                 in_channels: int = 3, width: int = 64, stem_norm: Callable[[int], nn.Module] | None = None,
                 norm_layer: Callable[[int], nn.Module] | None = None) -> None:
        if width < 1 or in_channels < 1 or num_classes < 1:
            raise ValueError(f"width, in_channels and num_classes must be >= 1, got {width}, {in_channels}, "
                             f"{num_classes}")
        self._stem_width = width
        self._first_stage = True
        super().__init__(block, list(layers), num_classes=num_classes, norm_layer=norm_layer)
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1 = (stem_norm or nn.BatchNorm2d)(width)
        self.maxpool = nn.Identity()
        if width != 64:
            self.fc = nn.Linear(8 * width * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        # Stage widths width·(1, 2, 4, 8) instead of torchvision's fixed 64·(1, 2, 4, 8).
        if self._first_stage:
            self.inplanes = self._stem_width
            self._first_stage = False
        return super()._make_layer(block, planes * self._stem_width // 64, blocks, stride, dilate)


def zca_resnet18(*, num_classes: int = 10, in_channels: int = 3, group_size: int = 16, method: str = "taylor",
                 width: int = 64, layers: Sequence[int] = (2, 2, 2, 2), eps: float = 1e-5,
                 momentum: float = 0.1) -> CifarResNet:
    """ResNet18 (CIFAR stem) with a ZCA layer of group size ``group_size`` after the stem (Table II).

    Args:
        num_classes: classifier outputs (10 for CIFAR-10, 100, 200 for Tiny ImageNet).
        in_channels: input channels.
        group_size: ZCA group size d (divides ``width``).
        method: backward method, one of :data:`METHODS`.
        width: stem / stage-1 channels (64 in the paper).
        layers: blocks per stage ((2, 2, 2, 2) is ResNet18; fewer for tiny CPU runs).
        eps: ZCA regulariser.
        momentum: ZCA running-statistics momentum.

    Returns:
        :class:`CifarResNet`; ``model.bn1`` is the ZCA layer.

    Raises:
        ValueError: unknown method or ``width`` not a multiple of ``group_size``.

    Example:
        >>> m = zca_resnet18(num_classes=10, in_channels=1, width=8, group_size=4, layers=(1, 1, 1, 1))
        >>> m(torch.randn(4, 1, 16, 16)).shape
        torch.Size([4, 10])
    """
    return CifarResNet(BasicBlock, layers, num_classes=num_classes, in_channels=in_channels, width=width,
                       stem_norm=lambda c: zca_norm(c, group_size=group_size, method=method, eps=eps,
                                                    momentum=momentum))


def zca_resnet50(*, num_classes: int = 10, in_channels: int = 3, group_size: int = 16, method: str = "taylor",
                 width: int = 64, layers: Sequence[int] = (3, 4, 6, 3), eps: float = 1e-5,
                 momentum: float = 0.1) -> CifarResNet:
    """ResNet50 (Bottleneck, CIFAR stem) with a ZCA layer after the stem (Table II). Args as :func:`zca_resnet18`."""
    return CifarResNet(Bottleneck, layers, num_classes=num_classes, in_channels=in_channels, width=width,
                       stem_norm=lambda c: zca_norm(c, group_size=group_size, method=method, eps=eps,
                                                    momentum=momentum))


class CovPoolNet(nn.Module):
    """Backbone → 1×1 reduction → covariance pooling (:class:`wct.nn.CovPool`) → FC (seed Sec. 5.2, Table VII).

    MPN-COV layout (Li et al., ICCV 2017): the last convolutional features are reduced to ``reduce_dim``
    channels (1×1 conv + BN + ReLU; ResNet backbones), their covariance is raised to ``power`` (0.5: matrix
    square root) with the chosen backward method, and the upper triangle feeds the classifier.

    Args:
        backbone: "resnet18", "resnet50" (torchvision, ImageNet stem) or "alexnet" (torchvision features
            without the last max-pool, 256 channels, no reduction by default).
        num_classes: classifier outputs.
        reduce_dim: channels before pooling (None: 256 for ResNets, no reduction for AlexNet).
        power: matrix power of the pooled covariance.
        normalize: CovPool's normalisation (see :class:`wct.nn.CovPool`).
        method: backward method, one of :data:`METHODS` except "pi".

    Input ``(B, 3, H, W)`` (ImageNet: 224×224; AlexNet needs H, W >= 63); output ``(B, num_classes)``.

    Raises:
        ValueError: unknown backbone or method.
    """

    def __init__(self, backbone: str = "resnet50", *, num_classes: int = 1000, reduce_dim: int | None = None,
                 power: float = 0.5, normalize: str = "trace", method: str = "taylor") -> None:
        super().__init__()
        _check_method(method)
        if method == "pi":
            raise ValueError("method 'pi' (forward power iteration) is implemented for the ZCA models only")
        if backbone in ("resnet18", "resnet50"):
            net = getattr(torchvision.models, backbone)(weights=None)
            self.features = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,
                                          net.layer3, net.layer4)
            channels = net.fc.in_features
            reduce_dim = 256 if reduce_dim is None else reduce_dim
        elif backbone == "alexnet":
            self.features = torchvision.models.alexnet(weights=None).features[:-1]
            channels = 256
        else:
            raise ValueError(f"unknown backbone {backbone!r}; expected resnet18, resnet50 or alexnet")
        if reduce_dim is None or reduce_dim == channels and backbone == "alexnet":
            self.reduce = nn.Identity()
            reduce_dim = channels
        else:
            self.reduce = nn.Sequential(nn.Conv2d(channels, reduce_dim, 1, bias=False), nn.BatchNorm2d(reduce_dim),
                                        nn.ReLU(inplace=True))
        self.pool = CovPool(power=power, normalize=normalize, backward=method)
        self.fc = nn.Linear(reduce_dim * (reduce_dim + 1) // 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(x.shape)}")
        return self.fc(self.pool(self.reduce(self.features(x))))


@dataclass
class ModelConfig(DictConfig):
    """Model section of a classification config (every field is a YAML key under ``model:``)."""

    arch: str = "resnet18"  # resnet18 | resnet50 (ZCA, CIFAR stem) | covpool_resnet18 | covpool_resnet50 | covpool_alexnet
    method: str = "taylor"  # backward method, one of METHODS
    group_size: int = 16  # ZCA group size d (channels per group)
    width: int = 64  # stem / stage-1 channels (64 = the paper)
    layers: list[int] | None = None  # blocks per stage (None: ResNet18 (2,2,2,2) / ResNet50 (3,4,6,3))
    zca_eps: float = 1e-5  # ZCA regulariser
    zca_momentum: float = 0.1  # ZCA running-statistics momentum
    cov_reduce_dim: int | None = None  # CovPool: channels before pooling (None: 256 for ResNets)
    cov_power: float = 0.5  # CovPool: matrix power
    cov_normalize: str = "trace"  # CovPool: normalisation
    extra: dict = field(default_factory=dict)  # free-form notes, ignored by the builder



def build_model(cfg: ModelConfig, *, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build the model a :class:`ModelConfig` describes.

    Args:
        cfg: the model config.
        num_classes: classifier outputs (from the data set).
        in_channels: input image channels (from the data set).

    Returns:
        The network (``nn.Module``), in training mode, on the CPU.

    Raises:
        ValueError: unknown arch/method, or ``width`` not divisible by ``group_size``.
    """
    _check_method(cfg.method)
    kw = dict(num_classes=num_classes, in_channels=in_channels, group_size=cfg.group_size, method=cfg.method,
              width=cfg.width, eps=cfg.zca_eps, momentum=cfg.zca_momentum)
    if cfg.arch == "resnet18":
        return zca_resnet18(**kw, **({"layers": cfg.layers} if cfg.layers else {}))
    if cfg.arch == "resnet50":
        return zca_resnet50(**kw, **({"layers": cfg.layers} if cfg.layers else {}))
    if cfg.arch.startswith("covpool_"):
        if in_channels != 3:
            raise ValueError(f"covpool models take RGB images (in_channels=3), got in_channels={in_channels}")
        return CovPoolNet(cfg.arch.removeprefix("covpool_"), num_classes=num_classes,
                          reduce_dim=cfg.cov_reduce_dim, power=cfg.cov_power, normalize=cfg.cov_normalize,
                          method=cfg.method)
    raise ValueError(f"unknown arch {cfg.arch!r}; expected resnet18, resnet50, covpool_resnet18, "
                     "covpool_resnet50 or covpool_alexnet")


def find_zca_layers(model: nn.Module) -> list[nn.Module]:
    """All ZCA layers (``wct.nn.ZCANorm2d`` or :class:`PIZCANorm2d`) of a model, in module order."""
    return [m for m in model.modules() if isinstance(m, ZCANorm2d)]
