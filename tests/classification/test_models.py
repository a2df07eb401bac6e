"""Models of the classification study: shapes, forward/backward, and the ZCA layer really in place."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from wct import linalg
from wct.classification.models import (
    METHODS,
    CifarResNet,
    CovPoolNet,
    ModelConfig,
    PIZCANorm2d,
    build_model,
    find_zca_layers,
    zca_norm,
    zca_resnet18,
    zca_resnet50,
)
from wct.nn import ZCANorm2d

AVAILABLE = [m for m in METHODS if m == "pi" or m in getattr(linalg, "SYM_POWER_BACKWARDS", linalg.BACKWARDS)
             or m in linalg.BACKWARDS or m == "spectral"]


def _group_cov(y: torch.Tensor, d: int) -> torch.Tensor:
    b, c, h, w = y.shape
    yg = y.detach().double().transpose(0, 1).reshape(c // d, d, b * h * w)
    yc = yg - yg.mean(-1, keepdim=True)
    return yc @ yc.mT / yg.shape[-1]


def test_resnet18_is_torchvision_with_cifar_stem_and_zca_after_it():
    m = zca_resnet18(num_classes=10, group_size=16, method="taylor", width=64)
    assert isinstance(m, torchvision.models.ResNet)
    assert type(m).forward is torchvision.models.ResNet.forward  # torchvision's forward, not a fork
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and m.conv1.out_channels == 64
    assert isinstance(m.maxpool, nn.Identity)
    assert isinstance(m.bn1, ZCANorm2d) and m.bn1.groups == 4 and m.bn1.backward == "taylor"
    assert find_zca_layers(m) == [m.bn1]  # the only ZCA layer; every other norm is BatchNorm2d
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == 19
    # Table II strides: 32 -> 32 (layer1) -> 16 -> 8 -> 4
    sizes = {}

    def hook(name):
        def record(mod, inputs, output):
            sizes[name] = output.shape[-1]

        return record

    for name in ("layer1", "layer2", "layer3", "layer4"):
        getattr(m, name).register_forward_hook(hook(name))
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sizes == {"layer1": 32, "layer2": 16, "layer3": 8, "layer4": 4}


def test_zca_layer_sits_between_stem_conv_and_first_block_and_whitens():
    torch.manual_seed(0)
    m = zca_resnet18(num_classes=10, in_channels=1, width=16, group_size=8, layers=(1, 1, 1, 1))
    order, outs = [], {}

    def hook(name):
        def record(mod, inputs, output):
            order.append(name)
            outs[name] = (inputs[0], output.detach().clone())  # clone: torchvision's ReLU is in place

        return record

    for name in ("conv1", "bn1", "layer1"):
        getattr(m, name).register_forward_hook(hook(name))
    m.train()
    m(torch.randn(32, 1, 8, 8)).sum().backward()
    assert order == ["conv1", "bn1", "layer1"]
    torch.testing.assert_close(outs["bn1"][0], outs["conv1"][1])  # the ZCA layer gets the stem conv's output
    cov_in = _group_cov(outs["bn1"][0], 8)
    assert (cov_in - torch.eye(8, dtype=torch.float64)).abs().max() > 0.5  # the stem output is far from white
    cov = _group_cov(outs["bn1"][1], 8)  # affine is the identity at init: the output is white
    # (up to the eps regulariser, which shrinks the smallest eigen-directions by < 1 %)
    torch.testing.assert_close(cov, torch.eye(8, dtype=torch.float64).expand(2, 8, 8), atol=1e-2, rtol=0)
    assert m.bn1.weight.grad is not None and torch.isfinite(m.conv1.weight.grad).all()


@pytest.mark.parametrize("method", AVAILABLE)
def test_every_method_trains_forward_backward(method):
    m = zca_resnet18(num_classes=10, in_channels=1, width=8, group_size=4, method=method, layers=(1, 1, 1, 1))
    out = m(torch.randn(8, 1, 8, 8))
    assert out.shape == (8, 10)
    out.logsumexp(1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert m.bn1.backward == method
    assert isinstance(m.bn1, PIZCANorm2d if method == "pi" else ZCANorm2d)


def test_pi_zca_whitens_like_zca():
    torch.manual_seed(0)
    # channel covariance with well-separated eigenvalues (1, 4, 16, 64) per group: PI converges
    q, _ = torch.linalg.qr(torch.randn(4, 4))
    mix = torch.block_diag(*[q * torch.tensor([1.0, 2.0, 4.0, 8.0])] * 2)
    x = torch.einsum("ij,bjhw->bihw", mix, torch.randn(64, 8, 4, 4)) + 1.0
    pi, ref = zca_norm(8, group_size=4, method="pi"), zca_norm(8, group_size=4, method="exact")
    y_pi, y_ref = pi(x), ref(x)
    torch.testing.assert_close(y_pi, y_ref, atol=2e-3, rtol=0)
    torch.testing.assert_close(pi.running_cov, ref.running_cov)
    pi.eval()
    ref.eval()
    torch.testing.assert_close(pi(x), ref(x), atol=2e-3, rtol=0)


def test_resnet50_tiny_forward_backward():
    m = zca_resnet50(num_classes=7, width=16, group_size=8, layers=(1, 1, 1, 1))
    assert isinstance(m.bn1, ZCANorm2d) and m.fc.in_features == 16 * 8 * 4
    out = m(torch.randn(4, 3, 16, 16))
    assert out.shape == (4, 7)
    out.sum().backward()
    assert torch.isfinite(m.conv1.weight.grad).all()


@pytest.mark.parametrize("backbone, size", [
    ("resnet18", 32),
    pytest.param("alexnet", 64, marks=pytest.mark.slow),  # building AlexNet's 58M-parameter classifier is slow
])
def test_covpool_net(backbone, size):
    m = CovPoolNet(backbone, num_classes=5, reduce_dim=16 if backbone == "resnet18" else None)
    out = m(torch.randn(2, 3, size, size))
    assert out.shape == (2, 5)
    out.sum().backward()
    assert m.fc.in_features == (16 * 17 // 2 if backbone == "resnet18" else 256 * 257 // 2)
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_build_model_from_config():
    m = build_model(ModelConfig(arch="resnet18", width=8, group_size=8, layers=[1, 1, 1, 1], method="clip"),
                    num_classes=3, in_channels=1)
    assert isinstance(m, CifarResNet) and m.bn1.backward == "clip" and m.bn1.groups == 1
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="group_size"):
        zca_resnet18(width=16, group_size=6)
    with pytest.raises(ValueError, match="unknown method"):
        zca_resnet18(method="svd")
    with pytest.raises(ValueError, match="unknown arch"):
        build_model(ModelConfig(arch="vgg"), num_classes=10)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"groupsize": 4})
    with pytest.raises(ValueError, match="ZCA models only"):
        CovPoolNet("resnet18", method="pi")
    with pytest.raises(ValueError, match="expected images"):
        CovPoolNet("resnet18", num_classes=2, reduce_dim=8)(torch.randn(1, 1, 64, 64))
