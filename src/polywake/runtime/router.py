"""From detections to persona handlers.

:class:`WakeRouter` sits on the audio path: it feeds each chunk to the :class:`Detector` and
the end-pointer, keeps a few seconds of history (the pre-roll), cuts out each request (from
just before the wake word's start until the end-point, capped at ``max_request_s``) and hands
it to :class:`HandlerRunner`, which runs handlers on worker threads with a timeout. So a slow,
failing or hung handler costs a thread and a log line, never the stream.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from ..audio import SAMPLE_RATE, iter_audio_blocks
from ..detect import Detection, Detector
from .endpoint import EndPointer, Endpointing, default_endpointer
from .handlers import Handler, HandlerError, HandlerTimeout, Request, build_handlers
from .personas import ListenSettings, Persona, RuntimeConfig, load_config

log = logging.getLogger(__name__)

PIECE_SAMPLES = 1280  # 80 ms: routing decisions are never coarser than one detector step


@dataclass
class Outcome:
    """What became of one request: filled in by the worker thread (or the timeout timer)."""

    request: Request
    handler: str
    status: str = "running"   # -> "ok" | "error" | "timeout" | "dropped"
    error: str | None = None
    result: Any = None
    seconds: float | None = None
    finished_late: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.request.event(), "handler": self.handler, "status": self.status,
                "error": self.error, "result": self.result, "handler_seconds": self.seconds}


class HandlerRunner:
    """Runs each request's handler on its own daemon thread; a timer flags it when it overruns.

    Command and URL handlers stop themselves at the timeout (kill / socket timeout); a Python
    function cannot be stopped, so it is logged as timed out and abandoned. Handlers still
    running count against ``max_in_flight``; beyond it new requests are dropped (and logged),
    so a handler that always hangs cannot pile up threads without bound.
    """

    def __init__(self, max_in_flight: int = 8, keep: int = 256) -> None:
        self.max_in_flight = max_in_flight
        # The latest outcomes (each holds its request's audio): bounded, so a microphone
        # session of days does not grow; older ones are only in the log.
        self.outcomes: deque[Outcome] = deque(maxlen=keep)
        self._active = 0
        self._cond = threading.Condition()

    def submit(self, handler: Handler, request: Request, timeout_s: float) -> Outcome:
        outcome = Outcome(request, handler.spec.describe())
        with self._cond:
            self.outcomes.append(outcome)
            if self._active >= self.max_in_flight:
                outcome.status = "dropped"
                outcome.error = f"{self._active} handlers still running (max_in_flight)"
                log.error("persona %s: request dropped: %s", request.persona.id, outcome.error)
                return outcome
            self._active += 1
        # Self-limiting handlers get a little grace to report their own timeout first.
        grace = 3.0 if getattr(handler, "enforces_timeout", False) else 0.0
        timer = threading.Timer(timeout_s + grace, self._overran, (outcome, timeout_s))
        timer.daemon = True
        worker = threading.Thread(target=self._run, args=(handler, outcome, timeout_s, timer),
                                  name=f"polywake-handler-{request.persona.id}", daemon=True)
        timer.start()
        worker.start()
        return outcome

    def _run(self, handler: Handler, outcome: Outcome, timeout_s: float,
             timer: threading.Timer) -> None:
        pid = outcome.request.persona.id
        t0 = time.monotonic()
        status, error, result = "ok", None, None
        try:
            result = handler(outcome.request, timeout_s)
        except HandlerTimeout as e:
            status, error = "timeout", str(e)
        except HandlerError as e:
            status, error = "error", str(e)
        except Exception as e:  # noqa: BLE001 - a handler's bug must not reach the stream
            status, error = "error", f"{type(e).__name__}: {e}"
            log.debug("persona %s handler traceback", pid, exc_info=True)
        finally:
            timer.cancel()
        seconds = time.monotonic() - t0
        with self._cond:
            self._active -= 1
            if outcome.status == "timeout":  # the timer already reported it
                outcome.finished_late = True
                log.warning("persona %s: handler %s finished %.1f s late (%s)", pid,
                            outcome.handler, seconds - timeout_s, status)
            else:
                outcome.status, outcome.error, outcome.result = status, error, result
                if status == "ok":
                    log.info("persona %s: handler %s ok in %.2f s", pid, outcome.handler,
                             seconds)
                elif status == "timeout":
                    log.error("persona %s: handler %s timed out: %s", pid, outcome.handler,
                              error)
                else:
                    log.error("persona %s: handler %s failed: %s", pid, outcome.handler, error)
            outcome.seconds = seconds
            self._cond.notify_all()

    def _overran(self, outcome: Outcome, timeout_s: float) -> None:
        with self._cond:
            if outcome.status != "running":
                return
            outcome.status = "timeout"
            outcome.error = f"no result after {timeout_s:g} s"
            log.error("persona %s: handler %s timed out after %g s; abandoned, still listening",
                      outcome.request.persona.id, outcome.handler, timeout_s)
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """Block until every submitted handler has finished or timed out; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(o.status == "running" for o in self.outcomes):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


