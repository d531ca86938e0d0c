"""Build training windows: a clean clip placed in a fixed-length window over real background.

Every batch is a pure function of (seed, step), so a run killed and resumed from its last
checkpoint sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio import SAMPLE_RATE
from ..features import HOP, WIN


def window_samples(steps: int, frames_per_step: int = 8) -> int:
    """Samples that give exactly ``steps * frames_per_step`` log-mel frames."""
    return (steps * frames_per_step - 1) * HOP + WIN


def trim_silence(x: np.ndarray, rel_db: float = -35.0, pad_s: float = 0.03) -> np.ndarray:
    """Cut leading/trailing silence (TTS engines add some) so the word's end is known."""
    if x.size == 0:
        return x
    frame = 160
    n = x.size // frame
    if n == 0:
        return x
    e = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    thresh = e.max() * 10 ** (rel_db / 20)
    idx = np.where(e > thresh)[0]
    if idx.size == 0:
        return x
    pad = int(pad_s * SAMPLE_RATE)
    return x[max(0, idx[0] * frame - pad): min(x.size, (idx[-1] + 1) * frame + pad)]


@dataclass
class NoiseBank:
    """Real background audio kept in memory as one long int16 array; random slices of it."""

    audio: np.ndarray  # int16

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray]) -> NoiseBank:
        parts = [np.clip(a * 32767, -32768, 32767).astype(np.int16) for a in arrays if a.size]
        return cls(np.concatenate(parts) if parts else np.zeros(SAMPLE_RATE, np.int16))

    def slice(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.audio.size <= n:
            reps = n // max(1, self.audio.size) + 1
            return np.tile(self.audio, reps)[:n].astype(np.float32) / 32767
        i = int(rng.integers(0, self.audio.size - n))
        return self.audio[i: i + n].astype(np.float32) / 32767


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-12))


def place(clip: np.ndarray, n: int, end_sample: int) -> tuple[np.ndarray, int, int]:
    """Put ``clip`` in an ``n``-sample window so that it ends at ``end_sample`` (clipped to the
    window). Returns (window, start, end) of the clip inside the window."""
    out = np.zeros(n, np.float32)
    end = int(min(max(end_sample, 1), n))
    start = end - clip.size
    src = clip
    if start < 0:
        src = clip[-start:]
        start = 0
    out[start:end] = src[: end - start]
    return out, start, end


def mix_with_noise(rng: np.random.Generator, signal: np.ndarray, noise: NoiseBank,
                   snr_db: tuple[float, float] = (0.0, 25.0), p_clean: float = 0.1,
                   level_db: tuple[float, float] = (-35.0, -12.0)) -> np.ndarray:
    """Scale the speech to a random level, add background at a random SNR and a little
    white noise (microphone self-noise), all seeded by ``rng``."""
    x = signal
    if np.any(x):
        x = x * (10 ** (rng.uniform(*level_db) / 20) / rms(x[np.abs(x) > 1e-4]))
    if rng.random() >= p_clean:
        bg = noise.slice(rng, x.size)
        target = (rms(x[np.abs(x) > 1e-4]) if np.any(x) else 10 ** (rng.uniform(-45, -20) / 20))
        snr = rng.uniform(*snr_db)
        x = x + bg * (target / rms(bg) / 10 ** (snr / 20))
    x = x + rng.standard_normal(x.size).astype(np.float32) * 10 ** (rng.uniform(-80, -55) / 20)
    return np.clip(x, -1.0, 1.0).astype(np.float32)
