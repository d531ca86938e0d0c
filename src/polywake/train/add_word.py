"""Add a wake word to an existing multi-target model (or remove one), on a laptop CPU.

    polywake add-word "hey jarvis" --model runs/default/model.safetensors --out my.safetensors \
        [--examples DIR_OF_WAVS] [--method heads|matcher]
    polywake add-word --remove echo --model IN --out OUT

``--method matcher`` (k >= 1 examples, no synthesis, seconds): the word is *matched*, not
trained: its examples' vectors in the distilled embedding become templates
(:class:`polywake.models.matcher.TemplateMatcher`), scored beside the trained heads; its
threshold is calibrated on the real dev background when ../shared/data is there, else the
matcher's shipped default.

0 examples: text only (the phrase is synthesized with every installed TTS voice).
k >= 1 examples: each real clip is used many times, each time re-mixed (position, running
speech, real noise, room reverb), next to the synthetic clips.

Existing words are *frozen*: only the new word's head is trained, every other head tensor
and the backbone are copied bit for bit, so existing words' scores cannot change. (Joint
fine-tuning with distillation would allow sharing capacity; it was not needed, because the
heads share nothing but the frozen backbone.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..audio import SAMPLE_RATE, load_audio
from ..data import splits
from ..models.wakeword import (
    MATCHER_BASE,
    load_checkpoint,
    load_matcher,
    load_matcher_base,
    save_checkpoint,
    state_digest,
)
from .heads import EmbeddedSet, mine_hard_negatives, train_heads
from .mixing import trim_silence
from .wakewords import (
    CACHE,
    WordClips,
    background_streams,
    build_windows,
    calibrate,
    chop,
    curve_points,
    file_sig,
    load_manifest_clips,
)
from .windows import embed, positive_window, window_labels

REAL_WINDOWS_PER_EXAMPLE = 60


def synth_phrase(phrase: str, out_dir: Path, seed: int = 0, workers: int = 2,
                 engines: list[str] | None = None) -> list[Path]:
    """Synthesize the phrase with every voice of ``engines`` (default: every installed
    engine) and its confusables; cached in ``out_dir``. Returns the manifests.

    Kokoro (neural, ~1-2 s a clip) makes positives only, 4 per voice (the recipe measured in
    docs/BENCHMARKS.md, "Recipe choice on REAL dev phrases"), in ``out_dir/kokoro``."""
    from ..data import tts
    from ..data.synth import synthesize_set

    chosen = list(tts.ENGINES if engines is None else engines)
    fast = [e for e in chosen if e != "kokoro"]
    kokoro = "kokoro" in chosen or (engines is None and bool(tts.list_voices(["kokoro"])))
    out = []
    if fast:
        out.append(synthesize_set([phrase], out_dir, n_variants=2, rich_variants=12,
                                  negatives=True, neg_voices=6, n_sentences=300,
                                  sentence_voices=1, workers=workers, seed=seed, engines=fast,
                                  progress=True))
    if kokoro:
        out.append(synthesize_set([phrase], Path(out_dir) / "kokoro", rich_variants=4,
                                  negatives=False, workers=workers, seed=seed,
                                  engines=["kokoro"], progress=True))
    return out


def add_word(model_in: Path, phrase: str, out: Path, *, examples: list[np.ndarray] | None = None,
             manifest: Path | None = None, synth_dir: Path | None = None, per_word: int = 1200,
             n_neg: int = 2500, steps: int = 600, mining_rounds: int = 1, fa_target: float = 0.5,
             seed: int = 0, bg_max_files: int | None = None, noise_minutes: float = 10.0,
             clips: WordClips | None = None, cache_tag: str | None = None,
             engines: list[str] | None = None, balance_engines: bool = True,
             progress: bool = True) -> tuple[Path, dict]:
    """Train a head for ``phrase`` on the frozen backbone; return (checkpoint, timings).

    The synthetic positives give every TTS engine an equal share (``balance_engines``),
    Kokoro's neural voices included when installed: chosen on real dev phrases
    (docs/BENCHMARKS.md)."""
    t0 = time.time()
    phrase = " ".join(phrase.lower().split())
    backbone, heads, card, _ = load_checkpoint(model_in)
    matcher = load_matcher(model_in)
    if heads is None:
        raise SystemExit(f"{model_in}: a backbone checkpoint; train a model first")
    if phrase in heads.words or (matcher is not None and phrase in matcher.words):
        raise SystemExit(f"{phrase!r} is already in {model_in}; remove it first")
    key = file_sig(model_in)
    if clips is None:
        if manifest is None:
            tag = "" if engines is None else "-" + "-".join(sorted(engines))
            synth_dir = synth_dir or CACHE / f"synth-{phrase.replace(' ', '_')}{tag}"
            manifests = synth_phrase(phrase, synth_dir, seed, engines=engines)
        else:
            manifests = [manifest]
        clips = load_manifest_clips(manifests, [phrase], max_per_word=per_word,
                                    max_neg=n_neg, seed=seed, balance_engines=balance_engines)
    t_data = time.time()
    from .pretrain import noise_bank, rir_bank

    noise_tr = noise_bank("train", max_minutes=noise_minutes)
    noise_dev = noise_bank("dev", max_minutes=min(8.0, noise_minutes))
    rirs = rir_bank(24)
    words = [phrase]
    tr = build_windows(clips, words, "train", noise_tr, rirs, per_word, n_neg, seed)
    data = EmbeddedSet(embed(backbone, tr.audio, progress=progress),
                       window_labels(tr, 1), words)
    if examples:
        data = data.concat(real_example_windows(backbone, examples, phrase, clips, noise_tr,
                                                     rirs, seed))
    bg_key = cache_tag or key
    bg = chop(background_streams(backbone, "train", bg_key, bg_max_files), backbone.embed_dim)
    data = data.concat(EmbeddedSet(bg, np.zeros(bg.shape[:2] + (1,), np.int8), words))
    heads.add_word(phrase, seed=seed)
    weights = None
    for r in range(mining_rounds + 1):
        train_heads(heads, data, words, steps=steps, seed=seed + r, neg_weights=weights,
                    progress=progress)
        if r < mining_rounds:
            weights = mine_hard_negatives(heads, data, words)
    dv = build_windows(clips, words, "dev", noise_dev, rirs, max(150, per_word // 8), 0,
                       seed + 1)
    dev_streams = background_streams(backbone, "dev", bg_key, bg_max_files)
    dv_emb = embed(backbone, dv.audio, progress=progress)
    if dv_emb.shape[0] == 0:  # no dev voices for this phrase: calibrate on train voices
        dv = build_windows(clips, words, "train", noise_dev, rirs, 150, 0, seed + 2)
        dv_emb = embed(backbone, dv.audio, progress=progress)
    entry = calibrate(heads, words, {phrase: dv_emb}, dev_streams, fa_target,
                      {phrase: dv.end})[phrase]
    entry["duration_s"] = float(np.median([c.size / 16000 for c in
                                           clips.positives[phrase]["train"]]))
    entry["real_examples"] = len(examples or [])
    entry["added"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    card = dict(card)
    card["words"] = heads.words + (matcher.words if matcher else [])
    card.setdefault("per_word", {})[phrase] = entry
    card.setdefault("history", []).append(f"add-word {phrase!r} ({len(examples or [])} examples)")
    ckpt = save_checkpoint(out, backbone=backbone, heads=heads, card=card, matcher=matcher)
    timings = {"data_s": round(t_data - t0, 1), "train_s": round(time.time() - t_data, 1),
               "total_s": round(time.time() - t0, 1)}
    return ckpt, timings


def _example_vad():
    from ..vad import VoiceActivity

    try:
        return VoiceActivity("silero")
    except RuntimeError:  # the runtime extra is not installed
        return None


def endpoint_example(clip: np.ndarray, vad=None, pad_s: float = 0.03) -> np.ndarray:
    """A real example cut to its speech, so that the clip's end is the word's end (the label
    the windows are built on). Silero VAD when installed; else the TTS clips' energy trim,
    which cuts nothing in a noisy take (bug 16, docs/RELIABILITY.md). A hybrid that kept the
    energy trim's edges in quiet takes lost on the real dev phrases (docs/BENCHMARKS.md)."""
    from ..vad import speech_bounds

    bounds = speech_bounds(clip, vad) if vad is not None else None
    if bounds is None:
        return trim_silence(clip, pad_s=pad_s)
    pad = int(pad_s * SAMPLE_RATE)
    return clip[max(0, bounds[0] - pad): min(clip.size, bounds[1] + pad)]