@dataclass
class _Capture:
    persona: Persona
    detection: Detection
    start: int                      # absolute sample index of the request's first sample
    chunks: list[np.ndarray] = field(default_factory=list)
    n: int = 0
    endpointing: Endpointing | None = None

    def add(self, x: np.ndarray) -> None:
        self.chunks.append(x)
        self.n += x.size

    def audio(self, limit: int) -> np.ndarray:
        a = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        return a[:max(0, limit)]


class WakeRouter:
    """Detector + end-pointing + routing for one stream.

    :meth:`process` takes 16 kHz mono samples of any length and returns event dicts:
    ``{"event": "wake", ...}`` for every detection and ``{"event": "request", ...}`` when a
    request has been cut out and handed to its persona's handler. Call :meth:`finish` at the
    end of a stream to deliver a request still being recorded.
    """

    def __init__(self, detector: Detector, config: RuntimeConfig | None = None,
                 handlers: Mapping[str, Handler] | None = None, *,
                 endpointer: EndPointer | None = None, runner: HandlerRunner | None = None,
                 history_s: float = 5.0) -> None:
        self.detector = detector
        self.config = config
        self.settings = config.listen if config is not None else ListenSettings()
        self.handlers = dict(handlers or {})
        self.endpointer = endpointer if endpointer is not None else default_endpointer()
        self.runner = runner if runner is not None else HandlerRunner(self.settings.max_in_flight)
        self._persona: dict[str, Persona] = {}
        if config is not None:
            mapping = config.resolve_words(detector.words)
            for p in config.personas:
                for w in p.words:
                    self._persona[mapping[w]] = p
        self._history_samples = int((history_s + self.settings.preroll_s) * SAMPLE_RATE)
        self._max_samples = int(self.settings.max_request_s * SAMPLE_RATE)
        self.reset(detector_too=False)

    def reset(self, detector_too: bool = True) -> None:
        if detector_too:
            self.detector.reset()
        self.endpointer.reset()
        self._n = 0
        self._vad_frames = 0
        # (end sample, speech) of recent end-pointer frames: a wake word is often decided a
        # little after it ended, and end-pointing must start from where it ended.
        self._flags: deque[tuple[int, bool]] = deque()
        self._history: deque[tuple[int, np.ndarray]] = deque()
        self._history_n = 0
        self._cap: _Capture | None = None

    @property
    def time_s(self) -> float:
        return self._n / SAMPLE_RATE

    def persona_for(self, word: str) -> Persona | None:
        return self._persona.get(word)

    def process(self, chunk: np.ndarray) -> list[dict[str, Any]]:
        x = np.asarray(chunk)
        if x.dtype.kind in "iu":
            x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
        # A copy: pieces live on in the pre-roll history, and callers may reuse their buffer.
        x = np.array(x, np.float32).reshape(-1) if x.ndim <= 1 else x
        events: list[dict[str, Any]] = []
        for i in range(0, x.shape[0], PIECE_SAMPLES):
            events.extend(self._piece(x[i:i + PIECE_SAMPLES]))
        return events

    def finish(self) -> list[dict[str, Any]]:
        """End of stream: decide pending wake words, deliver the request being recorded."""
        flush = getattr(self.detector, "flush", None)
        events: list[dict[str, Any]] = []
        for det in (flush() if callable(flush) else []):
            events.extend(self._on_wake(det))
        if self._cap is not None:
            events.append(self._deliver("end_of_stream"))
        return events

    # --- internals ---------------------------------------------------------------------------

    def _piece(self, piece: np.ndarray) -> list[dict[str, Any]]:
        dets = self.detector.process(piece)  # validates the samples first
        flags = self.endpointer.process(piece)
        start = self._n
        self._n += piece.size
        self._remember(start, piece, flags)
        events: list[dict[str, Any]] = []
        cap = self._cap
        if cap is not None:
            cap.add(piece)
            reason = cap.endpointing.update(flags) if cap.endpointing else None
            if cap.n >= self._max_samples:
                reason = reason or "max_length"
            if reason:
                events.append(self._deliver(reason))
        for det in dets:
            events.extend(self._on_wake(det))
        return events

    def _remember(self, start: int, piece: np.ndarray, flags: np.ndarray) -> None:
        self._history.append((start, piece))
        self._history_n += piece.size
        while self._history and self._history_n - self._history[0][1].size >= \
                self._history_samples:
            self._history_n -= self._history.popleft()[1].size
        frame = self.endpointer.frame_seconds * SAMPLE_RATE
        for f in np.asarray(flags, bool).reshape(-1):
            self._vad_frames += 1
            self._flags.append((int(round(self._vad_frames * frame)), bool(f)))
        oldest = self._n - self._history_samples
        while self._flags and self._flags[0][0] < oldest:
            self._flags.popleft()

    def _recent(self, a: int) -> tuple[int, np.ndarray]:
        """Audio from absolute sample ``a`` (or the oldest kept) up to now."""
        parts = []
        first = self._n
        for s, c in self._history:
            if s + c.size <= a:
                continue
            off = max(0, a - s)
            first = min(first, s + off)
            parts.append(c[off:])
        return first, (np.concatenate(parts) if parts else np.zeros(0, np.float32))

    def _on_wake(self, det: Detection) -> list[dict[str, Any]]:
        persona = self._persona.get(det.word)
        handler = self.handlers.get(persona.id) if persona is not None else None
        ev: dict[str, Any] = {
            "event": "wake", "word": det.word, "persona": persona.id if persona else None,
            "time": round(det.end_s, 3), "start_s": round(det.start_s, 3),
            "score": round(float(det.score), 4), "routed": False,
        }
        decided = getattr(det, "decided_s", None)  # when the detector made up its mind
        if decided:
            ev["decided_s"] = round(float(decided), 3)
        if persona is None or handler is None:
            return [ev]
        out: list[dict[str, Any]] = []
        a = max(0, int(round((det.start_s - self.settings.preroll_s) * SAMPLE_RATE)))
        if self._cap is not None:
            if self.settings.wake_during_request == "ignore":
                log.info("%s at %.2f s ignored: persona %s is still being recorded", det.word,
                         det.end_s, self._cap.persona.id)
                return [ev]
            # Cut the running request where the new wake word begins, but keep its own wake word.
            keep_until = max(a, int(round(self._cap.detection.end_s * SAMPLE_RATE)))
            out.append(self._deliver("next_wake", cut=keep_until))
        first, audio = self._recent(a)
        cap = _Capture(persona, det, first)
        cap.add(audio)
        ep = Endpointing(self.endpointer.frame_seconds, self.settings.silence_s,
                         self.settings.speech_timeout_s)
        cap.endpointing = ep
        self._cap = cap
        ev["routed"] = True
        out.append(ev)
        # Replay what the end-pointer heard since the wake word ended.
        word_end = det.end_s * SAMPLE_RATE
        reason = ep.update(np.array([f for e, f in self._flags if e > word_end], bool))
        if cap.n >= self._max_samples:
            reason = reason or "max_length"
        if reason:
            out.append(self._deliver(reason))
        return out

    def _deliver(self, reason: str, cut: int | None = None) -> dict[str, Any]:
        cap = self._cap
        assert cap is not None
        self._cap = None
        limit = self._max_samples if cut is None else min(self._max_samples, cut - cap.start)
        audio = cap.audio(limit)
        det = cap.detection
        req = Request(cap.persona, det.word, float(det.score), det.start_s, det.end_s,
                      cap.start / SAMPLE_RATE, audio, reason)
        handler = self.handlers[cap.persona.id]
        timeout = cap.persona.timeout_s or self.settings.handler_timeout_s
        self.runner.submit(handler, req, timeout)
        return {"event": "request", "word": det.word, "persona": cap.persona.id,
                "time": round(det.end_s, 3), "audio_start_s": round(req.audio_start_s, 3),
                "audio_end_s": round(req.audio_end_s, 3), "duration_s": round(req.duration_s, 3),
                "end_reason": reason, "handler": handler.spec.describe()}


