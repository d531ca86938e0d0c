"""A torch :class:`~polywake.models.wakeword.WakeWordModel` -> the numpy section of a ``.pwk``
(the layer program and its tensors; the format is in :mod:`polywake.numpy_step`).

Every BatchNorm is folded here, in float64, so the runtime only multiplies and adds: the input
norm becomes a per-mel ``scale_shift``, each conv's BN its weight and bias. The module tree is
walked as it is (ConvBNReLU, ResidualBlock, WakeWordHeads, TemplateMatcher); anything else is
refused, so a new layer type cannot be exported as silently wrong numbers. A model with matched
words runs two branches side by side (``parallel``): the heads on the main backbone, the
matcher on its own.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .models.backbone import Backbone
from .models.heads import WakeWordHeads
from .models.layers import ConvBNReLU, ResidualBlock
from .models.matcher import TemplateMatcher


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm (eval) as y = x * scale + shift, float64."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    var = bn.running_var.detach().double().numpy()
    mean = bn.running_mean.detach().double().numpy()
    scale = 1.0 / np.sqrt(var + bn.eps)
    shift = -mean * scale
    if bn.affine:
        gamma, beta = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
        scale, shift = scale * gamma, shift * gamma + beta
    return scale, shift


class _Writer:
    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}

    def put(self, name: str, value: np.ndarray) -> str:
        self.tensors[name] = np.ascontiguousarray(value, dtype=np.float32)
        return name

    def conv_bn(self, name: str, m: ConvBNReLU) -> dict:
        conv = m.conv.conv
        if conv.padding != (0,) or conv.padding_mode != "zeros":
            raise ValueError(f"{name}: the causal padding must come from CausalConv1d alone")
        w = conv.weight.detach().double().numpy()
        b = conv.bias.detach().double().numpy() if conv.bias is not None \
            else np.zeros(w.shape[0])
        scale, shift = _bn_affine(m.bn)
        return {"op": "conv", "weight": self.put(f"{name}.weight", w * scale[:, None, None]),
                "bias": self.put(f"{name}.bias", b * scale + shift),
                "stride": int(conv.stride[0]), "dilation": int(conv.dilation[0]),
                "groups": int(conv.groups), "relu": bool(m.act)}

    def layer(self, name: str, m: nn.Module) -> dict:
        if isinstance(m, ConvBNReLU):
            return self.conv_bn(name, m)
        if isinstance(m, ResidualBlock):
            return {"op": "residual",
                    "body": [self.conv_bn(f"{name}.{i}", c) for i, c in enumerate(m.layers)]}
        raise TypeError(f"{name}: no numpy export for {type(m).__name__}")

    def heads(self, h: WakeWordHeads) -> list[dict]:
        # The fused form the ONNX graph runs: one conv over the last `context` embeddings
        # for all words, then one grouped 1x1 conv (a hidden layer of its own per word).
        w1, b1, w2, b2 = (t.detach().double().numpy() for t in h.fused())
        return [
            {"op": "conv", "weight": self.put("heads.w1", w1), "bias": self.put("heads.b1", b1),
             "stride": 1, "dilation": 1, "groups": 1, "relu": True},
            {"op": "conv", "weight": self.put("heads.w2", w2), "bias": self.put("heads.b2", b2),
             "stride": 1, "dilation": 1, "groups": len(h.words), "relu": False},
            {"op": "sigmoid"},
        ]


    def backbone(self, prefix: str, b: Backbone) -> list[dict]:
        scale, shift = _bn_affine(b.input_norm)
        program = [{"op": "scale_shift", "scale": self.put(f"{prefix}input_norm.scale", scale),
                    "shift": self.put(f"{prefix}input_norm.shift", shift)}]
        return program + [self.layer(f"{prefix}backbone.{i}", m) for i, m in enumerate(b.layers)]

    def matcher(self, m: TemplateMatcher) -> list[dict]:
        weight, bias = (t.detach().double().numpy() for t in m.fused())
        w, n, seq, k = weight.shape
        metric = {"gram": self.put("matcher.gram", m.gram.double().numpy()),
                  "lin": self.put("matcher.lin", m.lin.double().numpy()),
                  "const": self.put("matcher.const", m.const.double().numpy().reshape(1)),
                  "words": int(w)}
        if seq == 1:  # max-cosine scoring, the op every older .pwk holds
            return self.backbone("matcher.", m.backbone) + [{
                "op": "cosine_max", **metric,
                "templates": self.put("matcher.templates", weight[:, :, 0, :-1].reshape(
                    w * n, k - 1)),
                "offsets": self.put("matcher.offsets", weight[:, :, 0, -1].reshape(w * n))}]
        return self.backbone("matcher.", m.backbone) + [{
            "op": "cosine_seq", **metric,
            "weight": self.put("matcher.weight", weight.reshape(w * n, seq, k)),
            "bias": self.put("matcher.bias", bias.reshape(w * n)),
            **({"pool": self.put("matcher.pool", m.pool_weights().double().numpy())}
               if m.pool > 1 else {})}, {"op": "sigmoid"}]


def numpy_section(model) -> tuple[list[dict], dict[str, np.ndarray]]:
    """-> (program, tensors) of a WakeWordModel in eval mode, for ``write_pwk``."""
    if model.training:
        raise ValueError("export needs the model in eval mode (BatchNorm running statistics)")
    w = _Writer()
    with torch.no_grad():
        program = w.backbone("", model.backbone) + w.heads(model.heads)
        if model.matcher is not None:
            program = [{"op": "parallel", "branches": [program, w.matcher(model.matcher)]}]
    return program, w.tensors
