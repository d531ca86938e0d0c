"""Calibrate ``add_word.OUTLIER_MARGIN``: how far under the others' median a good take's
leave-one-out score falls, and how far a wrong word's falls.

    python recipes/example_warnings.py          # ~3 min, matcher dev set (dev data only)

For each of the nine matcher dev words (real isolated words of many speakers, held out of the
student's material) and 5 draws of 10 takes (``example_draw``, as every add-word bench), the
takes' templates are made as ``add_matched_word`` makes them and scored leave-one-out; a
genuine take's *gap* is the median of the ten scores minus its own. Then the first take of
each draw is replaced by a take of another dev word (a user who recorded the wrong phrase
once) and that take's gap is recorded. The margin is the 98th percentile of the genuine gaps
(about one good take in fifty warned about), rounded up to 0.05 (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from _common import example_draw  # noqa: E402


def main() -> None:
    from tqdm import tqdm

    from polywake.audio import load_audio
    from polywake.models.wakeword import load_matcher_base
    from polywake.train.add_word import (
        OUTLIER_MARGIN,
        _example_vad,
        example_templates,
        leave_one_out_scores,
    )
    from polywake.train.pretrain import matcher_dev_files

    base, _ = load_matcher_base()
    vad = _example_vad()
    items = matcher_dev_files()
    words = list(items)
    genuine, wrong = [], []

    def gaps(clips: list[np.ndarray]) -> list[float]:
        per = example_templates(base.backbone, clips, vad, base.seq_len)
        s = leave_one_out_scores(base, per)
        med = float(np.median([v for v in s if v is not None]))
        return [np.nan if v is None else med - v for v in s]

    for wi, word in enumerate(tqdm(words, desc="words")):
        its = items[word]
        other = items[words[(wi + 1) % len(words)]]
        for draw in range(5):
            ex = sorted(example_draw(len(its), 10, draw, word))
            clips = [load_audio(its[i][0]) for i in ex]
            genuine += gaps(clips)
            intruder = load_audio(other[sorted(example_draw(len(other), 1, draw, word))[0]][0])
            wrong.append(gaps([intruder] + clips[1:])[0])
    g, w = np.array(genuine), np.array(wrong)
    g, w = g[~np.isnan(g)], w[~np.isnan(w)]
    p98 = float(np.percentile(g, 98))
    margin = float(np.ceil(p98 / 0.05) * 0.05)
    print(f"genuine takes: {g.size}; gap percentiles 50/90/95/98/99/max: "
          + " / ".join(f"{np.percentile(g, q):.3f}" for q in (50, 90, 95, 98, 99, 100)))
    print(f"wrong-word takes: {w.size}; gap percentiles 10/25/50: "
          + " / ".join(f"{np.percentile(w, q):.3f}" for q in (10, 25, 50)))
    for m in sorted({OUTLIER_MARGIN, margin}):
        print(f"margin {m:.2f}: warns on {np.mean(g > m):.1%} of good takes, "
              f"{np.mean(w > m):.1%} of wrong words")
    print(f"98th percentile {p98:.3f} -> margin {margin:.2f}")


if __name__ == "__main__":
    main()
