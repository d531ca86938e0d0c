"""Microphone input behind a fake input stream (no sound card needed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from polywake.runtime.microphone import Microphone, MicrophoneError, microphone_chunks

pytestmark = pytest.mark.timeout(30)


class FakeStream:
    """Plays ``audio`` like sounddevice.InputStream.read: (frames, channels) blocks."""

    def __init__(self, audio: np.ndarray, samplerate: float = 16000, channels: int = 1,
                 overflow_every: int = 0) -> None:
        self.audio = audio
        self.samplerate = samplerate
        self.channels = channels
        self.pos = 0
        self.reads = 0
        self.overflow_every = overflow_every
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True

    def read(self, frames: int):
        assert self.started
        out = np.zeros((frames, self.channels), np.float32)
        got = self.audio[self.pos:self.pos + frames]
        out[: got.size] = got[:, None]
        self.pos += frames
        self.reads += 1
        return out, bool(self.overflow_every and self.reads % self.overflow_every == 0)


def test_chunks_at_16k_mono():
    audio = np.linspace(-1, 1, 16000, dtype=np.float32)
    stream = FakeStream(audio, channels=2)
    with Microphone(stream_factory=lambda dev, block: stream) as mic:
        got = mic.record(0.5)
    assert got.shape == (8000,) and np.allclose(got, audio[:8000])
    assert stream.closed and not stream.started


def test_device_at_48k_is_resampled():
    t = np.arange(48000 * 2) / 48000
    audio = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    stream = FakeStream(audio, samplerate=48000)
    gen = microphone_chunks(chunk_s=0.08, stream_factory=lambda dev, block: stream)
    chunks = [next(gen) for _ in range(20)]
    gen.close()
    x = np.concatenate(chunks)
    assert stream.closed
    assert 1.5 * 16000 - 200 < x.size <= 1.6 * 16000
    spec = np.abs(np.fft.rfft(x[2000:]))
    assert np.fft.rfftfreq(x.size - 2000, 1 / 16000)[np.argmax(spec)] == pytest.approx(1000, abs=5)


def test_overflow_is_logged(caplog):
    stream = FakeStream(np.zeros(16000, np.float32), overflow_every=2)
    with Microphone(stream_factory=lambda dev, block: stream) as mic:
        mic.record(0.5)
    assert mic.overflows >= 2
    assert sum("overflow" in r.getMessage() for r in caplog.records) == 1  # rate-limited


def test_missing_portaudio_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(MicrophoneError, match="PortAudio"), Microphone():
        pass


def test_read_without_open_is_an_error():
    with pytest.raises(MicrophoneError, match="not open"):
        Microphone(stream_factory=lambda d, b: FakeStream(np.zeros(1))).read_chunk()


def test_start_failure_closes_the_stream():
    class Busy(FakeStream):
        def start(self) -> None:
            raise OSError("device busy")

    s = Busy(np.zeros(10, np.float32))
    with pytest.raises(MicrophoneError, match="device busy"), \
            Microphone(stream_factory=lambda d, b: s):
        pass
    assert s.closed
