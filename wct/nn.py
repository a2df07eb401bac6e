"""Modules for the layers of :mod:`wct.functional`: :class:`GroupWCT`, :class:`ZCANorm2d`, :class:`CovPool`."""

from __future__ import annotations

import torch
from torch import nn

from wct import functional as F

__all__ = ["GroupWCT"]


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
