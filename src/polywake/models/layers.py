"""Streaming-aware layers (kws_streaming style): each layer runs in two modes that agree.

* ``forward(x)``: a whole (batch, channels, time) sequence, for training.
* ``stream(x, state)``: the next block of time steps plus the layer's carried state, for
  inference; returns (y, new_state). Concatenating the blocks' outputs equals ``forward``.

A causal convolution with kernel ``k``, dilation ``d`` and stride ``s`` is left-padded by
``p = (k - 1) d + 1 - s``, so output ``t`` sees inputs up to ``t s + s - 1`` (the newest input of
its stride group) and nothing later. Streaming keeps the last ``p`` inputs as state, and a block
of ``n`` inputs (``n`` a multiple of ``s``) yields exactly ``n / s`` outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv1d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.pad = (kernel - 1) * dilation + 1 - stride
        if self.pad < 0:
            raise ValueError("causal conv needs (kernel - 1) * dilation + 1 >= stride")
        self.cin, self.stride = cin, stride
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation,
                              groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.pad, 0)))

    def init_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.cin, self.pad)

    def stream(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xx = torch.cat([state, x], dim=-1)
        return self.conv(xx), xx[..., xx.shape[-1] - self.pad:]


class ConvBNReLU(nn.Module):
    """Causal conv + batch norm + ReLU; BN folds into the conv at export."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = CausalConv1d(cin, cout, kernel, stride, dilation, groups)
        self.bn = nn.BatchNorm1d(cout)
        self.act = act

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        y = self.bn(y)
        return F.relu(y) if self.act else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._post(self.conv(x))

    @property
    def n_states(self) -> int:
        # A 1x1 (or fully strided) conv needs no memory; skipping its empty state keeps the
        # exported graph free of zero-size tensors.
        return 1 if self.conv.pad > 0 else 0

    def init_state(self, batch: int) -> list[torch.Tensor]:
        return [self.conv.init_state(batch)] if self.n_states else []

    def stream(self, x: torch.Tensor, state: list[torch.Tensor]
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.n_states:
            return self._post(self.conv.conv(x)), []
        y, s = self.conv.stream(x, state[0])
        return self._post(y), [s]


class ResidualBlock(nn.Module):
    """Two causal convs with a residual connection (TC-ResNet / TCN block).

    ``separable`` uses depthwise + pointwise convs: ~k times fewer weights, for the tiny model.
    """

    def __init__(self, channels: int, kernel: int, dilation: int, separable: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if separable:
            self.layers = nn.ModuleList([
                ConvBNReLU(channels, channels, kernel, dilation=dilation, groups=channels),
                ConvBNReLU(channels, channels, 1, act=False),
            ])
        else:
            self.layers = nn.ModuleList([
                ConvBNReLU(channels, channels, kernel, dilation=dilation),
                ConvBNReLU(channels, channels, 1, act=False),
            ])
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for layer in self.layers:
            y = layer(y)
        return F.relu(x + self.drop(y))

    @property
    def n_states(self) -> int:
        return sum(layer.n_states for layer in self.layers)

    def init_state(self, batch: int) -> list[torch.Tensor]:
        return [s for layer in self.layers for s in layer.init_state(batch)]

    def stream(self, x: torch.Tensor, state: list[torch.Tensor]
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        y, out_state = x, []
        for layer, s in zip(self.layers, split_states(self.layers, state), strict=True):
            y, ns = layer.stream(y, s)
            out_state += ns
        return F.relu(x + y), out_state


def split_states(modules, state: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Cut a flat state list into one slice per module, by each module's ``n_states``."""
    out, i = [], 0
    for m in modules:
        out.append(state[i:i + m.n_states])
        i += m.n_states
    if i != len(state):
        raise ValueError(f"expected {i} state tensors, got {len(state)}")
    return out
