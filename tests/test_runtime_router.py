"""Routing: wake words -> personas -> handlers, on scripted scores (ConstantScorer)."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from polywake.audio import SAMPLE_RATE, write_audio
from polywake.detect import Detector
from polywake.runtime.endpoint import EnergyEndPointer
from polywake.runtime.handlers import HandlerSpec, Request
from polywake.runtime.personas import parse_config
from polywake.runtime.router import HandlerRunner, WakeRouter, run_demo
from polywake.scoring import ConstantScorer

pytestmark = pytest.mark.timeout(60)

WORDS = ["alexa", "echo", "amazon", "computer", "hey samuel"]
STEP_S = 0.08
FIRST_STEP_END = 0.08  # end time of step 0: 8 frames (the stream starts with STREAM_LEAD zeros)


def step_time(k: int) -> float:
    return FIRST_STEP_END + STEP_S * k


def make_stream(schedule: list[tuple[float, str, float]], total_s: float,
                command_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Audio and scores. Each (time, word, tone Hz) scripts three 0.95 rows of ``word`` whose
    (smoothed) peak is at the step ending near ``time``. The default word card puts the word at
    [peak - 0.98 s, peak - 0.38 s]; a noise burst fills that span, then a ``command_s`` tone
    starts 0.3 s after the peak (the request's speech)."""
    rng = np.random.default_rng(0)
    n = int(total_s * SAMPLE_RATE)
    audio = (rng.standard_normal(n) * 0.0005).astype(np.float32)  # ~ -66 dBFS room
    steps = int(total_s / STEP_S) + 2
    script = np.zeros((steps, len(WORDS)), np.float32)
    for t, word, hz in schedule:
        k = int(round((t - FIRST_STEP_END) / STEP_S))
        script[k - 2:k + 1, WORDS.index(word)] = 0.95
        t = step_time(k)
        a, b = int((t - 0.98) * SAMPLE_RATE), int((t - 0.38) * SAMPLE_RATE)
        audio[a:b] += (rng.standard_normal(b - a) * 0.1).astype(np.float32)
        c, d = int((t + 0.3) * SAMPLE_RATE), int((t + 0.3 + command_s) * SAMPLE_RATE)
        tt = np.arange(d - c) / SAMPLE_RATE
        audio[c:d] += (0.2 * np.sin(2 * np.pi * hz * tt)).astype(np.float32)
    return audio, script


class Recorder:
    """A handler that keeps what it got."""

    def __init__(self, name: str = "rec", behaviour=None) -> None:
        self.spec = HandlerSpec("python", f"tests:{name}")
        self.got: list[Request] = []
        self.lock = threading.Lock()
        self.behaviour = behaviour

    def __call__(self, request: Request, timeout_s: float):
        if self.behaviour is not None:
            self.behaviour(request)
        with self.lock:
            self.got.append(request)
        return {"ok": True}


def dominant_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)[np.argmax(spec)])


CONFIG = """
[listen]
handler_timeout_s = {timeout}
max_request_s = 6.0

[personas.alexa]
name = "Alexa"
words = ["alexa"]
handler = "polywake.runtime.handlers:print_request"

[personas.echo]
words = "echo"
handler = "polywake.runtime.handlers:print_request"

[personas.amazon]
words = ["amazon"]
handler = "polywake.runtime.handlers:print_request"

[personas.computer]
words = ["computer"]
handler = "polywake.runtime.handlers:print_request"

[personas.samuel]
name = "Samuel"
words = ["Hey Samuel"]
handler = "polywake.runtime.handlers:print_request"
explicit_language = false
voice = "samuel"
"""


def feed(router: WakeRouter, audio: np.ndarray, chunk: int = 1024) -> list[dict]:
    events = []
    for i in range(0, audio.size, chunk):
        events.extend(router.process(audio[i:i + chunk]))
    events.extend(router.finish())
    return events


def build(script: np.ndarray, timeout: float = 5.0, handlers=None):
    config = parse_config(CONFIG.format(timeout=timeout), "personas.toml")
    det = Detector(ConstantScorer(WORDS, script))
    recs = handlers or {p.id: Recorder(p.id) for p in config.personas}
    router = WakeRouter(det, config, recs, endpointer=EnergyEndPointer())
    return router, recs


