"""add-word / remove-word on a tiny model: existing words stay bit-identical."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import requires_shared_data
from polywake.models.backbone import TINY, Backbone
from polywake.models.heads import WakeWordHeads
from polywake.models.wakeword import load_checkpoint, save_checkpoint
from polywake.train import wakewords
from polywake.train.add_word import add_word, remove_word
from polywake.train.wakewords import WordClips


def _tones(f: float, n: int = 4) -> list[np.ndarray]:
    t = np.arange(8000) / 16000
    return [(0.3 * np.sin(2 * np.pi * (f + 7 * v) * t)).astype(np.float32) for v in range(n)]


@pytest.mark.slow
@requires_shared_data  # calibration needs real dev background to count false accepts
def test_add_then_remove_word_keeps_existing_heads(tmp_path: Path, monkeypatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.setattr(wakewords, "CACHE", tmp_path / "cache")
    torch.manual_seed(0)
    bb = Backbone(TINY).eval()
    base = save_checkpoint(tmp_path / "base.safetensors", backbone=bb,
                           heads=WakeWordHeads(bb.embed_dim, ["alexa", "echo"], hidden=8),
                           card={"words": ["alexa", "echo"], "per_word": {}})
    rng = np.random.default_rng(0)
    clips = WordClips(positives={"hey jarvis": {"train": _tones(700), "dev": _tones(720)}},
                      negatives={"train": [rng.standard_normal(6000).astype(np.float32) * 0.1]})
    examples = _tones(710, 2)
    out, timings = add_word(base, "Hey  Jarvis", tmp_path / "added.safetensors",
                            examples=examples, clips=clips, per_word=10, n_neg=4, steps=15,
                            mining_rounds=1, bg_max_files=1, noise_minutes=0.1, progress=False)
    _, before, _, _ = load_checkpoint(base)
    _, after, card, _ = load_checkpoint(out)
    assert after.words == ["alexa", "echo", "hey jarvis"]
    for name, t in before.state_dict().items():
        torch.testing.assert_close(after.state_dict()[name], t, rtol=0, atol=0)
    entry = card["per_word"]["hey jarvis"]
    assert entry["real_examples"] == 2 and "threshold" in entry and timings["total_s"] >= 0
    with pytest.raises(SystemExit, match="already"):
        add_word(out, "hey jarvis", tmp_path / "again.safetensors", clips=clips)

    removed = remove_word(out, "echo", tmp_path / "removed.safetensors")
    _, rheads, rcard, _ = load_checkpoint(removed)
    assert rheads.words == ["alexa", "hey jarvis"] and "echo" not in rcard.get("per_word", {})
    emb = torch.randn(1, 10, bb.embed_dim)
    with torch.no_grad():
        torch.testing.assert_close(rheads(emb)[..., 1], after(emb)[..., 2])
        torch.testing.assert_close(rheads(emb)[..., 0], after(emb)[..., 0])


def test_add_word_cli_passes_engines_to_the_synthesis(tmp_path: Path, monkeypatch) -> None:
    from polywake.cli import main
    from polywake.train import add_word as aw

    monkeypatch.setattr(wakewords, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(aw, "CACHE", tmp_path / "cache")
    bb = Backbone(TINY).eval()
    base = save_checkpoint(tmp_path / "base.safetensors", backbone=bb,
                           heads=WakeWordHeads(bb.embed_dim, ["alexa"], hidden=8),
                           card={"words": ["alexa"], "per_word": {}})
    seen = {}

    def fake_synth(phrase, out_dir, seed=0, workers=2, engines=None):
        seen.update(phrase=phrase, out_dir=Path(out_dir), engines=engines)
        return [tmp_path / "m.jsonl"]

    def fake_load(manifests, words, **kw):
        seen.update(manifests=manifests, balance=kw["balance_engines"])
        raise RuntimeError("stop here")

    monkeypatch.setattr(aw, "synth_phrase", fake_synth)
    monkeypatch.setattr(aw, "load_manifest_clips", fake_load)
    for extra, balance in (([], True), (["--no-balance-engines"], False)):
        with pytest.raises(RuntimeError, match="stop here"):
            main(["add-word", "hey jarvis", "--model", str(base), "--out",
                  str(tmp_path / "o.safetensors"), "--engines", "kokoro, piper", *extra])
        assert seen["engines"] == ["kokoro", "piper"] and seen["phrase"] == "hey jarvis"
        assert seen["manifests"] == [tmp_path / "m.jsonl"] and seen["balance"] is balance
    # another engine list never reuses (or pollutes) the default synthesis cache
    assert seen["out_dir"].name == "synth-hey_jarvis-kokoro-piper"


def test_synth_phrase_makes_kokoro_positives_apart(tmp_path: Path, monkeypatch) -> None:
    from polywake.data import synth
    from polywake.train import add_word as aw

    calls = []

    def fake_set(phrases, out_dir, **kw):
        calls.append((Path(out_dir), kw["engines"], kw["negatives"], kw.get("rich_variants")))
        return Path(out_dir) / "manifest.jsonl"

    monkeypatch.setattr(synth, "synthesize_set", fake_set)
    out = aw.synth_phrase("hey jarvis", tmp_path, engines=["espeak-ng", "kokoro"])
    assert calls == [(tmp_path, ["espeak-ng"], True, 12),
                     (tmp_path / "kokoro", ["kokoro"], False, 4)]
    assert out == [tmp_path / "manifest.jsonl", tmp_path / "kokoro" / "manifest.jsonl"]
    calls.clear()
    assert aw.synth_phrase("x", tmp_path, engines=["piper"]) == [tmp_path / "manifest.jsonl"]
    assert calls == [(tmp_path, ["piper"], True, 12)]


def test_real_examples_speed_perturbation_varies_the_word_length(monkeypatch) -> None:
    """speed > 0 resamples about half of each example's copies (other durations than the
    clip's own), keeps every copy labelled positive, and speed 0 keeps every duration."""
    from polywake.train import add_word as aw
    from polywake.train.mixing import NoiseBank

    torch.manual_seed(0)
    bb = Backbone(TINY).eval()
    noise = NoiseBank.from_arrays([np.random.default_rng(1).standard_normal(32000)
                                   .astype(np.float32) * 0.01])
    clips = WordClips(positives={"jarvis": {"train": _tones(700)}})
    captured: dict[float, list[int]] = {}
    real_pw = aw.positive_window

    def spy(rng, clip, speech, nb, rirs):
        captured.setdefault(speed, []).append(clip.size)
        return real_pw(rng, clip, speech, nb, rirs)

    monkeypatch.setattr(aw, "positive_window", spy)
    for speed in (0.0, 0.1):
        data = aw.real_example_windows(bb, _tones(700, 1), "jarvis", clips, noise, None,
                                       seed=0, speed=speed)
        n = aw.REAL_WINDOWS_PER_EXAMPLE
        assert data.emb.shape[0] == n
        assert (data.labels == 1).any(axis=1).all()
    base = aw.endpoint_example(_tones(700, 1)[0], aw._example_vad()).size
    assert set(captured[0.0]) == {base}
    changed = sum(s != base for s in captured[0.1])
    assert 0.3 * len(captured[0.1]) < changed < 0.7 * len(captured[0.1])
    assert all(0.85 * base < s < 1.15 * base for s in captured[0.1])


