"""Detector: chunking invariance, pre-roll buffer, constant memory, VAD gate, API."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from polywake.audio import SAMPLE_RATE, AudioError, write_audio
from polywake.decisions import DecisionEngine
from polywake.detect import AudioRing, Detection, Detector
from polywake.features import N_MELS, STREAM_LEAD, logmel_numpy, with_lead
from polywake.scoring import ConstantScorer

STEP_SAMPLES = 1280


def bump(n: int, peak: int, height: float, width: float = 2.0) -> np.ndarray:
    return height * np.exp(-0.5 * ((np.arange(n) - peak) / width) ** 2)


def chunked(det: Detector, audio: np.ndarray, rng: np.random.Generator | None,
            max_chunk: int = 5000) -> list[Detection]:
    """Feed ``audio`` in random chunk sizes (0 included), or in one piece if rng is None."""
    if rng is None:
        return det.process(audio) + det.flush()
    out: list[Detection] = []
    i = 0
    while i < audio.size:
        n = int(rng.integers(0, max_chunk))
        out += det.process(audio[i:i + n])
        i += n
    return out + det.flush()


def scripted(n_steps: int) -> ConstantScorer:
    script = np.zeros((n_steps, 3), np.float32)
    script[:, 0] = bump(n_steps, 20, 0.9)
    script[:, 1] = bump(n_steps, 60, 0.8) + bump(n_steps, 90, 0.95)
    script[:, 2] = bump(n_steps, 61, 0.75)  # same utterance as word 1 at step 60
    return ConstantScorer(["alexa", "computer", "echo"], script)


CARD = {"per_word": {"alexa": {"duration_s": 0.6, "latency_s": 0.2},
                     "computer": {"duration_s": 0.6, "latency_s": 0.25},
                     "echo": {"duration_s": 0.4, "latency_s": 0.2}}}


def test_streaming_equals_one_shot_for_random_chunkings(rng: np.random.Generator) -> None:
    n_steps = 120
    audio = (0.01 * rng.standard_normal(n_steps * STEP_SAMPLES + 500)).astype(np.float32)
    ref_det = Detector(scripted(n_steps), card=CARD)
    ref = chunked(ref_det, audio, None)
    assert [d.word for d in ref] == ["alexa", "computer", "computer"]
    assert [s.word for s in ref_det.suppressed] == ["echo"]
    for seed in range(5):
        det = Detector(scripted(n_steps), card=CARD)
        got = chunked(det, audio, np.random.default_rng(seed))
        assert got == ref
        assert list(det.suppressed) == list(ref_det.suppressed)


class MelEcho:
    """A 'model' whose score row is its step's 8 log-mel frames, flattened: Detector.scores
    shows exactly which frames each step got."""

    frames_per_step = 8

    def __init__(self) -> None:
        self.words = [f"f{i}" for i in range(8 * N_MELS)]

    def new_state(self) -> None:
        return None

    def step(self, frames: np.ndarray, state: None) -> tuple[np.ndarray, None]:
        return frames.reshape(-1, 8 * N_MELS), None


def test_steps_end_on_80_ms_boundaries_and_equal_offline_log_mel(rng: np.random.Generator
                                                                  ) -> None:
    audio = (0.1 * rng.standard_normal(20 * STEP_SAMPLES + 777)).astype(np.float32)
    offline = logmel_numpy(with_lead(audio, STREAM_LEAD))[:160].reshape(20, 8 * N_MELS)
    for seed in range(3):
        det = Detector(MelEcho(), preroll_s=0.0)
        r, i, rows = np.random.default_rng(seed), 0, []
        while i < audio.size:
            n = int(r.integers(0, 3000))
            got = det.scores(audio[i:i + n])
            i += n
            rows.append(got)
            # Step s is complete exactly when stream sample 1280 (s + 1) has arrived.
            assert det._steps == min(i, audio.size) // STEP_SAMPLES
        got = np.concatenate(rows)
        assert got.shape == offline.shape
        np.testing.assert_allclose(got, offline, atol=1e-5, rtol=0)
    assert [det.step_end_sample(s) for s in range(3)] == [1280, 2560, 3840]
    assert det.step_end_time(0) == pytest.approx(0.08)


def test_detection_timing_and_fields() -> None:
    n_steps = 60
    det = Detector(scripted(n_steps), card=CARD, smoothing="none")
    found = chunked(det, np.zeros(n_steps * STEP_SAMPLES, np.float32), None)
    d = found[0]
    assert d.word == "alexa"
    assert d.peak_s == pytest.approx(det.step_end_time(20))
    assert d.end_s == pytest.approx(det.step_end_time(20) - 0.2)
    assert d.start_s == pytest.approx(det.step_end_time(20) - 0.2 - 0.6)
    assert d.decided_s > d.peak_s
    assert set(d.to_dict()) >= {"word", "score", "start_s", "end_s"}
    assert Detection("echo", 0.9, 1.0, 1.5) == Detection("echo", 0.9, 1.0, 1.5)  # old form


def test_reset_restarts_the_stream() -> None:
    n_steps = 60
    det = Detector(scripted(n_steps), card=CARD)
    audio = np.zeros(n_steps * STEP_SAMPLES, np.float32)
    first = chunked(det, audio, None)
    det.reset()
    assert det.samples_seen == 0 and not det.suppressed
    assert chunked(det, audio, None) == first


# -- pre-roll ---------------------------------------------------------------------------------
def test_preroll_contents_and_timing_are_exact(rng: np.random.Generator) -> None:
    det = Detector(ConstantScorer(["echo"]), preroll_s=1.5)
    total = 7 * SAMPLE_RATE + 123
    ramp = np.arange(total, dtype=np.float32)  # sample i has value i: exact in float32
    i = 0
    while i < total:
        n = int(rng.integers(0, 7000))
        det.process(ramp[i:i + n])
        i += n
        if det.samples_seen > 2 * SAMPLE_RATE:
            t = det.now_s - 1.0
            got = det.audio_since(t)
            start = round(t * SAMPLE_RATE)
            np.testing.assert_array_equal(got, ramp[start:det.samples_seen])
    assert det.preroll_start_s == pytest.approx((total - 1.5 * SAMPLE_RATE) / SAMPLE_RATE)
    # Older than the buffer: what is held, from its oldest sample.
    np.testing.assert_array_equal(det.audio_since(0.0), ramp[total - int(1.5 * SAMPLE_RATE):])
    assert det.audio_since(det.now_s + 1).size == 0
    d = Detection("echo", 0.9, start_s=6.0, end_s=6.5)
    np.testing.assert_array_equal(det.audio_for(d), ramp[6 * SAMPLE_RATE:])
    np.testing.assert_array_equal(det.audio_for(d, pad_s=0.25),
                                  ramp[6 * SAMPLE_RATE - SAMPLE_RATE // 4:])


def test_audio_ring_wraps_with_large_writes() -> None:
    ring = AudioRing(10)
    ring.write(np.arange(25, dtype=np.float32))
    np.testing.assert_array_equal(ring.since(0), np.arange(15, 25))
    ring.write(np.arange(25, 28, dtype=np.float32))
    np.testing.assert_array_equal(ring.since(20), [20, 21, 22, 23, 24, 25, 26, 27])
    empty = AudioRing(0)
    empty.write(np.ones(5, np.float32))
    assert empty.since(0).size == 0 and empty.total == 5


class PeriodicScorer:
    """Scores a bump every 3 s for one word and a weaker one for another, for ever."""

    words = ["alexa", "amazon"]
    frames_per_step = 8

    def new_state(self) -> int:
        return 0

    def step(self, frames: np.ndarray, state: int) -> tuple[np.ndarray, int]:
        k = frames.shape[0] // 8
        t = np.arange(state, state + k) % 37
        out = np.zeros((k, 2), np.float32)
        out[:, 0] = np.exp(-0.5 * ((t - 18) / 2.0) ** 2)
        out[:, 1] = 0.8 * np.exp(-0.5 * ((t - 18) / 2.0) ** 2)
        return out, state + k


def test_memory_is_constant_on_an_endless_stream(rng: np.random.Generator) -> None:
    det = Detector(PeriodicScorer(), preroll_s=3.0, suppressed_max=10)
    chunk = (0.01 * rng.standard_normal(4000)).astype(np.float32)
    fired = 0

    def feed(seconds: float) -> None:
        nonlocal fired
        for _ in range(int(seconds * SAMPLE_RATE / chunk.size)):
            fired += len(det.process(chunk))

    feed(30)
    tracemalloc.start()
    feed(30)
    gc.collect()  # numpy's sliding-window views leave cyclic garbage until a collection
    base, _ = tracemalloc.get_traced_memory()
    feed(240)
    gc.collect()
    now, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert fired > 80  # it kept firing (and suppressing) the whole time
    assert len(det.suppressed) == det.suppressed.maxlen
    assert now - base < 16 * 1024, f"grew by {now - base} bytes"
    assert det._pending.shape[0] < det.scorer.frames_per_step


# -- API compatibility -------------------------------------------------------------------------
def test_old_constructor_and_validation() -> None:
    det = Detector(ConstantScorer(["a", "b"]), {"a": 0.7}, 2.0)
    assert det.thresholds == {"a": 0.7, "b": 0.5} and det.refractory_s == 2.0
    with pytest.raises(ValueError, match="unknown words"):
        Detector(ConstantScorer(["a"]), {"zz": 0.5})
    with pytest.raises(AudioError):
        det.process(np.zeros((10, 2), np.float32))
    with pytest.raises(AudioError):
        det.process(np.array([0.0, np.nan], np.float32))
    rows = det.scores(np.zeros(STEP_SAMPLES * 3 + 240, np.int16))
    assert rows.shape == (3, 2)


def test_sensitivity_uses_the_scorers_card() -> None:
    sc = ConstantScorer(["echo"])
    sc.card = {"per_word": {"echo": {"threshold": 0.6, "calibration": {
        "thresholds": [0.2, 0.5, 0.8], "fa_per_hour": [10.0, 1.0, 0.01]}}}}
    assert Detector(sc).thresholds["echo"] == 0.6
    det = Detector(sc, sensitivity=0.5)
    assert isinstance(det.engine, DecisionEngine)
    assert det.thresholds["echo"] == pytest.approx(0.5 + 0.3 * 0.25)  # 0.316 FA/h on the curve


def test_thresholds_and_sensitivity_can_change_while_streaming() -> None:
    script = np.zeros((40, 1), np.float32)
    script[10:14, 0] = [0.5, 0.6, 0.6, 0.5]
    script[30:34, 0] = [0.5, 0.6, 0.6, 0.5]
    det = Detector(ConstantScorer(["echo"], script), smoothing="none")
    det.thresholds["echo"] = 0.7  # too high for the first bump
    first = det.process(np.zeros(20 * STEP_SAMPLES, np.float32))
    assert first == []
    assert det.set_sensitivity(0.5) == {"echo": 0.5}  # uncalibrated: the card threshold
    assert [d.word for d in det.process(np.zeros(20 * STEP_SAMPLES, np.float32))] == ["echo"]


def test_iter_file_flushes_at_the_end(tmp_path) -> None:
    n_steps = 40
    script = np.zeros((n_steps, 1), np.float32)
    script[-2:, 0] = [0.6, 0.7]  # still rising when the file ends
    path = write_audio(tmp_path / "x.wav", np.zeros(n_steps * STEP_SAMPLES + 240, np.float32))
    det = Detector(ConstantScorer(["echo"], script), smoothing="none")
    assert [d.word for d in det.iter_file(path)] == ["echo"]


# -- VAD gate ---------------------------------------------------------------------------------
class ScriptedVad:
    """Speech flags from known intervals, flagged ``delay_s`` late (as real VADs are), in
    10 ms frames; chunking-independent like the real ones."""

    frame_seconds = 0.01

    def __init__(self, intervals: list[tuple[float, float]], delay_s: float = 0.2) -> None:
        self.intervals = intervals
        self.delay_s = delay_s
        self.reset()

    def reset(self) -> None:
        self._samples = 0
        self._frames = 0

    def process(self, chunk: np.ndarray) -> np.ndarray:
        self._samples += len(chunk)
        n = self._samples // 160 - self._frames
        t = (self._frames + np.arange(n) + 1) * 0.01
        self._frames += n
        return np.array([any(a + self.delay_s <= x <= b + self.delay_s
                             for a, b in self.intervals) for x in t], bool)


class BurstScorer:
    """A 'model' with memory: fires after hearing a loud burst of >= 0.5 s that has ended.

    Dropping the burst's first 0.2 s (a gate without look-back) makes it miss the word."""

    words = ["burst"]
    frames_per_step = 8

    def new_state(self) -> np.ndarray:
        return np.zeros(150, bool)  # loudness of the last 1.5 s of frames

    def step(self, frames: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = frames.shape[0] // 8
        out = np.zeros((k, 1), np.float32)
        for j in range(k):
            loud = frames[j * 8:(j + 1) * 8].mean(axis=1) > -6.0
            state = np.concatenate([state[8:], loud])
            ended = not state[-10:].any()
            out[j, 0] = 0.95 if ended and state.sum() >= 48 else 0.0
        return out, state


def burst_audio(rng: np.random.Generator, seconds: float = 12.0,
                bursts: tuple[float, ...] = (5.0,)) -> np.ndarray:
    x = (1e-4 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
    for b in bursts:
        s = int(b * SAMPLE_RATE)
        x[s:s + int(0.55 * SAMPLE_RATE)] += 0.3 * rng.standard_normal(int(0.55 * SAMPLE_RATE))
    return x


def test_vad_gate_keeps_the_word_at_speech_onset(rng: np.random.Generator) -> None:
    audio = burst_audio(rng, bursts=(5.0, 9.0))
    speech = [(5.0, 5.55), (9.0, 9.55)]
    ungated = Detector(BurstScorer())
    ref = chunked(ungated, audio, None)
    assert [d.word for d in ref] == ["burst", "burst"]
    gated = Detector(BurstScorer(), vad=ScriptedVad(speech), vad_lookback_s=0.5)
    got = chunked(gated, audio, None)
    assert got == ref
    st = gated.gate_stats
    assert st["steps_scored"] < 0.45 * st["steps"]  # most of the 12 s was skipped
    assert gated.was_scored(4.9, 6.5) and not gated.was_scored(2.0, 3.0)
    # Without the look-back the first 0.2 s of the word never reaches the model.
    blind = Detector(BurstScorer(), vad=ScriptedVad(speech), vad_lookback_s=0.0)
    assert chunked(blind, audio, None) == []


def test_vad_gate_is_chunking_invariant(rng: np.random.Generator) -> None:
    audio = burst_audio(rng, bursts=(3.0, 7.0))
    speech = [(3.0, 3.55), (7.0, 7.55)]
    ref_det = Detector(BurstScorer(), vad=ScriptedVad(speech))
    ref = chunked(ref_det, audio, None)
    assert len(ref) == 2
    for seed in range(3):
        det = Detector(BurstScorer(), vad=ScriptedVad(speech))
        assert chunked(det, audio, np.random.default_rng(seed)) == ref
        assert det.gate_stats == ref_det.gate_stats


def test_vad_gate_with_the_energy_backend(rng: np.random.Generator) -> None:
    audio = burst_audio(rng, bursts=(4.0,))
    ref = chunked(Detector(BurstScorer()), audio, None)
    det = Detector(BurstScorer(), vad="energy")
    assert chunked(det, audio, np.random.default_rng(0)) == ref
    assert det.gate_stats["steps_scored"] < 0.5 * det.gate_stats["steps"]


def test_gated_rows_are_zero_while_skipped() -> None:
    det = Detector(ConstantScorer(["a"], np.full((500, 1), 0.3, np.float32)),
                   vad=ScriptedVad([(2.0, 2.5)], delay_s=0.0))
    rows = det.scores(np.zeros(4 * SAMPLE_RATE, np.float32))
    t = np.array([det.step_end_time(i) for i in range(rows.shape[0])])
    assert np.all(rows[t < 1.99] == 0.0)
    assert np.all(rows[(t > 2.1) & (t < 3.4)] == pytest.approx(0.3))
    assert np.all(rows[t > 3.7] == 0.0)  # 1 s hangover after 2.5 s, then skipped again
