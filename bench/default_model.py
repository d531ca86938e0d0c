"""Issue 5: the shipped default model (alexa, echo, amazon, computer, hey samuel).

    python bench/default_model.py [--model src/polywake/assets/default.safetensors]
        [--synth work_data/synth_product/manifest.jsonl]

* Held-out TTS voices (test split: never trained, never calibrated on), each clip mixed with
  REAL eval-split background at exactly 10 dB SNR -> FRR per word at 0.1/0.5/1 FA/h, false
  accepts counted on the eval background (LibriSpeech eval speakers + wesnoth music, the one
  utterance that says "echo" excluded for echo).
* Cross-word confusion on those clips at the card's (dev-calibrated) thresholds.
* Real human voices where the shared data has them: "computer" (Precise community clips).
* CPU seconds per audio second of the whole detector (.pwk, numpy and onnx backends, one
  thread).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _common import markdown_table  # noqa: E402
from polywake.audio import SAMPLE_RATE, load_audio  # noqa: E402
from polywake.data import splits  # noqa: E402
from polywake.evaluate import ScoreStream, confusion, det_curve, frr_at_fa  # noqa: E402
from polywake.train.heads import detector_scores  # noqa: E402
from polywake.train.mixing import NoiseBank, place, rms  # noqa: E402
from polywake.train.wakewords import load_manifest_clips  # noqa: E402
from polywake.train.windows import N_SAMPLES  # noqa: E402
from wakeword_eval import cached_streams, embedder_for, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_windows(clips: dict[str, list[np.ndarray]], noise: NoiseBank, snr_db: float,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    audio, wid = [], []
    for i, (_, cs) in enumerate(clips.items()):
        for c in cs:
            end = int(rng.uniform(1.2, 2.2) * SAMPLE_RATE)
            w, _, _ = place(c / (np.abs(c).max() + 1e-9) * 0.3, N_SAMPLES, max(end, c.size))
            bg = noise.slice(rng, N_SAMPLES)
            speech_rms = rms(w[np.abs(w) > 1e-4])
            audio.append(w + bg * speech_rms / rms(bg) / 10 ** (snr_db / 20))
            wid.append(i)
    return np.stack(audio).astype(np.float32), np.array(wid)


def cpu_per_audio_second(pwk: Path, seconds: float = 120.0, backend: str = "auto") -> float:
    from polywake.detect import Detector
    from polywake.model_io import load_scorer

    det = Detector(load_scorer(pwk, backend=backend))
    a = (np.random.default_rng(1).standard_normal(int(seconds * SAMPLE_RATE)) * 0.05
         ).astype(np.float32)
    det.scores(a[:1280])
    t0 = time.process_time()
    for i in range(1280, a.size, 1280):
        det.scores(a[i:i + 1280])
    return (time.process_time() - t0) / seconds


def print_by_engine(words: list[str], engines: dict[str, dict[str, list[str]]],
                    pos_max: dict[str, np.ndarray], thr05: dict[str, float]) -> None:
    """Which voices the misses come from: FRR per TTS engine at each word's 0.5 FA/h point
    (``pos_max[w]``: each of w's test clips' max score per word, as for the confusion)."""
    names = sorted({e for w in words for e in engines[w].get("test", [])})
    rows = []
    for j, w in enumerate(words):
        eng = np.array(engines[w].get("test", []))
        missed = pos_max[w][:, j] < thr05[w]
        rows.append([w] + [f"{100 * missed[eng == e].mean():.0f}% ({(eng == e).sum()})"
                           if (eng == e).any() else "-" for e in names])
    print("\nFRR @0.5 FA/h by TTS engine (test clips in brackets)")
    print(markdown_table(["word"] + names, rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "src/polywake/assets/default.safetensors")
    ap.add_argument("--synth", type=Path, default=ROOT / "work_data/synth_product/manifest.jsonl")
    ap.add_argument("--snr", type=float, default=10.0)
    ap.add_argument("--by-engine", action="store_true",
                    help="also FRR per TTS engine at each word's 0.5 FA/h threshold")
    ap.add_argument("--json", type=Path, help="also write the per-word FRR here (bench/footprint.py "
                    "reads work_data/bench/default_model-<model file stem>.json)")
    a = ap.parse_args()
    set_threads()
    backbone, heads, card, emb = embedder_for(a.model)
    words = heads.words
    # Score as the Detector will decide: the card's smoothing (mean of 3 when it names none).
    decision = card.get("decision", {"smoothing": "mean", "smooth_steps": 3})
    print(f"decision smoothing: {decision}")
    clips = load_manifest_clips([a.synth], words, max_per_word=100000, max_neg=1)
    test = {w: clips.positives[w].get("test", []) for w in words}
    noise = NoiseBank.from_arrays([load_audio(f)[: 60 * SAMPLE_RATE]
                                   for f in splits.background_files("eval")[::4]])
    audio, wid = test_windows(test, noise, a.snr)
    probs = detector_scores(heads, emb.windows(audio), decision)
    bg = cached_streams(emb, splits.background_files("eval"), "bg-eval")
    echo_utts = splits.files_containing("echo")
    thr = {w: card["per_word"][w]["threshold"] for w in words}
    rows, pos_max, frr05, thr05 = [], {}, {}, {}
    for j, w in enumerate(words):
        pos = probs[wid == j, :, j].max(1)
        pos_max[w] = probs[wid == j].max(1)
        streams = [ScoreStream(n, detector_scores(heads, e[None], decision)[0], 0.08) for n, e in bg
                   if not (w == "echo" and Path(n).stem in echo_utts)]
        curve = det_curve(pos, streams, 1.0, j)
        frr_dev, fa_dev = curve.at(thr[w])
        frr05[w], thr05[w] = (float(x) for x in frr_at_fa(curve, 0.5))
        rows.append([w, str(pos.size)] + [f"{100 * frr_at_fa(curve, f)[0]:.1f}%"
                                          for f in (0.1, 0.5, 1.0)]
                    + [f"{thr[w]:.3f}", f"{100 * frr_dev:.1f}%", f"{fa_dev:.2f}"])
    print(f"held-out TTS voices + real eval background at {a.snr:g} dB SNR; FA/h on "
          f"{curve.hours:.2f} h of eval background")
    print(markdown_table(["word", "test clips", "FRR @0.1 FA/h", "FRR @0.5 FA/h", "FRR @1 FA/h",
                          "dev threshold", "FRR @dev thr", "FA/h @dev thr"], rows))
    if a.by_engine:
        print_by_engine(words, clips.engines, pos_max, thr05)
    conf = confusion(pos_max, words, thr)
    print("\ncross-word confusion at the dev thresholds (row: said, column: fired)")
    print(markdown_table(["said \\ fired"] + words,
                         [[a_] + [f"{100 * conf[a_][b]:.1f}%" if a_ != b else "-"
                                  for b in words] for a_ in words]))
    worst = max(conf[x][y] for x in words for y in words if x != y)
    print(f"worst cross-word confusion: {100 * worst:.2f}%")
    if "computer" in words:
        real = cached_streams(emb, splits.real_keyword_files("computer_precise")
                              + splits.real_keyword_files("hey_computer"), "real-computer")
        j = words.index("computer")
        pos = np.array([detector_scores(heads, e[None], decision)[0][:, j].max() for _, e in real])
        streams = [ScoreStream(n, detector_scores(heads, e[None], decision)[0], 0.08) for n, e in bg]
        curve = det_curve(pos, streams, 1.0, j)
        print(f"\nreal voices, 'computer' ({pos.size} Precise community clips): FRR "
              f"{100 * frr_at_fa(curve, 0.5)[0]:.1f}% at 0.5 FA/h; at the dev threshold "
              f"FRR {100 * curve.at(thr['computer'])[0]:.1f}%")
    out = a.json or ROOT / "work_data" / "bench" / f"default_model-{a.model.parent.name}-{a.model.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": str(a.model), "snr_db": a.snr, "frr_at_0.5": frr05,
                               "mean_frr_at_0.5": float(np.mean(list(frr05.values())))}, indent=1))
    print(f"wrote {out}")
    pwk = a.model.with_name(a.model.name.replace(".safetensors", ".pwk"))
    if pwk.exists():
        for backend in ("numpy", "onnx"):
            print(f"CPU s per audio s, {len(words)} words, whole detector ({pwk.name}, {backend}"
                  f" backend, 1 thread): {cpu_per_audio_second(pwk, backend=backend):.4f}")


if __name__ == "__main__":
    main()
