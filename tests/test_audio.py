from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polywake.audio import (
    SAMPLE_RATE,
    AudioError,
    iter_audio_blocks,
    load_audio,
    to_mono_16k,
    write_audio,
)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
def test_resamples_any_rate_to_16k(tmp_path: Path, rate: int) -> None:
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(tmp_path / "a.wav", tone, rate)
    out = load_audio(tmp_path / "a.wav")
    assert out.dtype == np.float32 and abs(out.size - SAMPLE_RATE) <= 2
    # A real resampler keeps the tone at 440 Hz and its level.
    spec = np.abs(np.fft.rfft(out[1000:15000]))
    peak_hz = np.argmax(spec) * SAMPLE_RATE / 14000
    assert abs(peak_hz - 440) < 3
    assert 0.3 < np.sqrt(np.mean(out[1000:15000] ** 2)) * np.sqrt(2) < 0.6


def test_stereo_and_int_pcm_become_mono_float(tmp_path: Path) -> None:
    left = np.full(1600, 10000, np.int16)
    right = np.full(1600, -10000, np.int16)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000, subtype="PCM_16")
    assert np.allclose(load_audio(tmp_path / "s.wav"), 0.0, atol=1e-4)
    mono = to_mono_16k(np.full(10, 16384, np.int16), 16000)
    assert np.allclose(mono, 0.5, atol=1e-4)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_formats_roundtrip(tmp_path: Path, fmt: str) -> None:
    x = (0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    write_audio(tmp_path / f"x.{fmt}", x)
    y = load_audio(tmp_path / f"x.{fmt}")
    assert abs(y.size - x.size) < 800 and np.corrcoef(x[:15000], y[:15000])[0, 1] > 0.9


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x01garbage" * 50)
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(tmp_path / "junk.wav")
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(tmp_path / "zero.wav")


def test_truncated_file_is_an_error_or_shorter_audio(tmp_path: Path) -> None:
    x = (0.3 * np.sin(np.arange(48000) / 10)).astype(np.float32)
    write_audio(tmp_path / "x.flac", x)
    data = (tmp_path / "x.flac").read_bytes()
    (tmp_path / "t.flac").write_bytes(data[: len(data) // 3])
    try:
        y = load_audio(tmp_path / "t.flac")
    except AudioError as e:
        assert "t.flac" in str(e)
    else:
        assert 0 < y.size < x.size


def test_absurd_inputs_rejected() -> None:
    with pytest.raises(AudioError, match="NaN"):
        to_mono_16k(np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(AudioError, match="sample rate"):
        to_mono_16k(np.zeros(10, np.float32), 100)
    with pytest.raises(AudioError, match="more than 2 h"):
        to_mono_16k(np.zeros(2 * 3600 * 4000 + 1, np.int8), 4000)
    with pytest.raises(AudioError, match="shape"):
        to_mono_16k(np.zeros((2, 2, 2), np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        to_mono_16k(np.zeros(0, np.float32), 16000)


def test_long_file_refused_in_one_call_but_streams(tmp_path: Path) -> None:
    x = np.zeros(16000 * 5, np.float32)
    sf.write(tmp_path / "long.wav", x, 16000)
    with pytest.raises(AudioError, match="stream it"):
        load_audio(tmp_path / "long.wav", max_seconds=2)
    total = sum(b.size for b in iter_audio_blocks(tmp_path / "long.wav", block_seconds=0.7))
    assert total == x.size


def test_streamed_blocks_match_whole_file_resampled(tmp_path: Path) -> None:
    rate = 44100
    x = (0.3 * np.sin(2 * np.pi * 300 * np.arange(rate * 2) / rate)).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, rate, subtype="FLOAT")
    whole = load_audio(tmp_path / "a.wav")
    blocks = np.concatenate(list(iter_audio_blocks(tmp_path / "a.wav", block_seconds=0.3)))
    n = min(whole.size, blocks.size)
    assert abs(whole.size - blocks.size) < 50
    assert np.max(np.abs(whole[200 : n - 200] - blocks[200 : n - 200])) < 1e-3


def test_atomic_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.wav"
    write_audio(target, np.ones(100, np.float32) * 0.1)
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(OSError):
        write_audio(target, np.ones(200, np.float32) * 0.2)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


def test_stale_temps_of_killed_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    import os
    import time

    from polywake.audio import STALE_TEMP_S, atomic_open, remove_stale_temps

    sub = tmp_path / "alexa"
    sub.mkdir()
    old = sub / ".clip.wav.abc123.tmp"  # a writer killed long ago
    young = tmp_path / ".model.pwk.xyz.tmp"  # a writer busy right now
    keep = sub / "clip.wav"  # a finished file, old as it may be
    for f in (old, young, keep):
        f.write_bytes(b"x")
    past = time.time() - STALE_TEMP_S - 60
    os.utime(old, (past, past))
    os.utime(keep, (past, past))
    assert remove_stale_temps(tmp_path) == 1
    assert not old.exists() and young.exists() and keep.exists()
    assert remove_stale_temps(tmp_path / "missing") == 0
    with atomic_open(tmp_path / "x.bin") as fh:  # its temp name is one the cleanup matches
        (name,) = [p.name for p in tmp_path.glob(".*.tmp") if p != young]
        assert name.startswith(".x.bin.") and name.endswith(".tmp")
        fh.write(b"ok")
