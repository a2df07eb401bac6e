"""Tests of wct.nn: module output == functional output, drop-in use, running statistics."""

from __future__ import annotations

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
