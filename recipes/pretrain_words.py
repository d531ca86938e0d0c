"""Recipe step 1 of the backbone: synthesize the pretraining vocabulary with every TTS engine.

    python recipes/pretrain_words.py --words 1000 --per-word 36 --out work_data/pretrain_words

Per word: every non-espeak voice that is installed (flite, pico, mbrola, piper, two festival
voices) plus random espeak-ng accent x variant voices, each at a random rate and pitch. Clips
are FLAC files; the manifest (JSONL) records word, engine, voice, speaker and the split by
speaker. Re-running skips clips that exist, so a killed run resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from polywake.audio import atomic_write_bytes, write_audio
from polywake.data import splits, tts
from polywake.data.vocab import pretrain_vocabulary


def plan(words: list[str], per_word: int, seed: int) -> list[dict]:
    voices = tts.list_voices()
    espeak = [v for v in voices if v.engine == "espeak-ng"]
    festival = [v for v in voices if v.engine == "festival"]
    others = [v for v in voices if v.engine not in ("espeak-ng", "festival")]
    rng = np.random.default_rng(seed)
    jobs = []
    for w in words:
        chosen = list(others)
        if festival:
            chosen += [festival[i] for i in rng.choice(len(festival), min(2, len(festival)), replace=False)]
        n_es = max(0, per_word - len(chosen))
        chosen += [espeak[i] for i in rng.choice(len(espeak), n_es, replace=False)]
        for v in chosen:
            rate, pitch = float(rng.uniform(0.8, 1.25)), float(rng.uniform(0.85, 1.2))
            key = hashlib.sha1(f"{w}|{v.voice_id}|{rate:.3f}|{pitch:.3f}".encode()).hexdigest()[:12]
            jobs.append({"id": key, "word": w, "text": w, "voice": v.to_dict(),
                         "voice_id": v.voice_id, "engine": v.engine, "speaker": v.speaker,
                         "rate": rate, "pitch": pitch, "split": splits.split_of_key(v.speaker),
                         "path": f"{w.replace(' ', '_')}/{key}.flac", "kind": "pretrain-word"})
    return jobs


def _work(args: tuple[dict, str]) -> dict | None:
    job, out = args
    path = Path(out) / job["path"]
    if path.exists():
        return job
    try:
        x = tts.synthesize(job["text"], tts.Voice.from_dict(job["voice"]), job["rate"], job["pitch"])
    except tts.TTSError:
        return None
    write_audio(path, x)
    job = dict(job, duration=round(x.size / 16000, 3))
    return job


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--words", type=int, default=1000)
    ap.add_argument("--per-word", type=int, default=36)
    ap.add_argument("--out", type=Path, default=Path("work_data/pretrain_words"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-words-of", type=Path, default=None,
                    help="leave out the words of this manifest (a second, disjoint vocabulary)")
    ap.add_argument("--pairs", type=int, default=0,
                    help="also N random two-word phrases of the vocabulary (phrase-like material)")
    ap.add_argument("--cmu-words", type=int, default=0,
                    help="instead of the vocabulary: N random CMU dictionary words beyond it "
                    "(vocab.cmu_words; the matcher dev words left out), and --pairs of them")
    ap.add_argument("--manifest-only", action="store_true",
                    help="write the manifest of the clips already made (after a stopped run)")
    a = ap.parse_args()
    vocab = pretrain_vocabulary()
    rng = np.random.default_rng(a.seed)
    if a.cmu_words:
        from polywake.data.vocab import cmu_words

        vocab = cmu_words(a.cmu_words, a.seed, exclude=frozenset(
            w for ws in splits.MATCHER_DEV_WORDS.values() for w in ws))
        a.words = len(vocab)
    if a.skip_words_of is not None:
        with open(a.skip_words_of) as fh:
            seen = {json.loads(line)["word"] for line in fh if line.strip()}
        vocab = [w for w in vocab if w not in seen]
    words = sorted(rng.choice(vocab, min(a.words, len(vocab)), replace=False).tolist())
    if a.pairs:
        full = vocab if a.cmu_words else pretrain_vocabulary()
        words += sorted({" ".join(rng.choice(full, 2, replace=False)) for _ in range(a.pairs)})
    jobs = plan(words, a.per_word, a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    done = []
    if a.manifest_only:
        done = [{k: v for k, v in j.items() if k != "voice"} for j in jobs
                if (a.out / j["path"]).exists()]
        # only words with all their clips, so every class has the same voices
        from collections import Counter
        n = Counter(r["word"] for r in done)
        done = [r for r in done if n[r["word"]] == max(n.values())]
        jobs = []
    with ProcessPoolExecutor(a.workers) as ex:
        for r in tqdm(ex.map(_work, [(j, str(a.out)) for j in jobs], chunksize=16),
                      total=len(jobs), desc="synth words", unit="clip", mininterval=5):
            if r is not None:
                done.append({k: v for k, v in r.items() if k != "voice"})
    atomic_write_bytes(a.out / "manifest.jsonl",
                       "".join(json.dumps(r) + "\n" for r in done).encode())
    by = {}
    for r in done:
        by[r["split"]] = by.get(r["split"], 0) + 1
    print(f"{len(done)} clips of {len({r['word'] for r in done})} words; by split {by}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
