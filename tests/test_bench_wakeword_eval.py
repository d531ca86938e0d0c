"""bench/wakeword_eval.py: real clips padded with quiet room before streaming."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import wakeword_eval  # noqa: E402
from polywake.audio import write_audio  # noqa: E402


class _LenEmbedder:
    """Stands in for a backbone: one 'embedding' row per 1,280 samples, as the stream gives."""

    key = "len"
    dim = 1

    def stream(self, audio: np.ndarray) -> np.ndarray:
        return np.zeros((audio.size // 1280, 1), np.float16)


def test_padded_appends_quiet_deterministic_noise() -> None:
    x = np.ones(1600, np.float32) * 0.5
    assert wakeword_eval._padded(x, 0.0, "a.flac") is x
    a = wakeword_eval._padded(x, 1.0, "a.flac")
    assert a.size == 1600 + 16000 and np.array_equal(a[:1600], x)
    assert np.array_equal(a, wakeword_eval._padded(x, 1.0, "a.flac"))  # same name, same tail
    assert not np.array_equal(a, wakeword_eval._padded(x, 1.0, "b.flac"))
    rms_db = 20 * np.log10(np.sqrt(np.mean(a[1600:] ** 2)))
    assert -63 < rms_db < -57


def test_cached_streams_keeps_padded_and_plain_apart(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(wakeword_eval, "CACHE", tmp_path)
    f = tmp_path / "clip.flac"
    write_audio(f, np.zeros(12800, np.float32))
    plain = wakeword_eval.cached_streams(_LenEmbedder(), [f], "real-x")
    padded = wakeword_eval.cached_streams(_LenEmbedder(), [f], "real-x", pad_s=1.0)
    assert plain[0][1].shape[0] == 10 and padded[0][1].shape[0] == 22
    again = wakeword_eval.cached_streams(_LenEmbedder(), [f], "real-x")  # from the cache
    assert again[0][1].shape[0] == 10
