"""Log-mel front end: one definition, two implementations that agree.

* :class:`StreamingLogMel` (numpy) takes chunks of any size and returns the frames that became
  complete; it is what the detector runs on device, with no torch.
* :func:`logmel_torch` (torch) computes the same frames for a batch; training uses it.

Choices: 25 ms Hann window, 10 ms hop, 512-point FFT, 40 HTK mel bands from 60 to 7600 Hz,
natural log with a 1e-6 floor. 40 bands is the usual KWS choice (DS-CNN, TC-ResNet, Speech
Commands baselines): enough resolution for phonemes, and small enough that the first layer
stays cheap. No centre padding, so frame ``i`` covers samples ``[160 i, 160 i + 400)`` in both
paths and streaming never has to look ahead. The Detector's stream starts with ``STREAM_LEAD``
(240) zero samples, so there its frames, and its 80 ms steps, end on chunk boundaries.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from .audio import SAMPLE_RATE

if TYPE_CHECKING:
    import torch

WIN = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 40
F_MIN, F_MAX = 60.0, 7600.0
LOG_FLOOR = 1e-6
FRAMES_PER_SECOND = SAMPLE_RATE // HOP
# Zero samples the detector's stream starts with (StreamingLogMel(lead=STREAM_LEAD)): frame i
# then ends at stream sample HOP (i + 1), and an 80 ms step at a multiple of 1280 samples.
STREAM_LEAD = WIN - HOP


def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """(N_FFT // 2 + 1, N_MELS) triangular HTK mel filterbank, float32."""
    n_bins = N_FFT // 2 + 1
    freqs = np.linspace(0.0, SAMPLE_RATE / 2.0, n_bins)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), N_MELS + 2))
    lower, centre, upper = mel_points[:-2], mel_points[1:-1], mel_points[2:]
    up = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    down = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    fb = np.maximum(0.0, np.minimum(up, down))
    fb.flags.writeable = False
    return fb.astype(np.float32)


@lru_cache(maxsize=1)
def hann_window() -> np.ndarray:
    # Periodic Hann, as torch.hann_window(periodic=True), so both paths use the same numbers.
    w = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)).astype(np.float32)
    w.flags.writeable = False
    return w


def num_frames(n_samples: int) -> int:
    return 0 if n_samples < WIN else 1 + (n_samples - WIN) // HOP


def _rfft_plain(frames: np.ndarray) -> np.ndarray:
    return np.fft.rfft(frames, n=N_FFT, axis=-1)


def _pick_rfft():
    """numpy's real FFT of N_FFT points along the last axis, called as the ufunc that
    ``np.fft.rfft`` wraps (a private module of numpy 2): a few microseconds less per 80 ms of
    streaming. Used only if it exists and gives bit-identical results here; else the public
    function. Chosen at the first transform, so importing this module imports no numpy.fft."""
    try:
        from numpy.fft import _pocketfft_umath as pfu

        ufunc = pfu.rfft_n_even
        axes = [(-1,), (), (-1,)]

        def rfft(frames: np.ndarray) -> np.ndarray:
            out = np.empty(frames.shape[:-1] + (N_FFT // 2 + 1,), np.complex64)
            return ufunc(frames, 1, axes=axes, out=out)

        probe = np.sin(0.01 * np.arange(3 * WIN) ** 1.5).astype(np.float32).reshape(3, WIN)
        if np.array_equal(rfft(probe), _rfft_plain(probe)):
            return rfft
    except Exception:  # noqa: BLE001 - any change in numpy's internals: the public call
        pass
    return _rfft_plain


_rfft = None


def logmel_numpy(samples: np.ndarray) -> np.ndarray:
    """Whole-signal log-mel in numpy: (num_frames, N_MELS) float32."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    n = num_frames(x.shape[0])
    if n == 0:
        return np.zeros((0, N_MELS), np.float32)
    # Frame i = x[HOP i : HOP i + WIN], as a strided view (no copy).
    frames = np.ndarray((n, WIN), np.float32, x, 0, (HOP * 4, 4))
    global _rfft
    if _rfft is None:
        _rfft = _pick_rfft()
    spec = _rfft(frames * hann_window())  # complex64 (numpy 2)
    # |X|^2 = re * re + im * im, in place on the spectrum's own memory.
    v = spec.view(np.float32 if spec.dtype == np.complex64 else np.float64)
    np.multiply(v, v, out=v)
    power = (v[:, 0::2] + v[:, 1::2]).astype(np.float32, copy=False)
    mel = power @ mel_matrix()
    mel += np.float32(LOG_FLOOR)
    return np.log(mel, out=mel)


class StreamingLogMel:
    """Chunked log-mel: feed any number of samples, get the frames completed so far.

    ``lead``: zero samples the stream starts with (default 0). With ``lead = STREAM_LEAD``
    (``WIN - HOP``, what the :class:`~polywake.detect.Detector` uses) frame ``i`` covers stream
    samples ``[HOP i - STREAM_LEAD, HOP i + HOP)``, so it is complete exactly when sample
    ``HOP (i + 1)`` arrives: the frames, and the 80 ms steps made of them, end on the
    boundaries of 10 ms (and 80 ms) chunks. The frames equal ``logmel_numpy`` (and
    ``logmel_torch``) of the signal with ``lead`` zeros in front (:func:`with_lead`).

    Keeps only the last ``WIN - HOP`` samples (plus a partial hop) between calls, so memory is
    constant for streams of any length.
    """

    def __init__(self, lead: int = 0) -> None:
        if not 0 <= int(lead) < WIN:
            raise ValueError(f"lead must be in 0..{WIN - 1} samples, got {lead}")
        self.lead = int(lead)
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(self.lead, np.float32)
        self.frames_emitted = 0

    def process(self, chunk: np.ndarray) -> np.ndarray:
        c = np.asarray(chunk, dtype=np.float32).reshape(-1)
        buf = np.concatenate((self._buf, c)) if self._buf.size else c
        n = num_frames(buf.shape[0])
        if n == 0:
            self._buf = buf.copy()
            return np.zeros((0, N_MELS), np.float32)
        out = logmel_numpy(buf[: (n - 1) * HOP + WIN])
        self._buf = buf[n * HOP:].copy()
        self.frames_emitted += n
        return out


def with_lead(samples: np.ndarray, lead: int = 0) -> np.ndarray:
    """``samples`` (float32, last axis time) with ``lead`` zeros in front: what a
    ``StreamingLogMel(lead)`` computes its frames of, so ``logmel_numpy(with_lead(x, lead))``
    (or ``logmel_torch`` of it) is the offline reference of that stream."""
    x = np.asarray(samples, dtype=np.float32)
    pad = [(0, 0)] * (x.ndim - 1) + [(int(lead), 0)]
    return np.pad(x, pad) if lead else x


def logmel_torch(samples: torch.Tensor) -> torch.Tensor:
    """Batch log-mel in torch: (batch, samples) -> (batch, num_frames, N_MELS)."""
    import torch

    if samples.dim() == 1:
        samples = samples.unsqueeze(0)
    x = samples.to(torch.float32)
    if x.shape[-1] < WIN:
        return x.new_zeros((x.shape[0], 0, N_MELS))
    frames = x.unfold(-1, WIN, HOP) * torch.from_numpy(hann_window().copy()).to(x.device)
    spec = torch.fft.rfft(frames, n=N_FFT, dim=-1)
    power = spec.real.square() + spec.imag.square()
    mel = torch.from_numpy(mel_matrix().copy()).to(x.device)
    return torch.log(power @ mel + LOG_FLOOR)
