"""Train one multi-target wake-word model on the pretrained backbone.

    polywake train --backbone src/polywake/assets/backbone.safetensors \
        --manifest work_data/synth_product/manifest.jsonl \
        --words alexa echo amazon computer "hey samuel" --out runs/default

Recipe: synthetic positives (train voices) placed in running speech and real noise ->
frozen-backbone embeddings -> per-word heads trained with a balanced sampler (each word the
same number of positives per batch), confusable phrases and real background as negatives,
two rounds of hard-negative mining -> thresholds calibrated on DEV voices and DEV background
(never on evaluation data) -> a safetensors checkpoint and a ``.pwk`` runtime model with its
card.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..audio import SAMPLE_RATE, atomic_open, load_audio, remove_stale_temps
from ..data import splits
from ..data.augment import Transform
from ..models.backbone import Backbone
from ..models.heads import WakeWordHeads
from ..models.wakeword import load_checkpoint, load_matcher, save_checkpoint, state_digest
from .heads import (
    DECISION,
    EmbeddedSet,
    detector_scores,
    mine_hard_negatives,
    temper_heads,
    train_heads,
)
from .mixing import NoiseBank, trim_silence
from .windows import (
    N_SAMPLES,
    STEPS,
    STREAM_VERSION,
    Windows,
    embed,
    embed_stream,
    negative_window,
    positive_window,
    step_end_samples,
    window_labels,
)

DEFAULT_FA_TARGET = 0.5
CACHE = Path("work_data/cache")


@dataclass
class WordClips:
    """Clean clips per wake word and negatives, per split."""

    positives: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)
    negatives: dict[str, list[np.ndarray]] = field(default_factory=dict)  # confusables etc.
    speech: list[np.ndarray] = field(default_factory=list)  # running-speech context (train)
    # The TTS engine of each positive, in the order of ``positives`` (for per-engine reports).
    engines: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def load_manifest_clips(manifests: list[Path], words: list[str], max_per_word: int = 4000,
                        max_neg: int = 12000, seed: int = 0,
                        balance_engines: bool = False) -> WordClips:
    """Read clips of ``words`` (positives) and negatives from synth manifests.

    ``balance_engines``: each word's ``max_per_word`` positives come from the TTS engines in
    equal shares (:func:`engine_balanced`; a few-voice engine's clips repeat, each repeat
    re-mixed differently by the window builder) instead of in proportion to their voice
    counts, where espeak-ng's 808 formant voices make ~70 % of the clips and the neural ones
    (Kokoro, Piper) a few percent."""
    from ..data.manifest import load_manifest

    rng = np.random.default_rng(seed)
    recs = []
    for m in manifests:
        recs += [(m.parent, r) for r in load_manifest(m)]
    out = WordClips()
    pos: dict[tuple[str, str], list] = {}
    neg: dict[str, list] = {}
    for root, r in recs:
        split = "dev" if r.split in ("dev",) else "test" if r.split in ("test", "eval") else "train"
        if r.kind == "positive" and r.word in words:
            pos.setdefault((r.word, split), []).append((root, r))
        elif r.kind in ("confusable", "sentence") and r.word is None:
            # A confusable of a word we don't train is still a useful negative.
            neg.setdefault(split, []).append((root, r))
    for (w, split), items in sorted(pos.items()):
        rng.shuffle(items)
        if balance_engines:
            items = engine_balanced(items, max_per_word)
        chosen = items[:max_per_word]
        read: dict[int, np.ndarray] = {}  # a repeated clip is read (and held) once
        for root, r in tqdm(chosen, desc=f"{w} {split}", mininterval=5):
            if id(r) not in read:
                read[id(r)] = _read_clip(root, r)
        kept = [(read[id(r)], r.engine or "?") for _, r in chosen if read[id(r)].size > 800]
        out.positives.setdefault(w, {})[split] = [c for c, _ in kept]
        out.engines.setdefault(w, {})[split] = [e for _, e in kept]
    for split, items in sorted(neg.items()):
        rng.shuffle(items)
        clips = [_read_clip(root, r) for root, r in tqdm(items[:max_neg],
                                                        desc=f"negatives {split}", mininterval=5)]
        out.negatives[split] = [c for c in clips if c.size > 800]
        if split == "train":
            out.speech = [c for c, (_, r) in zip(clips, items[:max_neg], strict=False)
                          if r.kind == "sentence"][:3000]
    missing = [w for w in words if not out.positives.get(w, {}).get("train")]
    if missing:
        raise SystemExit(f"no training positives for {missing} in {manifests}; "
                         "run `polywake synth` for them first")
    return out


def engine_balanced(items: list, n: int) -> list:
    """``n`` of the ``(root, record)`` pairs, the engines taking turns (in name order), each
    engine cycling through its own clips in their given order: every engine gets an equal
    share (within one) of any prefix, repeating its clips when it has too few."""
    by: dict[str, list] = {}
    for it in items:
        by.setdefault(it[1].engine or "", []).append(it)
    turns = itertools.cycle([itertools.cycle(by[e]) for e in sorted(by)])
    return [next(next(turns)) for _ in range(n)] if by else []


def _read_clip(root: Path, r) -> np.ndarray:
    return trim_silence(load_audio(root / r.path))


def file_sig(path: Path) -> str:
    h = hashlib.sha1()
    h.update(Path(path).read_bytes())
    return h.hexdigest()[:12]


def background_streams(backbone: Backbone, split: str, key: str,
                       max_files: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Embeddings of the real background audio of a split, cached per backbone."""
    # The stream version is in the key: a change in how files are streamed (e.g. the detector's
    # lead) never reads an older cache.
    cache = CACHE / f"bg-{split}-{key}-{max_files or 'all'}-s{STREAM_VERSION}.npz"
    if cache.exists():
        d = np.load(cache, allow_pickle=False)
        names = [str(n) for n in d["names"]]
        return [(n, d[f"e{i}"]) for i, n in enumerate(names)]
    files = splits.background_files(split)[:max_files]
    out = []
    for f in tqdm(files, desc=f"background {split}", unit="file", mininterval=5):
        try:
            out.append((f.stem, embed_stream(backbone, load_audio(f))))
        except Exception as e:  # a damaged file is skipped and reported, not fatal
            print(f"skipping {f}: {e}", file=sys.stderr)
    arrays = {f"e{i}": e for i, (_, e) in enumerate(out)}
    # A unique temp name: two runs filling the same cache at once must not share one.
    with atomic_open(cache) as fh:
        np.savez(fh, names=np.array([n for n, _ in out]), **arrays)
    return out


