"""VoiceActivity: streaming contract of every installed backend, plus a real-data check."""

from __future__ import annotations

import numpy as np
import pytest

from polywake.audio import SAMPLE_RATE, AudioError, load_audio
from polywake.data.splits import have_shared_data, shared_data_dir
from polywake.vad import AUTO_ORDER, BACKENDS, VoiceActivity, available_backends

INSTALLED = available_backends()
requires_shared_data = pytest.mark.skipif(
    not have_shared_data(), reason="../shared/data is absent (only on the project's machines)")


def test_energy_backend_is_always_there() -> None:
    assert "energy" in INSTALLED
    assert VoiceActivity("auto").backend in AUTO_ORDER


@pytest.mark.parametrize("backend", INSTALLED)
def test_chunking_does_not_change_the_flags(backend: str, speechlike: np.ndarray,
                                            rng: np.random.Generator) -> None:
    audio = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), speechlike[:SAMPLE_RATE]])
    one = VoiceActivity(backend)
    ref = one.process_scores(audio)
    assert ref.size == audio.size // one.frame_samples
    assert one.frame_seconds == pytest.approx(one.frame_samples / SAMPLE_RATE)
    vad = VoiceActivity(backend)
    parts, i = [], 0
    while i < audio.size:
        n = int(rng.integers(0, 1500))
        parts.append(vad.process_scores(audio[i:i + n]))
        i += n
    np.testing.assert_allclose(np.concatenate(parts), ref, atol=1e-6)
    vad.reset()
    np.testing.assert_allclose(vad.process_scores(audio), ref, atol=1e-6)


@pytest.mark.parametrize("backend", INSTALLED)
def test_silence_is_not_speech(backend: str) -> None:
    flags = VoiceActivity(backend).process(np.zeros(SAMPLE_RATE, np.float32))
    assert flags.dtype == bool and not flags.any()


def test_energy_flags_a_loud_burst_after_quiet(rng: np.random.Generator) -> None:
    x = (1e-4 * rng.standard_normal(2 * SAMPLE_RATE)).astype(np.float32)
    x[SAMPLE_RATE:SAMPLE_RATE + 8000] += 0.2 * rng.standard_normal(8000).astype(np.float32)
    flags = VoiceActivity("energy").process(x)
    t = (np.arange(flags.size) + 0.5) * 0.01
    assert flags[(t > 1.02) & (t < 1.48)].all()
    assert not flags[t < 0.95].any()


def test_int16_input_and_bad_input() -> None:
    vad = VoiceActivity("energy")
    assert vad.process(np.zeros(480, np.int16)).size == 3
    with pytest.raises(AudioError):
        vad.process(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="unknown VAD backend"):
        VoiceActivity("nope")
    with pytest.raises(ValueError):
        VoiceActivity("energy", threshold=1.5)


def test_missing_backend_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import polywake.vad as vad_mod

    def broken(name: str, mode: int = 3):
        raise ImportError("no module")

    monkeypatch.setattr(vad_mod, "_make", broken)
    with pytest.raises(RuntimeError, match="pip install webrtcvad-wheels"):
        VoiceActivity("webrtc")
    assert set(AUTO_ORDER) <= set(BACKENDS)


@requires_shared_data
@pytest.mark.parametrize("backend", [b for b in ("silero", "webrtc") if b in INSTALLED])
def test_real_speech_and_noise(backend: str) -> None:
    root = shared_data_dir()
    speech = load_audio(sorted((root / "background/speech/librispeech/460").glob("*.opus"))[0])
    noise = load_audio(root / "noise/speech_commands/running_tap.flac")[: 5 * SAMPLE_RATE]
    vad = VoiceActivity(backend)
    assert vad.process(speech[: 6 * SAMPLE_RATE]).mean() > 0.6
    vad.reset()
    assert vad.process(noise).mean() < (0.05 if backend == "silero" else 0.5)
