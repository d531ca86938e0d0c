"""Enrollment: the level checks (pure) and the recording loop behind a fake microphone."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from polywake.errors import PolywakeError
from polywake.runtime.enroll import check_take, enroll, mic_recorder, next_index, slug, trim

pytestmark = pytest.mark.timeout(30)
R = 16000


def take(word_at: float = 1.0, word_s: float = 0.7, amp: float = 0.3, total: float = 3.0,
         noise: float = 0.002, seed: int = 0) -> np.ndarray:
    """A take: room noise with a voiced "word" (harmonic tone, syllable envelope)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(total * R)) * noise
    a, b = int(word_at * R), int(min(total, word_at + word_s) * R)
    t = np.arange(b - a) / R
    env = np.sin(np.pi * np.arange(b - a) / max(1, b - a)) ** 0.3
    x[a:b] += amp * env * (np.sin(2 * np.pi * 180 * t) + 0.5 * np.sin(2 * np.pi * 360 * t)) / 1.5
    return x.astype(np.float32)


def test_good_take_passes_and_finds_the_word():
    r = check_take(take())
    assert r.ok, r.problems
    assert r.speech_start_s == pytest.approx(1.0, abs=0.08)
    assert r.speech_end_s == pytest.approx(1.7, abs=0.08)
    assert -16 < r.peak_dbfs < -9 and r.noise_dbfs < -45
    cut = trim(take(), r)
    assert cut.size == pytest.approx((r.speech_s + 0.6) * R, abs=2)


@pytest.mark.parametrize(("audio", "code"), [
    (np.zeros(3 * R, np.float32), "silent"),
    (take(amp=0.012, noise=0.0002), "too_quiet"),
    (np.clip(take(amp=3.0), -1.0, 1.0), "clipped"),
    (take(amp=0.0, noise=0.05), "no_speech"),
    (take(word_at=0.3, word_s=2.5, total=3.5), "too_long"),
    (take(word_s=0.1), "too_short"),
    (take(word_at=0.0), "cut_off_start"),
    (take(word_at=2.6, word_s=0.7), "cut_off_end"),
])
def test_bad_takes_are_explained(audio, code):
    r = check_take(audio)
    assert not r.ok and code in r.codes, (r.codes, r.problems)
    assert len(r.problems) == len(r.codes)


def test_check_is_pure():
    x = take(seed=3)
    y = x.copy()
    assert check_take(x) == check_take(y)
    assert np.array_equal(x, y)


class FakeMic:
    """Each opened stream plays the next take."""

    def __init__(self, takes: list[np.ndarray]) -> None:
        self.takes = list(takes)
        self.opened = 0

    def factory(self, device, blocksize):
        self.opened += 1
        audio = self.takes.pop(0)
        mic = self

        class Stream:
            samplerate = 16000
            pos = 0

            def start(self):
                pass

            def stop(self):
                pass

            def close(self):
                mic.closed = True

            def read(self, frames):
                out = np.zeros((frames, 1), np.float32)
                got = audio[self.pos:self.pos + frames]
                out[: got.size, 0] = got
                self.pos += frames
                return out, False

        return Stream()


def test_enroll_retries_bad_takes_and_saves_good_ones(tmp_path):
    (tmp_path / "hey_jarvis-01.wav").write_bytes(b"")  # an earlier session's file
    mic = FakeMic([take(seed=1), np.zeros(3 * R, np.float32), take(seed=2),
                   np.clip(take(amp=3.0), -1, 1), take(seed=4)])
    said: list[str] = []
    asked: list[str] = []
    paths = enroll("Hey Jarvis", tmp_path, 3, record=mic_recorder(stream_factory=mic.factory),
                   ask=asked.append, say=said.append)
    assert [p.name for p in paths] == ["hey_jarvis-02.wav", "hey_jarvis-03.wav",
                                       "hey_jarvis-04.wav"]
    assert mic.opened == 5 and len(asked) == 5
    assert sum(s.startswith("  again:") for s in said) == 2
    assert any("no sound at all" in s for s in said) and any("clipped" in s for s in said)
    for p in paths:
        data, rate = sf.read(p)
        assert rate == 16000 and 0.9 < data.size / R < 1.5
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_enroll_gives_up_and_needs_a_terminal(tmp_path):
    mic = FakeMic([np.zeros(3 * R, np.float32)] * 4)
    with pytest.raises(PolywakeError, match="gave up after 2 takes"):
        enroll("alexa", tmp_path, 1, record=mic_recorder(stream_factory=mic.factory),
               ask=None, say=lambda s: None, max_attempts=2)

    def no_tty(prompt):
        raise EOFError

    with pytest.raises(PolywakeError, match="--no-wait"):
        enroll("alexa", tmp_path, 1, record=lambda s: take(), ask=no_tty, say=lambda s: None)


def test_names():
    assert slug("Hey, Jarvis!") == "hey_jarvis"
    with pytest.raises(PolywakeError):
        slug("!!!")


def test_next_index(tmp_path):
    assert next_index(tmp_path, "alexa") == 1
    for n in ("alexa-03.wav", "alexa-x.wav", "alexa_b-09.wav"):
        (tmp_path / n).write_bytes(b"")
    assert next_index(tmp_path, "alexa") == 4
