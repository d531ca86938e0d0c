"""Augmentation: seeded, recorded, and each transform doing its one job."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from polywake.audio import AudioError, write_audio
from polywake.data import augment as A


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.fixture
def clip(speechlike):
    return speechlike[:16000].copy()


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("rir") / "bank.npz")


def test_compose_is_seeded_and_records_a_json_recipe(clip, tmp_path):
    noise = tmp_path / "noise.flac"
    write_audio(noise, np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1)
    aug = A.Compose([A.SpeedPerturb(p=0.5), A.RealNoise(files=[noise], p=0.5),
                     A.ColoredNoise(), A.BandLimit(p=0.5), A.Gain(), A.Clipping(p=0.5)])
    y1 = aug(clip, np.random.default_rng(7))
    r1 = json.loads(json.dumps(aug.recipe))
    y2 = aug(clip, np.random.default_rng(7))
    assert np.array_equal(y1, y2) and aug.recipe == r1
    assert {"ColoredNoise", "Gain"} <= {r["name"] for r in r1}
    assert y1.dtype == np.float32 and np.max(np.abs(y1)) <= 0.99 + 1e-6


def test_probability_zero_leaves_audio_and_records_nothing(clip, rng):
    t = A.Gain(p=0.0)
    assert np.array_equal(t(clip, rng), clip) and t.params == {}


def test_colored_noise_hits_the_snr(clip, rng):
    t = A.ColoredNoise(min_snr=10, max_snr=10, colors=("pink",))
    y = t(clip, rng)
    snr = 20 * np.log10(_rms(clip) / _rms(y - clip))
    assert snr == pytest.approx(10, abs=0.1) and t.params["color"] == "pink"


def test_noise_colors_have_the_right_slope(rng):
    def low_high(x):
        s = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x), 1 / 16000)
        return s[(f > 50) & (f < 200)].mean() / s[(f > 4000) & (f < 6000)].mean()
    w, p, b = (low_high(A.colored_noise(32000, c, rng)) for c in ("white", "pink", "brown"))
    assert w < 2 < p < b


def test_gain_and_speed(clip, rng):
    g = A.Gain(6, 6)
    assert _rms(g(clip, rng)) / _rms(clip) == pytest.approx(10 ** (6 / 20), rel=1e-3)
    s = A.SpeedPerturb(1.25, 1.25)
    assert len(s(clip, rng)) == pytest.approx(len(clip) / 1.25, abs=2)


@pytest.mark.skipif(shutil.which("sox") is None, reason="the sox program is not installed")
def test_tempo_stretch_changes_length_not_pitch(rng):
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    s = A.TempoStretch(1.4, 1.4)
    y = s(tone, rng)
    assert s.params == {"name": "TempoStretch", "factor": 1.4}
    assert len(y) == pytest.approx(1.4 * len(tone), rel=0.01)
    peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * 16000 / len(y)
    assert abs(peak_hz - 440) < 5  # resampling (SpeedPerturb) would give 314 Hz
    assert len(A.TempoStretch(0.8, 0.8)(tone, rng)) == pytest.approx(0.8 * len(tone), rel=0.01)


def test_tempo_stretch_without_sox_says_so(rng, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="sox"):
        A.TempoStretch(1.2, 1.3)(np.ones(1600, np.float32) * 0.1, rng)
    with pytest.raises(ValueError):
        A.TempoStretch(1.5, 1.2)


def test_pitch_shift_keeps_length(clip, rng):
    t = A.PitchShift(3, 3)
    assert len(t(clip, rng)) == len(clip) and t.params["semitones"] == 3


def test_band_limit_removes_low_frequencies(rng):
    t = np.arange(16000) / 16000
    x = (np.sin(2 * np.pi * 50 * t) + np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y = A.BandLimit(low_hz=(400, 400), high_hz=(3000, 3000))(x, rng)[4000:]
    spec = np.abs(np.fft.rfft(y))
    f = np.fft.rfftfreq(len(y), 1 / 16000)
    assert spec[np.argmin(abs(f - 50))] < 0.05 * spec[np.argmin(abs(f - 1000))]


def test_clipping(clip, rng):
    y = A.Clipping(5, 5)(clip, rng)
    assert np.mean(np.abs(y) >= np.max(np.abs(y)) - 1e-7) == pytest.approx(0.05, abs=0.01)


def test_reverb_bank_cached_and_aligned(clip, rng, bank_path):
    t = A.RoomReverb(n_rooms=3, seed=1, bank_path=bank_path)
    y = t(clip, rng)
    assert len(y) == len(clip) and _rms(y) == pytest.approx(_rms(clip), rel=1e-3)
    assert set(t.params) >= {"name", "rir", "rt60", "room", "distance_m"}
    A.load_rir_bank.cache_clear()
    bank = A.load_rir_bank(3, 1, bank_path)  # from the .npz this time
    assert len(bank["offsets"]) == 4


def test_place_in_background_records_offset(clip, rng):
    t = A.PlaceInBackground(files=[], min_s=3, max_s=3)
    y = t(clip, rng)
    off = int(round(t.params["offset_s"] * 16000))
    assert len(y) == 48000
    np.testing.assert_allclose(y[off: off + len(clip)], clip, atol=1e-4)


def test_bad_input_and_eval_refused(rng):
    with pytest.raises(AudioError):
        A.Gain()(np.zeros((2, 10), np.float32), rng)
    with pytest.raises(ValueError, match="eval"):
        A.RealNoise("eval")
    with pytest.raises(ValueError):
        A.Gain(p=2)
