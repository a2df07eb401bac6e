"""Tests of wct.nn: module output == functional output, drop-in use, running statistics."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from wct import functional as F
from wct import nn as wnn

D64 = torch.float64


def test_group_wct_module_equals_function():
    x, s = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 5, 5)
    m = wnn.GroupWCT(16, groups=4, alpha=0.7, eps=1e-4)
    assert torch.equal(m(x, s), F.wct(x, s, groups=4, alpha=0.7, eps=1e-4))
    a = torch.tensor([0.2, 1.0])
    assert torch.equal(m(x, s, alpha=a), F.wct(x, s, groups=4, alpha=a, eps=1e-4))
    with pytest.raises(ValueError, match="16"):
        m(torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8))
    with pytest.raises(ValueError):
        wnn.GroupWCT(10, groups=4)


# ---------------------------------------------------------------------------------------------- ZCANorm2d
def _as_matrix(x):
    """(B, C, H, W) -> (B*H*W, C) data matrix (rows = observations)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


@pytest.mark.parametrize("eps", [1e-6, 0.1])
def test_zcanorm_matches_kornia_zca_float64(eps):
    kornia = pytest.importorskip("kornia")
    x = (torch.randn(6, 3, 3, 5, dtype=D64) @ torch.randn(5, 5, dtype=D64)).permute(0, 3, 1, 2) + 1.5
    m = wnn.ZCANorm2d(5, eps=eps, eps_mode="absolute", affine=False).double().train()
    y = m(x)
    zca = kornia.enhance.ZCAWhitening(eps=eps, unbiased=False, compute_inv=True)
    xm = _as_matrix(x)
    ref = zca(xm, include_fit=True)
    assert torch.allclose(_as_matrix(y), ref, atol=1e-10)
    assert torch.allclose(_as_matrix(m.inverse(y)), zca.inverse_transform(ref), atol=1e-10)
    assert torch.allclose(F.zca_whiten(x, eps=eps, eps_mode="absolute"), y, atol=1e-12)


@pytest.mark.parametrize("eps_mode", ["absolute", "trace"])
def test_zcanorm_round_trip_is_exact_with_eps(eps_mode):
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]], dtype=D64).view(4, 2, 1, 1)
    m = wnn.ZCANorm2d(2, eps=0.1, eps_mode=eps_mode).double().train()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([2.0, 0.5]))
        m.bias.copy_(torch.tensor([0.3, -1.0]))
    y = m(x)
    assert not torch.allclose(y, x)
    assert torch.allclose(m.inverse(y), x, atol=1e-12)  # X, not 0.93 X
    m.eval()  # running statistics: inverse of the eval transform is exact as well
    assert torch.allclose(m.inverse(m(x)), x, atol=1e-12)


def test_zcanorm_module_equals_function_with_groups_and_affine():
    x = torch.randn(4, 12, 5, 5)
    m = wnn.ZCANorm2d(12, groups=3).train()
    with torch.no_grad():
        m.weight.uniform_(0.5, 2)
        m.bias.normal_()
    ref = F.zca_whiten(x, groups=3) * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)
    assert torch.allclose(m(x), ref, atol=1e-6)
    assert wnn.ZCANorm2d(12, group_size=4).groups == 3
    assert wnn.ZCANorm2d(2, group_size=4).groups == 1


@pytest.mark.parametrize("track", ["covariance", "whitening"])
def test_zcanorm_running_statistics_and_eval(track):
    torch.manual_seed(1)
    mix = torch.randn(6, 6, dtype=D64)
    m = wnn.ZCANorm2d(6, groups=2, momentum=None, track=track, affine=False).double()
    batches = [(torch.randn(8, 4, 4, 6, dtype=D64) @ mix).permute(0, 3, 1, 2) + 2 for _ in range(3)]
    for xb in batches:
        m.train()(xb)
    assert int(m.num_batches_tracked) == 3
    allx = torch.cat(batches)
    xg = allx.permute(1, 0, 2, 3).reshape(2, 3, -1)
    assert torch.allclose(m.running_mean, xg.mean(-1).reshape(-1), atol=1e-12)  # equal batch sizes
    m.eval()
    if track == "covariance":
        covs = [F.zca_whiten(b, groups=2, return_stats=True)[2] for b in batches]
        n = batches[0].numel() // 6
        assert torch.allclose(m.running_cov, sum(covs) / 3 * n / (n - 1), atol=1e-12)
    else:  # cumulative average of the batch whitening matrices (Sigma + eps tr(Sigma)/d I)^(-1/2), oracle
        ws = []
        for b in batches:
            cov = F.zca_whiten(b, groups=2, return_stats=True)[2]
            reg = cov + 1e-5 * cov.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] * torch.eye(3, dtype=D64)
            lam, v = torch.linalg.eigh(reg)
            ws.append((v * lam.rsqrt().unsqueeze(-2)) @ v.mT)
        assert torch.allclose(m.running_whitening, sum(ws) / 3, atol=1e-10)
    # eval whitens new data drawn from the same distribution to ~identity covariance
    xt = (torch.randn(64, 4, 4, 6, dtype=D64) @ mix).permute(0, 3, 1, 2) + 2
    y = m(xt)
    c = F.zca_whiten(y, groups=2, return_stats=True)[2]
    assert (c - torch.eye(3, dtype=D64)).abs().max() < 0.35
    assert torch.equal(m(xt), y)  # cached eval matrix gives the same result