def test_real_examples_are_endpointed_in_a_noisy_take() -> None:
    """Was bug 16: a take whose background is within 35 dB of the word was not trimmed, so
    the word's end was labelled at the end of the recording. With the VAD the clip ends
    with the speech; the energy trim (kept for clean TTS clips) keeps the noisy tail."""
    from polywake.audio import load_audio
    from polywake.train.add_word import _example_vad, endpoint_example
    from polywake.train.mixing import trim_silence

    vad = _example_vad()
    if vad is None:
        pytest.skip("Silero VAD (the runtime extra) is not installed")
    demo = Path(__file__).parents[1] / "src/polywake/assets/examples/alexa_hey_samuel.flac"
    word = load_audio(demo)[int(1.3 * 16000): int(2.02 * 16000)]  # "alexa" ends near 0.65 s
    rng = np.random.default_rng(0)
    tail = rng.standard_normal(16000).astype(np.float32) * np.abs(word).max() * 0.1
    take = np.concatenate([word, tail])  # 1 s of room noise 20 dB under the word's peak
    cut = endpoint_example(take, vad)
    assert 0.5 * 16000 < cut.size < 0.9 * 16000
    assert trim_silence(take).size > 1.5 * 16000  # the old path: the noise counted as word
    quiet = np.zeros(16000, np.float32)
    assert endpoint_example(quiet, vad).size == quiet.size  # no speech: left to the trim
    # A take 50 dB quieter (a low-gain microphone): Silero finds it only at a raised level
    from polywake.vad import speech_bounds

    far = take * 10 ** (-50 / 20)
    assert speech_bounds(far, vad) is None
    assert speech_bounds(far, vad, raise_quiet=True) == speech_bounds(take, vad)


