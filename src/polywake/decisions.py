"""Per-word decisions on streaming score rows: thresholds from a sensitivity knob, smoothing,
a short hold until the score peaks, waiting for longer words that may contain the one that
fired, arbitration between words in one utterance, and a refractory period. Pure numpy.

Everything a word needs comes from its entry in the model card (:class:`WordCard`), so a word
added later brings its own duration, latency and calibration and no code changes. The rules
(docs/STREAMING.md explains them with numbers):

1. Each row is smoothed per word (moving mean or max over the last ``smooth_steps`` rows).
2. A word whose smoothed score reaches its threshold opens a *candidate* (if it is armed: it
   fell below its threshold since its last candidate, and its refractory period is over).
3. The candidate *peaks* when its score has not risen for ``peak_patience_steps`` steps, or
   fell below the threshold, or its hold window (``clip(latency_s, 2 steps, max_hold_s)``)
   ran out, or it reached ``sure_score`` (default 0.99: waiting a step to see a score that
   high rise further only adds latency; calibration tempers the heads so their scores stay
   below a float32 1.0, so "reached 1" alone would rarely happen).
4. A peaked candidate still waits while a LONGER word that could contain it (its text
   contains this one's, or it lasts at least ``prefix_min_s`` longer: the conditions of rule
   5's containment) is live (smoothed score at or above ``arm_fraction`` of its threshold,
   not yet a candidate): that word may contain this one ("hey sam" inside "hey samuel"),
   and would peak about
   ``(duration_long - duration_short) + max(0, latency_long - latency_short)`` later. The wait
   is capped by ``max_containment_wait_s``.
5. Candidates whose estimated spans overlap (or lie within ``merge_gap_s``) are one utterance.
   When all of them are ready, one event is emitted: a candidate contained in a longer one is
   dropped first (see :meth:`DecisionEngine._contains`), then the highest calibrated margin
   wins. The others are returned as :class:`Suppressed` and logged.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
_FLOAT_ROWS = (np.dtype(np.float32), np.dtype(np.float64))
# A score this high is taken as its own peak (rule 3): waiting a step to see it rise further
# cost a tempered default 43 ms of median latency and changed neither which word fired nor the
# start/end estimates beyond noise (bench/streaming.py, docs/STREAMING.md). Rule 4's wait for
# longer words that could contain this one still applies.
DEFAULT_SURE_SCORE = 0.99

# Sensitivity 0..1 maps to an expected false-accept rate on a log scale between these.
FA_AT_SENSITIVITY_0 = 0.01
FA_AT_SENSITIVITY_1 = 10.0
# A curve that measured 0 false accepts at some threshold says "below one per dev set", not
# "never"; this floor keeps logs finite and orders such thresholds by the curve's shape.
FA_FLOOR = 1e-4
DEFAULT_THRESHOLD = 0.5
DEFAULT_DURATION_S = 0.6
DEFAULT_LATENCY_S = 0.3


def sensitivity_to_fa(sensitivity: float) -> float:
    """User knob 0..1 -> expected false accepts per hour: 0 -> 0.01, 0.5 -> 0.32, 1 -> 10."""
    s = float(sensitivity)
    if not 0.0 <= s <= 1.0:  # also rejects NaN
        raise ValueError(f"sensitivity must be between 0 and 1, got {sensitivity!r}")
    lo, hi = math.log10(FA_AT_SENSITIVITY_0), math.log10(FA_AT_SENSITIVITY_1)
    return 10.0 ** (lo + s * (hi - lo))


def fa_to_sensitivity(fa_per_hour: float) -> float:
    """Inverse of :func:`sensitivity_to_fa`, clipped to 0..1."""
    lo, hi = math.log10(FA_AT_SENSITIVITY_0), math.log10(FA_AT_SENSITIVITY_1)
    s = (math.log10(max(float(fa_per_hour), 1e-12)) - lo) / (hi - lo)
    return float(min(1.0, max(0.0, s)))


@dataclass(frozen=True)
class Calibration:
    """False accepts per hour measured on dev data at ascending score thresholds.

    Interpolation is linear in log10(FA/h) between measured points, which is how such curves
    behave (FA falls roughly exponentially with the threshold). The curve is made
    non-increasing first, because a noisy dev measurement must not make a higher threshold
    look worse.
    """

    thresholds: tuple[float, ...]
    fa_per_hour: tuple[float, ...]

    def __post_init__(self) -> None:
        t = np.asarray(self.thresholds, np.float64)
        f = np.asarray(self.fa_per_hour, np.float64)
        if t.ndim != 1 or t.shape != f.shape or t.size < 2:
            raise ValueError("calibration needs two equally long lists of at least 2 points, "
                             f"got {t.size} thresholds and {f.size} FA/h values")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(f))):
            raise ValueError("calibration values must be finite")
        if np.any(np.diff(t) <= 0):
            raise ValueError("calibration thresholds must be strictly ascending")
        if np.any(f < 0):
            raise ValueError("calibration FA/h values must be >= 0")
        object.__setattr__(self, "thresholds", tuple(float(x) for x in t))
        object.__setattr__(self, "fa_per_hour", tuple(float(x) for x in f))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        return cls(tuple(d["thresholds"]), tuple(d["fa_per_hour"]))

    @property
    def _log_fa(self) -> np.ndarray:
        f = np.minimum.accumulate(np.asarray(self.fa_per_hour))
        return np.log10(np.maximum(f, FA_FLOOR))

    def fa_at(self, threshold: float) -> float:
        """Expected FA/h when deciding at ``threshold`` (clamped to the measured range)."""
        return float(10.0 ** np.interp(threshold, self.thresholds, self._log_fa))

    def threshold_for(self, fa_per_hour: float) -> float:
        """The lowest threshold whose expected FA/h is at most ``fa_per_hour``.

        Lowest, so that on a flat part of the curve the most sensitive equivalent threshold is
        used. A target below the curve's best returns the highest measured threshold; a target
        above its worst returns the lowest.
        """
        t = np.asarray(self.thresholds)
        lf = self._log_fa
        target = math.log10(max(float(fa_per_hour), FA_FLOOR))
        if lf[0] <= target:
            return float(t[0])
        for k in range(len(t) - 1):
            if lf[k + 1] <= target < lf[k]:
                frac = (lf[k] - target) / (lf[k] - lf[k + 1])
                return float(t[k] + frac * (t[k + 1] - t[k]))
        return float(t[-1])


@dataclass(frozen=True)
class WordCard:
    """What the decision logic knows about one word (from the model card's ``per_word``)."""

    word: str
    threshold: float = DEFAULT_THRESHOLD
    duration_s: float = DEFAULT_DURATION_S
    latency_s: float = DEFAULT_LATENCY_S
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"{self.word}: threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 < self.duration_s < 10.0:
            raise ValueError(f"{self.word}: duration_s must be in (0, 10), got {self.duration_s}")
        if not 0.0 <= self.latency_s < 5.0:
            raise ValueError(f"{self.word}: latency_s must be in [0, 5), got {self.latency_s}")

    @classmethod
    def from_dict(cls, word: str, d: Mapping[str, Any] | None) -> WordCard:
        d = d or {}
        cal = None
        if d.get("calibration"):
            try:
                cal = Calibration.from_dict(d["calibration"])
            except (ValueError, KeyError, TypeError) as e:
                # A bad curve must not stop detection: the card's threshold still works.
                log.warning("%s: ignoring the card's calibration curve (%s)", word, e)
        return cls(
            word=word,
            threshold=float(d.get("threshold", DEFAULT_THRESHOLD)),
            duration_s=float(d.get("duration_s", DEFAULT_DURATION_S)),
            latency_s=float(d.get("latency_s", DEFAULT_LATENCY_S)),
            calibration=cal,
        )

    def threshold_for_sensitivity(self, sensitivity: float) -> float:
        """Sensitivity 0..1 -> FA/h target (:func:`sensitivity_to_fa`) -> threshold.

        Without a calibration curve there is no FA/h to aim at; the fallback is a linear map
        with the card's threshold at 0.5 (0 -> 0.95, 1 -> 0.05 at the extremes).
        """
        fa = sensitivity_to_fa(sensitivity)
        if self.calibration is not None:
            return self.calibration.threshold_for(fa)
        s = float(sensitivity)
        if s <= 0.5:
            return self.threshold + (0.5 - s) / 0.5 * (0.95 - self.threshold)
        return self.threshold - (s - 0.5) / 0.5 * (self.threshold - 0.05)

    def margin(self, score: float, threshold: float) -> tuple[float, float]:
        """(calibrated margin in decades of FA/h, linear margin) of ``score`` over the threshold.

        The calibrated margin says how much rarer false accepts are at this score than at the
        operating point; it is comparable across words, raw scores are not. The linear margin
        ((score - thr) / (1 - thr)) breaks ties where the curve is flat or absent.
        """
        lin = (score - threshold) / max(1.0 - threshold, 1e-6)
        if self.calibration is None:
            return lin, lin
        cal = math.log10(self.calibration.fa_at(threshold)) - math.log10(
            self.calibration.fa_at(score))
        return cal, lin


def word_cards_from_card(card: Mapping[str, Any] | None, words: Sequence[str]
                         ) -> dict[str, WordCard]:
    """Per-word cards from a model card: ``card["per_word"][word]`` (the .pwk layout), also
    ``card["words"]`` as such a mapping, or a plain ``{word: {...}}``. Missing words get
    defaults, so an uncalibrated model still runs."""
    per: Mapping[str, Any] = {}
    if card:
        if isinstance(card.get("per_word"), Mapping):
            per = card["per_word"]
        elif isinstance(card.get("words"), Mapping):
            per = card["words"]
        elif all(isinstance(v, Mapping) for v in card.values()):
            per = card
    return {w: WordCard.from_dict(w, per.get(w)) for w in words}


@dataclass(frozen=True)
class Decision:
    """One emitted event. Times are stream seconds."""

    word: str
    score: float
    start_s: float
    end_s: float
    peak_s: float
    decided_s: float
    margin: float


@dataclass(frozen=True)
class Suppressed:
    """A candidate that lost: to a longer word containing it, to a better word in the same
    utterance, or to an event already emitted for the same utterance."""

    word: str
    score: float
    start_s: float
    end_s: float
    decided_s: float
    reason: str
    winner: str | None


@dataclass
class _Candidate:
    idx: int
    cross_t: float
    peak: float
    peak_t: float
    peaked: bool = False
    spans: tuple[float, float] = (0.0, 0.0)


def _tokens(word: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", word.lower())


def text_contains(long: str, short: str) -> bool:
    """Whether the phrase ``long`` contains ``short`` as text ("samuel" in "hey samuel", "sam"
    in "samuel", "alexa" in "alexa, ask samuel"); punctuation and case do not count."""
    a, b = " ".join(_tokens(long)), " ".join(_tokens(short))
    return bool(b) and a != b and b in a


class DecisionEngine:
    """Turns score rows (one per step, with the stream time the row has seen) into events.

    State is a few numbers per word plus the last ``smooth_steps`` rows: constant memory.
    """

    def __init__(self, cards: Mapping[str, WordCard] | Sequence[WordCard], step_seconds: float,
                 *, thresholds: Mapping[str, float] | None = None,
                 sensitivity: float | Mapping[str, float] | None = None,
                 smoothing: str = "mean", smooth_steps: int = 3, refractory_s: float = 1.0,
                 max_hold_s: float = 0.6, peak_patience_steps: int = 1,
                 arm_fraction: float = 0.3, max_containment_wait_s: float = 1.2,
                 merge_gap_s: float = 0.2, containment_tol_s: float = 0.35,
                 prefix_min_s: float = 0.15, sure_score: float = DEFAULT_SURE_SCORE) -> None:
        card_list = list(cards.values()) if isinstance(cards, Mapping) else list(cards)
        if not card_list:
            raise ValueError("a decision engine needs at least one word")
        if smoothing not in ("mean", "max", "none"):
            raise ValueError(f"smoothing must be 'mean', 'max' or 'none', got {smoothing!r}")
        if smooth_steps < 1:
            raise ValueError(f"smooth_steps must be >= 1, got {smooth_steps}")
        if step_seconds <= 0:
            raise ValueError(f"step_seconds must be > 0, got {step_seconds}")
        self.cards = card_list
        self.words = [c.word for c in card_list]
        self.step_seconds = float(step_seconds)
        self.smoothing = smoothing
        self.smooth_steps = 1 if smoothing == "none" else int(smooth_steps)
        self.refractory_s = float(refractory_s)
        self.max_hold_s = float(max_hold_s)
        self.peak_patience_steps = int(peak_patience_steps)
        self.arm_fraction = float(arm_fraction)
        self.max_containment_wait_s = float(max_containment_wait_s)
        self.merge_gap_s = float(merge_gap_s)
        self.containment_tol_s = float(containment_tol_s)
        self.prefix_min_s = float(prefix_min_s)
        if not 0.0 < sure_score <= 1.0:
            raise ValueError(f"sure_score must be in (0, 1], got {sure_score}")
        self.sure_score = float(sure_score)
        self.thresholds = self._resolve_thresholds(thresholds, sensitivity)
        self._thr = np.array([self.thresholds[w] for w in self.words], np.float64)
        self._thr_vals: list[float] = []  # the values _thr was built from
        self._row_shape = (len(self.words),)
        # Rules 2-3 vectorised over words (the default) or word by word (the reference).
        self._vectorized = True
        self._dur = np.array([c.duration_s for c in card_list], np.float64)
        self._lat = np.array([c.latency_s for c in card_list], np.float64)
        # Moving mean delays a symmetric peak by (k - 1) / 2 steps; a moving max's first
        # maximum is the raw one's, so it needs no correction.
        self._smooth_delay = ((self.smooth_steps - 1) / 2 * self.step_seconds
                              if self.smoothing == "mean" else 0.0)
        self._hold = np.clip(self._lat, 2 * self.step_seconds, max(self.max_hold_s,
                                                                  2 * self.step_seconds))
        # For each word, the longer words that could contain it (:meth:`_contains`): its text
        # is in theirs, or they last at least prefix_min_s longer (a prefix by timing). Only
        # these are waited for (rule 4); a longer word that can never contain it could only
        # compete on margin, which rule 6 settles without a wait.
        n = len(card_list)
        self._containers = [
            [v for v in range(n) if self._dur[v] > self._dur[i] and (
                text_contains(self.words[v], self.words[i])
                or self._dur[v] - self._dur[i] >= self.prefix_min_s)]
            for i in range(n)]
        self.reset()

    # -- configuration -------------------------------------------------------------------
    def _resolve_thresholds(self, thresholds: Mapping[str, float] | None,
                            sensitivity: float | Mapping[str, float] | None
                            ) -> dict[str, float]:
        """Priority: explicit threshold > sensitivity > the card's default threshold."""
        out = {c.word: c.threshold for c in self.cards}
        by_word = {c.word: c for c in self.cards}
        if sensitivity is not None:
            sens = (dict(sensitivity) if isinstance(sensitivity, Mapping)
                    else dict.fromkeys(self.words, float(sensitivity)))
            self._check_known(sens, "sensitivity")
            for w, s in sens.items():
                out[w] = by_word[w].threshold_for_sensitivity(s)
                if by_word[w].calibration is None:
                    log.warning("%s has no calibration curve; sensitivity %.2f maps linearly "
                                "to threshold %.3f", w, s, out[w])
        if thresholds:
            self._check_known(thresholds, "thresholds")
            for w, t in thresholds.items():
                if not 0.0 < float(t) <= 1.0:
                    raise ValueError(f"threshold for {w!r} must be in (0, 1], got {t}")
                out[w] = float(t)
        return out

    def set_sensitivity(self, sensitivity: float | Mapping[str, float]) -> dict[str, float]:
        """Re-derive thresholds from a sensitivity (all words, or some) while streaming."""
        new = self._resolve_thresholds(None, sensitivity)
        keys = sensitivity.keys() if isinstance(sensitivity, Mapping) else self.words
        for w in keys:
            self.thresholds[w] = new[w]
        return dict(self.thresholds)

    def _check_known(self, d: Mapping[str, Any], what: str) -> None:
        unknown = set(d) - set(self.words)
        if unknown:
            raise ValueError(f"{what} for unknown words {sorted(unknown)}; "
                             f"model words are {self.words}")

    # -- streaming -----------------------------------------------------------------------
    def reset(self) -> None:
        n = len(self.words)
        self._hist = np.zeros((self.smooth_steps, n), np.float64)
        self._n_rows = 0
        self._prev = np.zeros(n)
        self._armed = np.ones(n, bool)
        self._all_armed = True  # a shortcut: every word is armed (no candidate, no plateau)
        self._last_peak = np.full(n, -1e18)
        self._active: dict[int, _Candidate] = {}
        self._last_event: tuple[float, float] | None = None
        self._t = 0.0

    def smooth(self, row: np.ndarray) -> np.ndarray:
        """Push one raw row (shape (words,); NaN counts as 0, +-inf as the largest finite
        number) into the history and return the smoothed row."""
        k = self.smooth_steps
        h = self._hist[self._n_rows % k]
        h[...] = row
        # The sum is non-finite if a value is (or if large float64 values overflow it; then
        # nan_to_num changes nothing): one cheap test instead of isfinite on every row.
        if not math.isfinite(sum(h.tolist())):
            np.nan_to_num(h, copy=False, nan=0.0)
        self._n_rows += 1
        filled = self._hist if self._n_rows >= k else self._hist[: self._n_rows]
        # The reductions ndarray.max / ndarray.mean run, without their Python wrappers.
        if self.smoothing == "max":
            return np.maximum.reduce(filled, axis=0)
        s = np.add.reduce(filled, axis=0)
        np.true_divide(s, filled.shape[0], out=s)
        return s

    def push(self, row: np.ndarray, t: float) -> tuple[list[Decision], list[Suppressed]]:
        """Feed one score row whose audio ends at stream time ``t``."""
        # Read each step so that edits of ``thresholds`` (a plain dict) take effect at once.
        th = self.thresholds
        vals = [th[w] for w in self.words]
        if vals != self._thr_vals:
            self._thr = np.array(vals, np.float64)
            self._thr_vals = vals
        if type(row) is not np.ndarray or row.shape != self._row_shape \
                or row.dtype not in _FLOAT_ROWS:
            row = np.asarray(row, np.float64).reshape(-1)
            if row.size != len(self.words):
                raise ValueError(f"score row has {row.size} values for {len(self.words)} words")
        self._t = float(t)
        s = self.smooth(row)
        if self._vectorized:
            self._update(s, t)
        else:
            self._update_per_word(s, t)
        self._prev = s
        if not self._active:
            return [], []
        return self._decide_ready(force=False)

    def _update(self, s: np.ndarray, t: float) -> None:
        """Rules 2 and 3 for one smoothed row, vectorised over words: Python work only for
        words with an open candidate or crossing their threshold now; the same state changes
        as :meth:`_update_per_word`."""
        below = s < self._thr
        active = self._active
        if not active and False not in below.tolist():
            # The common case (no word near its threshold): every word is (re)armed.
            if not self._all_armed:
                self._armed.fill(True)
                self._all_armed = True
            return
        self._all_armed = False
        armed = self._armed
        if active:
            # A word with an open candidate stays disarmed (it re-arms once idle and below).
            below = below.copy()
            for i in active:
                below[i] = False
        np.logical_or(armed, below, out=armed)
        # Idle, armed and not below: a new candidate (rule 2). Words with a candidate are
        # disarmed, so this never picks them.
        fire = np.flatnonzero(armed > below).tolist()
        patience = self.peak_patience_steps * self.step_seconds - 1e-9
        # Ascending word order, as the per-word loop: candidates enter _active in that order.
        for i in sorted({*active, *fire}) if active else fire:
            c = active.get(i)
            if c is None:
                armed[i] = False
                if t - self._last_peak[i] >= self.refractory_s:
                    # A sure score is its peak already (rule 3).
                    active[i] = _Candidate(i, t, float(s[i]), t,
                                           peaked=bool(s[i] >= self.sure_score))
                continue
            if s[i] > c.peak:
                c.peak, c.peak_t = float(s[i]), t
            if t - c.peak_t >= patience or s[i] < self._thr[i] or t - c.cross_t >= self._hold[i] \
                    or c.peak >= self.sure_score:
                c.peaked = True

    def _update_per_word(self, s: np.ndarray, t: float) -> None:
        """Rules 2 and 3 for one smoothed row, word by word: the reference for
        :meth:`_update` (tests/test_decisions.py checks they agree)."""
        self._all_armed = False
        for i in range(len(self.words)):
            c = self._active.get(i)
            if c is None:
                if s[i] < self._thr[i]:
                    self._armed[i] = True
                elif self._armed[i]:
                    self._armed[i] = False
                    if t - self._last_peak[i] >= self.refractory_s:
                        self._active[i] = _Candidate(i, t, float(s[i]), t,
                                                     peaked=bool(s[i] >= self.sure_score))
                continue
            if s[i] > c.peak:
                c.peak, c.peak_t = float(s[i]), t
            patience = self.peak_patience_steps * self.step_seconds - 1e-9
            if t - c.peak_t >= patience or s[i] < self._thr[i] or t - c.cross_t >= self._hold[i] \
                    or c.peak >= self.sure_score:
                c.peaked = True

    def flush(self) -> tuple[list[Decision], list[Suppressed]]:
        """Decide every open candidate now (end of a file or stream)."""
        for c in self._active.values():
            c.peaked = True
        return self._decide_ready(force=True)

    @property
    def pending(self) -> bool:
        return bool(self._active)

    # -- internals -----------------------------------------------------------------------
    def _span(self, c: _Candidate) -> tuple[float, float]:
        end = float(c.peak_t - self._smooth_delay - self._lat[c.idx])
        return max(0.0, end - float(self._dur[c.idx])), max(0.0, end)

    def _waiting_for_longer(self, c: _Candidate) -> bool:
        """Whether a longer word that is live could still complete and contain ``c``."""
        i = c.idx
        for v in self._containers[i]:
            if v in self._active:
                continue
            if self._prev[v] < self.arm_fraction * self._thr[v]:
                continue
            wait = (self._dur[v] - self._dur[i]) + max(0.0, self._lat[v] - self._lat[i])
            if self._t < c.peak_t + min(wait, self.max_containment_wait_s) - 1e-9:
                return True
        return False

    def _hard_deadline(self, c: _Candidate) -> float:
        # Bounds the wait whatever the scores do, so an event is never held indefinitely.
        return (c.cross_t + self._hold[c.idx] + self.max_containment_wait_s
                + (self.peak_patience_steps + 1) * self.step_seconds)

    def _ready(self, c: _Candidate) -> bool:
        if self._t >= self._hard_deadline(c):
            return True
        return c.peaked and not self._waiting_for_longer(c)

    def _overlap(self, a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] <= b[1] + self.merge_gap_s and b[0] <= a[1] + self.merge_gap_s

    def _contains(self, big: _Candidate, small: _Candidate) -> bool:
        """Whether ``big`` (a longer word) explains ``small``: its estimated span covers the
        small one's, and either its text contains the small word's text, or the small word
        peaked clearly earlier, as a prefix does. Peaking at the same time with no text
        relation is what two confusable words do, so that is left to the margin."""
        i, j = big.idx, small.idx
        if self._dur[i] <= self._dur[j]:
            return False
        (bs, be), (ss, se) = big.spans, small.spans
        tol = self.containment_tol_s
        if not (bs <= ss + tol and be >= se - tol):
            return False
        if text_contains(self.words[i], self.words[j]):
            return True
        diff = self._dur[i] - self._dur[j]
        return diff >= self.prefix_min_s and big.peak_t - small.peak_t >= 0.5 * diff

    def _decide_ready(self, force: bool) -> tuple[list[Decision], list[Suppressed]]:
        if not self._active:
            return [], []
        cands = sorted(self._active.values(), key=lambda c: (c.cross_t, c.idx))
        for c in cands:
            c.spans = self._span(c)
        # Utterances: connected groups of overlapping spans (few candidates: quadratic is fine).
        groups: list[list[_Candidate]] = []
        for c in cands:
            hit = [g for g in groups if any(self._overlap(c.spans, o.spans) for o in g)]
            merged = [c] + [o for g in hit for o in g]
            groups = [g for g in groups if not any(g is h for h in hit)] + [merged]
        decisions: list[Decision] = []
        suppressed: list[Suppressed] = []
        for g in sorted(groups, key=lambda g: min(c.cross_t for c in g)):
            if not force and not all(self._ready(c) for c in g):
                continue
            d, sup = self._arbitrate(g)
            decisions.extend(d)
            suppressed.extend(sup)
            for c in g:
                del self._active[c.idx]
        return decisions, suppressed

    def _arbitrate(self, group: list[_Candidate]) -> tuple[list[Decision], list[Suppressed]]:
        t = self._t
        calibrated = all(self.cards[c.idx].calibration is not None for c in group)

        def margin(c: _Candidate) -> tuple[float, float]:
            cal, lin = self.cards[c.idx].margin(c.peak, float(self._thr[c.idx]))
            return (cal, lin) if calibrated else (lin, lin)

        contained_in = {id(c): next((b for b in group if b is not c and self._contains(b, c)),
                                    None) for c in group}
        survivors = [c for c in group if contained_in[id(c)] is None] or group
        win = max(survivors, key=lambda c: (*margin(c), -c.cross_t))
        win_word = self.words[win.idx]
        sup: list[Suppressed] = []

        def lose(c: _Candidate, reason: str, winner: str | None) -> None:
            s = Suppressed(self.words[c.idx], c.peak, c.spans[0], c.spans[1], t, reason, winner)
            log.info("suppressed %s (score %.3f, %.2f-%.2f s): %s", s.word, s.score,
                     s.start_s, s.end_s, reason)
            sup.append(s)

        if self._last_event is not None and self._overlap(win.spans, self._last_event):
            for c in group:
                lose(c, "same utterance as an event already emitted", None)
            return [], sup
        for c in group:
            if c is win:
                continue
            big = contained_in[id(c)]
            if big is not None:
                lose(c, f"contained in longer word {self.words[big.idx]!r}", win_word)
            else:
                m_c, m_w = margin(c)[0], margin(win)[0]
                lose(c, f"lost to {win_word!r} in the same utterance "
                        f"(margin {m_c:.3f} < {m_w:.3f})", win_word)
        self._last_peak[win.idx] = win.peak_t
        self._last_event = win.spans
        dec = Decision(win_word, win.peak, win.spans[0], win.spans[1], win.peak_t, t,
                       margin(win)[0])
        return [dec], sup


def parse_sensitivity(values: Iterable[str]) -> dict[str, float]:
    """Parse ``word=0.7`` strings (CLI / config) into a sensitivity mapping."""
    out: dict[str, float] = {}
    for v in values:
        word, sep, num = v.rpartition("=")
        if not sep or not word:
            raise ValueError(f"expected WORD=SENSITIVITY, got {v!r}")
        out[word.strip()] = float(num)
    return out