def chop(streams: list[tuple[str, np.ndarray]], dim: int, steps: int = STEPS) -> np.ndarray:
    parts = []
    for _, e in streams:
        n = e.shape[0] // steps
        if n:
            parts.append(e[: n * steps].reshape(n, steps, e.shape[1]))
    return np.concatenate(parts) if parts else np.zeros((0, steps, dim), np.float16)


def build_windows(clips: WordClips, words: list[str], split: str, noise: NoiseBank,
                  rirs: np.ndarray | None, per_word: int, n_neg: int, seed: int,
                  tempo: Transform | None = None) -> Windows:
    """Positive windows (``per_word`` per word) and confusable/sentence negatives.

    ``tempo``: a transform applied to every clip, positive and negative alike, before it is
    placed (``augment.TempoStretch``: slower synthetic speech; negatives too, so that slowness
    is no cue for a wake word)."""
    rng = np.random.default_rng([seed, {"train": 0, "dev": 1, "test": 2}[split]])

    def prep(clip: np.ndarray) -> np.ndarray:
        return clip if tempo is None else tempo(clip, rng)

    audio, wid, end, dur = [], [], [], []
    speech = clips.speech if split == "train" else []
    for wi, w in enumerate(words):
        src = clips.positives.get(w, {}).get(split, [])
        if not src:
            continue
        for k in range(per_word):
            clip = prep(src[k % len(src)])
            x, e, d = positive_window(rng, clip, speech, noise, rirs)
            audio.append(x)
            wid.append(wi)
            end.append(e)
            dur.append(d)
    negs = clips.negatives.get(split, [])
    for k in range(min(n_neg, 2 * len(negs))):
        audio.append(negative_window(rng, prep(negs[k % len(negs)]), noise, rirs))
        wid.append(-1)
        end.append(-1)
        dur.append(0)
    return Windows(np.stack(audio) if audio else np.zeros((0, N_SAMPLES), np.float32),
                   np.array(wid), np.array(end), np.array(dur))


