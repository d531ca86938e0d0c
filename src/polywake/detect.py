"""Streaming detection: audio chunks -> log-mel -> scorer -> per-word decisions -> Detections.

The same :meth:`Detector.process` path serves a microphone, a file (:meth:`Detector.iter_file`)
and stdin, so what is measured on files is what runs live. Everything is driven by 80 ms steps
of the audio, never by how the audio was chunked, so any chunking gives the same detections.

Optional parts (docs/STREAMING.md):

* decisions (:mod:`polywake.decisions`): thresholds from the model card or a 0..1
  sensitivity, smoothing, hold-until-peak, longer-word containment, arbitration;
* a pre-roll ring buffer of raw audio, so a request can start at the wake word
  (:meth:`Detector.audio_since`, :meth:`Detector.audio_for`);
* a VAD gate (``vad=True``): the model skips silence, replays the last ``vad_lookback_s`` of
  features when speech starts, and runs on for ``vad_hangover_s`` after it ends.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE, AudioError, as_float_samples, iter_audio_blocks
from .decisions import DecisionEngine, Suppressed, word_cards_from_card
from .features import HOP, N_MELS, STREAM_LEAD, StreamingLogMel
from .scoring import StreamingScorer

log = logging.getLogger(__name__)
_INT16_SCALE = np.float32(1.0 / 32768.0)


@dataclass(frozen=True)
class Detection:
    """A wake word. ``start_s``/``end_s`` estimate where the word was spoken (stream seconds
    since the last reset): the score peak minus the card's ``latency_s`` is the end, minus
    ``duration_s`` more is the start. ``decided_s`` is when the event was emitted, so
    ``decided_s - end_s`` is the detector's latency."""

    word: str
    score: float
    start_s: float
    end_s: float
    peak_s: float = 0.0
    decided_s: float = 0.0
    margin: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class AudioRing:
    """The last ``capacity`` samples of a stream, in constant memory."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, int(capacity))
        self._buf = np.zeros(self.capacity, np.float32)
        self.total = 0  # samples written since reset

    def reset(self) -> None:
        self._buf[:] = 0.0
        self.total = 0

    def write(self, x: np.ndarray) -> None:
        n = x.size
        if self.capacity == 0 or n == 0:
            self.total += n
            return
        if n >= self.capacity:
            x = x[-self.capacity:]
        pos = (self.total + n - x.size) % self.capacity
        first = min(x.size, self.capacity - pos)
        self._buf[pos:pos + first] = x[:first]
        self._buf[: x.size - first] = x[first:]
        self.total += n

    @property
    def first_sample(self) -> int:
        """Index (since reset) of the oldest sample still held."""
        return max(0, self.total - self.capacity)

    def since(self, sample: int) -> np.ndarray:
        """Samples from stream index ``sample`` (clamped to what is held) up to now, a copy."""
        start = min(max(int(sample), self.first_sample), self.total)
        n = self.total - start
        if n == 0:
            return np.zeros(0, np.float32)
        pos = start % self.capacity
        if pos + n <= self.capacity:
            return self._buf[pos:pos + n].copy()
        return np.concatenate([self._buf[pos:], self._buf[: n - (self.capacity - pos)]])


class Detector:
    """One stream's detector. Cheap to create; several may share one scorer.

    ``thresholds``: per-word score threshold (overrides the card and ``sensitivity``);
    ``refractory_s``: after a word fires, it cannot fire again for this long.
    ``card``: the model card (default: ``scorer.card`` if the scorer has one), whose
    ``per_word`` entries give threshold, calibration, duration_s and latency_s.
    ``sensitivity``: 0..1 (one for all words, or per word) mapped through the card's
    calibration to an expected FA/h, then to a threshold (see :mod:`polywake.decisions`).
    ``smoothing``/``smooth_steps``: "mean", "max" or "none" over the last k score rows
    (default: the card's ``decision`` entry, else mean over 3).
    ``preroll_s``: seconds of raw audio kept for :meth:`audio_since`.
    ``vad``: False, True (``VoiceActivity("auto")``), a backend name, or a VoiceActivity-like
    object with ``process(chunk) -> bool array`` and ``frame_seconds``.
    ``decision_options``: further keyword arguments of :class:`DecisionEngine`.
    """

    def __init__(self, scorer: StreamingScorer, thresholds: dict[str, float] | None = None,
                 refractory_s: float = 1.0, *, card: Mapping[str, Any] | None = None,
                 sensitivity: float | Mapping[str, float] | None = None,
                 smoothing: str | None = None, smooth_steps: int | None = None,
                 preroll_s: float = 3.0,
                 vad: Any = False, vad_lookback_s: float = 1.0, vad_hangover_s: float = 1.0,
                 suppressed_max: int = 100, **decision_options: Any) -> None:
        self.scorer = scorer
        self.words = list(scorer.words)
        if card is None:
            card = getattr(scorer, "card", None)
        self.cards = word_cards_from_card(card, self.words)
        # The card says which smoothing its thresholds were calibrated on; deciding on another
        # would shift every operating point.
        decision = dict((card or {}).get("decision", {}))
        if smoothing is None:
            smoothing = str(decision.get("smoothing", "mean"))
        if smooth_steps is None:
            smooth_steps = int(decision.get("smooth_steps", 3))
        self.engine = DecisionEngine(
            self.cards, self.step_seconds, thresholds=thresholds, sensitivity=sensitivity,
            smoothing=smoothing, smooth_steps=smooth_steps, refractory_s=refractory_s,
            **decision_options)
        self.thresholds: dict[str, float] = self.engine.thresholds
        self.refractory_s = refractory_s
        if preroll_s < 0:
            raise ValueError(f"preroll_s must be >= 0, got {preroll_s}")
        self.preroll_s = float(preroll_s)
        self._ring = AudioRing(round(self.preroll_s * SAMPLE_RATE))
        # Losers of arbitration, newest last; bounded so an endless stream stays constant-size.
        self.suppressed: deque[Suppressed] = deque(maxlen=suppressed_max)
        if vad is True:
            from .vad import VoiceActivity

            vad = VoiceActivity("auto")
        elif isinstance(vad, str):
            from .vad import VoiceActivity

            vad = VoiceActivity(vad)
        self.vad = vad or None
        fps = self.scorer.frames_per_step
        self._lookback_steps = max(0, round(vad_lookback_s / self.step_seconds))
        self._hangover_steps = max(1, round(vad_hangover_s / self.step_seconds))
        self._lookback: deque[np.ndarray] = deque(maxlen=max(1, self._lookback_steps))
        self._fps = fps
        self.reset()

    def reset(self) -> None:
        # The stream starts with STREAM_LEAD zero samples, so each 80 ms step ends exactly on
        # an 80 ms boundary of the stream and is scored as soon as that sample arrives.
        self._mel = StreamingLogMel(STREAM_LEAD)
        self._state = self.scorer.new_state()
        self._pending = np.zeros((0, N_MELS), np.float32)
        self._steps = 0  # stream steps whose frames are complete
        self.samples_seen = 0
        self.engine.reset()
        self._ring.reset()
        self.suppressed.clear()
        if self.vad is not None and hasattr(self.vad, "reset"):
            self.vad.reset()
        self._vad_flags: deque[tuple[int, bool]] = deque()  # (end sample, speech)
        self._vad_frames = 0
        self._gate_open = False
        self._hang = 0
        self._lookback.clear()
        self._steps_scored = 0
        # Runs of scored steps as [first, last] step indexes (the last few, for inspection).
        self._scored_runs: deque[list[int]] = deque(maxlen=64)

    # -- timing ----------------------------------------------------------------------------
    @property
    def step_seconds(self) -> float:
        return self.scorer.frames_per_step * HOP / SAMPLE_RATE

    def step_end_sample(self, step_index: int) -> int:
        """Stream samples step ``step_index`` has heard: ``(step_index + 1) * 1280`` for 8
        frames a step (frame ``i`` covers ``[HOP i - STREAM_LEAD, HOP i + HOP)``)."""
        return (step_index + 1) * self._fps * HOP

    def step_end_time(self, step_index: int) -> float:
        """Time (s) of the end of the audio that the score of step ``step_index`` has seen."""
        return self.step_end_sample(step_index) / SAMPLE_RATE

    @property
    def now_s(self) -> float:
        return self.samples_seen / SAMPLE_RATE

    # -- pre-roll ----------------------------------------------------------------------------
    def audio_since(self, t_s: float) -> np.ndarray:
        """Raw audio (16 kHz float32) from stream time ``t_s`` up to now.

        Only the last ``preroll_s`` seconds are kept; an older ``t_s`` gets what is held (check
        :attr:`preroll_start_s`)."""
        return self._ring.since(round(t_s * SAMPLE_RATE))

    def audio_for(self, detection: Detection, pad_s: float = 0.0) -> np.ndarray:
        """Audio from ``pad_s`` before the detection's estimated start up to now."""
        return self.audio_since(max(0.0, detection.start_s - pad_s))

    @property
    def preroll_start_s(self) -> float:
        """Stream time of the oldest sample :meth:`audio_since` can return."""
        return self._ring.first_sample / SAMPLE_RATE

    # -- scoring -----------------------------------------------------------------------------
    def _check(self, chunk: np.ndarray) -> np.ndarray:
        if type(chunk) is np.ndarray and chunk.dtype == np.int16 and chunk.ndim == 1:
            # 16-bit PCM, the microphone's format: / 32768 is exact in float32, so this is
            # what as_float_samples (via float64) gives, in one pass less.
            x = chunk.astype(np.float32)
            x *= _INT16_SCALE
            return x
        x = as_float_samples(chunk, what="process() chunk")
        if x.ndim != 1:
            raise AudioError(f"process() takes mono 16 kHz samples shaped (n,), got {x.shape}")
        return x.astype(np.float32, copy=False)

    def scores(self, chunk: np.ndarray) -> np.ndarray:
        """Advance the stream by ``chunk`` and return the new score rows (k, n_words).

        With the VAD gate, rows of steps the model skipped are zeros."""
        x = self._check(chunk)
        self.samples_seen += x.size
        self._ring.write(x)
        if self.vad is not None and x.size:
            flags = np.asarray(self.vad.process(x), bool)
            fs = round(self.vad.frame_seconds * SAMPLE_RATE)
            for f in flags:
                self._vad_frames += 1
                self._vad_flags.append((self._vad_frames * fs, bool(f)))
        frames = self._mel.process(x)
        if frames.shape[0]:
            self._pending = np.concatenate([self._pending, frames]) if self._pending.size else frames
        fps = self._fps
        k = self._pending.shape[0] // fps
        if k == 0:
            return np.zeros((0, len(self.words)), np.float32)
        todo, self._pending = self._pending[: k * fps], self._pending[k * fps:]
        if self.vad is None:
            out, self._state = self.scorer.step(todo, self._state)
            self._note_scored(self._steps, self._steps + k - 1, k)
            self._steps += k
            return np.asarray(out, np.float32)
        return self._gated(todo, k)

    def _note_scored(self, first: int, last: int, n_model_steps: int) -> None:
        self._steps_scored += n_model_steps
        if self._scored_runs and self._scored_runs[-1][1] == first - 1:
            self._scored_runs[-1][1] = last
        else:
            self._scored_runs.append([first, last])

    def _speech_in_step(self, step: int) -> bool:
        """Whether any VAD frame ending in this step's new audio was speech. Uses only frames
        that end by the step's last sample, so the answer never depends on chunking."""
        end = self.step_end_sample(step)
        speech = False
        while self._vad_flags and self._vad_flags[0][0] <= end:
            speech |= self._vad_flags.popleft()[1]
        return speech

    def _gated(self, todo: np.ndarray, k: int) -> np.ndarray:
        fps = self._fps
        out = np.zeros((k, len(self.words)), np.float32)
        for j in range(k):
            step = self._steps
            frames = todo[j * fps:(j + 1) * fps]
            speech = self._speech_in_step(step)
            if speech:
                if not self._gate_open and self._lookback:
                    # Speech just started: the VAD flags it a little late, so the first
                    # syllable is in the look-back; run the model over it (scores discarded:
                    # those steps are already past) so its state has heard the onset.
                    replay = np.concatenate(list(self._lookback))
                    _, self._state = self.scorer.step(replay, self._state)
                    self._note_scored(step - len(self._lookback), step - 1, len(self._lookback))
                self._lookback.clear()
                self._gate_open = True
                self._hang = self._hangover_steps
            if self._gate_open:
                row, self._state = self.scorer.step(frames, self._state)
                out[j] = row[0]
                self._note_scored(step, step, 1)
                if not speech:
                    self._hang -= 1
                    # After the hangover the model has heard the word end and the latency
                    # of its score peak, and its state holds the silence that followed.
                    if self._hang <= 0:
                        self._gate_open = False
            elif self._lookback_steps:
                self._lookback.append(frames)
            self._steps += 1
        return out

    @property
    def gate_stats(self) -> dict[str, int]:
        """{"steps": stream steps so far, "steps_scored": model steps run (replays count)}."""
        return {"steps": self._steps, "steps_scored": self._steps_scored}

    @property
    def scored_runs(self) -> list[tuple[float, float]]:
        """Recent stretches of stream time (s) the model ran over, oldest first (the last 64)."""
        return [(a * self.step_seconds, (b + 1) * self.step_seconds)
                for a, b in self._scored_runs]

    def was_scored(self, t0_s: float, t1_s: float) -> bool:
        """Whether the model ran over all of stream time [t0_s, t1_s] (recent runs only)."""
        first = max(0, int(np.floor(t0_s / self.step_seconds)))
        last = max(first, int(np.floor(t1_s / self.step_seconds)))
        return any(a <= first and last <= b for a, b in self._scored_runs)

    # -- decisions ---------------------------------------------------------------------------
    def set_sensitivity(self, sensitivity: float | Mapping[str, float]) -> dict[str, float]:
        """Change sensitivity (0..1, all words or a mapping) on a running stream; returns the
        thresholds now in force."""
        return self.engine.set_sensitivity(sensitivity)

    def _emit(self, result: tuple[list, list[Suppressed]]) -> list[Detection]:
        decisions, suppressed = result
        self.suppressed.extend(suppressed)
        return [Detection(d.word, float(d.score), float(d.start_s), float(d.end_s),
                          float(d.peak_s), float(d.decided_s), float(d.margin))
                for d in decisions]

    def process(self, chunk: np.ndarray) -> list[Detection]:
        """Feed 16 kHz mono samples (any length); return the detections they completed."""
        first = self._steps
        rows = self.scores(chunk)
        found: list[Detection] = []
        push = self.engine.push
        for j, row in enumerate(rows):
            decisions, suppressed = push(row, self.step_end_sample(first + j) / SAMPLE_RATE)
            if decisions or suppressed:
                found += self._emit((decisions, suppressed))
        return found

    def flush(self) -> list[Detection]:
        """Decide candidates still waiting for a peak or a longer word (end of input)."""
        return self._emit(self.engine.flush())

    def iter_file(self, path: str | os.PathLike, chunk_seconds: float = 0.08
                  ) -> Iterator[Detection]:
        """Stream a file through :meth:`process` in ``chunk_seconds`` pieces, as a mic would;
        at the end, :meth:`flush` what is still pending."""
        n = max(1, int(chunk_seconds * SAMPLE_RATE))
        for block in iter_audio_blocks(path):
            for i in range(0, block.size, n):
                yield from self.process(block[i:i + n])
        yield from self.flush()