def real_example_windows(backbone, examples: list[np.ndarray], phrase: str, clips: WordClips,
                         noise, rirs, seed: int, speed: float = 0.0) -> EmbeddedSet:
    """Each real example re-mixed ``REAL_WINDOWS_PER_EXAMPLE`` times (heavy augmentation).

    ``speed`` > 0: half of the copies are resampled by a random factor in [1 - speed,
    1 + speed] (tempo and pitch together, as in pretraining), so ten recordings of one or two
    speakers stand for a few more voices."""
    from .windows import Windows

    rng = np.random.default_rng([seed, 7])
    audio, end, dur = [], [], []
    vad = _example_vad()
    for clip in examples:
        c = endpoint_example(clip, vad)
        for _ in range(REAL_WINDOWS_PER_EXAMPLE):
            cc = c
            if speed > 0 and rng.random() < 0.5:
                import soxr

                factor = rng.uniform(1 - speed, 1 + speed)
                cc = soxr.resample(c, SAMPLE_RATE, SAMPLE_RATE * factor,
                                   quality="LQ").astype(np.float32)
            x, e, d = positive_window(rng, cc, clips.speech, noise, rirs)
            audio.append(x)
            end.append(e)
            dur.append(d)
    w = Windows(np.stack(audio), np.zeros(len(audio), int), np.array(end), np.array(dur))
    return EmbeddedSet(embed(backbone, w.audio, progress=False), window_labels(w, 1), [phrase])


