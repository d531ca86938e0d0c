"""Training recipes: smoke runs on tiny data, and kill/resume reproduces an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import requires_shared_data
from polywake.audio import write_audio
from polywake.cli import main


def _fake_words(root: Path, words: list[str], per_word: int = 6) -> Path:
    """Distinct synthetic 'words': each a sequence of tones, varied per 'voice'."""
    rng = np.random.default_rng(0)
    lines = []
    for wi, w in enumerate(words):
        for v in range(per_word):
            t = np.arange(int(16000 * 0.5)) / 16000
            f = 200 + 150 * wi + 10 * v
            x = 0.3 * np.sin(2 * np.pi * f * t * (1 + 0.3 * t)) * np.hanning(t.size)
            x += 0.01 * rng.standard_normal(t.size)
            rel = f"{w}/{v}.flac"
            write_audio(root / rel, x.astype(np.float32))
            split = "dev" if v == per_word - 1 else "train"
            lines.append(json.dumps({"path": rel, "word": w, "split": split, "speaker": f"v{v}"}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root / "manifest.jsonl"


def _pretrain(manifest: Path, out: Path, *extra: str) -> int:
    return main(["pretrain", "--synth", str(manifest), "--out", str(out), "--no-real",
                 "--steps", "6", "--batch", "8", "--eval-every", "3", "--save-every", "2",
                 "--noise-minutes", "0.1", "--rirs", "2", "--size", "tiny", *extra])


@pytest.mark.slow
def test_pretrain_killed_and_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    manifest = _fake_words(tmp_path / "data", ["apple", "river", "music"])
    assert _pretrain(manifest, tmp_path / "a") == 0
    assert _pretrain(manifest, tmp_path / "b", "--stop-after", "3") == 0
    partial = load_file(tmp_path / "b" / "state.safetensors")
    assert _pretrain(manifest, tmp_path / "b") == 0  # same command resumes
    a = load_file(tmp_path / "a" / "state.safetensors")
    b = load_file(tmp_path / "b" / "state.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    changed = [k for k in a if k.startswith("backbone.") and not torch.equal(a[k], partial[k])]
    assert changed, "the resumed half did no training"
    assert (tmp_path / "a" / "backbone.safetensors").exists()
    # no temp files left behind by atomic writes
    assert not list((tmp_path / "b").glob(".*.tmp"))


@pytest.mark.slow
def test_pretrain_real_manifest_adds_real_classes(tmp_path: Path) -> None:
    """--real-manifest words join the vocabulary and count as real in the dev accuracy."""
    from polywake.models.wakeword import load_checkpoint

    torch.set_num_threads(1)
    synth = _fake_words(tmp_path / "synth", ["apple", "river"])
    real = _fake_words(tmp_path / "real", ["river", "music"])
    assert _pretrain(synth, tmp_path / "a", "--real-manifest", str(real)) == 0
    assert json.loads((tmp_path / "a" / "words.json").read_text()) == ["apple", "music", "river"]
    card = load_checkpoint(tmp_path / "a" / "backbone.safetensors")[2]
    assert card["classes"] == 3
    assert card["dev_accuracy"]["n_real"] == 2 and card["dev_accuracy"]["n_synth"] == 2
    with pytest.raises(SystemExit, match="no such manifest"):
        _pretrain(synth, tmp_path / "b", "--real-manifest", str(tmp_path / "missing.jsonl"))

@pytest.mark.slow
@requires_shared_data  # calibration needs real dev background to count false accepts
@pytest.mark.parametrize("finetune_steps", [0, 3])
def test_wakeword_training_smoke_exports_a_working_model(tmp_path: Path, monkeypatch,
                                                         finetune_steps: int) -> None:
    from polywake.detect import Detector
    from polywake.model_io import OnnxScorer, read_pwk
    from polywake.models.backbone import TINY, Backbone
    from polywake.train import wakewords
    from polywake.train.wakewords import WordClips, train_model

    torch.set_num_threads(1)
    monkeypatch.setattr(wakewords, "CACHE", tmp_path / "cache")
    torch.manual_seed(0)
    from polywake.models.wakeword import save_checkpoint

    bb_path = save_checkpoint(tmp_path / "bb.safetensors", backbone=Backbone(TINY).eval())
    rng = np.random.default_rng(0)

    def word(f: float) -> list[np.ndarray]:
        t = np.arange(8000) / 16000
        return [(0.3 * np.sin(2 * np.pi * (f + 5 * v) * t)).astype(np.float32)
                for v in range(4)]

    clips = WordClips(
        positives={"lo": {"train": word(300), "dev": word(310)},
                   "hi": {"train": word(1200), "dev": word(1210)}},
        negatives={"train": [rng.standard_normal(6000).astype(np.float32) * 0.1],
                   "dev": [rng.standard_normal(6000).astype(np.float32) * 0.1]},
    )
    ckpt = train_model(bb_path, clips, ["lo", "hi"], tmp_path / "out", per_word=12, n_neg=8,
                       steps=20, mining_rounds=1, bg_max_files=1, noise_minutes=0.1,
                       finetune_steps=finetune_steps)
    card, _ = read_pwk(tmp_path / "out" / "model.pwk")
    assert card["words"] == ["lo", "hi"] and ckpt.exists()
    assert card["training"]["finetune_steps"] == finetune_steps
    from polywake.models.wakeword import load_checkpoint

    same = all(torch.equal(a, b) for a, b in zip(
        load_checkpoint(bb_path)[0].state_dict().values(),
        load_checkpoint(ckpt)[0].state_dict().values(), strict=True))
    assert same == (finetune_steps == 0)  # only fine-tuning changes the backbone
    for w in ("lo", "hi"):
        entry = card["per_word"][w]
        assert 0.0 <= entry["threshold"] <= 1.0 + 1e-6
        assert len(entry["calibration"]["thresholds"]) == len(entry["calibration"]["fa_per_hour"])
    scores = Detector(OnnxScorer(tmp_path / "out" / "model.pwk")).scores(
        rng.standard_normal(16000).astype(np.float32) * 0.1)
    assert scores.shape == (12, 2) and np.all((scores >= 0) & (scores <= 1))


def _distill(teacher: Path, manifest: Path, out: Path, *extra: str) -> int:
    return main(["distill", "--teacher", str(teacher), "--manifest", str(manifest), "--out",
                 str(out), "--no-real", "--steps", "8", "--batch", "6", "--eval-every", "4",
                 "--save-every", "2", "--noise-minutes", "0.1", "--rirs", "2", *extra])


@pytest.mark.slow
def test_distill_resumes_exactly_and_saves_a_backbone(tmp_path: Path) -> None:
    from polywake.models.backbone import STANDARD, Backbone
    from polywake.models.wakeword import load_checkpoint, save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    manifest = _fake_words(tmp_path / "data", ["apple", "river", "music"])
    teacher = save_checkpoint(tmp_path / "teacher.safetensors",
                              backbone=Backbone(STANDARD).eval())
    assert _distill(teacher, manifest, tmp_path / "a") == 0
    assert _distill(teacher, manifest, tmp_path / "b", "--stop-after", "3") == 0
    assert _distill(teacher, manifest, tmp_path / "b") == 0  # same command resumes
    a = load_file(tmp_path / "a" / "state.safetensors")
    b = load_file(tmp_path / "b" / "state.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    student, heads, card, _ = load_checkpoint(tmp_path / "a" / "backbone.safetensors")
    assert heads is None and card["kind"] == "backbone"
    assert student.config.name == "tiny"
    from safetensors import safe_open

    with safe_open(tmp_path / "a" / "state.safetensors", "pt") as f:
        history = json.loads(f.metadata()["extra"])["history"]
    assert [h["step"] for h in history] == [4, 8]
    # unit-RMS embeddings: the loss is finite and below 4 (the worst case for ReLU outputs)
    assert all(0.0 <= h["dev_loss"] < 4.0 for h in history)


@pytest.mark.slow
def _finetune_setup():
    from polywake.models.backbone import TINY, Backbone
    from polywake.models.heads import WakeWordHeads
    from polywake.train.windows import N_SAMPLES, STEPS

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((6, N_SAMPLES)) * 0.1).astype(np.float32)
    labels = np.zeros((6, STEPS, 2), np.int8)
    labels[0, -4:, 0] = labels[1, -4:, 0] = 1
    labels[2, -4:, 1] = labels[3, -4:, 1] = 1
    bg = (rng.standard_normal((2, N_SAMPLES)) * 0.05).astype(np.float32)
    bb0 = Backbone(TINY)
    return audio, labels, bg, bb0, WakeWordHeads(bb0.embed_dim, ["a", "b"], hidden=4)


def test_finetune_anchor_keeps_embeddings_near_the_pretrained_ones() -> None:
    import copy

    from polywake.features import logmel_torch
    from polywake.train.finetune import finetune

    audio, labels, bg, bb0, h0 = _finetune_setup()
    dist = {}
    for anchor in (0.0, 50.0):
        bb, h = copy.deepcopy(bb0), copy.deepcopy(h0)
        finetune(bb, h, audio, labels, ["a", "b"], steps=12, extra_negatives=bg, seed=3,
                 pos_per_word=2, neg_per_batch=3, lr=2e-2, progress=False, anchor=anchor)
        with torch.no_grad():
            mel = logmel_torch(torch.from_numpy(audio))
            ref = bb0.eval()(mel)
            dist[anchor] = float(((bb(mel) - ref) ** 2).mean() / (ref ** 2).mean())
    assert dist[50.0] < 0.5 * dist[0.0], dist


@pytest.mark.parametrize("anchor", [0.0, 5.0])
def test_finetune_killed_and_resumed_equals_uninterrupted(tmp_path: Path, anchor: float) -> None:
    """With an anchor, the resumed run must still anchor to the PRETRAINED backbone, not to
    the checkpoint it resumed from."""
    import copy

    from polywake.train.finetune import finetune

    audio, labels, bg, bb0, h0 = _finetune_setup()

    def run(state: Path, **kw):
        bb, h = copy.deepcopy(bb0), copy.deepcopy(h0)
        finetune(bb, h, audio, labels, ["a", "b"], steps=6, extra_negatives=bg, seed=3,
                 pos_per_word=2, neg_per_batch=3, state_path=state, save_every=2,
                 progress=False, **kw)
        return bb, h

    bb_a, h_a = run(tmp_path / "a.safetensors", anchor=anchor)
    run(tmp_path / "b.safetensors", stop_after=3, anchor=anchor)  # "killed" after 3 steps
    bb_b, h_b = run(tmp_path / "b.safetensors", anchor=anchor)  # resumes at step 3
    for m_a, m_b in ((bb_a, bb_b), (h_a, h_b)):
        for (k, v_a), v_b in zip(m_a.state_dict().items(), m_b.state_dict().values(),
                                 strict=True):
            torch.testing.assert_close(v_a, v_b, rtol=0, atol=0, msg=k)
    moved = [k for k, v in bb_a.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, bb0.state_dict()[k])]
    assert moved, "fine-tuning left the backbone unchanged"


def test_tempering_unsaturates_scores_keeps_ranking_and_other_words() -> None:
    """A saturated false accept (float32 sigmoid == 1.0) ties saturated detections, so no
    threshold separates them; tempering must untie them without reordering anything, and
    must not touch words it was not asked to temper."""
    from polywake.models.heads import WakeWordHeads
    from polywake.train.heads import MAX_LOGIT, score_windows, temper_heads, window_logits

    heads = WakeWordHeads(8, ["loud", "other"], hidden=4)
    with torch.no_grad():
        heads.w2[0].mul_(400.0)
        heads.w2[1].mul_(400.0)
    emb = np.random.default_rng(0).standard_normal((64, 6, 8)).astype(np.float32)
    before = window_logits(heads, emb)
    assert (score_windows(heads, emb)[:, :, 0] == 1.0).sum() > 1  # saturated ties
    other = [p.detach().clone() for p in (heads.w1[1], heads.b1[1], heads.w2[1], heads.b2[1])]
    temps = temper_heads(heads, ["loud"], [emb])
    assert temps["loud"] > 1.0
    after = window_logits(heads, emb)
    assert after[:, :, 0].max() <= MAX_LOGIT + 1e-4
    assert np.array_equal(np.argsort(before[:, :, 0], axis=None, kind="stable"),
                          np.argsort(after[:, :, 0], axis=None, kind="stable"))
    assert (score_windows(heads, emb)[:, :, 0] == 1.0).sum() == 0
    for p, q in zip((heads.w1[1], heads.b1[1], heads.w2[1], heads.b2[1]), other, strict=True):
        assert torch.equal(p, q)
    # a second tempering on the same data changes nothing
    assert temper_heads(heads, ["loud"], [emb]) == {"loud": 1.0}


def test_engine_balanced_gives_every_engine_an_equal_share() -> None:
    from polywake.data.manifest import ClipRecord
    from polywake.train.wakewords import engine_balanced

    def rec(i: int, engine: str) -> tuple[Path, ClipRecord]:
        return Path("."), ClipRecord(f"{engine}{i}", f"{i}.flac", 1.0, "x", "positive",
                                     "train", word="x", engine=engine)

    items = [rec(i, "espeak-ng") for i in range(100)] + [rec(i, "kokoro") for i in range(5)] \
        + [rec(i, "pico") for i in range(2)]
    out = engine_balanced(items, 60)
    engines = [r.engine for _, r in out]
    assert len(out) == 60 and {engines.count(e) for e in ("espeak-ng", "kokoro", "pico")} == {20}
    # each engine cycles through its own clips in their given order
    assert [r.id for _, r in out if r.engine == "pico"][:4] == ["pico0", "pico1"] * 2
    assert [r.id for _, r in out if r.engine == "espeak-ng"] == [f"espeak-ng{i}" for i in range(20)]
    assert engine_balanced([], 5) == []