def curve_points(curve, max_points: int = 64) -> dict:
    """The DET curve as the card stores it: thresholds strictly ascending with the FA/h
    envelope and FRR at each, subsampled to at most ``max_points`` (what the detector's
    sensitivity knob interpolates)."""
    t = np.asarray(curve.thresholds, np.float64)
    idx = np.unique(np.linspace(0, t.size - 1, min(t.size, max_points)).round().astype(int))
    th = t[idx].tolist()
    fa = np.asarray(curve.fa_per_hour_upper)[idx].tolist()
    frr = [float(x) for x in np.asarray(curve.frr)[idx]]
    if len(th) < 2:  # a degenerate curve (one score value): anchor it at 0
        th, fa, frr = [0.0] + th, [fa[0]] + fa, [0.0] + frr
    return {"thresholds": th, "fa_per_hour": fa, "frr": frr, "hours": float(curve.hours),
            "positives": int(curve.n_pos), "refractory_s": float(curve.refractory_s)}


def calibrate(heads: WakeWordHeads, words: list[str], dev_pos: dict[str, np.ndarray],
              dev_streams: list[tuple[str, np.ndarray]], fa_target: float,
              dev_pos_ends: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Per word: the calibration table (thresholds for 0.1..10 FA/h) on DEV data, the
    threshold at ``fa_target``, and the typical latency of the score peak after word end.

    First the words' heads are tempered in place (:func:`polywake.train.heads.temper_heads`)
    so no dev score saturates at 1.0; the temperature is recorded in the entry."""
    from ..evaluate import ScoreStream, calibration_table, det_curve, threshold_for_fa

    temps = temper_heads(heads, words, [dev_pos[w] for w in words]
                         + [e[None] for _, e in dev_streams])
    streams = []
    for name, e in dev_streams:
        p = detector_scores(heads, e[None])[0]
        streams.append(ScoreStream(name, p, 0.08))
    ends = step_end_samples()
    out = {}
    for w in words:
        j = heads.words.index(w)
        probs = detector_scores(heads, dev_pos[w])[:, :, j]
        curve = det_curve(probs.max(1), streams, refractory_s=1.0, word_index=j)
        entry = {"calibration": curve_points(curve),
                 "operating_points": calibration_table(curve),
                 "threshold": float(threshold_for_fa(curve, fa_target)),
                 "threshold_fa_per_hour": fa_target,
                 "temperature": temps[w]}
        if dev_pos_ends is not None:
            lat = (ends[probs.argmax(1)] - dev_pos_ends[w]) / SAMPLE_RATE
            # The peak can precede the trimmed end by a frame or two; the card wants >= 0.
            entry["latency_s"] = float(max(0.0, np.median(lat)))
        out[w] = entry
    return out


def train_model(backbone_path: Path, clips: WordClips, words: list[str], out_dir: Path, *,
                per_word: int = 2500, n_neg: int = 10000, steps: int = 1500,
                mining_rounds: int = 2, fa_target: float = DEFAULT_FA_TARGET, seed: int = 0,
                command: str = "", bg_max_files: int | None = None,
                noise_minutes: float = 25.0, hidden: int = 16,
                finetune_steps: int = 0, finetune_anchor: float = 0.0) -> Path:
    t0 = time.time()
    torch.manual_seed(seed)
    for folder in (out_dir, CACHE):  # what killed runs left beside checkpoints and caches
        remove_stale_temps(folder)
    backbone, _, bb_card, _ = load_checkpoint(backbone_path)
    key = file_sig(backbone_path)
    from .pretrain import noise_bank, rir_bank

    noise_tr = noise_bank("train", max_minutes=noise_minutes)
    noise_dev = noise_bank("dev", max_minutes=min(8.0, noise_minutes))
    rirs = rir_bank()
    tr = build_windows(clips, words, "train", noise_tr, rirs, per_word, n_neg, seed)
    dv = build_windows(clips, words, "dev", noise_dev, rirs, max(200, per_word // 8),
                       n_neg // 8, seed + 1)
    print(f"windows: train {len(tr.word)}, dev {len(dv.word)}")
    heads = WakeWordHeads(backbone.embed_dim, hidden=hidden)
    for i, w in enumerate(words):
        heads.add_word(w, seed=seed * 100 + i)
    if finetune_steps:
        from .finetune import background_windows, finetune

        out_dir.mkdir(parents=True, exist_ok=True)
        bg_audio = background_windows(splits.background_files("train")[:bg_max_files],
                                      N_SAMPLES)
        finetune(backbone, heads, tr.audio, window_labels(tr, len(words)), words,
                 steps=finetune_steps, extra_negatives=bg_audio, seed=seed,
                 state_path=out_dir / "finetune_state.safetensors", anchor=finetune_anchor)
        del bg_audio
        # Embedding caches are per backbone: the fine-tuned one gets its own key.
        key = state_digest(backbone)
    tr_set = EmbeddedSet(embed(backbone, tr.audio), window_labels(tr, len(words)), words)
    bg_tr = chop(background_streams(backbone, "train", key, bg_max_files), backbone.embed_dim)
    tr_set = tr_set.concat(EmbeddedSet(bg_tr, np.zeros(bg_tr.shape[:2] + (len(words),),
                                                       np.int8), words))
    dv_emb = embed(backbone, dv.audio)
    dev_streams = background_streams(backbone, "dev", key, bg_max_files)
    weights = None
    for r in range(mining_rounds + 1):
        train_heads(heads, tr_set, words, steps=steps, seed=seed + r, neg_weights=weights)
        if r < mining_rounds:
            weights = mine_hard_negatives(heads, tr_set, words)
            print(f"mining round {r + 1}: {int((weights > 1).sum())} hard windows")
    dev_pos = {w: dv_emb[dv.word == i] for i, w in enumerate(words)}
    dev_ends = {w: dv.end[dv.word == i] for i, w in enumerate(words)}
    per_word_card = calibrate(heads, words, dev_pos, dev_streams, fa_target, dev_ends)
    for w in words:
        d = [c.size / SAMPLE_RATE for c in clips.positives[w]["train"]]
        per_word_card[w]["duration_s"] = float(np.median(d))
        per_word_card[w]["train_clips"] = len(clips.positives[w]["train"])
    card = {
        "name": out_dir.name, "kind": "wakeword", "words": words, "decision": DECISION,
        "per_word": per_word_card, "backbone_sha": key,
        "backbone_pretrain": {k: bb_card.get(k) for k in ("pretrain_step", "dev_accuracy")},
        "training": {"command": command, "seconds": round(time.time() - t0),
                     "windows_per_word": per_word, "negative_windows": int(n_neg),
                     "background_windows": int(bg_tr.shape[0]), "steps": steps,
                     "mining_rounds": mining_rounds, "seed": seed,
                     "finetune_steps": finetune_steps, "finetune_anchor": finetune_anchor,
                     "calibration": f"dev voices + dev background, {fa_target} FA/h"},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = save_checkpoint(out_dir / "model.safetensors", backbone=backbone, heads=heads,
                           card=card)
    from ..export import export_checkpoint

    export_checkpoint(ckpt, out_dir / "model.pwk")
    print(json.dumps({w: {k: v for k, v in c.items() if k != "calibration"}
                      for w, c in per_word_card.items()}, indent=1))
    print(f"wrote {ckpt} and {out_dir / 'model.pwk'} in {time.time() - t0:.0f} s")
    return ckpt


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", type=Path, required=True)
    p.add_argument("--manifest", type=Path, action="append", required=True)
    p.add_argument("--words", nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-word", type=int, default=2500, help="positive windows per word")
    p.add_argument("--negatives", type=int, default=10000, help="confusable windows")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--mining-rounds", type=int, default=2)
    p.add_argument("--fa-target", type=float, default=DEFAULT_FA_TARGET)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=16, help="hidden units per word head "
                   "(8 for the tiny model: <= 50k parameters with five words)")
    p.add_argument("--finetune-steps", type=int, default=0,
                   help="first fine-tune backbone + heads end to end for this many steps "
                        "(checkpointed in OUT/finetune_state.safetensors; 0: frozen backbone)")
    p.add_argument("--finetune-anchor", type=float, default=0.0,
                   help="while fine-tuning, keep the backbone's embeddings this close to the "
                        "pretrained ones (weight of their normalised squared distance; 0: off)")
    p.add_argument("--balance-engines", action="store_true",
                   help="give every TTS engine an equal share of each word's positives "
                   "(recipe C, docs/BENCHMARKS.md)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared 2-core CPU more threads spin and slow down)")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    words = [w.strip().lower() for w in args.words]
    clips = load_manifest_clips(args.manifest, words, seed=args.seed,
                                balance_engines=args.balance_engines)
    train_model(args.backbone, clips, words, args.out, per_word=args.per_word,
                n_neg=args.negatives, steps=args.steps, mining_rounds=args.mining_rounds,
                fa_target=args.fa_target, seed=args.seed, hidden=args.hidden,
                finetune_steps=args.finetune_steps, finetune_anchor=args.finetune_anchor,
                command="polywake train " + " ".join(sys.argv[2:]))
    return 0


def recalibrate(checkpoint: Path, manifests: list[Path], out_dir: Path, *,
                per_word: int = 2500, fa_target: float = DEFAULT_FA_TARGET, seed: int = 0,
                noise_minutes: float = 25.0, balance_engines: bool = False) -> Path:
    """Re-run only the DEV calibration of a trained model (same dev windows as training: same
    seed, manifests and ``balance_engines``), e.g. after the decision smoothing changed, or
    on another model's dev windows to compare two models on one dev set. Heads and backbone
    are untouched."""
    backbone, heads, card, _ = load_checkpoint(checkpoint)
    assert heads is not None
    words = heads.words
    clips = load_manifest_clips(manifests, words, seed=seed, balance_engines=balance_engines)
    from .pretrain import noise_bank, rir_bank

    noise_dev = noise_bank("dev", max_minutes=min(8.0, noise_minutes))
    dv = build_windows(clips, words, "dev", noise_dev, rir_bank(), max(200, per_word // 8),
                       10000 // 8, seed + 1)
    dv_emb = embed(backbone, dv.audio)
    key = card.get("backbone_sha") or file_sig(checkpoint)
    dev_streams = background_streams(backbone, "dev", key)
    cal = calibrate(heads, words, {w: dv_emb[dv.word == i] for i, w in enumerate(words)},
                    dev_streams, fa_target, {w: dv.end[dv.word == i] for i, w in
                                             enumerate(words)})
    card = dict(card)
    card["decision"] = DECISION
    for w in words:
        card["per_word"][w].update(cal[w])
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = save_checkpoint(out_dir / "model.safetensors", backbone=backbone, heads=heads,
                           card=card, matcher=load_matcher(checkpoint))
    from ..export import export_checkpoint

    export_checkpoint(ckpt, out_dir / "model.pwk")
    print({w: round(card["per_word"][w]["threshold"], 3) for w in words})
    return ckpt
