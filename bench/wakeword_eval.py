"""Shared by the benchmarks: train heads for some words from synthetic data only, calibrate on
DEV, and measure on REAL recordings (eval split). Embeddings are the streaming ones (the
causal state carried through each file), so the numbers are those of the streaming detector.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from polywake.audio import SAMPLE_RATE, atomic_open, load_audio
from polywake.data import splits
from polywake.evaluate import ScoreStream, det_curve, frr_at_fa
from polywake.models.heads import WakeWordHeads
from polywake.train.heads import EmbeddedSet, detector_scores, mine_hard_negatives, train_heads
from polywake.train.wakewords import (
    CACHE,
    WordClips,
    build_windows,
    calibrate,
    chop,
)
from polywake.train.windows import embed, embed_stream, window_labels

FA_POINTS = (0.1, 0.5, 1.0)


class BackboneEmbedder:
    """Our backbone as an embedder (windows in batch, long files streamed)."""

    def __init__(self, backbone, key: str) -> None:
        self.backbone, self.key, self.dim = backbone, key, backbone.embed_dim

    def windows(self, audio: np.ndarray) -> np.ndarray:
        return embed(self.backbone, audio, progress=False)

    def stream(self, audio: np.ndarray) -> np.ndarray:
        return embed_stream(self.backbone, audio)


def embedder_for(model_path: Path, backbone_ref: Path | None = None):
    """(backbone, heads, card, embedder) of a checkpoint. When its backbone is the shipped
    pretrained one, the embedding caches are shared (same cache key)."""
    from polywake.models.wakeword import load_checkpoint
    from polywake.train.wakewords import file_sig

    ref = backbone_ref or Path(__file__).resolve().parents[1] / \
        "src/polywake/assets/backbone.safetensors"
    backbone, heads, card, _ = load_checkpoint(model_path)
    key = file_sig(model_path)
    if ref.exists():
        bb_ref = load_checkpoint(ref)[0]
        if all(torch.equal(x, y) for x, y in zip(backbone.state_dict().values(),
                                                 bb_ref.state_dict().values(), strict=True)):
            key = file_sig(ref)
    return backbone, heads, card, BackboneEmbedder(backbone, key)


def _padded(audio: np.ndarray, pad_s: float, name: str) -> np.ndarray:
    """``audio`` + ``pad_s`` s of quiet room (white noise at -60 dBFS, seeded by the name): a
    recording cut right after the word would otherwise end before the detector has answered,
    which live audio never does."""
    if pad_s <= 0:
        return audio
    seed = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)
    tail = np.random.default_rng(seed).standard_normal(int(pad_s * SAMPLE_RATE)) * 10 ** (-60 / 20)
    return np.concatenate([audio, tail.astype(np.float32)])


_VAD = None


def _room_led(audio: np.ndarray) -> np.ndarray:
    """``audio`` with ``add_word.ROOM_LEAD_S`` of its own room tone before its speech (found by
    the Silero VAD endpointing uses): a clip that starts just before its word gives a detector
    a cold stream start inside its receptive field, which live audio never has."""
    from polywake.train.add_word import _example_vad, room_lead
    from polywake.vad import speech_bounds

    global _VAD
    if _VAD is None:
        _VAD = _example_vad()
    b = speech_bounds(audio, _VAD)
    return room_lead(audio, None if b is None else b[0])


def cached_streams(embedder, files: list[Path], tag: str,
                   pad_s: float = 0.0, room_lead: bool = False) -> list[tuple[str, np.ndarray]]:
    from polywake.train.windows import STREAM_VERSION

    if pad_s > 0:
        tag = f"{tag}-pad{pad_s:g}"
    if room_lead:
        tag = f"{tag}-room"
    # The stream version is in the key: a change in how files are streamed never reads an
    # older cache.
    cache = CACHE / f"streams-{tag}-{embedder.key}-s{STREAM_VERSION}.npz"
    if cache.exists():
        d = np.load(cache, allow_pickle=False)
        return [(str(n), d[f"e{i}"]) for i, n in enumerate(d["names"])]
    out = []
    from tqdm import tqdm

    for f in tqdm(files, desc=f"embed {tag}", unit="file", mininterval=10):
        try:
            x = load_audio(f)
            out.append((str(f), embedder.stream(_padded(_room_led(x) if room_lead else x,
                                                        pad_s, f.name))))
        except Exception as e:  # noqa: BLE001 - a damaged file is reported and skipped
            print(f"skip {f}: {e}")
    # A unique temp name: two benchmarks filling the same cache at once must not share one.
    with atomic_open(cache) as fh:
        np.savez(fh, names=np.array([n for n, _ in out]), **{f"e{i}": e for i, (_, e) in
                                                             enumerate(out)})
    return out


@dataclass
class WordEval:
    word: str
    frr_at: dict[float, float] = field(default_factory=dict)
    dev_threshold: float = 0.0
    frr_at_dev_threshold: float = 0.0
    fa_per_hour_at_dev_threshold: float = 0.0
    positives: int = 0
    hours: float = 0.0


def evaluate_real(heads: WakeWordHeads, words: list[str], folders: dict[str, str], embedder,
                  thresholds: dict[str, float], extra_negative_folders: tuple[str, ...] = (),
                  held_out_files: dict[str, list[Path]] | None = None,
                  background: str = "eval", pad_real_s: float = 0.0,
                  scores_of=None, room_lead: bool = False) -> list[WordEval]:
    """Positives: real clips of each word. Negatives: the ``background`` split's real
    background (eval; "dev" when the real phrases are a dev set for choosing a recipe) + the
    OTHER words' real clips (+ extra folders). FRR read off the DET curve at 0.1/0.5/1 FA/h,
    and the honest operating point: the DEV-calibrated threshold's FRR and FA/h on this data.
    ``pad_real_s``: quiet room appended to every real clip (``_padded``); ``room_lead``: its
    own room tone put before it (``_room_led``). ``scores_of``:
    (steps, dim) embeddings -> (steps, words) scores, for a scorer other than heads (e.g. a
    matcher; ``heads`` then only needs ``.words``)."""
    bg = cached_streams(embedder, splits.background_files(background), f"bg-{background}")
    real = {w: cached_streams(embedder, splits.real_keyword_files(f), f"real-{f}", pad_real_s,
                              room_lead) for w, f in folders.items()}
    extra = [s for f in extra_negative_folders
             for s in cached_streams(embedder, splits.real_keyword_files(f), f"real-{f}",
                                     pad_real_s, room_lead)]

    def scores(streams):
        if scores_of is not None:
            return [ScoreStream(n, scores_of(e), 0.08) for n, e in streams]
        return [ScoreStream(n, detector_scores(heads, e[None])[0], 0.08) for n, e in streams]

    bg_scores = scores(bg)
    real_scores = {w: scores(s) for w, s in real.items()}
    # positives of a word: only its held-out clips (enrollment examples are never scored)
    keep = {w: {str(f) for f in fs} for w, fs in (held_out_files or {}).items()}
    extra_scores = scores(extra)
    out = []
    for w in words:
        j = heads.words.index(w)
        pos = np.array([s.scores[:, j].max() for s in real_scores[w]
                        if w not in keep or s.path in keep[w]])
        negs = bg_scores + extra_scores + [s for o, ss in real_scores.items() if o != w
                                           for s in ss]
        curve = det_curve(pos, negs, refractory_s=1.0, word_index=j)
        ev = WordEval(w, positives=int(pos.size), hours=curve.hours)
        for fa in FA_POINTS:
            ev.frr_at[fa] = frr_at_fa(curve, fa)[0]
        ev.dev_threshold = float(thresholds[w])
        ev.frr_at_dev_threshold, ev.fa_per_hour_at_dev_threshold = curve.at(thresholds[w])
        out.append(ev)
    return out


def train_and_calibrate(embedder, clips: WordClips, words: list[str], *, per_word: int,
                        n_neg: int, steps: int, seed: int = 0, fa_target: float = 0.5,
                        hidden: int = 16) -> tuple[WakeWordHeads, dict[str, float], dict]:
    """Heads for ``words`` on ``embedder``'s features; thresholds calibrated on DEV."""
    from polywake.train.pretrain import noise_bank, rir_bank

    t0 = time.time()
    noise_tr = noise_bank("train")
    rirs = rir_bank()
    tr = build_windows(clips, words, "train", noise_tr, rirs, per_word, n_neg, seed)
    data = EmbeddedSet(embedder.windows(tr.audio), window_labels(tr, len(words)), words)
    bg = chop(cached_streams(embedder, splits.background_files("train"), "bg-train"),
              embedder.dim)
    data = data.concat(EmbeddedSet(bg, np.zeros(bg.shape[:2] + (len(words),), np.int8), words))
    heads = WakeWordHeads(embedder.dim, hidden=hidden)
    for i, w in enumerate(words):
        heads.add_word(w, seed=seed * 100 + i)
    weights = None
    for r in range(2):
        train_heads(heads, data, words, steps=steps, seed=seed + r, neg_weights=weights)
        if r == 0:
            weights = mine_hard_negatives(heads, data, words)
    thresholds = calibrate_heads(embedder, heads, clips, words, per_word, seed, fa_target)
    info = {"seconds": round(time.time() - t0), "train_windows": int(data.emb.shape[0])}
    return heads, thresholds, info


