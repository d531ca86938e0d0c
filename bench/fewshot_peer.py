"""Issue 10 reference: the one open few-shot wake-word engine whose weights ship in a wheel,
EfficientWord-Net (PyPI ``efficientword-net==1.0.5``, Apache-2.0: a ResNet-50 trained with
an ArcFace loss on 64-band log filterbanks of 1.5 s windows; a word is "added" by embedding a
few recordings of it, and a window's score is its best cosine similarity to them), measured on
the add-word protocol of bench/add_word.py:

    nice -n 5 .venv/bin/python bench/fewshot_peer.py [--ks 1 3 10] [--draws 5] [--workers 2]

* the same draws of k real clips per phrase (``_common.example_draw``) as the
  add-word table, so the two are paired; FRR on the phrase's remaining real clips, false
  accepts on the eval background (LibriSpeech eval speakers + music), refractory 1 s, the same
  ``polywake.evaluate`` code;
* the engine as its README asks to be used, given a fair start: references are the examples
  cut to their speech by the same Silero VAD endpointing ``polywake add-word`` applies (the
  engine itself would crop a random 1.5 s out of a 3 s take and often cut the word), then the
  engine's own ``fixPaddingIssues`` (seeded) and ``audioToVector``;
* every file is scored with 1.5 s windows every ``--hop`` s (the engine's microphone loop
  slides by 0.75 s; a finer hop only helps it) and the real clips get 0.5 s of quiet room
  after them (as bench/peers.py does), so a word at the end of a take fits in a window;
* two readings: ``safe`` (the engine's default ``scoreFrame``: a window whose first 100 ms
  already reach 20 % of its peak is skipped, its guard against running speech) and ``unsafe``
  (every window scored).

The engine is installed with ``--no-deps`` into work_data/effw_pkg on first use (its own
dependencies, numpy, onnxruntime and soundfile, are the project's; the rest it lists are for
its microphone demo). Window embeddings are cached per file in work_data/effw_cache (float16),
so a killed run resumes and the draws cost nothing more. Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402 - _common set the one-thread environment first

from _common import WORK, example_draw, file_key, markdown_table  # noqa: E402

PACKAGE = "efficientword-net==1.0.5"
PKG_DIR = WORK / "effw_pkg"
CACHE = WORK / "effw_cache"
CACHE_VERSION = 1
WINDOW_S = 1.5
POS_PAD_S = 0.5
REFRACTORY_S = 1.0
FA_POINTS = (0.1, 0.5, 1.0)
SR = 16000


def engine_model():
    """The engine's ResNet-50 backend (float model), installed on first use."""
    if not (PKG_DIR / "eff_word_net").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(PKG_DIR), PACKAGE], check=True)
    if str(PKG_DIR) not in sys.path:
        sys.path.insert(0, str(PKG_DIR))
    mod = importlib.import_module("eff_word_net.audio_processing")
    return mod.Resnet50_Arc_loss()


def window_starts(n: int, hop: int, win: int) -> np.ndarray:
    """Window starts covering ``n`` samples (the last window ends at the end)."""
    if n <= win:
        return np.zeros(1, int)
    starts = np.arange(0, n - win + 1, hop)
    if starts[-1] != n - win:
        starts = np.append(starts, n - win)
    return starts


