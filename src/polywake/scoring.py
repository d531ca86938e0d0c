"""The contract between models and the detector: a streaming scorer.

A scorer turns log-mel frames into per-word probabilities, one row per *step* (every
``frames_per_step`` frames, 80 ms for the shipped models). Its state is explicit, so one model
object can serve many independent streams (threads, files, microphones) at once.

Implementations: the torch model (training), the ONNX/numpy runtime (device), and
:class:`ConstantScorer` below for tests of the code that consumes scores.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class StreamingScorer(Protocol):
    words: list[str]
    frames_per_step: int

    def new_state(self) -> Any:
        """Fresh per-stream state (buffers of the causal layers)."""

    def step(self, frames: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """frames: (k * frames_per_step, n_mels) float32 -> (scores (k, len(words)), state)."""


class ConstantScorer:
    """A scorer that returns scripted scores; lets tests drive the decision logic exactly."""

    def __init__(self, words: list[str], script: np.ndarray | None = None,
                 frames_per_step: int = 8) -> None:
        self.words = list(words)
        self.frames_per_step = frames_per_step
        self.script = None if script is None else np.asarray(script, np.float32)

    def new_state(self) -> dict[str, int]:
        return {"t": 0}

    def step(self, frames: np.ndarray, state: dict[str, int]) -> tuple[np.ndarray, dict[str, int]]:
        k = frames.shape[0] // self.frames_per_step
        if self.script is None:
            out = np.zeros((k, len(self.words)), np.float32)
        else:
            idx = np.clip(np.arange(state["t"], state["t"] + k), 0, len(self.script) - 1)
            out = self.script[idx]
        return out, {"t": state["t"] + k}
