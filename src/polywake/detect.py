"""Streaming detection: audio chunks -> log-mel -> scorer -> per-word decisions -> Detections.

The same :meth:`Detector.process` path serves a microphone, a file (:meth:`Detector.iter_file`)
and stdin, so what is measured on files is what runs live.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from .audio import SAMPLE_RATE, AudioError, iter_audio_blocks
from .features import HOP, N_MELS, WIN, StreamingLogMel
from .scoring import StreamingScorer


@dataclass(frozen=True)
class Detection:
    word: str
    score: float
    start_s: float
    end_s: float

    def to_dict(self) -> dict:
        return asdict(self)


class Detector:
    """One stream's detector. Cheap to create; several may share one scorer.

    ``thresholds``: per-word score threshold (default 0.5); ``refractory_s``: after a word fires,
    it cannot fire again for this long.
    """

    def __init__(self, scorer: StreamingScorer, thresholds: dict[str, float] | None = None,
                 refractory_s: float = 1.0) -> None:
        self.scorer = scorer
        self.words = list(scorer.words)
        self.thresholds = {w: 0.5 for w in self.words}
        if thresholds:
            unknown = set(thresholds) - set(self.words)
            if unknown:
                raise ValueError(f"thresholds for unknown words {sorted(unknown)}; "
                                 f"model words are {self.words}")
            self.thresholds.update(thresholds)
        self.refractory_s = refractory_s
        self.reset()

    def reset(self) -> None:
        self._mel = StreamingLogMel()
        self._state = self.scorer.new_state()
        self._pending = np.zeros((0, N_MELS), np.float32)
        self._steps = 0
        self._last_fire = {w: -1e9 for w in self.words}
        self.samples_seen = 0

    @property
    def step_seconds(self) -> float:
        return self.scorer.frames_per_step * HOP / SAMPLE_RATE

    def step_end_time(self, step_index: int) -> float:
        """Time (s) of the end of the audio that the score of step ``step_index`` has seen."""
        last_frame = (step_index + 1) * self.scorer.frames_per_step - 1
        return (last_frame * HOP + WIN) / SAMPLE_RATE

    def scores(self, chunk: np.ndarray) -> np.ndarray:
        """Advance the stream by ``chunk`` and return the new score rows (k, n_words)."""
        x = np.asarray(chunk)
        if x.ndim != 1:
            raise AudioError(f"process() takes mono 16 kHz samples shaped (n,), got {x.shape}")
        if x.dtype.kind in "iu":
            x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
        if x.size and not np.all(np.isfinite(x)):
            raise AudioError("chunk contains NaN or infinite samples")
        self.samples_seen += x.size
        frames = self._mel.process(x)
        if frames.shape[0]:
            self._pending = np.concatenate([self._pending, frames]) if self._pending.size else frames
        fps = self.scorer.frames_per_step
        k = self._pending.shape[0] // fps
        if k == 0:
            return np.zeros((0, len(self.words)), np.float32)
        out, self._state = self.scorer.step(self._pending[: k * fps], self._state)
        self._pending = self._pending[k * fps:]
        return out

    def process(self, chunk: np.ndarray) -> list[Detection]:
        """Feed 16 kHz mono samples (any length); return the detections they completed."""
        rows = self.scores(chunk)
        found: list[Detection] = []
        for row in rows:
            t = self.step_end_time(self._steps)
            self._steps += 1
            for j, w in enumerate(self.words):
                if row[j] >= self.thresholds[w] and t - self._last_fire[w] >= self.refractory_s:
                    self._last_fire[w] = t
                    found.append(Detection(w, float(row[j]), max(0.0, t - 1.0), t))
        return found

    def iter_file(self, path: str | os.PathLike, chunk_seconds: float = 0.08
                  ) -> Iterator[Detection]:
        """Stream a file through :meth:`process` in ``chunk_seconds`` pieces, as a mic would."""
        n = max(1, int(chunk_seconds * SAMPLE_RATE))
        for block in iter_audio_blocks(path):
            for i in range(0, block.size, n):
                yield from self.process(block[i:i + n])
