"""`polywake serve-wyoming`: a Wyoming-protocol wake-word service for Home Assistant.

It speaks what openWakeWord's add-on speaks: ``describe`` -> ``info`` listing one wake program
with a model per wake word; ``detect`` (optional word filter) then ``audio-start``,
``audio-chunk``... ``audio-stop``; ``detection`` for every wake word heard (the stream goes on:
a satellite streams continuously) and ``not-detected`` at ``audio-stop`` if none was.
Each connection gets its own Detector (they share one model) and its stream runs off the event
loop, so several satellites can be served at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, WakeModel, WakeProgram
from wyoming.server import AsyncEventHandler, AsyncServer
from wyoming.wake import Detect, Detection, NotDetected

from .. import __version__
from ..audio import SAMPLE_RATE
from ..detect import Detector
from .personas import Persona, RuntimeConfig, load_config, normalize_word

log = logging.getLogger(__name__)
DEFAULT_URI = "tcp://0.0.0.0:10400"  # openWakeWord's port, so HA setups carry over
ATTRIBUTION = Attribution(name="polywake", url="")


@dataclass(frozen=True)
class WakeWord:
    """One wake word as Wyoming clients see it: ``name`` is its id (``hey_samuel``)."""

    name: str
    word: str                 # the model's spelling
    persona: Persona | None = None


def exposed_words(model_words: list[str], config: RuntimeConfig | None) -> list[WakeWord]:
    """The configured words (all of them), or every model word when there is no config."""
    def slug(w: str) -> str:
        return normalize_word(w).replace(" ", "_")

    if config is None:
        return [WakeWord(slug(w), w) for w in model_words]
    mapping = config.resolve_words(model_words)
    return [WakeWord(slug(mapping[w]), mapping[w], p) for p in config.personas for w in p.words]


def wyoming_info(words: list[WakeWord], languages: list[str] | None = None) -> Info:
    langs = list(languages or ["en"])
    models = [
        WakeModel(name=w.name, phrase=w.word, attribution=ATTRIBUTION, installed=True,
                  description=(f"{w.word} (persona {w.persona.name})" if w.persona else w.word),
                  version=__version__, languages=langs)
        for w in words
    ]
    program = WakeProgram(name="polywake", attribution=ATTRIBUTION, installed=True,
                          description="polywake: several wake words with one small model",
                          version=__version__, models=models)
    return Info(wake=[program])


class WakeEventHandler(AsyncEventHandler):
    """One client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 info: Info, words: list[WakeWord],
                 detector_factory: Callable[[], Detector]) -> None:
        super().__init__(reader, writer)
        self.info = info
        self.words = {w.word: w for w in words}
        self._factory = detector_factory
        self._detector: Detector | None = None
        self._converter = AudioChunkConverter(rate=SAMPLE_RATE, width=2, channels=1)
        self._wanted: set[str] | None = None
        self._context: dict[str, Any] | None = None
        self._active = False
        self._detected = False
        self._t0_ms = 0

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.info.event())
        elif Detect.is_type(event.type):
            detect = Detect.from_event(event)
            self._wanted = None if not detect.names else {normalize_word(n) for n in detect.names}
            unknown = (self._wanted or set()) - {normalize_word(w) for w in self.words}
            if unknown:
                log.warning("client asked for wake words this server does not have: %s",
                            sorted(unknown))
            self._context = detect.context
        elif AudioStart.is_type(event.type):
            self._begin(AudioStart.from_event(event).timestamp)
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            if not self._active:  # tolerate clients that skip audio-start
                self._begin(chunk.timestamp)
            await self._audio(self._converter.convert(chunk))
        elif AudioStop.is_type(event.type):
            if self._active and not self._detected:
                await self.write_event(NotDetected(context=self._context).event())
            self._active = False
        return True

    def _begin(self, timestamp: int | None) -> None:
        if self._detector is None:
            self._detector = self._factory()
        else:
            self._detector.reset()
        self._converter = AudioChunkConverter(rate=SAMPLE_RATE, width=2, channels=1)
        self._active = True
        self._detected = False
        self._t0_ms = int(timestamp or 0)

    async def _audio(self, chunk: AudioChunk) -> None:
        assert self._detector is not None
        samples = np.frombuffer(chunk.audio[: len(chunk.audio) // 2 * 2], dtype="<i2")
        x = samples.astype(np.float32) / 32768.0
        # Model inference off the event loop: other connections keep being served.
        dets = await asyncio.to_thread(self._detector.process, x)
        for det in dets:
            w = self.words.get(det.word)
            if w is None or (self._wanted is not None
                             and normalize_word(w.name) not in self._wanted):
                continue
            self._detected = True
            context = dict(self._context or {})
            if w.persona is not None:
                context["polywake"] = {"persona": w.persona.id, "persona_name": w.persona.name,
                                       "score": round(float(det.score), 4),
                                       "settings": dict(w.persona.settings)}
            log.info("detected %s (score %.2f) at %.2f s", w.name, det.score, det.end_s)
            await self.write_event(Detection(
                name=w.name, timestamp=self._t0_ms + int(round(det.end_s * 1000)),
                context=context or None).event())


def handler_factory(words: list[WakeWord], detector_factory: Callable[[], Detector],
                    languages: list[str] | None = None
                    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], WakeEventHandler]:
    return partial(WakeEventHandler, info=wyoming_info(words, languages), words=words,
                   detector_factory=detector_factory)


async def start_server(uri: str, words: list[WakeWord], detector_factory: Callable[[], Detector],
                       languages: list[str] | None = None) -> AsyncServer:
    """Start serving in the running loop and return the server (``await server.stop()``)."""
    server = AsyncServer.from_uri(uri)
    await server.start(handler_factory(words, detector_factory, languages))
    return server


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .listen import add_backend_argument

    p.add_argument("--model", help="model file (.pwk); default: the shipped model")
    add_backend_argument(p)
    p.add_argument("--config", help="personas TOML; its wake words (and sensitivities) are "
                                    "served; default: every word of the model")
    p.add_argument("--uri", default=DEFAULT_URI, help=f"where to listen (default {DEFAULT_URI};"
                                                      f" also unix://PATH, stdio://)")
    p.add_argument("--language", action="append", help="language tag(s) advertised for the "
                                                       "wake words (default: en)")
    p.add_argument("-v", "--verbose", action="count", default=0)


def run(args: argparse.Namespace) -> int:
    from .listen import detector_factory, setup_logging

    setup_logging(args.verbose + 1)
    config = load_config(args.config) if args.config else None
    make = detector_factory(args.model, config, args.backend)
    words = exposed_words(make().words, config)
    try:
        server = AsyncServer.from_uri(args.uri)
    except ValueError as e:
        from ..errors import PolywakeError

        raise PolywakeError(f"--uri {args.uri}: {e}") from None
    log.info("serving %s on %s", ", ".join(w.name for w in words), args.uri)
    asyncio.run(server.run(handler_factory(words, make, args.language)))
    return 0
