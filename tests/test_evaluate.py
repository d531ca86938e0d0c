"""Metric code of polywake.evaluate on tiny score arrays whose answers are computed by hand."""

from __future__ import annotations

import json
import math
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from polywake import cli
from polywake.audio import write_audio
from polywake.evaluate import (
    EvalError,
    ScoreStream,
    _running_max_before,
    calibration_table,
    confusion,
    count_events,
    det_curve,
    frr_at_fa,
    list_audio,
    plot_det,
    report_from_streams,
    score_files,
    smooth_scores,
    threshold_for_fa,
)
from polywake.scoring import ConstantScorer

# Step 0.1 s and refractory 0.5 s: gaps of <= 4 steps merge (4 * 0.1 < 0.5), 5 steps do not.
STEP, R = 0.1, 0.5


def F(x: float) -> float:
    return float(np.float32(x))


def one_hour(scores: list[float]) -> ScoreStream:
    return ScoreStream("neg", np.array(scores, np.float32), STEP, duration_s=3600.0)


# One hour, chosen so raising the threshold from 0.4 to 0.8 splits one event into two:
# above 0.4: steps 0, 3, 6 (gaps 3, 3: one event); above 0.8: steps 0, 6 (gap 6: two events).
SPLIT = [0.8, 0, 0, 0.4, 0, 0, 0.8, 0, 0, 0]
POS = [0.3, 0.5, 0.8, 0.9]


def test_refractory_merges_runs_and_near_steps() -> None:
    # steps 0,1 (run) + 4 (gap 3: merges) | 9 (gap 5: new) + 12 (gap 3: merges)
    s = np.zeros(20, np.float32)
    s[[0, 1, 4, 9, 12]] = [0.9, 0.9, 0.6, 0.9, 0.7]
    half_hour = ScoreStream("a", s, STEP, duration_s=1800.0)
    c = det_curve([0.5], [half_hour], R)
    # Scores are float32: thresholds equal to a score are given as float32 too (the Detector
    # compares the same way, so float32(0.9) >= 0.9 is False there as well).
    assert c.at(F(0.9)) == (1.0, 4.0)  # {0,1} {9}: 2 events in 0.5 h; the 0.5 clip missed
    assert c.at(F(0.7))[1] == 4.0  # {0,1} {9,12}
    assert c.at(F(0.6)) == (1.0, 4.0)  # {0,1,4} {9,12}
    assert c.at(0.91)[1] == 0.0
    assert c.at(0.0)[1] == 2.0  # every step above: one event for the whole file
    # Refractory 0: every above-threshold step is its own event.
    assert det_curve([0.5], [half_hour], 0.0).at(F(0.9))[1] == 6.0
    # A gap of exactly the refractory period does not merge (matches Detector's ">=").
    assert count_events(s, F(0.6), STEP, 0.5) == 2
    assert count_events(s, F(0.6), STEP, 0.51) == 1  # 5 steps = 0.5 s < 0.51: 4 and 9 merge


def test_events_do_not_span_files() -> None:
    a = ScoreStream("a", np.array([0, 0, 0.9], np.float32), STEP, duration_s=1800.0)
    b = ScoreStream("b", np.array([0.9, 0, 0], np.float32), STEP, duration_s=1800.0)
    assert det_curve([], [a, b], R).at(0.5)[1] == 2.0


