"""Request end-pointing: when has the user finished speaking after the wake word?

Two parts with one job each:

* an :class:`EndPointer` turns audio into per-frame speech flags. The default wraps
  :class:`polywake.vad.VoiceActivity`; when that module is missing (it is optional and written
  separately) or cannot start (no backend on this machine), :class:`EnergyEndPointer` takes
  over. End-pointing only has to answer "is someone still talking, close to the microphone?",
  which an adaptive energy threshold answers well enough in a room, with no model, no extra
  dependency and fully deterministic behaviour (tests rely on that).
* :class:`Endpointing` is the pure decision on those flags: skip the tail of the wake word,
  wait for the request to start, end after a run of silence (or when nothing was said).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..audio import SAMPLE_RATE

log = logging.getLogger(__name__)


@runtime_checkable
class EndPointer(Protocol):
    frame_seconds: float

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """16 kHz mono float32 samples -> one bool (speech?) per frame completed by them."""

    def reset(self) -> None:
        """Forget the stream (a new one starts)."""


class EnergyEndPointer:
    """Speech = frame energy well above the recent noise floor (and above an absolute gate).

    The floor is the minimum frame energy over the last ``floor_window_s``: speech always has
    gaps between words, so the minimum tracks the room, not the talker, and a steady fan or hum
    is learnt as background within a few seconds.
    """

    def __init__(self, frame_seconds: float = 0.03, margin_db: float = 10.0,
                 gate_dbfs: float = -55.0, floor_window_s: float = 5.0) -> None:
        self.frame_seconds = frame_seconds
        self._n = max(1, int(round(frame_seconds * SAMPLE_RATE)))
        self.margin_db = margin_db
        self.gate_dbfs = gate_dbfs
        self._window = max(1, int(round(floor_window_s / frame_seconds)))
        self.reset()

    def reset(self) -> None:
        self._rest = np.zeros(0, np.float32)
        self._i = 0
        # Monotonic deque of (frame index, energy): its head is the window minimum.
        self._mins: deque[tuple[int, float]] = deque()

    def process(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk, np.float32).reshape(-1)
        buf = np.concatenate([self._rest, x]) if self._rest.size else x
        k = buf.size // self._n
        self._rest = buf[k * self._n:].copy()
        if k == 0:
            return np.zeros(0, bool)
        frames = buf[: k * self._n].reshape(k, self._n).astype(np.float64)
        energy = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)
        flags = np.zeros(k, bool)
        for j, e in enumerate(energy):
            while self._mins and self._mins[-1][1] >= e:
                self._mins.pop()
            self._mins.append((self._i, float(e)))
            while self._mins[0][0] <= self._i - self._window:
                self._mins.popleft()
            floor = self._mins[0][1]
            flags[j] = e >= self.gate_dbfs and e >= floor + self.margin_db
            self._i += 1
        return flags


class VadEndPointer:
    """Adapts a :class:`polywake.vad.VoiceActivity` (or anything with ``process`` and
    ``frame_seconds``) to :class:`EndPointer`."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._vad = factory()
        self.frame_seconds = float(self._vad.frame_seconds)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        return np.asarray(self._vad.process(chunk), bool).reshape(-1)

    def reset(self) -> None:
        reset = getattr(self._vad, "reset", None)
        if callable(reset):
            reset()
        else:
            self._vad = self._factory()


def default_endpointer(backend: str = "auto") -> EndPointer:
    """polywake.vad's VoiceActivity when it is installed and starts, else the energy one."""
    try:
        from ..vad import VoiceActivity  # type: ignore[import-not-found]
    except ImportError as e:
        log.info("polywake.vad not available (%s); end-pointing on energy", e)
        return EnergyEndPointer()
    try:
        return VadEndPointer(lambda: VoiceActivity(backend=backend))
    except Exception as e:  # noqa: BLE001 - any VAD start failure must not stop listening
        log.warning("voice activity detector failed to start (%s); end-pointing on energy", e)
        return EnergyEndPointer()


class Endpointing:
    """Decides, from speech flags after a wake word, when the request is over.

    States: ``wake_tail`` (the wake word may still be sounding: wait for a short gap),
    ``waiting`` (for the request to start), ``talking`` (until ``silence_s`` of silence).
    :meth:`update` returns the end reason: "silence", "no_speech", or None to keep going.
    """

    def __init__(self, frame_seconds: float, silence_s: float = 0.8,
                 speech_timeout_s: float = 3.0, min_speech_s: float = 0.15,
                 wake_gap_s: float = 0.1, max_tail_s: float = 0.5) -> None:
        self.frame_seconds = frame_seconds
        self._silence = max(1, round(silence_s / frame_seconds))
        self._timeout = max(1, round(speech_timeout_s / frame_seconds))
        self._min_speech = max(1, round(min_speech_s / frame_seconds))
        self._gap = max(1, round(wake_gap_s / frame_seconds))
        # Speech running this long past the detection is the request, not the wake word.
        self._max_tail = max(1, round(max_tail_s / frame_seconds))
        self.state = "wake_tail"
        self.frames = 0
        self._run_speech = 0
        self._run_silence = 0

    def update(self, flags: np.ndarray) -> str | None:
        for f in np.asarray(flags, bool).reshape(-1):
            self.frames += 1
            if f:
                self._run_speech += 1
                self._run_silence = 0
            else:
                self._run_silence += 1
                self._run_speech = 0
            tail, waiting = self.state == "wake_tail", self.state == "waiting"
            if tail and self._run_silence >= self._gap:
                self.state = "waiting"
            elif (tail and self._run_speech >= self._max_tail) or (
                    waiting and self._run_speech >= self._min_speech):
                self.state = "talking"
            elif self.state == "talking" and self._run_silence >= self._silence:
                self.state = "done"
                return "silence"
            if self.state in ("wake_tail", "waiting") and self.frames >= self._timeout:
                self.state = "done"
                return "no_speech"
        return None
