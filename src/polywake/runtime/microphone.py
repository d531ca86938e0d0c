"""Microphone input as the same chunk iterator as files and stdin: 16 kHz mono float32 arrays.

sounddevice (PortAudio) is imported only when a microphone is opened, so files and stdin work
on machines without PortAudio. The stream is injectable (``stream_factory``) so tests and
enrollment run against a fake device. Devices that refuse 16 kHz are opened at their own rate
and resampled with soxr.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Protocol

import numpy as np
import soxr

from ..audio import SAMPLE_RATE
from ..errors import PolywakeError

log = logging.getLogger(__name__)


class MicrophoneError(PolywakeError):
    """No usable microphone (PortAudio missing, no device, device busy)."""


class InputStream(Protocol):
    """The part of ``sounddevice.InputStream`` we use (blocking reads)."""

    samplerate: float

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...

    def read(self, frames: int) -> tuple[np.ndarray, bool]: ...


# (device, blocksize at 16 kHz) -> an unstarted stream
StreamFactory = Callable[[int | str | None, int], InputStream]


def _sounddevice():
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        # OSError: the module is there but libportaudio is not.
        raise MicrophoneError(
            f"microphone input needs sounddevice and PortAudio ({e}); install them with "
            f"`pip install sounddevice` and `apt-get install libportaudio2` (`polywake listen -` "
            f"reads raw PCM from stdin without them)") from None
    return sd


def sounddevice_stream(device: int | str | None, blocksize: int) -> InputStream:
    sd = _sounddevice()
    try:
        return sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32",
                              blocksize=blocksize, device=device)
    except sd.PortAudioError as first:
        # Many USB/HDMI devices only do 44.1/48 kHz: open at the device's rate, resample later.
        try:
            rate = float(sd.query_devices(device, "input")["default_samplerate"])
            block = max(1, int(round(blocksize * rate / SAMPLE_RATE)))
            return sd.InputStream(samplerate=rate, channels=1, dtype="float32",
                                  blocksize=block, device=device)
        except (sd.PortAudioError, ValueError) as e:
            raise MicrophoneError(f"cannot open input device {device!r}: {first}; {e}"
                                  ) from None


def list_devices() -> str:
    return str(_sounddevice().query_devices())


class Microphone:
    """``with Microphone() as mic: for chunk in mic.chunks(): ...``"""

    def __init__(self, device: int | str | None = None, chunk_s: float = 0.08,
                 stream_factory: StreamFactory | None = None) -> None:
        self.device = device
        self.chunk = max(1, int(round(chunk_s * SAMPLE_RATE)))
        self._factory = stream_factory or sounddevice_stream
        self._stream: InputStream | None = None
        self._resampler: soxr.ResampleStream | None = None
        self._frames = self.chunk
        self.overflows = 0
        self._last_overflow_log = 0.0

    def __enter__(self) -> Microphone:
        stream = self._factory(self.device, self.chunk)
        rate = float(stream.samplerate)
        if rate != SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
            self._frames = max(1, int(round(self.chunk * rate / SAMPLE_RATE)))
        try:
            stream.start()
        except Exception as e:
            stream.close()
            raise MicrophoneError(f"cannot start input device {self.device!r}: {e}") from None
        self._stream = stream
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()

    def read_chunk(self) -> np.ndarray:
        """Block until the next ``chunk_s`` of audio; 16 kHz mono float32."""
        if self._stream is None:
            raise MicrophoneError("microphone is not open (use it in a `with` block)")
        data, overflowed = self._stream.read(self._frames)
        if overflowed:
            # We fell behind and the device dropped audio; say so, but not 12 times a second.
            self.overflows += 1
            now = time.monotonic()
            if now - self._last_overflow_log > 5.0:
                log.warning("microphone overflow: audio was dropped (%d times so far); "
                            "the machine is too busy", self.overflows)
                self._last_overflow_log = now
        a = np.asarray(data, np.float32)
        x = a.mean(axis=1) if a.ndim == 2 else a.reshape(-1)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        return np.ascontiguousarray(x, np.float32)

    def chunks(self, max_seconds: float | None = None) -> Iterator[np.ndarray]:
        got = 0
        limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
        while limit is None or got < limit:
            x = self.read_chunk()
            if limit is not None:
                x = x[: limit - got]
            got += x.size
            if x.size:
                yield x

    def record(self, seconds: float) -> np.ndarray:
        parts = list(self.chunks(seconds))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def microphone_chunks(device: int | str | None = None, chunk_s: float = 0.08,
                      stream_factory: StreamFactory | None = None) -> Iterator[np.ndarray]:
    """Endless 16 kHz mono chunks from a microphone (stop by closing the generator)."""
    with Microphone(device, chunk_s, stream_factory) as mic:
        yield from mic.chunks()