def test_long_stream_routes_each_request_to_its_persona():
    personas = {"alexa": "alexa", "echo": "echo", "amazon": "amazon", "computer": "computer",
                "hey samuel": "samuel"}
    schedule = []
    for i in range(12):
        word = WORDS[i % len(WORDS)]
        schedule.append((2.0 + 4.5 * i, word, 300.0 + 100.0 * i))
    audio, script = make_stream(schedule, total_s=58.0)
    router, recs = build(script)
    events = feed(router, audio)
    assert router.runner.wait(10)

    wakes = [e for e in events if e["event"] == "wake"]
    assert [e["word"] for e in wakes] == [w for _, w, _ in schedule]
    assert all(e["routed"] for e in wakes)
    assert [e["persona"] for e in wakes] == [personas[w] for _, w, _ in schedule]
    requests = [e for e in events if e["event"] == "request"]
    assert len(requests) == 12
    assert all(r["end_reason"] == "silence" for r in requests)

    got = sorted((r for rec in recs.values() for r in rec.got), key=lambda r: r.wake_end_s)
    assert len(got) == 12
    for req, (t, word, hz) in zip(got, schedule, strict=True):
        assert req.persona.id == personas[word]
        assert req.word == word
        # Pre-roll: audio starts 0.25 s before the wake word's estimated start.
        assert req.audio_start_s == pytest.approx(req.wake_start_s - 0.25, abs=0.01)
        assert req.wake_start_s == pytest.approx(t - 0.98, abs=0.05)
        # The command (0.3..1.3 s after the peak) is in the request, then ~0.8 s of silence.
        after = req.audio[int((t + 0.3 - req.audio_start_s) * SAMPLE_RATE):]
        assert dominant_hz(after) == pytest.approx(hz, abs=5)
        assert req.audio_end_s == pytest.approx(t + 1.3 + 0.8, abs=0.15)
    samuel = [r for r in got if r.persona.id == "samuel"]
    assert samuel and dict(samuel[0].settings) == {"explicit_language": False, "voice": "samuel"}
    assert all(o.status == "ok" for o in router.runner.outcomes)


def test_max_request_caps_audio_and_no_speech_ends_early():
    audio, script = make_stream([(2.0, "alexa", 500.0)], total_s=14.0, command_s=9.0)
    router, recs = build(script)
    events = feed(router, audio)
    req = [e for e in events if e["event"] == "request"]
    assert req[0]["end_reason"] == "max_length"
    assert req[0]["duration_s"] == pytest.approx(6.0, abs=0.01)

    # A wake word followed by nothing: the request ends after speech_timeout_s (3 s).
    audio, script = make_stream([(2.0, "echo", 500.0)], total_s=9.0, command_s=0.0)
    router, recs = build(script)
    events = feed(router, audio)
    req = [e for e in events if e["event"] == "request"]
    assert req[0]["end_reason"] == "no_speech"
    # speech_timeout_s (3 s) counts from the end of the wake word (peak - 0.38 s).
    assert req[0]["audio_end_s"] == pytest.approx(step_time(24) - 0.38 + 3.0, abs=0.1)


def test_wake_during_request_splits_or_is_ignored():
    sched = [(2.0, "alexa", 400.0), (3.6, "hey samuel", 800.0)]
    audio, script = make_stream(sched, total_s=8.0)
    router, recs = build(script)
    events = feed(router, audio)
    router.runner.wait(5)
    reqs = [e for e in events if e["event"] == "request"]
    assert [(r["persona"], r["end_reason"]) for r in reqs] == [("alexa", "next_wake"),
                                                                ("samuel", "silence")]
    # The first request stops where the second wake word (with its pre-roll) begins.
    assert reqs[0]["audio_end_s"] == pytest.approx(reqs[1]["audio_start_s"], abs=1e-3)

    config = parse_config(CONFIG.format(timeout=5) + "", "p.toml")
    object.__setattr__(config, "listen",
                       type(config.listen)(**{**config.listen.__dict__,
                                              "wake_during_request": "ignore"}))
    det = Detector(ConstantScorer(WORDS, script))
    recs = {p.id: Recorder(p.id) for p in config.personas}
    router = WakeRouter(det, config, recs, endpointer=EnergyEndPointer())
    events = feed(router, audio)
    wakes = [e for e in events if e["event"] == "wake"]
    assert [w["routed"] for w in wakes] == [True, False]
    assert [e["persona"] for e in events if e["event"] == "request"] == ["alexa"]