def test_zcanorm_momentum_update_rule():
    m = wnn.ZCANorm2d(3, momentum=0.1, eps_mode="absolute").double()
    x = torch.randn(5, 3, 2, 2, dtype=D64) + 1
    m(x)
    _, mean, cov = F.zca_whiten(x, return_stats=True)
    assert torch.allclose(m.running_mean, 0.1 * mean, atol=1e-12)
    n = 20
    assert torch.allclose(m.running_cov[0], 0.9 * torch.eye(3, dtype=D64) + 0.1 * cov[0] * n / (n - 1))


@pytest.mark.parametrize("track", ["covariance", "whitening"])
@pytest.mark.parametrize(
    "case", ["constant", "tiny_trace", "rank_deficient"]
)
def test_zcanorm_degenerate_batches_are_finite(case, track):
    if case == "constant":
        x = torch.full((8, 16, 4, 4), 0.7)
    elif case == "tiny_trace":  # covariance trace ~1e-8 in float32
        x = torch.randn(8, 16, 4, 4) * (1e-8 / 16) ** 0.5 + 0.3
    else:  # fewer positions (2*1*1) than channels (16)
        x = torch.randn(2, 16, 1, 1)
    x.requires_grad_(True)
    m = wnn.ZCANorm2d(16, groups=2, track=track)
    y = m(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    for buf in m.buffers():
        assert torch.isfinite(buf).all()
    m.eval()
    assert torch.isfinite(m(x)).all()
    if case == "tiny_trace":  # scale-invariant eps: tiny features are whitened like large ones
        ref = wnn.ZCANorm2d(16, groups=2, track=track)(x.detach() * 1e4)
        assert torch.allclose(y, ref, atol=1e-3)


def test_zcanorm_errors():
    with pytest.raises(ValueError, match="C"):
        wnn.ZCANorm2d(10, groups=4)
    with pytest.raises(ValueError, match="track"):
        wnn.ZCANorm2d(4, track="x")
    m = wnn.ZCANorm2d(4)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        m(torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match="more than 1 value"):
        m(torch.randn(1, 4, 1, 1))
    bad = torch.randn(2, 4, 3, 3)
    bad[1, 2, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"\(2, 4, 3, 3\) contains NaN or inf"):
        m(bad)
    m.eval()  # running statistics: like BatchNorm2d, non-finite values propagate instead of raising
    y = m(bad)
    assert not torch.isfinite(y).all() and torch.isfinite(y[0]).all()
    with pytest.raises(ValueError):
        wnn.ZCANorm2d(6, group_size=4)


@pytest.fixture
def one_thread():
    """Single-threaded BLAS for the 512 x 512 eigh: on a loaded 2-core runner, 2 threads are ~10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_zcanorm_is_a_torchvision_norm_layer(one_thread):
    from torchvision.models import resnet

    # the ResNet-18 widths (64..512) with one block per stage, ZCANorm2d with its defaults as norm_layer
    net = resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=5, norm_layer=wnn.ZCANorm2d)
    assert isinstance(net.bn1, wnn.ZCANorm2d) and isinstance(net.layer4[0].bn2, wnn.ZCANorm2d)
    x = torch.randn(2, 3, 32, 32)
    out = net(x)
    out.sum().backward()
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    net.eval()
    assert torch.isfinite(net(x)).all()
    sd = net.state_dict()
    assert "bn1.running_cov" in sd and sd["layer4.0.bn1.running_cov"].shape == (1, 512, 512)
    grouped = resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], norm_layer=partial(wnn.ZCANorm2d, group_size=16))
    assert grouped.layer4[0].bn1.groups == 32


# ---------------------------------------------------------------------------------------------- distributed
_DIST_WORKER = r'''
import sys, torch, torch.distributed as dist, torch.multiprocessing as mp
from wct import nn as wnn

def run(rank, world, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    x = torch.randn(8, 6, 3, 3, dtype=torch.float64) * 2 + 1
    g = torch.randn(8, 6, 3, 3, dtype=torch.float64)
    m = wnn.ZCANorm2d(6, groups=2).double()
    half = slice(4 * rank, 4 * rank + 4)
    xl = x[half].clone().requires_grad_(True)
    y = m(xl)
    (y * g[half]).sum().backward()
    torch.save({"y": y.detach(), "xgrad": xl.grad, "wgrad": m.weight.grad, "rm": m.running_mean,
                "rc": m.running_cov}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()

if __name__ == "__main__":
    out = sys.argv[1]
    mp.spawn(run, args=(2, f"file://{out}/store", out), nprocs=2, join=True)
'''


@pytest.mark.slow  # two spawned processes: ~40 s on a loaded 2-core runner
def test_zcanorm_distributed_averages_statistics_and_gradients(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(_DIST_WORKER)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.manual_seed(0)
    x = (torch.randn(8, 6, 3, 3, dtype=D64) * 2 + 1).requires_grad_(True)
    g = torch.randn(8, 6, 3, 3, dtype=D64)
    m = wnn.ZCANorm2d(6, groups=2).double()
    y = m(x)
    (y * g).sum().backward()
    assert torch.allclose(torch.cat([r["y"] for r in res]), y, atol=1e-10)
    assert torch.allclose(torch.cat([r["xgrad"] for r in res]), x.grad, atol=1e-10)
    assert torch.allclose(res[0]["wgrad"] + res[1]["wgrad"], m.weight.grad, atol=1e-10)
    for r in res:
        assert torch.allclose(r["rm"], m.running_mean, atol=1e-12)
        assert torch.allclose(r["rc"], m.running_cov, atol=1e-12)


def test_zcanorm_gradcheck_train_mode_float64():
    m = wnn.ZCANorm2d(4, groups=2, backward="exact").double()
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 4, 2, 2, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))
    assert torch.autograd.gradcheck(lambda t: m.inverse(t), (x,))


def test_zcanorm_eval_cache_follows_buffers_and_state_dict():
    a, b = wnn.ZCANorm2d(4), wnn.ZCANorm2d(4)
    a(torch.randn(8, 4, 3, 3) * 3)
    a.eval()
    b.eval()
    x = torch.randn(2, 4, 3, 3)
    yb = b(x)  # running statistics at their initial values: identity whitening
    assert torch.allclose(yb, x, atol=1e-4)
    b.load_state_dict(a.state_dict())
    assert torch.allclose(b(x), a(x)) and not torch.allclose(b(x), yb)
    with torch.inference_mode():  # buffers without a version counter: no cache, same result
        d = wnn.ZCANorm2d(4).eval()
        d.load_state_dict(a.state_dict())
        assert torch.allclose(d(x), a(x))
    c = wnn.ZCANorm2d(4, track_running_stats=False).eval()
    assert torch.allclose(c(x), F.zca_whiten(x), atol=1e-6)  # batch statistics also in eval


@pytest.mark.parametrize("track", ["covariance", "whitening"])
def test_zcanorm_inverse_eval_and_top_k(track):
    x = torch.randn(6, 6, 3, 3, dtype=D64)
    m = wnn.ZCANorm2d(6, groups=3, track=track, momentum=1.0).double()
    m(x)
    m.eval()
    assert torch.allclose(m.inverse(m(x)), x, atol=1e-8)
    # top-k: the inverse is the projection on the kept components (rank 2 of each 3-channel group)
    mk = wnn.ZCANorm2d(6, groups=2, k=2, affine=False).double()
    y = mk(x)
    proj = mk.inverse(y)
    assert torch.allclose(mk.inverse(mk(proj)), proj, atol=1e-8)
    assert not torch.allclose(proj, x, atol=1e-3)


def test_cov_pool_module_equals_function():
    x = torch.randn(2, 6, 5, 5)
    m = wnn.CovPool(power=0.5, normalize="trace")
    assert torch.equal(m(x), F.cov_pool(x, power=0.5, normalize="trace"))
    assert m(x).shape == (2, wnn.CovPool.output_dim(6))
    with pytest.raises(ValueError):
        wnn.CovPool(normalize="x")
    with pytest.raises(ValueError, match="power"):
        wnn.CovPool(power=float("nan"))


def test_zcanorm_and_covpool_under_autocast_keep_float32():
    # behaviour under mixed precision: float32 in, float32 out, same values as without autocast (the float64
    # internals are what protects them; autocast only lowers float32 matmuls)
    x = torch.randn(4, 6, 5, 5)
    m, p = wnn.ZCANorm2d(6, groups=2), wnn.CovPool()
    ref_m, ref_p = m(x), p(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, z = m(x), p(x)
    assert y.dtype == z.dtype == torch.float32
    assert torch.allclose(y, ref_m, atol=1e-6) and torch.allclose(z, ref_p, atol=1e-6)