def real_word_negative_windows(backbone, phrase: str, n: int, noise, rirs, seed: int,
                               split: str = "train") -> EmbeddedSet:
    """``n`` negative windows, each one REAL isolated word (Speech Commands and Arabic Speech
    Commands speakers of ``split``: ../shared/data/real_words) over real noise.

    The phrase's positives are all synthetic; the real voices the head otherwise hears as
    negatives are a few LibriSpeech speakers reading. Words that share a word with the phrase
    are left out (a user may add "marvin"). Measured on the real dev phrases, not better
    (docs/BENCHMARKS.md): ``add_word`` does not use it; ``bench/add_word.py --real-negatives``."""
    from .pretrain import real_word_items
    from .windows import STEPS, Windows, negative_window

    phrase_words = set(phrase.split())
    items = [it for it in real_word_items(split)
             if not phrase_words & set(it[1].removeprefix("ar:").split())]
    if not items or n <= 0:
        return EmbeddedSet(np.zeros((0, STEPS, backbone.embed_dim), np.float16),
                           np.zeros((0, STEPS, 1), np.int8), [phrase])
    rng = np.random.default_rng([seed, 11])
    pick = rng.choice(len(items), min(n, len(items)), replace=False)
    audio = [negative_window(rng, trim_silence(load_audio(items[i][0])), noise, rirs)
             for i in pick]
    w = Windows(np.stack(audio), np.full(len(audio), -1), np.full(len(audio), -1),
                np.zeros(len(audio), int))
    return EmbeddedSet(embed(backbone, w.audio, progress=False), window_labels(w, 1), [phrase])


def remove_word(model_in: Path, word: str, out: Path) -> Path:
    backbone, heads, card, _ = load_checkpoint(model_in)
    matcher = load_matcher(model_in)
    matched = matcher is not None and word in matcher.words
    if heads is None or (word not in heads.words and not matched):
        raise SystemExit(f"{word!r} is not in {model_in}")
    if matched:
        matcher.remove_word(word)
    else:
        if len(heads.words) == 1:
            raise SystemExit(f"{word!r} is the only trained word in {model_in}; a model needs "
                             "one")
        heads.remove_word(word)
    card = dict(card)
    card["words"] = heads.words + (matcher.words if matcher else [])
    card.get("per_word", {}).pop(word, None)
    card.setdefault("history", []).append(f"remove-word {word!r}")
    return save_checkpoint(out, backbone=backbone, heads=heads, card=card, matcher=matcher)