def test_hanging_handler_times_out_and_listening_continues(caplog):
    release = threading.Event()
    hang = Recorder("hang", behaviour=lambda r: release.wait(20))
    audio, script = make_stream([(2.0, "alexa", 400.0), (6.5, "echo", 600.0),
                                 (11.0, "alexa", 700.0)], total_s=15.0)
    config = parse_config(CONFIG.format(timeout=0.3), "personas.toml")
    echo = Recorder("echo")
    handlers = {p.id: Recorder(p.id) for p in config.personas} | {"alexa": hang, "echo": echo}
    router = WakeRouter(Detector(ConstantScorer(WORDS, script)), config, handlers,
                        endpointer=EnergyEndPointer())
    caplog.set_level(logging.INFO, logger="polywake")
    t0 = time.monotonic()
    events = []
    for i in range(0, audio.size, 1280):
        events.extend(router.process(audio[i:i + 1280]))
        if i == 100 * 1280:  # 8 s in
            time.sleep(0.5)  # let the first handler overrun while we keep streaming
    events.extend(router.finish())
    assert time.monotonic() - t0 < 10  # the stream never waited for the handler
    assert router.runner.wait(5)
    try:
        assert [e["persona"] for e in events if e["event"] == "wake"] == ["alexa", "echo",
                                                                         "alexa"]
        assert len(echo.got) == 1
        statuses = [(o.request.persona.id, o.status) for o in router.runner.outcomes]
        assert statuses == [("alexa", "timeout"), ("echo", "ok"), ("alexa", "timeout")]
        assert any("timed out after 0.3 s" in r.getMessage() for r in caplog.records)
    finally:
        release.set()


def test_raising_handler_is_logged_and_next_requests_still_run(caplog):
    def boom(request):
        raise RuntimeError("handler bug")

    bad = Recorder("bad", behaviour=boom)
    audio, script = make_stream([(2.0, "computer", 400.0), (6.5, "computer", 600.0),
                                 (11.0, "amazon", 700.0)], total_s=15.0)
    config = parse_config(CONFIG.format(timeout=2), "personas.toml")
    handlers = {p.id: Recorder(p.id) for p in config.personas} | {"computer": bad}
    router = WakeRouter(Detector(ConstantScorer(WORDS, script)), config, handlers,
                        endpointer=EnergyEndPointer())
    caplog.set_level(logging.INFO, logger="polywake")
    feed(router, audio)
    assert router.runner.wait(5)
    outs = [(o.request.persona.id, o.status) for o in router.runner.outcomes]
    assert outs == [("computer", "error"), ("computer", "error"), ("amazon", "ok")]
    assert "RuntimeError: handler bug" in router.runner.outcomes[0].error
    assert any("handler bug" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)
    assert len(handlers["amazon"].got) == 1


def test_runner_drops_requests_beyond_max_in_flight(caplog):
    release = threading.Event()
    runner = HandlerRunner(max_in_flight=1)
    hang = Recorder("hang", behaviour=lambda r: release.wait(20))
    config = parse_config(CONFIG.format(timeout=1), "p.toml")
    req = Request(config.personas[0], "alexa", 0.9, 0.0, 1.0, 0.0, np.zeros(160, np.float32),
                  "silence")
    try:
        first = runner.submit(hang, req, 0.1)
        second = runner.submit(hang, req, 0.1)
        assert second.status == "dropped"
        assert runner.wait(2)
        assert first.status == "timeout"
    finally:
        release.set()


def test_unrouted_words_are_reported_without_persona():
    config = parse_config('[personas.a]\nwords = ["alexa"]\nhandler = '
                          '"polywake.runtime.handlers:print_request"\n', "p.toml")
    audio, script = make_stream([(2.0, "echo", 400.0)], total_s=4.0)
    router = WakeRouter(Detector(ConstantScorer(WORDS, script)), config, {"a": Recorder()},
                        endpointer=EnergyEndPointer())
    events = feed(router, audio)
    assert len(events) == 1
    ev = events[0]
    assert (ev["event"], ev["word"], ev["persona"], ev["routed"]) == ("wake", "echo", None, False)
    assert ev["time"] == pytest.approx(step_time(24) - 0.38, abs=1e-3)
    assert ev["score"] == pytest.approx(0.95)


def test_run_demo_prints_and_returns_what_each_persona_got(tmp_path, capsys):
    audio, script = make_stream([(2.0, "alexa", 400.0), (6.5, "hey samuel", 900.0)],
                                total_s=10.0)
    wav = write_audio(tmp_path / "demo.wav", audio)
    cfg = tmp_path / "personas.toml"
    cfg.write_text(CONFIG.format(timeout=5))
    det = Detector(ConstantScorer(WORDS, script))
    results = run_demo(det, wav, cfg, endpointer=EnergyEndPointer())
    out = capsys.readouterr().out
    assert [(r["persona"], r["word"], r["status"]) for r in results] == [
        ("alexa", "alexa", "ok"), ("samuel", "hey samuel", "ok")]
    assert results[1]["settings"] == {"explicit_language": False, "voice": "samuel"}
    assert results[1]["result"]["settings"]["voice"] == "samuel"
    assert "[Alexa] woken by 'alexa'" in out
    assert "[Samuel] woken by 'hey samuel'" in out and '"voice": "samuel"' in out