def results_table(name: str, evals: list[WordEval]) -> list[list[str]]:
    rows = []
    for e in evals:
        rows.append([name, e.word, str(e.positives)]
                    + [f"{100 * e.frr_at[f]:.1f}%" for f in FA_POINTS]
                    + [f"{e.dev_threshold:.3f}", f"{100 * e.frr_at_dev_threshold:.1f}%",
                       f"{e.fa_per_hour_at_dev_threshold:.2f}"])
    mean = [name, "**mean**", ""] + [
        f"**{100 * np.mean([e.frr_at[f] for e in evals]):.1f}%**" for f in FA_POINTS] + [
        "", f"{100 * np.mean([e.frr_at_dev_threshold for e in evals]):.1f}%",
        f"{np.mean([e.fa_per_hour_at_dev_threshold for e in evals]):.2f}"]
    return rows + [mean]


HEADER = ["system", "word", "real clips", "FRR @0.1 FA/h", "FRR @0.5 FA/h", "FRR @1 FA/h",
          "dev threshold", "FRR @dev thr", "FA/h @dev thr"]


def save_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=float))


def set_threads() -> None:
    torch.set_num_threads(1)


def calibrate_heads(embedder, heads: WakeWordHeads, clips: WordClips, words: list[str],
                    per_word: int, seed: int = 0, fa_target: float = 0.5) -> dict[str, float]:
    """Thresholds at ``fa_target`` FA/h on DEV voices + DEV background (never eval)."""
    from polywake.train.pretrain import noise_bank, rir_bank

    dv = build_windows(clips, words, "dev", noise_bank("dev", max_minutes=8), rir_bank(),
                       max(200, per_word // 8), 0, seed + 1)
    dv_emb = embedder.windows(dv.audio)
    dev_streams = cached_streams(embedder, splits.background_files("dev"), "bg-dev")
    cal = calibrate(heads, words, {w: dv_emb[dv.word == i] for i, w in enumerate(words)},
                    dev_streams, fa_target, {w: dv.end[dv.word == i] for i, w in
                                             enumerate(words)})
    return {w: cal[w]["threshold"] for w in words}