@pytest.mark.skipif(shutil.which("sox") is None, reason="the sox program is not installed")
def test_build_windows_tempo_stretches_positives_and_negatives_alike() -> None:
    """The tempo transform reaches every clip, so slowness is no cue for the word, and the
    positive's label span follows the stretched length."""
    from polywake.data.augment import TempoStretch
    from polywake.train.mixing import NoiseBank

    noise = NoiseBank.from_arrays([np.random.default_rng(1).standard_normal(32000)
                                   .astype(np.float32) * 0.01])
    clips = WordClips(positives={"jarvis": {"train": _tones(700, 2)}},
                      negatives={"train": _tones(300, 2)})
    plain = wakewords.build_windows(clips, ["jarvis"], "train", noise, None, 4, 4, 0)
    slow = wakewords.build_windows(clips, ["jarvis"], "train", noise, None, 4, 4, 0,
                                   tempo=TempoStretch(1.5, 1.5))
    pos = plain.word == 0
    assert np.allclose(slow.dur[pos], 1.5 * plain.dur[pos], rtol=0.02)
    assert (slow.word == -1).sum() == (plain.word == -1).sum() == 4

    def active(w: np.ndarray) -> int:  # samples well above the noise floor
        return int((np.abs(w) > 0.3 * np.abs(w).max()).sum())

    neg = plain.word == -1
    ratio = np.mean([active(b) / active(a)
                     for a, b in zip(plain.audio[neg], slow.audio[neg], strict=True)])
    assert 1.35 < ratio < 1.65


@requires_shared_data
def test_real_word_negatives_are_negative_and_leave_out_the_phrase(monkeypatch) -> None:
    from polywake.data import splits
    from polywake.train import add_word as aw
    from polywake.train.mixing import NoiseBank
    from polywake.train.pretrain import real_word_items

    torch.manual_seed(0)
    bb = Backbone(TINY).eval()
    noise = NoiseBank.from_arrays([np.zeros(32000, np.float32)])
    data = aw.real_word_negative_windows(bb, "hey marvin", 6, noise, None, seed=0)
    assert data.emb.shape[0] == 6 and data.words == ["hey marvin"]
    assert (data.labels <= 0).all()
    items = real_word_items("train")
    assert any(w == "marvin" for _, w, _ in items)  # present in the set, so the test bites
    seen: list[Path] = []
    real_load = aw.load_audio
    monkeypatch.setattr(aw, "load_audio", lambda p: seen.append(p) or real_load(p))
    aw.real_word_negative_windows(bb, "marvin", 400, noise, None, seed=1)
    word_of = {p: w for p, w, _ in items}
    assert len(seen) == 400 and all(word_of[p] != "marvin" for p in seen)
    sc = [p for p in seen if p.parent.parent.name == "speech_commands"]
    assert sc and all(splits.speech_commands_split(p) == "train" for p in sc)