def speech_guard(window: np.ndarray) -> bool:
    """True where the engine's safe ``scoreFrame`` would skip the window (returns None): its
    first 100 ms already reach 20 % of the window's maximum (the engine's exact test)."""
    peak = window.max()
    if peak <= 0:
        return True
    return bool((window / peak)[: SR // 10].max() > 0.2)


_MODEL = None


def _init_worker() -> None:
    global _MODEL
    _MODEL = engine_model()


def embed_file(job: tuple[str, float, float]) -> str:
    """Embed every window of one file into the cache; returns the cache path."""
    path, hop_s, pad_s = job
    out = CACHE / f"{file_key(path, hop_s, pad_s, CACHE_VERSION)}.npz"
    if out.exists():
        return str(out)
    from polywake.audio import atomic_open, load_audio
    from wakeword_eval import _padded

    audio = _padded(load_audio(path), pad_s, Path(path).name)
    win = int(WINDOW_S * SR)
    if audio.size < win:
        audio = np.concatenate([audio, _padded(np.zeros(0, np.float32), (win - audio.size) / SR,
                                               Path(path).name + "#fill")])
    starts = window_starts(audio.size, int(round(hop_s * SR)), win)
    emb = np.zeros((starts.size, 2048), np.float16)
    guard = np.zeros(starts.size, bool)
    for i, s in enumerate(starts):
        w = audio[s:s + win].astype(np.float32)
        emb[i] = _MODEL.audioToVector(w)[0]
        guard[i] = speech_guard(w)
    with atomic_open(out) as fh:
        np.savez(fh, emb=emb, guard=guard, seconds=np.float64(audio.size / SR))
    return str(out)


def embed_all(files: list[Path], hop_s: float, pad_s: float, workers: int) -> dict[str, dict]:
    from tqdm import tqdm

    CACHE.mkdir(parents=True, exist_ok=True)
    jobs = [(str(f), hop_s, pad_s) for f in files]
    # spawn, not fork: onnxruntime's thread pools do not survive a fork of a process that has
    # already loaded a session (the children hang).
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        paths = list(tqdm(pool.imap(embed_file, jobs), total=len(jobs), unit="file",
                          desc=f"embed (pad {pad_s:g} s)", mininterval=10))
    out = {}
    for (f, _, _), p in zip(jobs, paths, strict=True):
        d = np.load(p)
        out[f] = {"emb": d["emb"].astype(np.float32), "guard": d["guard"],
                  "seconds": float(d["seconds"])}
    return out


def reference_vectors(model, clips: list[np.ndarray], seed: int) -> np.ndarray:
    from polywake.train.add_word import _example_vad, endpoint_example

    vad = _example_vad()
    random.seed(seed)  # fixPaddingIssues crops/pads at random
    refs = []
    for c in clips:
        c = endpoint_example(c, vad).astype(np.float64)
        if c.size == int(WINDOW_S * SR):
            c = c[:-1]  # the engine asserts its input differs from the window length
        refs.append(model.audioToVector(np.float32(model.fixPaddingIssues(c)))[0])
    return np.stack(refs)


def scores_of(entry: dict, refs: np.ndarray, safe: bool) -> np.ndarray:
    """The engine's score per window: (best cosine similarity + 1) / 2; 0 where skipped."""
    s = ((entry["emb"] @ refs.T).max(axis=1) + 1) / 2
    if safe:
        s = np.where(entry["guard"], 0.0, s)
    return s.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 3, 10])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--hop", type=float, default=0.25, help="window hop, s")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--words", nargs="+", default=None)
    ap.add_argument("--out", type=Path, default=WORK / "bench/fewshot_peer")
    a = ap.parse_args()
    from polywake.audio import load_audio
    from polywake.data import splits
    from polywake.evaluate import ScoreStream, det_curve, frr_at_fa

    if not splits.have_shared_data():
        raise SystemExit("../shared/data is absent: this benchmark needs the real data")
    words = dict(splits.REAL_EVAL_PHRASES)
    a.words = a.words or list(words)
    t0 = time.time()
    bg = embed_all(splits.background_files("eval"), a.hop, 0.0, a.workers)
    bg_s = time.time() - t0
    model = engine_model()
    results = []
    a.out.mkdir(parents=True, exist_ok=True)
    for word in a.words:
        files = splits.real_keyword_files(words[word])
        pos = embed_all(files, a.hop, POS_PAD_S, a.workers)
        audio = {str(f): load_audio(f) for f in files}
        for k in a.ks:
            for draw in range(a.draws):
                ex_idx = example_draw(len(files), k, draw, word)
                refs = reference_vectors(model, [audio[str(files[i])] for i in sorted(ex_idx)],
                                         seed=draw)
                held = [str(f) for i, f in enumerate(files) if i not in ex_idx]
                row = {"word": word, "k": k, "draw": draw, "eval_clips": len(held)}
                for mode in ("safe", "unsafe"):
                    safe = mode == "safe"
                    p = [scores_of(pos[f], refs, safe).max() for f in held]
                    negs = [ScoreStream(f, scores_of(e, refs, safe), a.hop, e["seconds"])
                            for f, e in bg.items()]
                    curve = det_curve(p, negs, refractory_s=REFRACTORY_S)
                    for fa in FA_POINTS:
                        row[f"{mode}_frr_at_{fa:g}"] = frr_at_fa(curve, fa)[0]
                    # The engine's documented default threshold, a user's operating point.
                    row[f"{mode}_frr_fa_at_0.7"] = curve.at(0.7)
                    row["bg_hours"] = curve.hours
                results.append(row)
                print(json.dumps(row), flush=True)
        (a.out / "results.json").write_text(json.dumps(results, indent=1))
    summarize(results, a, bg_s)


def summarize(results: list[dict], a, bg_s: float) -> None:
    rows = []
    for mode in ("safe", "unsafe"):
        for k in a.ks:
            r = [x for x in results if x["k"] == k]
            per = []
            for w in a.words:
                v = [x[f"{mode}_frr_at_0.5"] for x in r if x["word"] == w]
                per.append(f"{100 * np.mean(v):.1f}% ± {100 * np.std(v):.1f}")
            rows.append([mode, k, len(r) // max(1, len(a.words)), *per,
                         f"**{100 * np.mean([x[f'{mode}_frr_at_0.5'] for x in r]):.1f}%**",
                         f"{100 * np.mean([x[f'{mode}_frr_at_1'] for x in r]):.1f}%",
                         f"{100 * np.mean([x[f'{mode}_frr_fa_at_0.7'][0] for x in r]):.1f}% / "
                         f"{np.mean([x[f'{mode}_frr_fa_at_0.7'][1] for x in r]):.1f}"])
    hours = results[0]["bg_hours"] if results else 0.0
    print(f"\nEfficientWord-Net 1.0.5, hop {a.hop} s; background {hours:.2f} h (eval); "
          f"background embedded in {bg_s:.0f} s wall")
    print(markdown_table(["mode", "k", "draws", *[f"{w} @0.5 FA/h" for w in a.words],
                          "**mean @0.5 FA/h**", "mean @1 FA/h", "FRR / FA/h at thr 0.7"], rows))


if __name__ == "__main__":
    main()
