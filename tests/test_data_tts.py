"""TTS voices and synthesis, plus a tiny end-to-end `polywake synth` run (espeak-ng only)."""

from __future__ import annotations

import functools
import shutil

import numpy as np
import pytest

from polywake.data import splits, tts
from polywake.data.manifest import load_manifest

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (scripts/install_system.sh)")


def test_voice_id_is_stable_and_round_trips():
    v = tts.Voice("piper", "en_US-joe-medium", "en-us", {"noise_w": 0.8, "noise_scale": 0.667})
    assert v.voice_id == "piper:en_US-joe-medium|noise_scale=0.667,noise_w=0.8"
    assert tts.Voice.from_dict(v.to_dict()) == v
    assert hash(tts.Voice.from_dict(v.to_dict())) == hash(v)


def test_speaker_groups_one_person_across_engines():
    assert tts.Voice("festival", "us1_mbrola").speaker == tts.Voice("mbrola", "mb-us1").speaker
    assert tts.Voice("flite", "kal16").speaker == tts.Voice("festival", "kal_diphone").speaker
    # espeak accents share the variant's timbre: grouped by variant.
    assert tts.Voice("espeak-ng", "en-us+f3").speaker == tts.Voice("espeak-ng", "en-gb+f3").speaker
    assert tts.Voice("espeak-ng", "en-us+f3").speaker != tts.Voice("espeak-ng", "en-us+m3").speaker


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(tts.TTSError, match="unknown TTS engine"):
        tts.list_voices(["nope"])


@needs_espeak
def test_espeak_voices_cover_accents_and_variants():
    vs = tts.list_voices(["espeak-ng"])
    langs = {v.lang for v in vs}
    assert {"en-us", "en-gb"} <= langs
    assert any(v.name.endswith("+f3") for v in vs) and any(v.name.endswith("+klatt") for v in vs)
    assert len({v.voice_id for v in vs}) == len(vs)


@needs_espeak
def test_synthesize_returns_16k_float32_and_rate_changes_length():
    v = tts.Voice("espeak-ng", "en-us+m3", "en-us")
    slow = tts.synthesize("hey samuel", v, rate=0.7)
    fast = tts.synthesize("hey samuel", v, rate=1.5, pitch=1.2)
    assert slow.dtype == np.float32 and slow.ndim == 1
    assert 0.3 < len(fast) / 16000 < len(slow) / 16000 < 3.0
    assert np.max(np.abs(slow)) > 0.01


@pytest.mark.parametrize("kw,msg", [({"text": " "}, "empty"), ({"rate": 5.0}, "rate"),
                                    ({"pitch": 0.1}, "pitch")])
def test_bad_synthesis_input(kw, msg):
    args = {"text": "hello", "voice": tts.Voice("espeak-ng", "en-us"), **kw}
    with pytest.raises(tts.TTSError, match=msg):
        tts.synthesize(**args)


@needs_espeak
def test_synth_set_small_splits_by_speaker_and_resumes(tmp_path):
    from polywake.data import synth

    voices = [tts.Voice("espeak-ng", f"en-us+{n}", "en-us") for n in ("f1", "m2", "klatt")]
    jobs = synth.plan_set(["hey samuel"], voices=voices, n_variants=1, neg_voices=1,
                          n_sentences=2, sentence_voices=1)[:8]
    out = tmp_path / "set"
    man = synth.run_jobs(jobs, out, workers=1, progress=False)
    recs = load_manifest(man)
    assert len(recs) == len(jobs)
    for r in recs:
        assert r.split == splits.split_of_key(r.speaker)
        assert r.abspath(man).exists() and r.engine == "espeak-ng"
    pos = [r for r in recs if r.kind == "positive"]
    assert pos and all(r.word == "hey samuel" for r in pos)
    # A second run makes nothing new; deleting one clip makes exactly that one again.
    recs[0].abspath(man).unlink()
    synth.run_jobs(jobs, out, workers=1, progress=False)
    import json
    info = json.loads((out / synth.SUMMARY).read_text())
    assert info["made_now"] == 1 and info["clips"] == len(jobs)


def test_prepare_kokoro_keeps_english_voices_only(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYWAKE_KOKORO_DIR", str(tmp_path / "k"))
    vdir = tmp_path / "package" / "voices"
    vdir.mkdir(parents=True)
    vec = np.arange(510 * 256, dtype="<f4")
    for name in ("af_heart", "bm_lewis", "jf_alpha", "zm_yunxi"):
        (vdir / f"{name}.bin").write_bytes(vec.tobytes())
    (vdir / "af_broken.bin").write_bytes(b"\0" * 10)
    out = tts.prepare_kokoro(tmp_path)
    with np.load(out) as z:
        assert sorted(z.files) == ["af_heart", "bm_lewis"]
        assert z["af_heart"].shape == (510, 1, 256) and z["af_heart"][1, 0, 0] == 256
    with pytest.raises(tts.TTSError, match="no English"):
        tts.prepare_kokoro(tmp_path / "package" / "voices" / "nothing")


def _fake_kokoro(monkeypatch, names: list[str]) -> None:
    voices = [tts.Voice("kokoro", n, tts._KOKORO_PREFIXES[n[:2]]) for n in names]
    monkeypatch.setitem(tts._LISTERS, "kokoro", lambda: voices)
    tts._list_engine.cache_clear()
    monkeypatch.setattr(tts, "_list_engine", functools.cache(lambda e: tuple(tts._LISTERS[e]())))


def test_kokoro_blends_mix_two_voices_of_one_accent_and_one_split(monkeypatch):
    names = [f"af_v{i}" for i in range(8)] + [f"bm_w{i}" for i in range(6)]
    _fake_kokoro(monkeypatch, names)
    blends = tts._kokoro_blends(40, seed=0)
    assert len(blends) == 40 and len({b.voice_id for b in blends}) == 40
    assert blends == tts._kokoro_blends(40, seed=0)  # fixed by the seed
    lang = {n: tts._KOKORO_PREFIXES[n[:2]] for n in names}
    for b in blends:
        pair, w = b.name.rsplit("@", 1)
        a, c = pair.split("+")
        assert a != c and lang[a] == lang[c] == b.lang and 0.25 <= float(w) <= 0.75
        # Never a mix across splits, and the blend is split with its parts.
        split_a = splits.split_of_key(tts.Voice("kokoro", a).speaker)
        assert split_a == splits.split_of_key(tts.Voice("kokoro", c).speaker)
        assert splits.split_of_key(b.speaker) == split_a
    # With one voice there is nothing to mix.
    _fake_kokoro(monkeypatch, ["af_only"])
    assert tts._kokoro_blends(5) == []


def test_kokoro_blend_style_is_the_weighted_mix(monkeypatch):
    class FakeModel:
        styles = {"af_a": np.full((510, 1, 256), 1.0, np.float32),
                  "af_b": np.full((510, 1, 256), 3.0, np.float32)}

        def get_voice_style(self, name):
            return self.styles[name]

    monkeypatch.setattr(tts, "_kokoro_model", lambda: FakeModel())
    assert tts._kokoro_style("af_a") == "af_a"  # plain voices go by name
    mix = tts._kokoro_style("af_a+af_b@0.25")
    assert mix.dtype == np.float32 and np.allclose(mix, 0.25 * 1.0 + 0.75 * 3.0)
