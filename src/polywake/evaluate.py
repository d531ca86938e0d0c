"""`polywake eval`: false rejects vs false accepts per hour, DET plots, confusions between words.

Everything here works on *score streams*: for each audio file an array of per-step scores
shaped (T, n_words) and the step period (0.08 s for polywake's models; peers have their own).
The metric code therefore does not care which engine produced the scores, so polywake and the
peer engines (bench/peers.py) are measured by the same lines.

Definitions (docs/EVALUATION.md has the worked examples the tests check):

* A positive clip of word w is *detected* at threshold θ when any step's score for w is >= θ.
  FRR(θ) = fraction of w's positive clips not detected.
* In negative audio, the steps whose score is >= θ are *above*. Above steps closer than the
  refractory period (gap < refractory_s) belong to one *event*, chained: a score that stays
  above θ for 5 s is one event. FA/h(θ) = events / hours of negative audio. Every file is its
  own stream; events never span two files.
* Ties: ">=" everywhere, so a score exactly at θ fires, and an FA/h exactly at the target meets
  it (with 1e-9 relative slack for float rounding).
* FA/h is not monotone in θ: raising θ can split one chained event into two. Operating points
  therefore use the *upper envelope* FA/h⁺(θ) = max over θ' >= θ of FA/h(θ'): a threshold is
  admissible for a target only if it and every higher threshold meet the target.

No torch here; matplotlib is imported only to draw the DET plot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE, atomic_write_bytes, iter_audio_blocks
from .errors import PolywakeError

STEP_S = 0.08
FA_TARGETS: tuple[float, ...] = (0.1, 0.5, 1.0)
# Targets of the calibration table a model card stores (FA/h -> threshold).
CALIBRATION_FA: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"}
# Relative slack when comparing an FA/h to its target: 3 events / 6 h must equal 0.5.
_REL_TOL = 1e-9


class EvalError(PolywakeError, ValueError):
    """Evaluation inputs that cannot be used (no negatives, unknown word, empty folder...)."""


# --------------------------------------------------------------------------------------------
# Score streams


@dataclass
class ScoreStream:
    """Scores of one audio file: ``scores`` (T, n_words), one row per ``step_s`` seconds."""

    path: str
    scores: np.ndarray
    step_s: float = STEP_S
    duration_s: float | None = None

    def __post_init__(self) -> None:
        s = np.asarray(self.scores, dtype=np.float32)
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2:
            raise EvalError(f"{self.path}: scores must be shaped (T, n_words), got {s.shape}")
        if s.size and not np.all(np.isfinite(s)):
            raise EvalError(f"{self.path}: scores contain NaN or infinity")
        if not self.step_s > 0:
            raise EvalError(f"{self.path}: step_s must be > 0, got {self.step_s}")
        self.scores = s
        if self.duration_s is None:
            self.duration_s = s.shape[0] * self.step_s

    def max_scores(self) -> np.ndarray:
        """(n_words,) maximum over steps; -inf for a stream with no steps (never detected)."""
        if self.scores.shape[0] == 0:
            return np.full(self.scores.shape[1], -np.inf, np.float32)
        return self.scores.max(axis=0)


def score_files(score_fn: Callable[[Path], np.ndarray], files: Iterable[str | os.PathLike],
                step_s: float = STEP_S) -> list[ScoreStream]:
    """Score each file with ``score_fn(path) -> (T, W)`` scores (one row per ``step_s``)."""
    return [ScoreStream(str(f), score_fn(Path(f)), step_s) for f in files]


def iter_chunks(path: str | os.PathLike, chunk: int, pad_s: float = 0.0) -> Iterator[np.ndarray]:
    """16 kHz float32 chunks of exactly ``chunk`` samples (the last may be shorter), as a mic
    delivers them, then ``pad_s`` seconds of silence in the same chunk size."""
    buf = np.zeros(0, np.float32)
    for block in iter_audio_blocks(path):
        buf = np.concatenate([buf, block]) if buf.size else block
        n = (buf.size // chunk) * chunk
        for i in range(0, n, chunk):
            yield buf[i:i + chunk]
        buf = buf[n:]
    pad = np.zeros(int(round(pad_s * SAMPLE_RATE)), np.float32)
    tail = np.concatenate([buf, pad])
    for i in range(0, tail.size, chunk):
        yield tail[i:i + chunk]


def smooth_scores(scores: np.ndarray, smoothing: str = "mean", steps: int = 3) -> np.ndarray:
    """The Detector's per-word smoothing (DecisionEngine.smooth), for a whole stream at once:
    mean or max of the last ``steps`` rows (fewer at the start of the stream), or "none".
    The Detector thresholds the smoothed score, so that is the score to measure."""
    x = np.asarray(scores, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if smoothing not in ("mean", "max", "none"):
        raise EvalError(f"smoothing must be 'mean', 'max' or 'none', got {smoothing!r}")
    if smoothing == "none" or steps <= 1 or x.shape[0] == 0:
        return x.astype(np.float32)
    if smoothing == "max":
        out = np.stack([np.maximum(x[:, j], _running_max_before(x[:, j], steps - 1))
                        for j in range(x.shape[1])], axis=1)
        return out.astype(np.float32)
    c = np.cumsum(np.vstack([np.zeros((1, x.shape[1])), x]), axis=0)
    t = np.arange(1, x.shape[0] + 1)
    lo = np.maximum(t - steps, 0)
    return ((c[t] - c[lo]) / (t - lo)[:, None]).astype(np.float32)


def score_file_with_scorer(scorer: Any, path: str | os.PathLike, *, chunk_s: float = 0.08,
                           pad_s: float = 0.0, smoothing: str = "mean",
                           smooth_steps: int = 3) -> ScoreStream:
    """Stream a file through :meth:`Detector.scores` in ``chunk_s`` chunks, as a live stream,
    and smooth the rows as the Detector's decisions do (defaults: the Detector's).

    ``pad_s`` seconds of trailing silence are appended (used for short positive clips, so a
    word that ends right at the end of a clip still gets the steps after it, as it would live).
    ``duration_s`` is the file's own duration, without the padding.
    """
    from .detect import Detector

    det = Detector(scorer)
    n = max(1, int(round(chunk_s * SAMPLE_RATE)))
    rows = [det.scores(c) for c in iter_chunks(path, n, pad_s)]
    samples = det.samples_seen - int(round(pad_s * SAMPLE_RATE))
    scores = np.concatenate(rows) if rows else np.zeros((0, len(det.words)), np.float32)
    return ScoreStream(str(path), smooth_scores(scores, smoothing, smooth_steps),
                       det.step_seconds, samples / SAMPLE_RATE)


# --------------------------------------------------------------------------------------------
# Metrics


def _merge_gap_steps(step_s: float, refractory_s: float) -> int:
    """Largest gap k (in steps) that still merges: k * step_s < refractory_s."""
    if refractory_s <= 0:
        return 0
    return max(0, math.ceil(refractory_s / step_s - 1e-9) - 1)


def _running_max_before(s: np.ndarray, k: int) -> np.ndarray:
    """m[t] = max(s[t-k : t]) (the k steps before t; -inf where there are none). O(T log k)."""
    t = s.size
    out = np.full(t, -np.inf)
    if k <= 0 or t <= 1:
        return out
    k = min(k, t - 1)
    # Doubling table: span[i] = max(s[i : i + w]) for the current width w.
    span, w = s.astype(np.float64), 1
    while 2 * w <= k:
        span = np.maximum(span[:-w], span[w:])
        w *= 2
    # Window [t-k, t-1] = max of the two width-w windows starting at t-k and t-w (they overlap).
    starts = np.arange(t)
    lo, hi = starts - k, starts - w
    # For t < k the window is [0, t-1]: clamp its start and drop windows that would be empty.
    lo = np.maximum(lo, 0)
    ok = hi >= 0
    out[ok] = np.maximum(span[lo[ok]], span[hi[ok]])
    # 0 < t < w: the window [0, t-1] is shorter than w; fill those few from a prefix max.
    few = min(w, t)
    if few > 1:
        out[1:few] = np.maximum.accumulate(s[: few - 1].astype(np.float64))
    return out


def event_scores(stream_scores: np.ndarray, step_s: float, refractory_s: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """For one word's scores in one negative stream: (s, c) with events(θ) = #{s >= θ} - #{c >= θ}.

    Step t starts an event at θ exactly when s[t] >= θ and no step in the merge window before it
    is >= θ, i.e. when m[t] < θ <= s[t] with m[t] the max over that window; and
    [m < θ <= s] = [s >= θ] - [min(s, m) >= θ]. So c = min(s, m).
    """
    s = np.asarray(stream_scores, dtype=np.float64)
    m = _running_max_before(s, _merge_gap_steps(step_s, refractory_s))
    return s, np.minimum(s, m)


def count_events(scores: np.ndarray, threshold: float, step_s: float, refractory_s: float) -> int:
    """Events at one threshold by a plain loop (reference for tests and single points)."""
    k = _merge_gap_steps(step_s, refractory_s)
    n, last = 0, None
    for t in np.flatnonzero(np.asarray(scores, np.float64) >= threshold):
        if last is None or t - last > k:
            n += 1
        last = t
    return n


def _above_threshold(vmax: float) -> float:
    """A threshold above ``vmax`` in float32 too, so it survives being stored as float32."""
    if not math.isfinite(vmax):
        return math.inf
    up32 = float(np.nextafter(np.float32(vmax), np.float32(np.inf)))
    return up32 if up32 > vmax else float(np.nextafter(vmax, np.inf))


@dataclass
class DetCurve:
    """FRR and FA/h at every threshold where either changes, thresholds ascending.

    ``frr[i]``, ``fa_per_hour[i]`` hold for every θ in (thresholds[i-1], thresholds[i]]; the last
    threshold lies above every score (FRR 1, FA/h 0). ``fa_per_hour_upper`` is the envelope
    max_{j >= i} fa_per_hour[j] (non-increasing). ``frr`` is NaN when there are no positives.
    """

    thresholds: np.ndarray
    frr: np.ndarray
    fa_per_hour: np.ndarray
    fa_per_hour_upper: np.ndarray
    hours: float
    n_pos: int
    refractory_s: float
    # Sorted raw material, so :meth:`at` evaluates any threshold exactly.
    _pos: np.ndarray = field(repr=False)
    _s: np.ndarray = field(repr=False)
    _c: np.ndarray = field(repr=False)

    def at(self, threshold: float) -> tuple[float, float]:
        """(FRR, FA/h) at one threshold, exactly (not interpolated)."""
        frr = (np.searchsorted(self._pos, threshold, "left") / self.n_pos) if self.n_pos \
            else math.nan
        ev = (self._s.size - np.searchsorted(self._s, threshold, "left")) \
            - (self._c.size - np.searchsorted(self._c, threshold, "left"))
        return float(frr), float(ev / self.hours)

    def events_at(self, threshold: float) -> int:
        return int(round(self.at(threshold)[1] * self.hours))


def det_curve(pos_max_scores: Sequence[float] | np.ndarray, neg_streams: Sequence[ScoreStream],
              refractory_s: float = 1.0, word_index: int = 0) -> DetCurve:
    """DET curve of one word.

    ``pos_max_scores``: per positive clip, its maximum score for this word (may be empty).
    ``neg_streams``: negative audio; column ``word_index`` of each stream is used.
    Sort-based: O(N log N) in the number of negative steps, no loop over thresholds.
    """
    # Scores are float32 everywhere (streams store float32); positives given as Python floats
    # are rounded the same way, so a tie between a positive and a negative stays a tie.
    pos = np.sort(np.asarray(pos_max_scores, dtype=np.float32).astype(np.float64).ravel())
    if pos.size and np.isnan(pos).any():
        raise EvalError("positive max scores contain NaN")
    if refractory_s < 0:
        raise EvalError(f"refractory must be >= 0 s, got {refractory_s}")
    seconds = float(sum(st.duration_s for st in neg_streams))
    if not neg_streams or seconds <= 0:
        raise EvalError("no negative audio: FA/h is undefined (give --negatives)")
    s_parts, c_parts = [], []
    for st in neg_streams:
        if st.scores.shape[0] == 0:
            continue
        if word_index >= st.scores.shape[1]:
            raise EvalError(f"{st.path}: has {st.scores.shape[1]} score columns, "
                            f"word index {word_index} asked")
        s, c = event_scores(st.scores[:, word_index], st.step_s, refractory_s)
        s_parts.append(s)
        c_parts.append(c[np.isfinite(c)])
    s_all = np.sort(np.concatenate(s_parts)) if s_parts else np.zeros(0)
    c_all = np.sort(np.concatenate(c_parts)) if c_parts else np.zeros(0)
    finite_pos = pos[np.isfinite(pos)]
    cand = np.unique(np.concatenate([finite_pos, s_all, c_all]))
    vmax = float(cand[-1]) if cand.size else 0.0
    thr = np.append(cand, _above_threshold(vmax))
    hours = seconds / 3600.0
    n_pos = int(pos.size)
    frr = (np.searchsorted(pos, thr, "left") / n_pos) if n_pos else np.full(thr.size, np.nan)
    events = (s_all.size - np.searchsorted(s_all, thr, "left")) \
        - (c_all.size - np.searchsorted(c_all, thr, "left"))
    fa = events / hours
    upper = np.maximum.accumulate(fa[::-1])[::-1]
    # Keep only the last threshold of each run of equal (FRR, FA/h, envelope): lossless, and
    # it keeps "values at thresholds[i] hold on (thresholds[i-1], thresholds[i]]" true.
    same = (fa[1:] == fa[:-1]) & (upper[1:] == upper[:-1])
    same &= (frr[1:] == frr[:-1]) | (np.isnan(frr[1:]) & np.isnan(frr[:-1]))
    keep = np.ones(thr.size, bool)
    keep[:-1] = ~same
    return DetCurve(thr[keep], frr[keep], fa[keep], upper[keep], hours, n_pos,
                    float(refractory_s), pos, s_all, c_all)


def _admissible_index(curve: DetCurve, fa_per_hour: float) -> int:
    if not fa_per_hour >= 0:
        raise EvalError(f"FA/h target must be >= 0, got {fa_per_hour}")
    ok = curve.fa_per_hour_upper <= fa_per_hour * (1 + _REL_TOL) + 1e-12
    # The last threshold has FA/h 0, so there is always one; the envelope makes `ok` monotone.
    return int(np.argmax(ok))


def frr_at_fa(curve: DetCurve, fa_per_hour: float) -> tuple[float, float]:
    """(FRR, threshold) with the lowest FRR among thresholds whose FA/h envelope <= target.

    FRR never decreases with the threshold, so the lowest admissible interval of thresholds
    (t_prev, t] has the lowest FRR; every θ in it gives the same numbers and ``t`` (a real score
    value, which fires since the test is ">=") is returned. When only the top threshold meets
    the target the answer is (1.0, a threshold above every score).
    """
    i = _admissible_index(curve, fa_per_hour)
    return float(curve.frr[i]), float(curve.thresholds[i])


def threshold_for_fa(curve: DetCurve, fa_per_hour: float) -> float:
    """Calibration (on DEV data): a threshold with the lowest FRR at FA/h <= ``fa_per_hour``,
    placed in the middle of all thresholds that give that same FRR within the target.

    That range is (t_lo, p_next]: t_lo the highest threshold that fails the target (excluded),
    p_next the lowest positive max score >= the admissible point (a higher threshold would lose
    that clip). The midpoint keeps a margin on both sides for unseen data. When no positive lies
    at or above the admissible point (or there are no positives) the admissible point itself is
    returned; when every threshold meets the target, the lowest score stands in for t_lo.
    """
    # Scores are probabilities: when false accepts reach 1.0 (a saturated score), the
    # admissible point lies just above 1.0, and no threshold can meet the target. 1.0 is then
    # the best there is; a card must never hold a threshold the detector refuses.
    return min(1.0, _threshold_for_fa(curve, fa_per_hour))


def _threshold_for_fa(curve: DetCurve, fa_per_hour: float) -> float:
    i = _admissible_index(curve, fa_per_hour)
    t_hi = float(curve.thresholds[i])
    j = int(np.searchsorted(curve._pos, t_hi, "left"))
    if j >= curve._pos.size or not np.isfinite(curve._pos[j]):
        return t_hi
    p_next = float(curve._pos[j])
    if i == 0:
        # Nothing fails: [lowest score, p_next] is all admissible, its ends included.
        lows = [t_hi] + [float(a[0]) for a in (curve._s, curve._c) if a.size]
        return 0.5 * (min(lows) + p_next)
    t_lo = float(curve.thresholds[i - 1])
    mid = 0.5 * (t_lo + p_next)
    # Never at or below t_lo (it would fail the target), never above p_next (one more miss).
    return min(max(mid, float(np.nextafter(t_lo, np.inf))), p_next)


def calibration_table(curve: DetCurve, fa_targets: Sequence[float] = CALIBRATION_FA
                      ) -> dict[str, Any]:
    """What a model card stores per word: FA/h targets, their calibrated thresholds (see
    :func:`threshold_for_fa`) and the FRR each had on the calibration data."""
    thr = [threshold_for_fa(curve, f) for f in fa_targets]
    return {
        "fa_per_hour": [float(f) for f in fa_targets],
        "thresholds": thr,
        "frr": [_num(curve.at(t)[0]) for t in thr],
        "hours": float(curve.hours),
        "positives": curve.n_pos,
        "refractory_s": curve.refractory_s,
    }


def confusion(pos_max: Mapping[str, np.ndarray], words: Sequence[str],
              thresholds: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """C[a][b]: fraction of word a's clips on which word b fires at b's threshold.

    ``pos_max[a]``: (n_clips_a, len(words)) per-clip maxima of every word's score. The diagonal
    is a's detection rate (1 - FRR at that threshold); off-diagonal entries are confusions.
    """
    out: dict[str, dict[str, float]] = {}
    for a, m in pos_max.items():
        m = np.asarray(m, np.float64).reshape(-1, len(words))
        out[a] = {b: (float(np.mean(m[:, j] >= thresholds[b])) if m.shape[0] else math.nan)
                  for j, b in enumerate(words) if b in thresholds}
    return out


# --------------------------------------------------------------------------------------------
# Report


@dataclass
class WordResult:
    word: str
    n_pos: int
    hours: float
    curve: DetCurve
    at_fa: dict[float, tuple[float, float]]  # target FA/h -> (FRR, threshold)
    threshold: float | None = None  # the operating threshold (card or given), if any
    op_frr: float | None = None
    op_fa_per_hour: float | None = None


@dataclass
class Report:
    words: list[str]
    results: dict[str, WordResult]
    confusion: dict[str, dict[str, float]]
    thresholds: dict[str, float]
    thresholds_source: str
    refractory_s: float
    fa_targets: tuple[float, ...]
    negative_files: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        words = {}
        for w, r in self.results.items():
            words[w] = {
                "positives": r.n_pos,
                "negative_hours": round(r.hours, 4),
                "frr_at_fa": {f"{t:g}": {"frr": _num(frr), "threshold": _num(thr)}
                              for t, (frr, thr) in r.at_fa.items()},
                "operating_point": None if r.threshold is None else {
                    "threshold": _num(r.threshold), "frr": _num(r.op_frr),
                    "fa_per_hour": _num(r.op_fa_per_hour)},
            }
        return {
            "metric": {
                "frr": "positive clip missed: no step's score >= threshold",
                "fa_per_hour": "negative events per hour; above-threshold steps closer than "
                               "the refractory period merge into one event",
                "operating_point_rule": "lowest threshold whose FA/h envelope <= target",
                "refractory_s": self.refractory_s,
            },
            "words": words,
            "thresholds": {w: _num(t) for w, t in self.thresholds.items()},
            "thresholds_source": self.thresholds_source,
            "confusion": {a: {b: _num(v) for b, v in row.items()}
                          for a, row in self.confusion.items()},
            "negative_files": self.negative_files,
            "notes": self.notes,
        }

    def to_text(self) -> str:
        head = "| word | positives | neg hours | " + " | ".join(
            f"FRR @ {t:g} FA/h (thr)" for t in self.fa_targets) + " |"
        lines = [head, "|" + "---|" * (3 + len(self.fa_targets))]
        for w, r in self.results.items():
            cells = [f"{_pct(frr)} ({thr:.6g})" for frr, thr in
                     (r.at_fa[t] for t in self.fa_targets)]
            lines.append(f"| {w} | {r.n_pos} | {r.hours:.2f} | " + " | ".join(cells) + " |")
        ops = [r for r in self.results.values() if r.threshold is not None]
        if ops:
            lines += ["", f"Operating point (thresholds: {self.thresholds_source}):",
                      "| word | threshold | FRR | FA/h |", "|---|---|---|---|"]
            lines += [f"| {r.word} | {r.threshold:.6g} | {_pct(r.op_frr)} | "
                      f"{r.op_fa_per_hour:.3g} |" for r in ops]
        if self.confusion:
            cols = [w for w in self.words if w in self.thresholds]
            lines += ["", "Confusion (rows: clips of word; columns: word that fires; "
                      f"thresholds: {self.thresholds_source}):",
                      "| clips of \\ fires | " + " | ".join(cols) + " |",
                      "|---|" + "---|" * len(cols)]
            for a, row in self.confusion.items():
                lines.append(f"| {a} | " + " | ".join(_pct(row.get(b)) for b in cols) + " |")
        lines += ["", f"FA/h counts events (refractory {self.refractory_s:g} s) in "
                      f"{self.negative_files} negative files."]
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | os.PathLike, title: str = "polywake") -> dict[str, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": atomic_write_bytes(out / "report.json",
                                       json.dumps(self.to_dict(), indent=2).encode()),
            "txt": atomic_write_bytes(out / "report.txt", self.to_text().encode()),
        }
        paths["png"] = plot_det({w: r.curve for w, r in self.results.items()},
                                out / "det.png", title=title)
        return paths


def _num(x: float | None) -> float | None:
    """JSON has no NaN/inf: write null for them."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def plot_det(curves: Mapping[str, DetCurve], path: str | os.PathLike, title: str = "DET",
             points: Mapping[str, Sequence[tuple[float, float]]] | None = None,
             hours: float | None = None) -> Path:
    """FRR vs FA/h (log x), one curve per word, to a PNG. FA/h of 0 is drawn at the left edge
    (half of one event in the audio), since a log axis has no 0.

    ``points``: label -> [(FA/h, FRR), ...] operating points of engines without scores (binary
    detectors), drawn as markers; ``hours`` sets the left edge when there are no curves."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # matplotlib is in the train extra, not the runtime
        raise EvalError("the DET plot needs matplotlib: pip install 'polywake[train]'") from e
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    floor = min((0.5 / c.hours for c in curves.values()),
                default=0.5 / hours if hours else 0.01)
    for word, c in curves.items():
        fa = np.maximum(c.fa_per_hour_upper, floor)
        frr = np.nan_to_num(c.frr, nan=1.0)
        ax.step(fa, 100 * frr, where="post", label=f"{word} (n={c.n_pos})")
    for label, pts in (points or {}).items():
        xy = np.array([(max(fa, floor), 100 * frr) for fa, frr in pts]).reshape(-1, 2)
        ax.plot(xy[:, 0], xy[:, 1], "o--", ms=4, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("false accepts per hour")
    ax.set_ylabel("false rejection rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    if curves or points:
        ax.legend(fontsize="small")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, p)
    return p


def report_from_streams(words: Sequence[str], positives: Mapping[str, Sequence[ScoreStream]],
                        negatives: Sequence[ScoreStream], *, refractory_s: float = 1.0,
                        fa_targets: Sequence[float] = FA_TARGETS,
                        thresholds: Mapping[str, float] | None = None,
                        thresholds_source: str | None = None,
                        neg_exclude: Mapping[str, Iterable[str]] | None = None) -> Report:
    """The whole report from score streams (any engine). ``neg_exclude[w]``: file stems left
    out of w's negatives (audio that does contain w, e.g. the LibriSpeech "echo" utterance).

    Confusion uses ``thresholds`` when given (the model's own), else each word's threshold at
    the largest FA/h target of this evaluation.
    """
    words = list(words)
    targets = tuple(float(t) for t in fa_targets)
    unknown = set(positives) - set(words)
    if unknown:
        raise EvalError(f"positives for {sorted(unknown)}, but the model's words are {words}")
    results: dict[str, WordResult] = {}
    pos_max: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for w in positives:
        j = words.index(w)
        pm = np.stack([st.max_scores() for st in positives[w]]) if positives[w] \
            else np.zeros((0, len(words)), np.float32)
        pos_max[w] = pm
        excl = set(neg_exclude.get(w, ())) if neg_exclude else set()
        negs = [st for st in negatives if Path(st.path).stem not in excl]
        if len(negs) < len(negatives):
            notes.append(f"{len(negatives) - len(negs)} negative file(s) that contain "
                         f"{w!r} are not counted for {w!r}")
        curve = det_curve(pm[:, j], negs, refractory_s, word_index=j)
        results[w] = WordResult(w, int(pm.shape[0]), curve.hours, curve,
                                {t: frr_at_fa(curve, t) for t in targets})
    if thresholds:
        thr = {w: float(thresholds[w]) for w in words if w in thresholds}
        source = thresholds_source or "given"
        for w, r in results.items():
            if w in thr:
                r.threshold = thr[w]
                r.op_frr, r.op_fa_per_hour = r.curve.at(thr[w])
    else:
        top = max(targets)
        thr = {w: r.at_fa[top][1] for w, r in results.items()}
        source = thresholds_source or f"each word's at {top:g} FA/h on this data"
    conf = confusion(pos_max, words, thr)
    return Report(words, results, conf, thr, source, float(refractory_s), targets,
                  len(negatives), notes)


def evaluate(scorer: Any, positives: Mapping[str, Sequence[str | os.PathLike]],
             negatives: Sequence[str | os.PathLike], *, refractory_s: float = 1.0,
             fa_targets: Sequence[float] = FA_TARGETS,
             thresholds: Mapping[str, float] | None = None,
             neg_exclude: Mapping[str, Iterable[str]] | None = None,
             pad_s: float = 0.5, smoothing: str = "mean", smooth_steps: int = 3,
             progress: bool = False) -> Report:
    """Score every file with ``scorer`` (a StreamingScorer) through the streaming Detector and
    build the :class:`Report`. Positive clips get ``pad_s`` s of trailing silence. Scores are
    smoothed as the Detector smooths them before deciding (``smoothing``, ``smooth_steps``).

    Operating point: ``thresholds`` if given, else the model card's per-word thresholds
    (``scorer.card["per_word"][w]["threshold"]``, or a ``scorer.thresholds`` mapping)."""
    from tqdm import tqdm

    all_pos = [(w, f) for w, fs in positives.items() for f in fs]
    bar = tqdm(total=len(all_pos) + len(negatives), disable=not progress, unit="file",
               file=sys.stderr)
    pos_streams: dict[str, list[ScoreStream]] = {w: [] for w in positives}
    for w, f in all_pos:
        pos_streams[w].append(score_file_with_scorer(scorer, f, pad_s=pad_s, smoothing=smoothing,
                                                     smooth_steps=smooth_steps))
        bar.update()
    neg_streams = []
    for f in negatives:
        neg_streams.append(score_file_with_scorer(scorer, f, smoothing=smoothing,
                                                  smooth_steps=smooth_steps))
        bar.update()
    bar.close()
    if thresholds is None:
        thresholds = card_thresholds(scorer)
        source = "model card" if thresholds else None
    else:
        source = "given"
    return report_from_streams(scorer.words, pos_streams, neg_streams,
                               refractory_s=refractory_s, fa_targets=fa_targets,
                               thresholds=thresholds, thresholds_source=source,
                               neg_exclude=neg_exclude)


def card_thresholds(scorer: Any) -> dict[str, float] | None:
    """Per-word thresholds the model card sets (only words it sets one for), else None."""
    card = getattr(scorer, "card", None)
    per = card.get("per_word") if isinstance(card, Mapping) else None
    if isinstance(per, Mapping):
        thr = {w: float(per[w]["threshold"]) for w in scorer.words
               if isinstance(per.get(w), Mapping) and "threshold" in per[w]}
        if thr:
            return thr
    thr = getattr(scorer, "thresholds", None)
    return dict(thr) if isinstance(thr, Mapping) and thr else None


# --------------------------------------------------------------------------------------------
# Inputs and CLI


def list_audio(spec: str | os.PathLike, *, word: str | None = None,
               negatives: bool = False) -> list[Path]:
    """Audio files of a folder (recursive), a manifest, or one audio file.

    Manifest: ``.txt``/``.lst`` (one path a line, ``#`` comments) or ``.jsonl`` (objects with
    "path" or "audio", as polywake.data.manifest writes them); relative paths are relative to
    the manifest's folder. JSONL records that carry ``kind``/``word`` are filtered: for a word's
    positives (``word=``) only ``kind == "positive"`` records of that word, for ``negatives``
    only records that are not positives. A torn last line (a killed writer) is skipped.
    """
    p = Path(spec)
    if not p.exists():
        raise EvalError(f"{p}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES
                       and f.is_file())
        if not files:
            raise EvalError(f"{p}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
        return files
    if p.suffix.lower() in AUDIO_SUFFIXES:
        return [p]
    entries: list[str] = []
    lines = p.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if p.suffix.lower() != ".jsonl":
            entries.append(line)
            continue
        try:
            obj = json.loads(line)
            path = str(obj.get("path") or obj["audio"])
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
            if n == len(lines):
                continue
            raise EvalError(f"{p}:{n}: expected a JSON object with \"path\" ({e})") from e
        kind = obj.get("kind")
        if word is not None and (kind not in (None, "positive")
                                 or obj.get("word") not in (None, word)):
            continue
        if negatives and kind == "positive":
            continue
        entries.append(path)
    files = [f if f.is_absolute() else p.parent / f for f in map(Path, entries)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise EvalError(f"{p}: {len(missing)} listed file(s) missing, e.g. {missing[0]}")
    if not files:
        raise EvalError(f"{p}: manifest lists no usable files"
                        + (f" for {word!r}" if word else ""))
    return files


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model to evaluate (read by polywake.model_io.load_scorer)")
    p.add_argument("--positives", action="append", default=[], metavar="WORD=DIR_OR_MANIFEST",
                   help="clips of WORD (repeatable; a word may be given several times)")
    p.add_argument("--negatives", action="append", default=[], metavar="DIR_OR_FILE",
                   help="audio with none of the words, for FA/h (repeatable)")
    p.add_argument("--refractory", type=float, default=1.0,
                   help="seconds within which above-threshold steps count as one event")
    p.add_argument("--fa", type=float, nargs="+", default=list(FA_TARGETS),
                   help="FA/h targets of the table (default 0.1 0.5 1)")
    p.add_argument("--pad", type=float, default=0.5,
                   help="seconds of silence after each positive clip (default 0.5)")
    p.add_argument("--smoothing", choices=["mean", "max", "none"], default=None,
                   help="score smoothing before thresholds, as the Detector's (default: the "
                        "model card's decision setting, else mean)")
    p.add_argument("--smooth-steps", type=int, default=3,
                   help="rows the smoothing spans, as the Detector's (default 3)")
    p.add_argument("--no-transcript-exclusion", action="store_true",
                   help="keep LibriSpeech files whose transcript contains the word")
    p.add_argument("--out", required=True, help="folder for report.json, report.txt, det.png")


def _load_scorer(path: str) -> Any:
    try:
        from .model_io import load_scorer
    except ImportError as e:
        raise EvalError(f"cannot load models: polywake.model_io is not available ({e})") from e
    return load_scorer(path)


def run(args: argparse.Namespace) -> int:
    scorer = _load_scorer(args.model)
    positives: dict[str, list[Path]] = {}
    for spec in args.positives:
        word, sep, src = spec.partition("=")
        if not sep or not word or not src:
            raise EvalError(f"--positives {spec!r}: expected WORD=DIR_OR_MANIFEST")
        if word not in scorer.words:
            raise EvalError(f"--positives {word!r}: not a word of the model {scorer.words}")
        positives.setdefault(word, []).extend(list_audio(src, word=word))
    if not positives:
        raise EvalError("give at least one --positives WORD=DIR_OR_MANIFEST")
    negatives = [f for spec in args.negatives for f in list_audio(spec, negatives=True)]
    if not negatives:
        raise EvalError("give at least one --negatives DIR_OR_FILE (FA/h needs them)")
    exclude: dict[str, set[str]] = {}
    if not args.no_transcript_exclusion:
        from .data.splits import files_containing, have_shared_data

        if have_shared_data():
            exclude = {w: files_containing(w) for w in positives}
    decision = dict((getattr(scorer, "card", None) or {}).get("decision", {}))
    if args.smoothing is None:
        args.smoothing = str(decision.get("smoothing", "mean"))
        if "smooth_steps" in decision:
            args.smooth_steps = int(decision["smooth_steps"])
    report = evaluate(scorer, positives, negatives, refractory_s=args.refractory,
                      fa_targets=args.fa, neg_exclude=exclude, pad_s=args.pad,
                      smoothing=args.smoothing, smooth_steps=args.smooth_steps,
                      progress=sys.stderr.isatty())
    report.notes.append(f"scores smoothed as the Detector does: {args.smoothing} over "
                        f"{args.smooth_steps} steps")
    paths = report.save(args.out, title=f"polywake eval: {Path(args.model).name}")
    print(report.to_text(), end="")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
