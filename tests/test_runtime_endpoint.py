"""End-pointing: the decision on speech flags, the energy end-pointer, the default choice."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from polywake.runtime import endpoint
from polywake.runtime.endpoint import Endpointing, EnergyEndPointer, VadEndPointer

pytestmark = pytest.mark.timeout(30)

F = 0.03  # frame seconds


def flags(*runs: tuple[bool, float]) -> np.ndarray:
    return np.concatenate([np.full(round(s / F), v, bool) for v, s in runs])


def run(ep: Endpointing, f: np.ndarray) -> tuple[str | None, float]:
    for i, x in enumerate(f):
        r = ep.update(np.array([x]))
        if r:
            return r, (i + 1) * F
    return None, len(f) * F


def test_request_ends_after_silence_following_speech():
    ep = Endpointing(F, silence_s=0.6, speech_timeout_s=3.0)
    reason, t = run(ep, flags((True, 0.15), (False, 0.4), (True, 1.2), (False, 2.0)))
    assert reason == "silence"
    assert t == pytest.approx(0.15 + 0.4 + 1.2 + 0.6, abs=F)


def test_pause_shorter_than_silence_does_not_end_it():
    ep = Endpointing(F, silence_s=0.6)
    reason, _ = run(ep, flags((False, 0.3), (True, 0.5), (False, 0.45), (True, 0.5)))
    assert reason is None and ep.state == "talking"


def test_nothing_said_ends_with_no_speech_at_the_timeout():
    ep = Endpointing(F, silence_s=0.6, speech_timeout_s=2.0)
    reason, t = run(ep, flags((False, 5.0)))
    assert reason == "no_speech" and t == pytest.approx(2.0, abs=F)
    # A click (shorter than min_speech_s) is not a request either.
    ep = Endpointing(F, silence_s=0.6, speech_timeout_s=2.0)
    assert run(ep, flags((False, 0.5), (True, 0.06), (False, 3.0)))[0] == "no_speech"


def test_speech_straight_after_the_wake_word_counts_as_the_request():
    ep = Endpointing(F, silence_s=0.6, speech_timeout_s=1.0)
    reason, t = run(ep, flags((True, 2.5), (False, 1.0)))
    assert reason == "silence" and t == pytest.approx(3.1, abs=F)


def tone(seconds: float, amp: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def test_energy_end_pointer_flags_loud_frames_and_learns_the_floor():
    rng = np.random.default_rng(0)
    quiet = (rng.standard_normal(16000) * 0.003).astype(np.float32)   # ~ -50 dBFS room
    x = np.concatenate([quiet, tone(0.5, 0.3), quiet])
    ep = EnergyEndPointer()
    out = np.concatenate([ep.process(x[i:i + 333]) for i in range(0, x.size, 333)])
    assert out.size == x.size // 480
    t = (np.flatnonzero(out) + 0.5) * ep.frame_seconds
    assert t.min() == pytest.approx(1.0, abs=0.05) and t.max() == pytest.approx(1.5, abs=0.05)
    # A steady loud fan becomes background within the floor window.
    ep.reset()
    fan = (rng.standard_normal(16000 * 8) * 0.05).astype(np.float32)
    flags_ = ep.process(fan)
    assert not flags_[-50:].any()
    # Digital silence is never speech.
    ep.reset()
    assert not ep.process(np.zeros(16000, np.float32)).any()


def test_default_end_pointer_falls_back_to_energy_without_polywake_vad(monkeypatch):
    monkeypatch.setitem(sys.modules, "polywake.vad", None)
    assert isinstance(endpoint.default_endpointer(), EnergyEndPointer)


def test_default_end_pointer_wraps_voice_activity(monkeypatch):
    class FakeVA:
        frame_seconds = 0.032
        made = 0

        def __init__(self, backend="auto"):
            FakeVA.made += 1
            self.backend = backend

        def process(self, chunk):
            return np.abs(chunk[: chunk.size // 512 * 512]).reshape(-1, 512).max(axis=1) > 0.1

    mod = types.ModuleType("polywake.vad")
    mod.VoiceActivity = FakeVA
    monkeypatch.setitem(sys.modules, "polywake.vad", mod)
    ep = endpoint.default_endpointer()
    assert isinstance(ep, VadEndPointer) and ep.frame_seconds == 0.032
    assert list(ep.process(np.r_[np.zeros(512), np.ones(512)].astype(np.float32))) == [False,
                                                                                      True]
    ep.reset()  # no reset() on the VAD: a fresh one is made
    assert FakeVA.made == 2

    class Broken:
        def __init__(self, backend="auto"):
            raise RuntimeError("no backend")

    mod.VoiceActivity = Broken
    assert isinstance(endpoint.default_endpointer(), EnergyEndPointer)
