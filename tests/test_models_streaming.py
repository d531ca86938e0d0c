"""Each streaming layer, the backbone and the heads: stream(blocks) == forward(whole)."""

from __future__ import annotations

import pytest
import torch

from polywake.models.backbone import STANDARD, TINY, Backbone, count_parameters
from polywake.models.heads import WakeWordHeads
from polywake.models.layers import CausalConv1d, ConvBNReLU, ResidualBlock


def _stream_all(module, x: torch.Tensor, block: int, state) -> torch.Tensor:
    outs = []
    for i in range(0, x.shape[-1], block):
        y, state = module.stream(x[..., i : i + block], state)
        outs.append(y)
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize("k,s,d", [(3, 1, 1), (3, 2, 1), (5, 2, 1), (3, 1, 4), (2, 2, 1), (1, 1, 1)])
def test_causal_conv_stream_equals_forward(k: int, s: int, d: int) -> None:
    torch.manual_seed(0)
    layer = CausalConv1d(4, 6, k, stride=s, dilation=d)
    x = torch.randn(2, 4, 48)
    for block in (s, 2 * s, 8):
        got = _stream_all(layer, x, block, layer.init_state(2))
        torch.testing.assert_close(got, layer(x), atol=1e-5, rtol=1e-5)


def test_causal_conv_is_causal() -> None:
    layer = CausalConv1d(3, 3, 3, stride=2, dilation=2)
    x = torch.randn(1, 3, 32)
    y = layer(x)
    x2 = x.clone()
    x2[..., 20:] += 10.0
    y2 = layer(x2)
    # output t sees inputs up to 2t+1: outputs 0..9 see inputs <= 19 only
    torch.testing.assert_close(y[..., :10], y2[..., :10])
    assert not torch.allclose(y[..., 10:], y2[..., 10:])


@pytest.mark.parametrize("separable", [False, True])
def test_blocks_stream_equal_forward(separable: bool) -> None:
    torch.manual_seed(0)
    for m in (ConvBNReLU(8, 8, 3, stride=2), ResidualBlock(8, 3, 4, separable)):
        m.eval()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(2, 8, 40)
        got = _stream_all(m, x, 4, m.init_state(2))
        torch.testing.assert_close(got, m(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", [STANDARD, TINY], ids=["standard", "tiny"])
def test_backbone_stream_equals_forward(config) -> None:
    torch.manual_seed(0)
    bb = Backbone(config).eval()
    fps = bb.frames_per_step
    assert fps == 8
    feats = torch.randn(2, fps * 30, 40)
    with torch.no_grad():
        whole = bb(feats)
        state, outs = bb.init_state(2), []
        for i in range(0, feats.shape[1], fps * 3):
            y, state = bb.stream(feats[:, i : i + fps * 3], state)
            outs.append(y)
    assert whole.shape == (2, 30, config.embed_dim)
    torch.testing.assert_close(torch.cat(outs, 1), whole, atol=1e-4, rtol=1e-4)


def test_sizes_and_receptive_field() -> None:
    std, tiny = Backbone(STANDARD), Backbone(TINY)
    assert 100_000 <= count_parameters(std) <= 500_000
    heads = WakeWordHeads(TINY.embed_dim, ["a", "b", "c", "d", "e"], hidden=8)
    assert count_parameters(tiny) + count_parameters(heads) <= 50_000
    # >= 1.5 s of context so "hey samuel" (~1.2 s) fits in one embedding's view
    assert std.receptive_field_frames() >= 150


def test_heads_stream_add_remove_independent() -> None:
    torch.manual_seed(0)
    heads = WakeWordHeads(16, ["alexa", "echo"])
    emb = torch.randn(1, 20, 16)
    before = heads(emb).detach()
    heads.add_word("hey samuel")
    after = heads(emb).detach()
    torch.testing.assert_close(after[..., :2], before)  # adding a word leaves others untouched
    heads.remove_word("alexa")
    torch.testing.assert_close(heads(emb).detach()[..., 0], before[..., 1])
    assert heads.words == ["echo", "hey samuel"]
    got = _stream_all_heads(heads, emb)
    torch.testing.assert_close(got, heads(emb).detach(), atol=1e-5, rtol=1e-5)


def _stream_all_heads(heads: WakeWordHeads, emb: torch.Tensor) -> torch.Tensor:
    state, outs = heads.init_state(1), []
    with torch.no_grad():
        for i in range(0, emb.shape[1], 3):
            y, state = heads.stream(emb[:, i : i + 3], state)
            outs.append(y)
    return torch.cat(outs, 1)


def test_embed_stream_is_the_detectors_stream() -> None:
    """train.windows.embed_stream (benchmarks' long files): the backbone on the log-mel of the
    signal with the Detector's STREAM_LEAD zeros in front, one step per 1280 samples."""
    import numpy as np

    from polywake.features import STREAM_LEAD, logmel_torch, with_lead
    from polywake.train.windows import embed_stream

    torch.manual_seed(0)
    bb = Backbone(TINY).eval()
    x = (0.1 * np.random.default_rng(0).standard_normal(5 * 16000 + 700)).astype(np.float32)
    got = embed_stream(bb, x, chunk_s=0.77)
    with torch.no_grad():
        want = bb(logmel_torch(torch.from_numpy(with_lead(x, STREAM_LEAD))))[0].numpy()
    assert got.shape == want.shape == (x.size // 1280, bb.embed_dim)
    np.testing.assert_allclose(got.astype(np.float32), want, atol=2e-3, rtol=2e-3)  # float16