def test_det_curve_by_hand_with_ties_and_split_events() -> None:
    c = det_curve(POS, [one_hour(SPLIT)], R)
    # Values at thresholds[i] hold on (thresholds[i-1], thresholds[i]]; equal runs are merged.
    top = c.thresholds[-1]
    assert np.float32(top) > np.float32(0.9)  # the extra top threshold is above every score
    np.testing.assert_allclose(c.thresholds[:-1], [0.3, 0.4, 0.5, 0.8, 0.9], rtol=1e-6)
    np.testing.assert_allclose(c.frr, [0, 0.25, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(c.fa_per_hour, [1, 1, 2, 2, 0, 0])
    np.testing.assert_allclose(c.fa_per_hour_upper, [2, 2, 2, 2, 0, 0])
    # Ties: a positive whose max equals the threshold is detected.
    assert c.at(0.5)[0] == 0.25 and c.at(np.nextafter(0.5, 1))[0] == 0.5
    assert c.at(F(0.8)) == (0.5, 2.0) and c.at(F(0.9)) == (0.75, 0.0)


def test_frr_at_fa_edges() -> None:
    c = det_curve(POS, [one_hour(SPLIT)], R)
    # Target 1 FA/h: at 0.3 FA/h is 1, but at 0.5 it is 2, so 0.3 is not admissible; the
    # envelope makes 0.9 the first threshold whose every higher threshold meets the target.
    frr, thr = frr_at_fa(c, 1.0)
    assert frr == 0.75 and thr == pytest.approx(0.9)
    # FA/h exactly at the target meets it.
    frr, thr = frr_at_fa(c, 2.0)
    assert frr == 0.0 and thr == pytest.approx(0.3)
    assert frr_at_fa(c, 0.0)[0] == 0.75
    # Nothing below the top threshold meets a target: FRR 1 above every score.
    c2 = det_curve(POS, [one_hour([0.95])], R)
    frr, thr = frr_at_fa(c2, 0.5)
    assert frr == 1.0 and np.float32(thr) > np.float32(0.95)
    with pytest.raises(EvalError):
        frr_at_fa(c, -1)


def test_threshold_for_fa_takes_the_middle_of_the_safe_range() -> None:
    c = det_curve(POS, [one_hour(SPLIT)], R)
    # Admissible from just above 0.8 up to the next positive, 0.9: middle 0.85.
    assert threshold_for_fa(c, 1.0) == pytest.approx(0.85)
    assert c.at(threshold_for_fa(c, 1.0)) == (0.75, 0.0)
    # Everything meets 2 FA/h; the same-FRR range is [lowest score 0, first positive 0.3].
    assert threshold_for_fa(c, 2.0) == pytest.approx(0.15)
    table = calibration_table(c, [1.0, 2.0])
    assert table["thresholds"] == pytest.approx([0.85, 0.15])
    assert table["frr"] == [0.75, 0.0] and table["hours"] == 1.0


def test_threshold_for_fa_never_exceeds_one_when_false_accepts_saturate() -> None:
    from polywake.decisions import WordCard

    # A false accept at score 1.0 (float32 saturation): no threshold meets 0.5 FA/h.
    c = det_curve(POS, [one_hour([0.2, 1.0])], R)
    thr = threshold_for_fa(c, 0.5)
    assert thr == 1.0
    assert calibration_table(c, [0.5])["thresholds"] == [1.0]
    WordCard.from_dict("w", {"threshold": thr})  # a card the detector accepts


def test_no_positives_and_no_negatives() -> None:
    c = det_curve([], [one_hour(SPLIT)], R)
    assert math.isnan(frr_at_fa(c, 2.0)[0])
    with pytest.raises(EvalError, match="no negative audio"):
        det_curve(POS, [], R)
    with pytest.raises(EvalError, match="NaN"):
        ScoreStream("x", np.array([0.1, np.nan]))


def test_running_max_and_events_match_a_plain_loop(rng: np.random.Generator) -> None:
    for t in (1, 2, 3, 9, 40):
        for k in (0, 1, 2, 3, 7, 12, 50):
            s = rng.random(t)
            ref = [s[max(0, i - k):i].max() if i and k else -np.inf for i in range(t)]
            assert np.array_equal(_running_max_before(s, k), ref)
    for _ in range(40):
        s = np.round(rng.random(int(rng.integers(1, 80))), 1).astype(np.float32)
        step, refr = float(rng.choice([0.03, 0.08])), float(rng.choice([0.0, 0.3, 1.0]))
        c = det_curve([0.5], [ScoreStream("r", s, step, duration_s=3600.0)], refr)
        for th in [*np.unique(s), 1.5]:
            assert c.at(th)[1] == count_events(s, th, step, refr)


def test_sweep_of_hours_and_1000_positives_is_fast(rng: np.random.Generator) -> None:
    steps = int(4 * 3600 / 0.08)  # four hours at 80 ms
    negs = [ScoreStream(f"n{i}", rng.random(steps // 50).astype(np.float32) ** 6)
            for i in range(50)]
    t0 = time.perf_counter()
    c = det_curve(rng.random(1000), negs, 1.0)
    [frr_at_fa(c, f) for f in (0.1, 0.5, 1.0)]
    assert time.perf_counter() - t0 < 1.0


def test_confusion_and_report(tmp_path: Path) -> None:
    words = ["a", "b"]
    pos = {"a": np.array([[0.9, 0.2], [0.4, 0.6]])}
    assert confusion(pos, words, {"a": 0.5, "b": 0.6}) == {"a": {"a": 0.5, "b": 0.5}}
    streams = {"a": [ScoreStream("p1", [[0.9, 0.2]]), ScoreStream("p2", [[0.4, 0.6]])]}
    neg = ScoreStream("n", np.zeros((10, 2)), duration_s=3600.0)
    rep = report_from_streams(words, streams, [neg], thresholds={"a": 0.5, "b": 0.6})
    assert rep.results["a"].op_frr == 0.5 and rep.results["a"].op_fa_per_hour == 0.0
    assert rep.confusion == {"a": {"a": 0.5, "b": 0.5}}
    d = rep.to_dict()
    json.dumps(d, allow_nan=False)  # strict JSON: no NaN/inf
    assert d["words"]["a"]["frr_at_fa"]["0.1"]["frr"] == 0.0
    assert "| a | 2 | 1.00 |" in rep.to_text()
    with pytest.raises(EvalError, match="model's words"):
        report_from_streams(words, {"zz": []}, [neg])


def test_det_png_is_written(tmp_path: Path) -> None:
    c = det_curve(POS, [one_hour(SPLIT)], R)
    p = plot_det({"w": c, "v": det_curve([0.1], [one_hour(SPLIT)], R)}, tmp_path / "d" / "det.png",
                 points={"binary engine": [(0.0, 0.1), (2.0, 0.05)]})
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_score_files_and_manifests(tmp_path: Path) -> None:
    a = write_audio(tmp_path / "x" / "a.wav", np.zeros(1600, np.float32))
    (tmp_path / "x" / "notes.txt").write_text("not audio")
    streams = score_files(lambda p: np.ones((3, 2)), [a], step_s=0.05)
    assert streams[0].duration_s == pytest.approx(0.15) and streams[0].scores.shape == (3, 2)
    assert list_audio(tmp_path / "x") == [a]  # notes.txt is not audio
    (tmp_path / "m.txt").write_text("# clips\nx/a.wav\n")
    (tmp_path / "m.jsonl").write_text('{"path": "x/a.wav"}\n')
    assert list_audio(tmp_path / "m.txt") == list_audio(tmp_path / "m.jsonl") == [a]
    b = write_audio(tmp_path / "x" / "b.wav", np.zeros(1600, np.float32))
    (tmp_path / "mixed.jsonl").write_text(
        '{"path": "x/a.wav", "kind": "positive", "word": "hey samuel"}\n'
        '{"path": "x/b.wav", "kind": "confusable", "word": null}\n{"path": "x/')  # torn
    assert list_audio(tmp_path / "mixed.jsonl", word="hey samuel") == [a]
    assert list_audio(tmp_path / "mixed.jsonl", negatives=True) == [b]
    with pytest.raises(EvalError, match="no usable files for 'alexa'"):
        list_audio(tmp_path / "mixed.jsonl", word="alexa")
    (tmp_path / "bad.txt").write_text("x/missing.wav\n")
    with pytest.raises(EvalError, match="missing"):
        list_audio(tmp_path / "bad.txt")


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """polywake.model_io stand-in whose scorer scripts the same raw scores for every file:
    step 0 [0.2, 0.1], step 1 [0.9, 0.3], later steps 0. Smoothed as the Detector does (mean of
    3 rows): alpha 0.2, 0.55, 0.367, 0.3, 0...; beta at most 0.2."""
    mod = types.ModuleType("polywake.model_io")

    def load_scorer(path: str) -> ConstantScorer:
        sc = ConstantScorer(["alpha", "beta"], np.array([[0.2, 0.1], [0.9, 0.3], [0, 0]]))
        sc.card = {"per_word": {"alpha": {"threshold": 0.5}, "beta": {"threshold": 0.5}}}
        return sc

    mod.load_scorer = load_scorer
    monkeypatch.setitem(sys.modules, "polywake.model_io", mod)
    return mod


def test_eval_cli_on_a_fake_model(tmp_path: Path, fake_model: types.ModuleType,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        write_audio(tmp_path / "pos" / f"p{i}.wav", np.zeros(16000, np.float32))
    (tmp_path / "pos.txt").write_text("pos/p0.wav\npos/p1.wav\npos/p2.wav\n")
    for i in range(2):
        write_audio(tmp_path / "neg" / f"n{i}.wav", np.zeros(36 * 16000, np.float32))
    out = tmp_path / "out"
    rc = cli.main(["eval", "--model", "m.pwk", "--positives", f"alpha={tmp_path / 'pos.txt'}",
                   "--negatives", str(tmp_path / "neg"), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    alpha = rep["words"]["alpha"]
    # Each 36 s negative fires once (steps 0-3 merge): 2 events / 0.02 h = 100 FA/h, so no
    # threshold at or below the smoothed peak 0.55 meets 1 FA/h: every clip is missed there.
    assert alpha["positives"] == 3 and alpha["negative_hours"] == 0.02
    assert alpha["frr_at_fa"]["1"]["frr"] == 1.0
    assert np.float32(alpha["frr_at_fa"]["1"]["threshold"]) > np.float32(0.55)
    assert alpha["operating_point"] == {"threshold": 0.5, "frr": 0.0, "fa_per_hour": 100.0}
    assert rep["thresholds_source"] == "model card"
    assert rep["confusion"] == {"alpha": {"alpha": 1.0, "beta": 0.0}}
    assert (out / "det.png").stat().st_size > 0 and "alpha" in (out / "report.txt").read_text()
    assert "FRR @ 0.1 FA/h" in capsys.readouterr().out


def test_eval_cli_errors(tmp_path: Path, fake_model: types.ModuleType,
                         capsys: pytest.CaptureFixture[str]) -> None:
    write_audio(tmp_path / "a.wav", np.zeros(1600, np.float32))
    rc = cli.main(["eval", "--model", "m", "--positives", f"gamma={tmp_path}",
                   "--negatives", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 1 and "not a word of the model" in capsys.readouterr().err
    rc = cli.main(["eval", "--model", "m", "--positives", f"alpha={tmp_path}",
                   "--out", str(tmp_path / "o")])
    assert rc == 1 and "--negatives" in capsys.readouterr().err


def test_eval_cli_without_model_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "polywake.model_io", None)  # import fails
    rc = cli.main(["eval", "--model", "m", "--positives", "a=x", "--out", str(tmp_path)])
    assert rc == 1 and "polywake.model_io is not available" in capsys.readouterr().err


def test_smoothing_matches_the_detectors(rng: np.random.Generator) -> None:
    from polywake.decisions import DecisionEngine, WordCard

    x = rng.random((30, 2)).astype(np.float32)
    for mode in ("mean", "max", "none"):
        eng = DecisionEngine([WordCard("a"), WordCard("b")], 0.08, smoothing=mode,
                             smooth_steps=3)
        ref = np.stack([eng.smooth(row) for row in x])
        np.testing.assert_allclose(smooth_scores(x, mode, 3), ref, rtol=1e-6)
