from __future__ import annotations

import numpy as np
import pytest
import torch

from polywake.features import (
    HOP,
    N_MELS,
    STREAM_LEAD,
    WIN,
    StreamingLogMel,
    logmel_numpy,
    logmel_torch,
    mel_matrix,
    num_frames,
    with_lead,
)


def _stream(x: np.ndarray, sizes: list[int], lead: int = 0) -> np.ndarray:
    mel = StreamingLogMel(lead)
    outs, i = [], 0
    for s in sizes:
        outs.append(mel.process(x[i : i + s]))
        i += s
    outs.append(mel.process(x[i:]))
    return np.concatenate(outs)


@pytest.mark.parametrize("seed", range(6))
def test_streaming_equals_batch_for_random_chunkings(speechlike: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = speechlike
    # Mix of tiny (1 sample) and large chunks, as a microphone or a file reader would give.
    sizes = []
    while sum(sizes) < x.size:
        sizes.append(int(rng.choice([1, 2, 7, 159, 160, 161, 399, 1280, 4000, 16000])))
    streamed = _stream(x, sizes)
    batch = logmel_torch(torch.from_numpy(x))[0].numpy()
    assert streamed.shape == batch.shape == (num_frames(x.size), N_MELS)
    np.testing.assert_allclose(streamed, batch, atol=1e-4, rtol=0)


@pytest.mark.parametrize("seed", range(3))
def test_stream_with_lead_equals_batch_of_the_signal_with_lead(speechlike: np.ndarray,
                                                                seed: int) -> None:
    # The Detector's front end: STREAM_LEAD zeros in front of the stream.
    rng = np.random.default_rng(seed)
    x = speechlike
    sizes = []
    while sum(sizes) < x.size:
        sizes.append(int(rng.choice([1, 2, 7, 159, 160, 161, 399, 1280, 4000, 16000])))
    streamed = _stream(x, sizes, STREAM_LEAD)
    lead = with_lead(x, STREAM_LEAD)
    assert lead.size == x.size + STREAM_LEAD and not lead[:STREAM_LEAD].any()
    assert streamed.shape == (num_frames(x.size + STREAM_LEAD), N_MELS) == (x.size // HOP, N_MELS)
    np.testing.assert_allclose(streamed, logmel_torch(torch.from_numpy(lead))[0].numpy(),
                               atol=1e-4, rtol=0)
    np.testing.assert_allclose(_stream(x, [x.size], STREAM_LEAD), logmel_numpy(lead), atol=1e-5)


def test_lead_puts_frame_ends_on_hop_boundaries() -> None:
    mel = StreamingLogMel(STREAM_LEAD)
    for n in range(1, 3 * HOP + 2):  # one sample at a time: frame i completes at HOP (i + 1)
        mel.process(np.zeros(1, np.float32))
        assert mel.frames_emitted == n // HOP
    # An impulse at stream sample s shows only in frames covering [HOP i - LEAD, HOP i + HOP).
    x = np.zeros(12 * HOP, np.float32)
    s = 5 * HOP + 7
    x[s] = 1.0
    f = StreamingLogMel(STREAM_LEAD).process(x)
    hit = np.where(f.max(axis=1) > np.log(1e-6) + 1)[0]
    assert list(hit) == [i for i in range(f.shape[0])
                         if HOP * i - STREAM_LEAD <= s < HOP * i + HOP]
    with pytest.raises(ValueError, match="lead"):
        StreamingLogMel(WIN)


def test_one_big_chunk_of_ten_seconds() -> None:
    x = np.random.default_rng(0).standard_normal(160000).astype(np.float32) * 0.1
    np.testing.assert_allclose(_stream(x, [160000]), logmel_numpy(x), atol=1e-5)
    np.testing.assert_allclose(logmel_numpy(x), logmel_torch(torch.from_numpy(x))[0].numpy(),
                               atol=1e-4)


def test_frame_count_and_alignment() -> None:
    assert num_frames(WIN - 1) == 0 and num_frames(WIN) == 1 and num_frames(WIN + HOP) == 2
    # An impulse at sample s shows up only in frames whose window covers s.
    x = np.zeros(WIN + 9 * HOP, np.float32)
    s = WIN + 3 * HOP + 5
    x[s] = 1.0
    f = logmel_numpy(x)
    hit = np.where(f.max(axis=1) > np.log(1e-6) + 1)[0]
    expected = [i for i in range(f.shape[0]) if i * HOP <= s < i * HOP + WIN]
    assert list(hit) == expected


@pytest.mark.parametrize("lead", [0, STREAM_LEAD])
def test_memory_constant_over_long_stream(lead: int) -> None:
    mel = StreamingLogMel(lead)
    for _ in range(200):
        mel.process(np.zeros(1234, np.float32))
    assert mel._buf.size < WIN + HOP
    assert mel.frames_emitted == num_frames(200 * 1234 + lead)
    mel.reset()
    assert mel.frames_emitted == 0 and mel._buf.size == lead


def test_mel_filterbank_covers_band() -> None:
    fb = mel_matrix()
    assert fb.shape == (257, N_MELS) and np.all(fb.sum(axis=0) > 0)
    assert fb[0].sum() == 0  # DC carries no speech
