"""The shared acoustic backbone: a causal TCN over log-mel frames.

Log-mel frames (10 ms) -> stride 2 (20 ms) -> stride 2 (40 ms, dilated blocks) -> stride 2
(80 ms). One embedding every 80 ms from a receptive field of ~1.9 s (standard size), so a
two-word phrase like "hey samuel" fits, and streaming costs one pass per new frame: no window
is recomputed. All layers are causal, so the score at time t never waits for audio after t.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..features import N_MELS
from .layers import ConvBNReLU, ResidualBlock, split_states


@dataclass(frozen=True)
class BackboneConfig:
    n_mels: int = N_MELS
    stem_channels: int = 64
    # (channels, stride into the stage, dilations of its residual blocks)
    stages: tuple[tuple[int, int, tuple[int, ...]], ...] = (
        (64, 1, (1,)),
        (96, 2, (1, 2, 4, 8)),
        (128, 2, (1, 2)),
    )
    kernel: int = 3
    separable: bool = False
    dropout: float = 0.1
    name: str = "standard"
    extra: dict = field(default_factory=dict)

    @property
    def embed_dim(self) -> int:
        return self.stages[-1][0]

    @property
    def frames_per_step(self) -> int:
        s = 2  # the stem's stride
        for _, stride, _ in self.stages:
            s *= stride
        return s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = [[c, s, list(ds)] for c, s, ds in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BackboneConfig:
        d = dict(d)
        d["stages"] = tuple((int(c), int(s), tuple(int(x) for x in ds)) for c, s, ds in d["stages"])
        return cls(**d)


STANDARD = BackboneConfig()
# <= 50k parameters with heads, for old devices: depthwise-separable blocks, narrower.
TINY = BackboneConfig(stem_channels=32, stages=((48, 2, (1, 2, 4, 8)), (64, 2, (1, 2))),
                      separable=True, name="tiny")
CONFIGS = {"standard": STANDARD, "tiny": TINY}


class Backbone(nn.Module):
    def __init__(self, config: BackboneConfig = STANDARD) -> None:
        super().__init__()
        self.config = config
        self.input_norm = nn.BatchNorm1d(config.n_mels)
        layers: list[nn.Module] = [
            ConvBNReLU(config.n_mels, config.stem_channels, 5, stride=2)
        ]
        prev = config.stem_channels
        for ch, stride, dilations in config.stages:
            if stride != 1 or ch != prev:
                layers.append(ConvBNReLU(prev, ch, config.kernel, stride=stride))
            for d in dilations:
                layers.append(ResidualBlock(ch, config.kernel, d, config.separable,
                                            config.dropout))
            prev = ch
        self.layers = nn.ModuleList(layers)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def frames_per_step(self) -> int:
        return self.config.frames_per_step

    def receptive_field_frames(self) -> int:
        """How many past 10 ms frames can influence one embedding."""
        rf, jump = 1, 1
        for m in self.modules():
            if hasattr(m, "conv") and isinstance(m.conv, nn.Conv1d):
                k, d, s = m.conv.kernel_size[0], m.conv.dilation[0], m.conv.stride[0]
                rf += (k - 1) * d * jump
                jump *= s
        return rf

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(batch, frames, n_mels) -> (batch, frames // frames_per_step, embed_dim)."""
        x = self.input_norm(feats.transpose(1, 2))
        for layer in self.layers:
            x = layer(x)
        return x.transpose(1, 2)

    @property
    def n_states(self) -> int:
        return sum(layer.n_states for layer in self.layers)

    def init_state(self, batch: int = 1) -> list[torch.Tensor]:
        return [s for layer in self.layers for s in layer.init_state(batch)]

    def stream(self, feats: torch.Tensor, state: list[torch.Tensor]
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Next (batch, k * frames_per_step, n_mels) frames -> (batch, k, embed_dim), state."""
        x = self.input_norm(feats.transpose(1, 2))
        new_state: list[torch.Tensor] = []
        for layer, s in zip(self.layers, split_states(self.layers, state), strict=True):
            x, ns = layer.stream(x, s)
            new_state += ns
        return x.transpose(1, 2), new_state


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
