"""Experiment: how a matched word's step is scored against its examples' templates.

The product's matcher (``polywake.models.matcher``) scores each 80 ms step by its best cosine
similarity to the template vectors (the steps 0-320 ms after each endpointed example's end).
This recipe compares other ways of scoring the same student embedding, on the same add-word
draws, without retraining anything:

* ``base``   - the product's: max over templates of the cosine similarity;
* ``tnorm``  - each template's similarity standardised by its mean and spread over a cohort of
  negative audio (the TRAIN-split background, never the audio the FA/h is counted on), then
  the max: a template that resembles much speech is trusted less (speaker verification's
  T-norm);
* ``seq``    - an example's template steps matched in order: the mean over an example's L
  consecutive template steps of the similarity of the L consecutive stream steps ending
  now, then the max over examples (a fixed-alignment sequence match);
* ``aug``    - the templates of each example also taken from copies resampled by 0.9 and 1.1
  (tempo and pitch, Kaldi speed perturbation), scored as ``base``;
* ``seq+tnorm`` - ``seq`` over T-normed similarities;
* ``seq+snorm`` - ``seq`` over S-normed similarities: the mean of the T-normed similarity and
  the Z-normed one, the stream step's similarity standardised by that step's own mean and
  spread over the cohort (a step that resembles much background, a "hub", is trusted less;
  speaker verification's symmetric normalisation);
* ``seq+atnorm`` - ``seq`` over adaptive T-norm: each template's mean and spread over only
  the ``--cohort-top K`` cohort steps most similar to it (the background it could be
  confused with), not over the whole cohort.

    python recipes/matcher_scoring.py --tag p4 --set matcher-dev      # the deciding set
    python recipes/matcher_scoring.py --tag p4 --set phrases          # eval phrases, reported

The embeddings of every file are cached under work_data/cache/matcher_scoring/, so a second
run only scores. Choices are made on ``matcher-dev`` only (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "recipes"))

import numpy as np  # noqa: E402

from _common import WORK, example_draw  # noqa: E402

SR = 16000
CACHE = WORK / "cache" / "matcher_scoring"
VARIANTS = ("base", "tnorm", "seq", "aug", "seq+tnorm", "seq+snorm", "seq+atnorm")
COHORT_STEPS = 20000


def _embed_files(m, files: list[Path], name: str, pad: bool = False,
                 warm: bool = False) -> list[np.ndarray]:
    from tqdm import tqdm

    from polywake.audio import load_audio
    from wakeword_eval import _padded, _room_led

    path = CACHE / f"{name}.npz"
    if path.exists():
        z = np.load(path)
        return [z[f"a{i}"] for i in range(len(files))]
    out = []
    for f in tqdm(files, desc=name, mininterval=10):
        x = load_audio(f)
        if warm:
            x = _room_led(x)
        out.append(m.stream(_padded(x, 0.5, Path(f).name) if pad else x).astype(np.float32))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"a{i}": e for i, e in enumerate(out)})
    tmp.replace(path)
    return out


def _example_templates(m, clip: np.ndarray, vad, speeds: tuple[float, ...],
                       seq_len: int = 1, in_context: bool = False,
                       warm: bool = False, span_start: float = 0.0) -> list[np.ndarray]:
    """Per speed, the (L, dim) consecutive template steps of one example. ``in_context``: the
    whole recording is streamed (its own room before and after the word, as a live stream
    has), not the example cut to its speech; the steps are still placed by the VAD's end."""
    import soxr

    from polywake.models.matcher import template_steps
    from polywake.train.add_word import endpoint_example, room_lead
    from polywake.vad import speech_bounds
    from wakeword_eval import _padded

    c = endpoint_example(clip, vad)
    out = []
    bounds = speech_bounds(clip, vad) if in_context else None
    for s in speeds:
        if bounds is not None and s == 1.0:
            x = room_lead(clip, bounds[0]) if warm else clip
            e = m.stream(_padded(x, 0.5, "ref"))
            end = (x.size - clip.size + min(clip.size, bounds[1] + int(0.03 * SR))) / SR
            out.append(e[template_steps(len(e), end, seq_len, span_start)])
            continue
        x = c if s == 1.0 else soxr.resample(c, SR * s, SR, quality="HQ").astype(np.float32)
        e = m.stream(_padded(x, 0.5, "ref"))
        end = x.size / SR
        out.append(e[template_steps(len(e), end, seq_len, span_start)])
    return out


class _Fused:
    """Two students as one embedding (an ensemble whose cosine is the mean of theirs)."""

    def __init__(self, a, b) -> None:
        self.a, self.b = a, b

    def stream(self, audio: np.ndarray) -> np.ndarray:
        return np.concatenate([self.a.stream(audio), self.b.stream(audio)], 1) / np.sqrt(2)