def longest_timeout(config: RuntimeConfig) -> float:
    return max([config.listen.handler_timeout_s]
               + [p.timeout_s for p in config.personas if p.timeout_s is not None])


def run_demo(detector: Detector, audio_path: str | os.PathLike, config_path: str | os.PathLike,
             *, endpointer: EndPointer | None = None, out: TextIO | None = None
             ) -> list[dict[str, Any]]:
    """Stream a file through ``detector``, route every wake word to its persona's handler, wait
    for the handlers, and return one dict per request (its event, handler status and result).
    The detector is used as given (its thresholds too).

    What each handler received is printed by the handler itself (see
    :func:`polywake.runtime.handlers.print_request`); this prints the wake words and a summary.
    """
    stream = out if out is not None else sys.stdout
    config = load_config(config_path)
    if config.sensitivities(detector.words):
        log.info("run_demo uses the detector as given: build it with "
                 "polywake.runtime.listen.make_detector(scorer, config) to apply sensitivities")
    router = WakeRouter(detector, config, build_handlers(config.personas), endpointer=endpointer)
    router.reset()
    for block in iter_audio_blocks(audio_path):
        for ev in router.process(block):
            _print_demo_event(ev, router, stream)
    for ev in router.finish():
        _print_demo_event(ev, router, stream)
    if not router.runner.wait(longest_timeout(config) + 5.0):
        print("some handlers are still running (timed out)", file=stream, flush=True)
    results = [o.to_dict() for o in router.runner.outcomes]
    for r in results:
        print(f"  {r['word']!r} -> persona {r['persona']} ({r['duration_s']:.2f} s of audio, "
              f"{r['end_reason']}): handler {r['status']}"
              + (f" ({r['error']})" if r["error"] else ""), file=stream, flush=True)
    return results


def _print_demo_event(ev: dict[str, Any], router: WakeRouter, stream: TextIO) -> None:
    if ev["event"] == "wake":
        who = router.persona_for(ev["word"])
        name = f"persona {who.name}" if who else "no persona"
        print(f"{ev['time']:7.2f} s  wake word {ev['word']!r} (score {ev['score']:.2f}) -> {name}",
              file=stream, flush=True)