QUIET_TAIL_S = 0.5  # room after an example, so the steps that trail its end exist
# Room tone before an example: more than the matcher student's 1.9 s receptive field, so no
# template step sees a cold stream start (live audio never has one).
ROOM_LEAD_S = 2.0


def room_lead(clip: np.ndarray, start: int | None, lead_s: float = ROOM_LEAD_S) -> np.ndarray:
    """``clip`` with ``lead_s`` s of its own room tone before it: the part before its speech
    (``start``, less endpoint_example's 30 ms margin) played forwards and backwards in turn,
    so the joins do not click; quiet -60 dB noise when there is under 0.1 s of it."""
    n = round(lead_s * SAMPLE_RATE)
    pre = clip[:max(0, (start or 0) - int(0.03 * SAMPLE_RATE))]
    if pre.size < int(0.1 * SAMPLE_RATE):
        lead = np.random.default_rng(0).standard_normal(n) * 10 ** (-60 / 20)
    else:
        reps = -(-n // pre.size) + 1
        lead = np.concatenate([pre if i % 2 == 0 else pre[::-1]
                               for i in range(reps)])[pre.size * reps - n:]
    return np.concatenate([lead.astype(np.float32), clip.astype(np.float32)])


def example_templates(backbone, examples: list[np.ndarray], vad=None,
                      seq_len: int = 1) -> list[np.ndarray]:
    """Per example, its template steps' embeddings (n, dim) in ``backbone`` (the matcher's),
    taken *in context*: the whole recording, :func:`room_lead` before it and a quiet tail
    after it, streamed as the Detector streams; the steps placed around the speech's end found
    by ``vad`` (the end :func:`endpoint_example` cuts at) by
    :func:`polywake.models.matcher.template_steps`. Without a VAD, or when it finds no speech,
    the energy-trimmed example is used instead. Examples too short to give the steps are
    skipped (an empty array). In context rather than cut to the speech and cold-started:
    matcher dev 31.5 -> 18.2 % on positives with a warm lead (docs/BENCHMARKS.md, "Templates
    in context")."""
    from ..vad import speech_bounds

    placed = []
    for clip in examples:
        b = speech_bounds(clip, vad) if vad is not None else None
        if b is None:
            c = endpoint_example(clip, None)
            x = room_lead(c, None)
            placed.append((x, x.size))
        else:
            x = room_lead(clip, b[0])
            end = min(clip.size, b[1] + int(0.03 * SAMPLE_RATE))
            placed.append((x, x.size - clip.size + end))
    return templates_at(backbone, placed, seq_len)


def templates_at(backbone, placed: list[tuple[np.ndarray, int]],
                 seq_len: int = 1) -> list[np.ndarray]:
    """Per (audio, end sample) pair, the template steps placed by ``end`` in the audio streamed
    with a quiet tail."""
    from ..models.matcher import template_steps
    from .windows import embed_stream

    rng = np.random.default_rng(0)
    out = []
    for x, end in placed:
        tail = rng.standard_normal(int(QUIET_TAIL_S * SAMPLE_RATE)) * 10 ** (-60 / 20)
        e = embed_stream(backbone, np.concatenate([x, tail.astype(np.float32)]))
        t = e[template_steps(len(e), end / SAMPLE_RATE, seq_len)].astype(np.float32)
        if seq_len > 1:
            t = t[:seq_len] if len(t) >= seq_len else t[:0]
        out.append(t)
    return out


def calibrate_matched(matcher, word: str, per_example: list[np.ndarray],
                      dev_streams: list[tuple[str, np.ndarray]], fa_target: float,
                      default_threshold: float) -> dict:
    """A matched word's card entry: the threshold at ``fa_target`` FA/h on the dev
    background's scores. The positives of the curve are the examples scored leave-one-out
    (each against the others' templates), so its FRR column is an estimate for new takes.
    With one example there is no such positive, and the threshold is the background's
    admissible point itself (a self-match scores 1.0 and would push the threshold halfway
    to it). Without a dev background the threshold is the matcher's shipped default."""
    from ..evaluate import ScoreStream, calibration_table, det_curve, threshold_for_fa

    j = matcher.words.index(word)
    if not dev_streams:
        return {"threshold": float(default_threshold), "threshold_fa_per_hour": fa_target,
                "calibrated_on": "the matcher's default (no dev background here)"}

    def scores(e: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return matcher.score(torch.from_numpy(e.astype(np.float32))[None])[0, :, j].numpy()

    per_score = leave_one_out_scores(matcher, per_example)
    pos = [v for v in per_score if v is not None]
    streams = [ScoreStream(n, scores(e)[:, None], 0.08) for n, e in dev_streams]
    curve = det_curve(pos, streams, refractory_s=1.0)
    return {"threshold": float(threshold_for_fa(curve, fa_target)),
            "threshold_fa_per_hour": fa_target, "operating_points": calibration_table(curve),
            "calibration": curve_points(curve),
            "example_scores": [None if v is None else round(v, 4) for v in per_score],
            "calibrated_on": "dev background; positives: the examples, leave-one-out"}


def leave_one_out_scores(matcher, per_example: list[np.ndarray]) -> list[float | None]:
    """Each example's template steps scored as a stream by a word made of the others' (None
    where it has no steps or is alone): what a new take of the word would score."""
    out: list[float | None] = []
    for i, e in enumerate(per_example):
        others = [x for n, x in enumerate(per_example) if n != i and x.size]
        if not others or not e.size:
            out.append(None)
            continue
        loo = matcher.empty()
        loo.add_word("loo", torch.from_numpy(np.concatenate(others)))
        with torch.no_grad():
            out.append(float(loo.score(torch.from_numpy(e.astype(np.float32))[None]).max()))
    return out


# An example whose leave-one-out score is this far under the others' median is reported: a
# wrong word, a take of noise, or a cut-off word (advice only; the example is still used).
# 0.50: the 98th percentile of genuine takes' gaps on the matcher dev set, which flags 69 % of
# wrong-word takes (0.15, set for max-cosine, warned about 12 % of good takes;
# recipes/example_warnings.py, docs/BENCHMARKS.md).
OUTLIER_MARGIN = 0.50


def example_warnings(entry: dict, examples: list[np.ndarray], vad=None) -> list[str]:
    """What a user should check in their examples, by example number (1-based)."""
    from ..vad import speech_bounds

    out = []
    if vad is not None:
        out += [f"example {i + 1}: no speech found by the VAD (silence or noise?)"
                for i, x in enumerate(examples) if speech_bounds(x, vad) is None]
    scores = entry.get("example_scores") or []
    known = [v for v in scores if v is not None]
    if len(known) >= 3:
        med = float(np.median(known))
        out += [f"example {i + 1}: matches the others at {v:.2f} (median {med:.2f}); is it the "
                "same phrase, said clearly?" for i, v in enumerate(scores)
                if v is not None and v < med - OUTLIER_MARGIN]
    return out


def add_matched_word(model_in: Path, phrase: str, out: Path, examples: list[np.ndarray], *,
                     base: Path = MATCHER_BASE, fa_target: float = 0.5,
                     bg_max_files: int | None = None) -> tuple[Path, dict]:
    """Add ``phrase`` as a matched word (templates of its ``examples``, no training)."""
    t0 = time.time()
    phrase = " ".join(phrase.lower().split())
    if not examples:
        raise SystemExit("the matcher needs at least one real example (--examples DIR)")
    backbone, heads, card, _ = load_checkpoint(model_in)
    if heads is None:
        raise SystemExit(f"{model_in}: a backbone checkpoint; train a model first")
    matcher = load_matcher(model_in)
    base_matcher, base_card = load_matcher_base(base)
    if matcher is None:
        matcher = base_matcher
    if phrase in heads.words or phrase in matcher.words:
        raise SystemExit(f"{phrase!r} is already in {model_in}; remove it first")
    vad = _example_vad()
    cuts = [endpoint_example(x, vad) for x in examples]
    per_example = example_templates(matcher.backbone, examples, vad, matcher.seq_len)
    if not any(e.size for e in per_example):
        raise SystemExit(f"{phrase!r}: no example is long enough to give a template")
    matcher.add_word(phrase, torch.from_numpy(np.concatenate(per_example)))
    dev = background_streams(matcher.backbone, "dev", state_digest(matcher.backbone),
                             bg_max_files) if splits.have_shared_data() else []
    entry = calibrate_matched(matcher, phrase, per_example, dev, fa_target,
                              base_card.get("default_threshold", 0.8))
    for w in example_warnings(entry, examples, vad):
        print(f"warning: {phrase!r} {w}", file=sys.stderr)
    entry.update({"method": "matcher", "real_examples": len(examples),
                  "templates": int(sum(e.shape[0] for e in per_example)),
                  "duration_s": float(np.median([c.size for c in cuts]) / SAMPLE_RATE),
                  "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    card = dict(card)
    card["words"] = heads.words + matcher.words
    card.setdefault("per_word", {})[phrase] = entry
    card.setdefault("history", []).append(f"add-word {phrase!r} (matcher, {len(examples)} "
                                          "examples)")
    ckpt = save_checkpoint(out, backbone=backbone, heads=heads, card=card, matcher=matcher)
    return ckpt, {"total_s": round(time.time() - t0, 1)}


def read_examples(folder: Path) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (".wav", ".flac", ".ogg", ".opus"))
    if not files:
        raise SystemExit(f"{folder}: no .wav/.flac/.ogg examples")
    return [load_audio(f, max_seconds=10) for f in files]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("phrase", nargs="?", help="the new wake word or phrase")
    p.add_argument("--model", type=Path, required=True, help="a .safetensors model")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--examples", type=Path, help="folder of real recordings of the phrase")
    p.add_argument("--remove", metavar="WORD", help="remove this word instead of adding")
    p.add_argument("--method", choices=["auto", "heads", "matcher"], default="auto",
                   help="heads: train a head (synthesis + examples); matcher: match the "
                   "examples' vectors in the distilled embedding (needs --examples; no "
                   "synthesis, seconds); auto (default): matcher with --examples, heads "
                   "from text alone. docs/MODELS.md compares them")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engines", help="comma list of TTS engines for the phrase (default: every "
                   "installed one, kokoro included once `polywake synth --prepare-kokoro` ran)")
    p.add_argument("--no-balance-engines", dest="balance_engines", action="store_false",
                   help="take synthetic positives in proportion to each engine's voice count "
                   "(espeak-ng ~70 %%) instead of in equal shares")
    p.add_argument("--export", action="store_true", help="also write OUT with .pwk suffix")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    if args.remove:
        out = remove_word(args.model, " ".join(args.remove.lower().split()), args.out)
    else:
        if not args.phrase:
            raise SystemExit("give the phrase to add (or --remove WORD)")
        ex = read_examples(args.examples) if args.examples else None
        # auto: the matcher won the default-method rule on the real dev phrases once it
        # scored seq-tnorm over 6 steps (docs/BENCHMARKS.md); text alone needs the heads
        method = args.method if args.method != "auto" else ("matcher" if ex else "heads")
        if method == "matcher":
            out, t = add_matched_word(args.model, args.phrase, args.out, ex or [])
            print(f"added {args.phrase!r} (matcher, {len(ex or [])} examples) in "
                  f"{t['total_s']:.1f} s")
            return _finish(args, out)
        if not splits.have_shared_data():
            print("note: ../shared/data is absent: negatives come from TTS only",
                  file=sys.stderr)
        engines = [e.strip() for e in args.engines.split(",")] if args.engines else None
        out, t = add_word(args.model, args.phrase, args.out, examples=ex, steps=args.steps,
                          seed=args.seed, engines=engines,
                          balance_engines=args.balance_engines)
        print(f"added {args.phrase!r} in {t['total_s']:.0f} s "
              f"(data {t['data_s']:.0f} s, training {t['train_s']:.0f} s)")
    return _finish(args, out)


def _finish(args: argparse.Namespace, out: Path) -> int:
    if args.export:
        from ..export import export_checkpoint

        pwk = export_checkpoint(out, Path(args.out).with_suffix(".pwk"))
        print(f"wrote {pwk}")
    print(f"wrote {out}")
    return 0
