"""Decision logic on scripted score rows: containment, arbitration, smoothing, refractory,
hold, sensitivity mapping. Rows are synthetic, so every expectation is exact."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from polywake.decisions import (
    Calibration,
    DecisionEngine,
    WordCard,
    fa_to_sensitivity,
    parse_sensitivity,
    sensitivity_to_fa,
    text_contains,
    word_cards_from_card,
)

STEP = 0.08


def bump(n: int, peak_step: int, height: float, width: float = 2.5) -> np.ndarray:
    """A score bump: Gaussian in steps around ``peak_step``."""
    k = np.arange(n)
    return height * np.exp(-0.5 * ((k - peak_step) / width) ** 2)


def run(engine: DecisionEngine, rows: np.ndarray, flush: bool = True):
    decisions, suppressed = [], []
    for i, row in enumerate(rows):
        d, s = engine.push(row, (i + 1) * STEP)
        decisions += d
        suppressed += s
    if flush:
        d, s = engine.flush()
        decisions += d
        suppressed += s
    return decisions, suppressed


def engine(cards: list[WordCard], **kw) -> DecisionEngine:
    kw.setdefault("smoothing", "none")
    return DecisionEngine(cards, STEP, **kw)


HEY_SAM = WordCard("hey sam", threshold=0.5, duration_s=0.9, latency_s=0.24)
HEY_SAMUEL = WordCard("hey samuel", threshold=0.5, duration_s=1.2, latency_s=0.24)


# -- containment -------------------------------------------------------------------------
def test_prefix_then_longer_word_fires_only_the_longer() -> None:
    n = 60
    rows = np.zeros((n, 2))
    rows[:, 0] = bump(n, 20, 0.9)  # "hey sam" peaks when "sam" ends
    rows[:, 1] = bump(n, 24, 0.95, width=3.5)  # "hey samuel" rising meanwhile, peaks 0.32 s later
    decisions, suppressed = run(engine([HEY_SAM, HEY_SAMUEL]), rows)
    assert [d.word for d in decisions] == ["hey samuel"]
    assert [s.word for s in suppressed] == ["hey sam"]
    assert "contained in longer word 'hey samuel'" in suppressed[0].reason
    assert suppressed[0].winner == "hey samuel"


def test_prefix_containment_by_timing_without_text_relation() -> None:
    # Unrelated names: containment must come from durations and peak order alone.
    short = WordCard("alpha", duration_s=0.5, latency_s=0.24)
    long = WordCard("zulu", duration_s=1.0, latency_s=0.24)
    n = 60
    rows = np.zeros((n, 2))
    rows[:, 0] = bump(n, 20, 0.95)
    rows[:, 1] = bump(n, 26, 0.8, width=3.5)
    decisions, suppressed = run(engine([short, long]), rows)
    assert [d.word for d in decisions] == ["zulu"]
    assert "contained" in suppressed[0].reason


@pytest.mark.parametrize("longer_score", [0.0, 0.3])
def test_prefix_word_alone_fires_with_bounded_extra_latency(longer_score: float) -> None:
    n = 60
    rows = np.zeros((n, 2))
    rows[:, 0] = bump(n, 20, 0.9)
    rows[:, 1] = bump(n, 21, longer_score, width=3.0)  # "hey samuel" stirs but never completes
    decisions, suppressed = run(engine([HEY_SAM, HEY_SAMUEL]), rows, flush=False)
    assert [d.word for d in decisions] == ["hey sam"] and not suppressed
    d = decisions[0]
    assert d.peak_s == pytest.approx(21 * STEP)
    extra = d.decided_s - d.peak_s
    if longer_score == 0.0:
        # Nothing longer is live: decided as soon as the peak is confirmed (1 step).
        assert extra == pytest.approx(STEP)
    else:
        # Waits for "hey samuel" the difference of durations, rounded up to whole steps.
        assert STEP < extra <= (1.2 - 0.9) + STEP + 1e-9


def test_longer_word_that_gave_up_stops_the_wait() -> None:
    n = 60
    rows = np.zeros((n, 2))
    rows[:, 0] = bump(n, 20, 0.9)
    rows[:, 1] = bump(n, 19, 0.3, width=1.0)  # below the arm level again by step 22
    decisions, _ = run(engine([HEY_SAM, HEY_SAMUEL]), rows, flush=False)
    assert decisions[0].word == "hey sam"
    assert decisions[0].decided_s - decisions[0].peak_s <= 2 * STEP + 1e-9


def test_longer_word_that_cannot_contain_it_is_not_waited_for() -> None:
    # "computer" is longer than "alexa" by less than prefix_min_s and shares no text: it can
    # never contain "alexa" (rule 5), so its stirring does not delay "alexa".
    alexa = WordCard("alexa", duration_s=0.49, latency_s=0.32)
    computer = WordCard("computer", duration_s=0.62, latency_s=0.2)
    zulu = WordCard("zulu", duration_s=0.49 + 0.2, latency_s=0.32)  # long enough: waited for
    n = 60
    for other, waits in ((computer, False), (zulu, True)):
        rows = np.zeros((n, 2))
        rows[:, 0] = bump(n, 20, 0.9)
        rows[:, 1] = bump(n, 21, 0.4, width=3.0)  # live, never a candidate
        decisions, _ = run(engine([alexa, other]), rows, flush=False)
        assert [d.word for d in decisions] == ["alexa"]
        extra = decisions[0].decided_s - decisions[0].peak_s
        assert extra > STEP if waits else extra == pytest.approx(STEP)


def test_a_score_of_one_is_its_peak_at_once() -> None:
    rows = np.zeros((40, 2))
    rows[10:14, 0] = [0.7, 1.0, 1.0, 0.6]  # reaches 1 at step 11: decided there, no wait
    rows[30:33, 1] = [1.0, 1.0, 0.2]  # crosses at 1 directly
    decisions, _ = run(engine([WordCard("echo"), WordCard("amazon")]), rows, flush=False)
    assert [d.word for d in decisions] == ["echo", "amazon"]
    for d, step in zip(decisions, (11, 30), strict=True):
        assert d.peak_s == pytest.approx((step + 1) * STEP) and d.score == 1.0
        assert d.decided_s == d.peak_s


@pytest.mark.parametrize("sure", [0.99, 0.9995])
def test_a_sure_score_is_its_peak_at_once_and_a_lower_one_waits(sure: float) -> None:
    """Tempered heads never reach 1.0; ``sure_score`` is where waiting stops paying."""
    rows = np.zeros((40, 1))
    rows[10:14, 0] = [0.7, 0.995, 0.999, 0.6]
    decisions, _ = run(engine([WordCard("echo")], sure_score=sure), rows, flush=False)
    (d,) = decisions
    if sure <= 0.995:  # sure at step 11: decided there, although step 12 is higher
        assert d.decided_s == pytest.approx(12 * STEP) and d.score == 0.995
    else:  # not sure: it waits, finds the real peak at step 12, decides a step later
        assert d.peak_s == pytest.approx(13 * STEP) and d.score == 0.999
        assert d.decided_s == pytest.approx(14 * STEP)


def test_sure_score_must_be_a_probability() -> None:
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="sure_score"):
            engine([WordCard("echo")], sure_score=bad)


def test_suffix_word_loses_to_the_phrase_that_contains_it() -> None:
    samuel = WordCard("samuel", duration_s=0.55, latency_s=0.24)
    n = 60
    rows = np.zeros((n, 2))
    rows[:, 0] = bump(n, 25, 0.95)  # "samuel" fires on "hey samuel", higher raw score
    rows[:, 1] = bump(n, 25, 0.8)
    decisions, suppressed = run(engine([samuel, HEY_SAMUEL]), rows)
    assert [d.word for d in decisions] == ["hey samuel"]
    assert suppressed[0].word == "samuel"


def test_words_added_later_bring_their_own_duration() -> None:
    card = {"per_word": {
        "alexa": {"threshold": 0.5, "duration_s": 0.6, "latency_s": 0.2},
        "alexa, ask samuel": {"threshold": 0.5, "duration_s": 1.6, "latency_s": 0.2},
    }}
    cards = word_cards_from_card(card, ["alexa", "alexa, ask samuel", "echo"])
    assert cards["echo"] == WordCard("echo")  # absent from the card: defaults
    n = 80
    rows = np.zeros((n, 3))
    rows[:, 0] = bump(n, 20, 0.9)
    rows[:, 1] = np.where(np.arange(n) >= 16, np.minimum(0.95, 0.05 * (np.arange(n) - 14)), 0)
    rows[33:, 1] = bump(n, 33, 0.95, width=1.5)[33:]  # completes 1 s after "alexa"
    decisions, suppressed = run(engine(list(cards.values())), rows)
    assert [d.word for d in decisions] == ["alexa, ask samuel"]
    assert [s.word for s in suppressed] == ["alexa"]


# -- arbitration ---------------------------------------------------------------------------
def test_two_unrelated_words_in_one_utterance_give_one_event_by_calibrated_margin(
        caplog: pytest.LogCaptureFixture) -> None:
    # "computer" scores higher, but its curve says 0.8 is still a common score on speech;
    # "amazon" at 0.7 is far rarer by its own curve, so it is the better-supported word.
    computer = WordCard("computer", threshold=0.5, duration_s=0.6, calibration=Calibration(
        (0.3, 0.5, 0.8, 0.95), (20.0, 5.0, 2.0, 0.1)))
    amazon = WordCard("amazon", threshold=0.5, duration_s=0.65, calibration=Calibration(
        (0.3, 0.5, 0.7, 0.95), (10.0, 1.0, 0.01, 0.001)))
    n = 50
    rows = np.zeros((n, 2))
    rows[:, 0] = bump(n, 20, 0.8)
    rows[:, 1] = bump(n, 21, 0.7)
    with caplog.at_level(logging.INFO, logger="polywake.decisions"):
        decisions, suppressed = run(engine([computer, amazon]), rows)
    assert [d.word for d in decisions] == ["amazon"]
    assert [s.word for s in suppressed] == ["computer"]
    assert suppressed[0].winner == "amazon" and "lost to 'amazon'" in suppressed[0].reason
    assert any("suppressed computer" in r.getMessage() for r in caplog.records)
    assert decisions[0].margin == pytest.approx(math.log10(1.0 / 0.01))


def test_uncalibrated_arbitration_uses_the_linear_margin() -> None:
    a, b = WordCard("left", threshold=0.5), WordCard("right", threshold=0.8)
    n = 40
    rows = np.zeros((n, 2))
    rows[:, 0] = bump(n, 15, 0.7)  # margin (0.7-0.5)/0.5 = 0.4
    rows[:, 1] = bump(n, 15, 0.95)  # margin (0.95-0.8)/0.2 = 0.75
    decisions, _ = run(engine([a, b]), rows)
    assert [d.word for d in decisions] == ["right"]


def test_words_in_separate_utterances_both_fire() -> None:
    n = 80
    rows = np.zeros((n, 2))
    rows[:, 0] = bump(n, 15, 0.9)
    rows[:, 1] = bump(n, 45, 0.9)  # 2.4 s later
    decisions, suppressed = run(engine([WordCard("alexa"), WordCard("computer")]), rows)
    assert [d.word for d in decisions] == ["alexa", "computer"] and not suppressed


def test_late_candidate_of_an_already_decided_utterance_is_suppressed() -> None:
    n = 60
    rows = np.zeros((n, 2))
    rows[:, 0] = bump(n, 15, 0.9, width=1.0)
    rows[:, 1] = bump(n, 21, 0.9, width=1.0)  # same span, but decided only after "alexa"
    e = engine([WordCard("alexa"), WordCard("alexis")], max_hold_s=0.16)
    decisions, suppressed = run(e, rows)
    assert [d.word for d in decisions] == ["alexa"]
    assert suppressed[0].word == "alexis" and "already emitted" in suppressed[0].reason


# -- smoothing, refractory, hold ------------------------------------------------------------
def test_smoothing_mean_rejects_a_one_step_spike_and_max_keeps_it() -> None:
    rows = np.zeros((30, 1))
    rows[10, 0] = 0.9
    cards = [WordCard("echo")]
    assert run(DecisionEngine(cards, STEP, smoothing="mean", smooth_steps=3), rows)[0] == []
    d_none = run(DecisionEngine(cards, STEP, smoothing="none"), rows)[0]
    d_max = run(DecisionEngine(cards, STEP, smoothing="max", smooth_steps=3), rows)[0]
    assert len(d_none) == len(d_max) == 1
    assert d_none[0].peak_s == d_max[0].peak_s == pytest.approx(11 * STEP)


def test_mean_smoothing_delay_is_removed_from_timing() -> None:
    rows = np.zeros((40, 1))
    rows[:, 0] = bump(40, 20, 0.9)
    card = WordCard("echo", duration_s=0.4, latency_s=0.2)
    d = run(DecisionEngine([card], STEP, smoothing="mean", smooth_steps=3), rows)[0][0]
    # The smoothed peak comes one step late; the span is computed from the raw peak time.
    assert d.peak_s == pytest.approx(22 * STEP)
    assert d.end_s == pytest.approx(21 * STEP - 0.2)
    assert d.start_s == pytest.approx(21 * STEP - 0.2 - 0.4)


def test_timing_from_peak_latency_and_duration() -> None:
    rows = np.zeros((40, 1))
    rows[:, 0] = bump(40, 20, 0.9)
    card = WordCard("hey samuel", duration_s=1.2, latency_s=0.3)
    d = run(engine([card]), rows)[0][0]
    assert d.end_s == pytest.approx(21 * STEP - 0.3)
    assert d.start_s == pytest.approx(21 * STEP - 0.3 - 1.2)
    assert d.score == pytest.approx(0.9)


@pytest.mark.parametrize(("refractory", "expected"), [(1.0, 1), (0.3, 2)])
def test_refractory(refractory: float, expected: int) -> None:
    n = 40
    rows = np.zeros((n, 1))
    rows[:, 0] = np.maximum(bump(n, 10, 0.9, 1.0), bump(n, 18, 0.9, 1.0))  # 0.64 s apart
    e = engine([WordCard("echo", duration_s=0.3)], refractory_s=refractory, merge_gap_s=0.0)
    assert len(run(e, rows)[0]) == expected


def test_plateau_fires_once_within_the_hold_window() -> None:
    rows = np.zeros((100, 1))
    rows[10:80, 0] = 0.9  # 5.6 s above threshold
    card = WordCard("echo", latency_s=0.3)
    decisions, _ = run(engine([card]), rows)
    assert len(decisions) == 1
    # Crossed at step 10 (t = 0.88 s); the hold is the card's latency (0.3 s).
    assert decisions[0].decided_s - 11 * STEP <= 0.3 + STEP + 1e-9


def test_rearms_only_after_falling_below_threshold() -> None:
    rows = np.full((60, 1), 0.9)
    rows[30, 0] = 0.1
    decisions, _ = run(engine([WordCard("echo")], refractory_s=0.5, merge_gap_s=0.0), rows)
    assert len(decisions) == 2


def test_flush_decides_pending_candidates() -> None:
    rows = np.zeros((12, 1))
    rows[10:, 0] = [0.6, 0.7]  # still rising when the input ends
    e = engine([WordCard("echo")])
    decisions, _ = run(e, rows, flush=False)
    assert decisions == [] and e.pending
    assert [d.word for d in e.flush()[0]] == ["echo"]


@pytest.mark.parametrize("seed", range(8))
def test_vectorised_update_equals_the_per_word_reference(seed: int) -> None:
    """The default path (rules 2-3 vectorised, per-word work only for words near a decision)
    against the word-by-word loop, on random score streams with many crossings, plateaus,
    dips, NaN and inf rows and threshold edits mid-stream: the same events, suppressions and
    state after every row."""
    rng = np.random.default_rng(seed)
    names = ["hey sam", "hey samuel", "samuel", "alexa", "alexa, ask samuel", "echo", "amazon"]
    n = int(rng.integers(1, len(names) + 1))
    cards = [WordCard(w, threshold=float(rng.uniform(0.3, 0.8)),
                      duration_s=float(rng.uniform(0.3, 1.5)),
                      latency_s=float(rng.uniform(0.0, 0.5))) for w in names[:n]]
    kw = {"smoothing": str(rng.choice(["mean", "max", "none"])),
          "smooth_steps": int(rng.integers(1, 5)), "refractory_s": float(rng.uniform(0, 1.5)),
          "peak_patience_steps": int(rng.integers(1, 3))}
    fast, ref = DecisionEngine(cards, STEP, **kw), DecisionEngine(cards, STEP, **kw)
    ref._vectorized = False
    steps = 3000
    rows = np.zeros((steps, n))
    for w in range(n):  # bumps of random width and height, some overlapping
        for peak in rng.integers(0, steps, steps // 12):
            rows[:, w] = np.maximum(rows[:, w], bump(steps, int(peak), rng.uniform(0.1, 1.0),
                                                      rng.uniform(0.5, 4.0)))
    rows += rng.uniform(0, 0.15, rows.shape) * (rng.random(rows.shape) < 0.3)
    rows[rng.random(rows.shape) < 0.002] = np.nan
    rows[rng.random(rows.shape) < 0.001] = np.inf
    rows[rng.random(rows.shape) < 0.001] = -np.inf
    rows = rows.astype(np.float32) if seed % 2 else rows
    events = 0
    for i, row in enumerate(rows):
        if rng.random() < 0.01:  # edit a threshold while streaming (the Detector allows it)
            w = names[int(rng.integers(n))]
            fast.thresholds[w] = ref.thresholds[w] = float(rng.uniform(0.2, 0.9))
        t = (i + 1) * STEP
        got, want = fast.push(row, t), ref.push(row, t)
        assert got == want, f"step {i}"
        events += len(got[0])
        assert np.array_equal(fast._armed, ref._armed) and np.array_equal(fast._prev, ref._prev)
        assert fast._active == ref._active and list(fast._active) == list(ref._active)
    assert fast.flush() == ref.flush()
    assert events > 20  # the streams did exercise the decisions


def test_bad_rows_and_options_are_rejected() -> None:
    e = engine([WordCard("echo")])
    with pytest.raises(ValueError, match="1 words"):
        e.push(np.zeros(2), 0.08)
    with pytest.raises(ValueError, match="smoothing"):
        DecisionEngine([WordCard("echo")], STEP, smoothing="median")
    with pytest.raises(ValueError, match="unknown words"):
        DecisionEngine([WordCard("echo")], STEP, thresholds={"alexa": 0.5})


# -- sensitivity ---------------------------------------------------------------------------
CAL = Calibration((0.1, 0.3, 0.5, 0.7, 0.9, 0.99), (50.0, 8.0, 1.0, 0.2, 0.02, 0.0))


def test_sensitivity_to_fa_scale() -> None:
    assert sensitivity_to_fa(0.0) == pytest.approx(0.01)
    assert sensitivity_to_fa(0.5) == pytest.approx(10 ** -0.5)  # 0.316 FA/h
    assert sensitivity_to_fa(1.0) == pytest.approx(10.0)
    for s in (0.0, 0.2, 0.5, 0.9, 1.0):
        assert fa_to_sensitivity(sensitivity_to_fa(s)) == pytest.approx(s)
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError):
            sensitivity_to_fa(bad)


def test_sensitivity_mapping_is_monotonic_and_matches_the_calibration() -> None:
    card = WordCard("echo", calibration=CAL)
    s = np.linspace(0, 1, 101)
    thr = np.array([card.threshold_for_sensitivity(x) for x in s])
    assert np.all(np.diff(thr) <= 1e-12)  # more sensitive -> lower threshold
    assert thr[0] > thr[-1]
    for x in (0.2, 0.5, 0.8):
        fa = sensitivity_to_fa(x)
        assert CAL.fa_at(card.threshold_for_sensitivity(x)) == pytest.approx(fa, rel=1e-9)
    # Log-linear interpolation between measured points: halfway in log10 FA between 0.5 and 0.7.
    assert CAL.threshold_for(math.sqrt(1.0 * 0.2)) == pytest.approx(0.6)


def test_calibration_edges() -> None:
    assert CAL.threshold_for(1000.0) == pytest.approx(0.1)  # any threshold meets it
    assert CAL.threshold_for(1e-9) == pytest.approx(0.99)  # unreachable: the highest
    flat = Calibration((0.2, 0.4, 0.6, 0.8), (5.0, 1.0, 1.0, 0.5))
    assert flat.threshold_for(1.0) == pytest.approx(0.4)  # lowest threshold on the flat part
    noisy = Calibration((0.2, 0.4, 0.6), (5.0, 1.0, 2.0))  # made non-increasing
    assert noisy.fa_at(0.6) == pytest.approx(1.0)
    for bad in [((0.5,), (1.0,)), ((0.5, 0.4), (1.0, 0.5)), ((0.1, 0.2), (1.0, -1.0)),
                ((0.1, 0.2), (1.0,))]:
        with pytest.raises(ValueError):
            Calibration(*bad)


def test_a_bad_calibration_in_the_card_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    card = WordCard.from_dict("echo", {"threshold": 0.6, "calibration": {
        "thresholds": [0.5, 0.5], "fa_per_hour": [1.0, 0.5]}})
    assert card.calibration is None and card.threshold == 0.6
    assert "ignoring" in caplog.text


def test_engine_thresholds_priority() -> None:
    cards = [WordCard("echo", threshold=0.6, calibration=CAL), WordCard("alexa", threshold=0.7)]
    e = DecisionEngine(cards, STEP)
    assert e.thresholds == {"echo": 0.6, "alexa": 0.7}
    e = DecisionEngine(cards, STEP, sensitivity={"echo": 0.5})
    assert e.thresholds["echo"] == pytest.approx(CAL.threshold_for(10 ** -0.5))
    assert e.thresholds["alexa"] == 0.7
    e = DecisionEngine(cards, STEP, sensitivity=0.5, thresholds={"echo": 0.42})
    assert e.thresholds["echo"] == 0.42
    # Uncalibrated: linear map around the card threshold.
    assert e.thresholds["alexa"] == pytest.approx(0.7)
    assert WordCard("alexa", threshold=0.7).threshold_for_sensitivity(0.0) == pytest.approx(0.95)
    assert WordCard("alexa", threshold=0.7).threshold_for_sensitivity(1.0) == pytest.approx(0.05)


def test_helpers() -> None:
    assert text_contains("hey samuel", "samuel") and text_contains("samuel", "sam")
    assert text_contains("Alexa, ask Samuel", "alexa")
    assert not text_contains("alexa", "alexa") and not text_contains("echo", "amazon")
    assert parse_sensitivity(["hey samuel=0.7", "echo=0.2"]) == {"hey samuel": 0.7, "echo": 0.2}
    with pytest.raises(ValueError):
        parse_sensitivity(["echo"])
    with pytest.raises(ValueError):
        WordCard("x", threshold=0.0)