_STREAM_STATS: dict[int, tuple] = {}  # id -> (the array, kept alive; mean; spread)
_MOMENTS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _cohort_moments(cohort: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if id(cohort) not in _MOMENTS:
        c = cohort.astype(np.float64)
        mean = c.mean(0)
        _MOMENTS[id(cohort)] = (mean, (c - mean).T @ (c - mean) / (len(c) - 1))
    return _MOMENTS[id(cohort)]


class Scorer:
    def __init__(self, variant: str, examples: list[list[np.ndarray]], cohort: np.ndarray,
                 seq_steps: int = 0, slack: int = 0, top: int = 1, cohort_top: int = 0):
        self.variant = variant
        self.slack, self.top = slack, top
        use = examples if variant == "aug" else [ex[:1] for ex in examples]
        blocks = [t for ex in use for t in ex]
        self.seq_len = min(len(t) for t in blocks)
        if seq_steps:
            self.seq_len = min(self.seq_len, seq_steps)
            blocks = [t[:seq_steps] for t in blocks]
        # seq: each block's first seq_len steps, in order
        self.blocks = [t[: self.seq_len] for t in blocks]
        self.t = np.concatenate(blocks if "seq" not in variant else self.blocks).astype(np.float32)
        self.mu = np.zeros(len(self.t), np.float32)
        self.sd = np.ones(len(self.t), np.float32)
        if "norm" in variant:
            s = cohort @ self.t.T
            if "atnorm" in variant:
                s = np.partition(s, len(s) - cohort_top, axis=0)[len(s) - cohort_top:]
            self.mu, self.sd = s.mean(0), s.std(0) + 1e-6
        self.cohort = cohort

    def _stream_stats(self, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each step's mean and spread of similarity over the cohort (memoised per array)."""
        key = id(e)
        if key not in _STREAM_STATS:
            mean, cov = _cohort_moments(self.cohort)
            e64 = e.astype(np.float64)
            var = ((e64 @ cov) * e64).sum(1)
            _STREAM_STATS[key] = (e, (e64 @ mean).astype(np.float32),
                                  np.sqrt(np.maximum(var, 1e-12)).astype(np.float32))
        return _STREAM_STATS[key][1:]

    def __call__(self, e: np.ndarray) -> np.ndarray:
        raw = e.astype(np.float32) @ self.t.T
        s = (raw - self.mu) / self.sd
        if "snorm" in self.variant:
            mu_e, sd_e = self._stream_stats(e)
            s = 0.5 * (s + (raw - mu_e[:, None]) / sd_e[:, None])
        if "seq" not in self.variant:
            return s.max(1)
        L, nb = self.seq_len, len(self.blocks)
        s = s.reshape(len(e), nb, L)
        # mean over j of s[t - (L-1) + j, block, j]; steps before the stream start count as -1
        S = self.slack
        pad = np.concatenate([np.full((L - 1 + S, nb, L), s.min() if s.size else 0, np.float32), s])
        # template step j meets stream step t-(L-1)+j+d, d in [-S, S] clipped to <= t (causal)
        acc = sum(np.max([pad[S + j + d: S + j + d + len(e), :, j]
                          for d in range(-S, min(S, L - 1 - j) + 1)], axis=0)
                  for j in range(L)) / L
        if self.top > 1:
            return np.sort(acc, axis=1)[:, -min(self.top, nb):].mean(1)
        return acc.max(1)


def main() -> None:
    from effw_distill_pilot import OUT, Matcher
    from tqdm import tqdm

    from add_word import WORDS
    from polywake.audio import load_audio
    from polywake.data import splits
    from polywake.evaluate import ScoreStream, det_curve, frr_at_fa
    from polywake.train.add_word import _example_vad

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", default="p4")
    ap.add_argument("--set", choices=["phrases", "matcher-dev"], default="matcher-dev")
    ap.add_argument("--ks", type=int, nargs="+", default=[10])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--fa", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--seq-steps", type=int, default=0,
                    help="match this many template steps per example (0: all the 0-320 ms "
                    "steps); the span grows to 80 ms x N for N > 4")
    ap.add_argument("--slack", type=int, default=0,
                    help="seq: each template step may meet the stream up to S steps early or "
                    "late (never after now); 0 = fixed alignment")
    ap.add_argument("--top", type=int, default=1,
                    help="the word's score: mean of the best M examples' scores (1 = the max)")
    ap.add_argument("--cohort-top", type=int, default=400,
                    help="seq+atnorm: the cohort steps most similar to each template")
    ap.add_argument("--cohort-speech-only", action="store_true",
                    help="the cohort from the train background's speech only (no music)")
    ap.add_argument("--fuse-tag", default="",
                    help="also this run's student: each step is the two students' unit vectors "
                    "side by side / sqrt(2), so a cosine is the mean of the two students'")
    ap.add_argument("--in-context", action="store_true",
                    help="templates from the whole recording streamed, not the cut example")
    ap.add_argument("--warm", action="store_true",
                    help="every scored positive (and --in-context template) gets 2 s of its own "
                    "room tone before it: no cold stream start near the word, as live")
    ap.add_argument("--span-start", type=float, default=0.0,
                    help="the template steps start this many s after the VAD end (negative: "
                    "before it; a matched word then fires that much sooner). 0, the "
                    "default, is the span every earlier run here used; the product's is "
                    "models.matcher.SEQ_SPAN_START_S")
    a = ap.parse_args()

    import effw_distill_pilot

    effw_distill_pilot.OUT = OUT / a.tag
    m = Matcher("student")
    if a.fuse_tag:
        effw_distill_pilot.OUT = OUT / a.fuse_tag
        m = _Fused(m, Matcher("student"))
        effw_distill_pilot.OUT = OUT / a.tag
        a.tag = f"{a.tag}+{a.fuse_tag}"  # its own caches and results
    split = "eval" if a.set == "phrases" else "dev"
    if a.set == "matcher-dev":
        from polywake.train.pretrain import matcher_dev_files

        items = matcher_dev_files()
    else:
        items = {w: [(f, "") for f in splits.real_keyword_files(folder)]
                 for w, folder in WORDS.items()}
    bg_files = splits.background_files(split)
    bg = list(zip(map(str, bg_files), _embed_files(m, bg_files, f"{a.tag}-bg-{split}"),
                  strict=True))
    cohort_files = splits.background_files("train")
    cohort_emb = _embed_files(m, cohort_files, f"{a.tag}-bg-train")
    if a.cohort_speech_only:
        cohort_emb = [e for f, e in zip(cohort_files, cohort_emb, strict=True)
                      if "librispeech" in str(f)]
    cohort = np.concatenate(cohort_emb)
    cohort = cohort[np.random.default_rng(0).choice(len(cohort), min(COHORT_STEPS, len(cohort)),
                                                    replace=False)].astype(np.float32)
    pos = {w: _embed_files(m, [f for f, _ in v], f"{a.tag}-{a.set}-{w.replace(':', '_')}"
                           f"{'-warm' if a.warm else ''}",
                           pad=True, warm=a.warm)
           for w, v in items.items()}
    vad = _example_vad()
    rows: dict[str, dict[str, list[float]]] = {v: {} for v in a.variants}
    tmpl_cache: dict[tuple[str, int], list[np.ndarray]] = {}
    for word, its in tqdm(list(items.items()), desc="words"):
        others = [] if a.set != "matcher-dev" else [
            (str(f), e) for w2 in items if w2 != word
            for (f, _), e in zip(items[w2], pos[w2], strict=True)]
        for k in a.ks:
            for draw in range(a.draws):
                ex = sorted(example_draw(len(its), k, draw, word))
                examples = []
                for i in ex:
                    if (word, i) not in tmpl_cache:
                        tmpl_cache[(word, i)] = _example_templates(
                            m, load_audio(its[i][0]), vad, (1.0, 0.9, 1.1), a.seq_steps,
                            a.in_context, a.warm, a.span_start)
                    examples.append(tmpl_cache[(word, i)])
                spk = {its[i][1] for i in ex} - {""}
                held = [i for i in range(len(its)) if i not in ex and its[i][1] not in spk]
                for v in a.variants:
                    sc = Scorer(v, examples, cohort, a.seq_steps, a.slack, a.top, a.cohort_top)
                    p = [float(sc(pos[word][i]).max()) for i in held]
                    negs = [ScoreStream(n, sc(e)[:, None], 0.08) for n, e in bg + others]
                    curve = det_curve(p, negs, refractory_s=1.0)
                    for fa in a.fa:
                        rows[v].setdefault(f"{word}|{k}|{fa:g}", []).append(
                            frr_at_fa(curve, fa)[0])
    summary: dict[str, dict] = {}
    words = list(items)
    for k in a.ks:
        for fa in a.fa:
            base = None
            for v in a.variants:
                per_draw = np.mean([rows[v][f"{w}|{k}|{fa:g}"] for w in words], axis=0)
                line = f"{a.set} k={k} @{fa:g} FA/h {v:>10}: {100 * per_draw.mean():5.1f} %"
                if base is None:
                    base = per_draw
                else:
                    d = per_draw - base
                    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
                    line += f"  (vs {a.variants[0]}: {100 * d.mean():+.1f}, paired SE {100 * se:.1f})"
                per_word = ", ".join(f"{w} {100 * np.mean(rows[v][f'{w}|{k}|{fa:g}']):.1f}"
                                     for w in words)
                print(line + f"\n    {per_word}", flush=True)
                summary[f"{v}|{k}|{fa:g}"] = {"mean": float(per_draw.mean()),
                                              "per_draw": per_draw.tolist()}
    from polywake.audio import atomic_write_bytes

    atomic_write_bytes(OUT / a.tag / f"scoring_{a.set}{f'_L{a.seq_steps}' if a.seq_steps else ''}"
                       f"{f'_S{a.slack}' if a.slack else ''}{f'_top{a.top}' if a.top > 1 else ''}"
                       f"{f'_ct{a.cohort_top}' if 'seq+atnorm' in a.variants else ''}"
                       f"{'_speech' if a.cohort_speech_only else ''}"
                       f"{'_ctx' if a.in_context else ''}{'_warm' if a.warm else ''}"
                       f"{f'_start{a.span_start:g}' if a.span_start else ''}.json",
                       json.dumps({"rows": rows, "summary": summary}, indent=1).encode())


if __name__ == "__main__":
    main()