def test_add_word_with_examples_matches_by_default_and_trains_on_request(
        tmp_path: Path, monkeypatch) -> None:
    """`--method auto` (the default): recordings -> the matcher; `--method heads` still
    trains; the choice is the default-method rule's (docs/BENCHMARKS.md)."""
    import soundfile as sf

    from polywake.cli import main
    from polywake.train import add_word as aw

    ex = tmp_path / "ex"
    ex.mkdir()
    sf.write(ex / "a.wav", np.zeros(16000, np.float32), 16000)
    called = []
    monkeypatch.setattr(aw, "add_matched_word",
                        lambda *a, **k: called.append("matcher") or (_ for _ in ()).throw(
                            RuntimeError("stop")))
    monkeypatch.setattr(aw, "add_word",
                        lambda *a, **k: called.append("heads") or (_ for _ in ()).throw(
                            RuntimeError("stop")))
    args = ["add-word", "hey jarvis", "--model", "m.safetensors", "--out",
            str(tmp_path / "o.safetensors"), "--examples", str(ex)]
    for extra in ([], ["--method", "heads"]):
        with pytest.raises(RuntimeError, match="stop"):
            main(args + extra)
    assert called == ["matcher", "heads"]


def test_room_lead_repeats_the_takes_own_room_before_it() -> None:
    from polywake.train.add_word import ROOM_LEAD_S, room_lead

    sr = 16000
    rng = np.random.default_rng(0)
    pre = (rng.standard_normal(sr // 2) * 0.01).astype(np.float32)  # 0.5 s of room
    word = (np.sin(np.arange(sr // 2) * 0.3) * 0.5).astype(np.float32)
    take = np.concatenate([pre, word])
    led = room_lead(take, pre.size + int(0.03 * sr))  # the VAD's start, with its margin
    assert led.size == take.size + int(ROOM_LEAD_S * sr)
    np.testing.assert_array_equal(led[-take.size:], take)
    lead = led[:-take.size]
    assert np.isin(lead, pre).all()  # nothing but the take's own room, no word in it
    # played forwards then backwards: no jump at the joins
    assert np.abs(np.diff(lead)).max() <= np.abs(np.diff(pre)).max() + 1e-6
    # a take that starts with its word (under 0.1 s before it) gets quiet room instead
    quiet = room_lead(word, 0)[:-word.size]
    assert quiet.size == int(ROOM_LEAD_S * sr) and 5e-4 < np.sqrt((quiet ** 2).mean()) < 2e-3
    assert room_lead(word, None).size == quiet.size + word.size


def test_example_templates_are_taken_in_context() -> None:
    """The whole take with its own room before it, the steps placed by the VAD's end (as
    endpoint_example cuts); without a VAD, the energy-trimmed take after quiet room."""
    import torch

    from polywake.audio import load_audio
    from polywake.models.backbone import TINY, Backbone
    from polywake.train.add_word import (
        ROOM_LEAD_S,
        _example_vad,
        endpoint_example,
        example_templates,
        room_lead,
        templates_at,
    )
    from polywake.vad import speech_bounds

    vad = _example_vad()
    if vad is None:
        pytest.skip("Silero VAD (the runtime extra) is not installed")
    torch.manual_seed(0)
    bb = Backbone(TINY).eval()
    demo = Path(__file__).parents[1] / "src/polywake/assets/examples/alexa_hey_samuel.flac"
    word = load_audio(demo)[int(1.3 * 16000): int(2.02 * 16000)]
    room = np.random.default_rng(1).standard_normal(8000).astype(np.float32)
    take = np.concatenate([room * np.abs(word).max() * 0.05, word, room[:4000] * 1e-3])
    (got,) = example_templates(bb, [take], vad, seq_len=6)
    start, stop = speech_bounds(take, vad)
    assert 0.5 * 16000 <= start < 0.9 * 16000  # the word, not the room before it
    lead = int(ROOM_LEAD_S * 16000)
    (want,) = templates_at(bb, [(room_lead(take, start), lead + stop + 480)], seq_len=6)
    assert got.shape == (6, bb.embed_dim)
    np.testing.assert_array_equal(got, want)
    # the room before the word is part of what the templates see
    (other,) = example_templates(bb, [np.concatenate([room * 1e-4, take[8000:]])], vad, 6)
    assert np.abs(other - got).mean() > 1e-3
    (no_vad,) = example_templates(bb, [take], None, seq_len=6)
    cut = endpoint_example(take, None)
    np.testing.assert_array_equal(no_vad, templates_at(bb, [(room_lead(cut, None),
                                                              lead + cut.size)], 6)[0])
