"""Classification benchmarks of the seed paper (Wang et al., "Robust Differentiable SVD", TPAMI 2021).

ZCA decorrelated batch norm in a CIFAR-stem ResNet (Sec. 5.1, Tables II-VI) and covariance pooling
(Sec. 5.2, Table VII), with the eigendecomposition's backward method as a switch:

- :mod:`wct.classification.models`: ``zca_resnet18``, ``zca_resnet50``, ``CovPoolNet``, ``METHODS``.
- :mod:`wct.classification.data`: bundled digits (no download), CIFAR-10/100, Tiny ImageNet, ImageNet.
- :mod:`wct.classification.train`: ``python -m wct.classification.train --config FILE.yaml``.
- :mod:`wct.classification.study`: ``python -m wct.classification.study --methods ... --group-sizes ...``.
- :mod:`wct.classification.pi`: the forward power-iteration ("PI") baseline.
"""

from wct.classification.models import (
    METHODS,
    PAPER_NAMES,
    CifarResNet,
    CovPoolNet,
    ModelConfig,
    PIZCANorm2d,
    build_model,
    zca_resnet18,
    zca_resnet50,
)

__all__ = [
    "METHODS",
    "PAPER_NAMES",
    "CifarResNet",
    "CovPoolNet",
    "ModelConfig",
    "PIZCANorm2d",
    "build_model",
    "zca_resnet18",
    "zca_resnet50",
]
