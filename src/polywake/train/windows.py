"""Wake-word training windows -> frozen-backbone embeddings, with per-step labels.

A window is 2.56 s (32 steps of 80 ms). A positive window holds the wake word ending at a
known sample, often inside running speech (speech before it, a request right after it:
"alexa, what time is it"), over real background noise, sometimes reverberated. Labels per step
and per word: 1 = the word has just ended (a detection is wanted), 0 = must stay quiet,
-1 = don't care (the last part of the word itself, and well after it).

Embeddings are computed once by the frozen backbone and cached, so training heads, adding a
word or mining hard negatives costs seconds, not a pass of the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import fftconvolve

from ..audio import SAMPLE_RATE
from ..features import HOP, STREAM_LEAD, WIN, logmel_torch
from ..models.backbone import Backbone
from .mixing import NoiseBank, mix_with_noise, place, window_samples

STEPS = 32
N_SAMPLES = window_samples(STEPS)
# The step convention of embed_stream: 1 = frames from sample 0 (steps ended at
# 1280 (i + 1) + 240), 2 = the Detector's STREAM_LEAD zeros in front (steps end at
# 1280 (i + 1)). Part of the key of any cache of embed_stream's output.
STREAM_VERSION = 2
POS_AFTER_S = 0.6   # steps up to this long after the word's end should fire
IGNORE_BEFORE_S = 0.25  # the end of the word itself: no label


def step_end_samples(steps: int = STEPS, frames_per_step: int = 8) -> np.ndarray:
    """Sample index up to which each step's embedding has heard audio."""
    i = np.arange(steps)
    return ((i + 1) * frames_per_step - 1) * HOP + WIN


@dataclass
class Windows:
    """Audio windows and what is in them (before embedding)."""

    audio: np.ndarray          # (N, N_SAMPLES) float32
    word: np.ndarray           # (N,) int: index of the wake word in the window, -1 for none
    end: np.ndarray            # (N,) int: sample where the word ends (or -1)
    dur: np.ndarray            # (N,) int: samples the word lasts (or 0)


def positive_window(rng: np.random.Generator, clip: np.ndarray, speech: list[np.ndarray],
                    noise: NoiseBank, rirs: np.ndarray | None) -> tuple[np.ndarray, int, int]:
    """The wake word ending at a random time in [0.9 s, 2.2 s], with running speech around it
    half of the time, reverb 30% of the time, over real background."""
    n = N_SAMPLES
    end = int(rng.uniform(0.9, 2.2) * SAMPLE_RATE)
    end = max(end, min(clip.size, n))
    w, start, end = place(clip, n, end)
    level = np.sqrt(np.mean(clip ** 2) + 1e-12)
    if speech and rng.random() < 0.5:  # a request right after the wake word
        s = speech[int(rng.integers(len(speech)))]
        gap = int(rng.uniform(0.05, 0.4) * SAMPLE_RATE)
        seg = s[: max(0, n - end - gap)]
        if seg.size:
            sl = np.sqrt(np.mean(s ** 2) + 1e-12)
            w[end + gap: end + gap + seg.size] += seg * (level / sl) * rng.uniform(0.5, 1.2)
    if speech and rng.random() < 0.3 and start > 0.4 * SAMPLE_RATE:  # talk before it
        s = speech[int(rng.integers(len(speech)))]
        gap = int(rng.uniform(0.2, 0.8) * SAMPLE_RATE)
        seg_end = max(0, start - gap)
        seg = s[-seg_end:] if seg_end else s[:0]
        if seg.size:
            sl = np.sqrt(np.mean(s ** 2) + 1e-12)
            w[seg_end - seg.size: seg_end] += seg * (level / sl) * rng.uniform(0.5, 1.2)
    if rirs is not None and rng.random() < 0.3:
        rir = rirs[int(rng.integers(len(rirs)))]
        w = fftconvolve(w, rir)[:n].astype(np.float32)
    return mix_with_noise(rng, w, noise, snr_db=(0.0, 25.0), p_clean=0.05), end, end - start


def negative_window(rng: np.random.Generator, clip: np.ndarray, noise: NoiseBank,
                    rirs: np.ndarray | None) -> np.ndarray:
    n = N_SAMPLES
    end = int(rng.integers(min(clip.size, n), n + 1))
    w, _, _ = place(clip, n, end)
    if rirs is not None and rng.random() < 0.3:
        rir = rirs[int(rng.integers(len(rirs)))]
        w = fftconvolve(w, rir)[:n].astype(np.float32)
    return mix_with_noise(rng, w, noise, snr_db=(0.0, 25.0), p_clean=0.05)


def embed(backbone: Backbone, audio: np.ndarray, batch: int = 64,
          progress: bool = True) -> np.ndarray:
    """(N, samples) -> (N, steps, dim) float16 embeddings from the frozen backbone."""
    from tqdm import tqdm

    backbone.eval()
    out = []
    it = range(0, audio.shape[0], batch)
    with torch.no_grad():
        for i in tqdm(it, desc="embedding", unit="batch", disable=not progress, mininterval=5):
            x = torch.from_numpy(np.ascontiguousarray(audio[i: i + batch]))
            out.append(backbone(logmel_torch(x)).numpy().astype(np.float16))
    return np.concatenate(out) if out else np.zeros((0, STEPS, backbone.embed_dim), np.float16)


def embed_stream(backbone: Backbone, audio: np.ndarray, chunk_s: float = 60.0) -> np.ndarray:
    """Embeddings of a long recording, exactly as the Detector's stream computes them (the
    causal state carried across chunks, the stream starting with STREAM_LEAD zero samples, so
    step ``i`` has heard samples up to ``(i + 1) * 1280``), as (steps, dim) float16.

    A cache of these embeddings must include :data:`STREAM_VERSION` in its key."""
    backbone.eval()
    fps = backbone.frames_per_step
    state = backbone.init_state(1)
    from ..features import StreamingLogMel

    mel = StreamingLogMel(STREAM_LEAD)
    pending = np.zeros((0, backbone.config.n_mels), np.float32)
    outs = []
    n = int(chunk_s * SAMPLE_RATE)
    with torch.no_grad():
        for i in range(0, audio.size, n):
            f = mel.process(audio[i: i + n])
            pending = np.concatenate([pending, f])
            k = pending.shape[0] // fps
            if k:
                e, state = backbone.stream(torch.from_numpy(pending[: k * fps])[None], state)
                outs.append(e[0].numpy().astype(np.float16))
                pending = pending[k * fps:]
    return np.concatenate(outs) if outs else np.zeros((0, backbone.embed_dim), np.float16)


def window_labels(windows: Windows, n_words: int) -> np.ndarray:
    """(N, STEPS, n_words) int8 labels: 1 fire, 0 quiet, -1 don't care."""
    ends = step_end_samples()
    n = windows.audio.shape[0] if windows.audio.size else windows.word.size
    lab = np.zeros((n, STEPS, n_words), np.int8)
    for i in range(n):
        w = int(windows.word[i])
        if w < 0:
            continue
        e = int(windows.end[i])
        ignore = min(IGNORE_BEFORE_S * SAMPLE_RATE, 0.5 * windows.dur[i])
        col = np.zeros(STEPS, np.int8)
        col[(ends >= e - ignore)] = -1
        col[(ends >= e) & (ends <= e + POS_AFTER_S * SAMPLE_RATE)] = 1
        lab[i, :, w] = col
    return lab
