"""bench/fewshot_peer.py: the window grid and the engine's running-speech guard, re-implemented
for batch scoring, must match what the engine's own streaming loop would see."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import fewshot_peer  # noqa: E402


def test_window_starts_cover_the_file_and_end_at_its_end() -> None:
    win, hop = 24000, 4000
    assert fewshot_peer.window_starts(10000, hop, win).tolist() == [0]
    assert fewshot_peer.window_starts(win, hop, win).tolist() == [0]
    s = fewshot_peer.window_starts(30000, hop, win)
    assert s.tolist() == [0, 4000, 6000]  # the last window ends exactly at the end
    s = fewshot_peer.window_starts(32000, hop, win)
    assert s.tolist() == [0, 4000, 8000]


def test_speech_guard_is_the_engines_first_100_ms_test() -> None:
    w = np.zeros(24000, np.float32)
    w[8000:12000] = 0.5  # a word well inside the window: scored
    assert not fewshot_peer.speech_guard(w)
    w[:100] = 0.2  # 40 % of the peak inside the first 100 ms: skipped (running speech)
    assert fewshot_peer.speech_guard(w)
    w[:100] = 0.05  # 10 %: below the engine's 20 % bar, scored
    assert not fewshot_peer.speech_guard(w)
    assert fewshot_peer.speech_guard(np.zeros(24000, np.float32))  # silence is never scored


def test_scores_are_best_cosine_mapped_to_0_1_and_guarded_windows_score_0() -> None:
    refs = np.eye(3, dtype=np.float32)[:2]  # two unit references
    emb = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float32)
    entry = {"emb": emb, "guard": np.array([False, False, True])}
    np.testing.assert_allclose(fewshot_peer.scores_of(entry, refs, safe=False), [1.0, 0.5, 0.5])
    np.testing.assert_allclose(fewshot_peer.scores_of(entry, refs, safe=True), [1.0, 0.5, 0.0])
