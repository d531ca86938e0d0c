"""Recipe step 1b of the backbone: REAL words cut from LibriSpeech by forced alignment.

    python recipes/librispeech_words.py --out work_data/librispeech_words

The shared data's Mini LibriSpeech speakers of the train and dev splits (never the eval
speakers, whose audio counts false accepts) are aligned to their verbatim transcripts with
pocketsphinx (its English acoustic model and CMU dictionary ship in the wheel; aligning is
~0.05x real time, so a library does it rather than code of ours). Each aligned word becomes a
FLAC clip with 30 ms of context on each side; words that the product or benchmarks use are
left out (``splits.EXCLUDED_FROM_PRETRAINING``), and so are words with fewer than
``--min-count`` train tokens: every class is sampled equally often in pretraining, so a
rare word would be repeated far more than the others.

The manifest has the synthetic manifest's fields (word, path, split, speaker), so
``polywake pretrain --real-manifest`` reads it beside the synthetic words. Re-running skips
clips that exist.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from polywake.audio import SAMPLE_RATE, atomic_write_bytes, load_audio, write_audio
from polywake.data import splits

PAD_S = 0.03
MIN_S, MAX_S = 0.15, 1.2  # a pretraining window is 1.28 s: the word must fit in it
FRAME_S = 0.01  # pocketsphinx frames


def _align(args: tuple[str, str, str]) -> list[tuple[str, float, float]]:
    """(word, start s, end s) of one utterance; [] when the transcript cannot be aligned."""
    path, text, _ = args
    from pocketsphinx import Decoder

    x = load_audio(path)
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()
    try:
        d = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        d.set_align_text(text.lower())
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        segs = list(d.seg() or [])  # None when the search found no alignment
    except (RuntimeError, ValueError, KeyError):  # a word missing from the dictionary
        return []
    out = []
    for s in segs:
        w = re.sub(r"\(\d+\)$", "", s.word)
        if w.startswith(("<", "[", "(")):
            continue
        out.append((w, s.start_frame * FRAME_S, (s.end_frame + 1) * FRAME_S))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("work_data/librispeech_words"))
    ap.add_argument("--min-count", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    libri = splits.shared_data_dir() / "background" / "speech" / "librispeech"
    if not libri.exists():
        raise SystemExit(f"{libri}: no LibriSpeech in the shared data")
    transcripts = splits.librispeech_transcripts()
    jobs = []
    for spk in sorted(os.listdir(libri)):
        split = splits.librispeech_split(spk)
        if split == "eval" or not (libri / spk).is_dir():
            continue
        for f in sorted((libri / spk).glob("*.opus")):
            if f.stem in transcripts:
                jobs.append((str(f), transcripts[f.stem], split))
    with ProcessPoolExecutor(a.workers) as ex:
        aligned = list(tqdm(ex.map(_align, jobs, chunksize=4), total=len(jobs),
                            desc="align", unit="utt", mininterval=5))
    n_failed = sum(not w for w in aligned)
    tokens = []  # (utterance path, split, speaker, index, word, start, end, clip duration)
    for (path, _, split), words in zip(jobs, aligned, strict=True):
        spk = Path(path).parent.name
        for i, (w, s, e) in enumerate(words):
            dur = e - s + 2 * PAD_S
            if w in splits.EXCLUDED_FROM_PRETRAINING or not MIN_S <= dur <= MAX_S:
                continue
            tokens.append((path, split, spk, i, w, s, e, dur))
    count = Counter(t[4] for t in tokens if t[1] == "train")
    keep = {w for w, n in count.items() if n >= a.min_count}
    rows = []
    loaded, x = "", np.zeros(0, np.float32)  # tokens come in utterance order: one in memory
    for path, split, spk, i, w, s, e, dur in tqdm(tokens, desc="cut", unit="word",
                                                  mininterval=5):
        if w not in keep:
            continue
        rel = f"{spk}/{Path(path).stem}_{i:03d}_{w.replace(chr(39), '')}.flac"
        out = a.out / rel
        if not out.exists():
            if path != loaded:
                loaded, x = path, load_audio(path)
            lo = max(0, int((s - PAD_S) * SAMPLE_RATE))
            hi = min(x.size, int((e + PAD_S) * SAMPLE_RATE))
            write_audio(out, x[lo:hi])
        rows.append({"word": w, "text": w, "path": rel, "split": split,
                     "speaker": f"ls:{spk}", "engine": "librispeech",
                     "kind": "pretrain-word-real", "duration": round(dur, 3)})
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(a.out / "manifest.jsonl",
                       "".join(json.dumps(r) + "\n" for r in rows).encode())
    by = Counter(r["split"] for r in rows)
    print(f"{len(jobs)} utterances ({n_failed} not aligned), {len(rows)} word clips of "
          f"{len(keep)} words (>= {a.min_count} train tokens); by split {dict(by)}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
