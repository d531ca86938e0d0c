"""`polywake listen [SOURCE] [--model PATH] [--backend auto|numpy|onnx] [--config personas.toml]`

SOURCE is an audio file, ``-`` for raw 16-bit little-endian PCM at 16 kHz mono on stdin
(``arecord -f S16_LE -r 16000 -c 1 | polywake listen - ...``), or nothing for the microphone.
Each event is printed as one JSON line on stdout (logs go to stderr):

    {"event": "wake", "word": "alexa", "persona": "alexa", "time": 3.215, "score": 0.97, ...}
    {"event": "request", "word": "alexa", "persona": "alexa", "duration_s": 2.4, ...}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import numpy as np

from ..audio import iter_audio_blocks
from ..detect import Detector
from ..errors import PolywakeError
from ..scoring import StreamingScorer
from .handlers import build_handlers
from .microphone import list_devices, microphone_chunks
from .personas import RuntimeConfig, load_config
from .router import WakeRouter, longest_timeout, run_demo

__all__ = ["add_arguments", "detector_factory", "load_detector", "make_detector", "open_source", "pcm_chunks", "run", "run_demo"]

log = logging.getLogger(__name__)
CHUNK_SAMPLES = 1280  # 80 ms, one detector step


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", default=None,
                   help="audio file, '-' for raw s16le 16 kHz mono PCM on stdin; "
                        "default: the microphone")
    p.add_argument("--model", help="model file (.pwk); default: the shipped model")
    add_backend_argument(p)
    p.add_argument("--config", help="personas TOML: wake word -> persona -> handler")
    p.add_argument("--device", help="microphone device (number or name substring)")
    p.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output on stderr (-vv for debug)")


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    # Spelled out rather than model_io.BACKENDS: this module imports model_io only when it
    # loads a model (detector_factory), so an install without it still starts and says why.
    p.add_argument("--backend", choices=["auto", "numpy", "onnx"], default="auto",
                   help="how to run a .pwk: numpy (no onnxruntime), onnx (onnxruntime), or "
                        "auto (numpy when the file has a numpy section, else onnx)")


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load_detector(model_path: str | os.PathLike | None = None,
                  config: RuntimeConfig | None = None, backend: str = "auto") -> Detector:
    """Load a model with ``polywake.model_io.load_scorer`` (None: the shipped default model;
    ``backend``: auto, numpy or onnx) and wrap it in a Detector tuned by the config (see
    :func:`make_detector`)."""
    return detector_factory(model_path, config, backend)()


def make_detector(scorer: StreamingScorer, config: RuntimeConfig | None = None,
                  **kwargs: Any) -> Detector:
    """A Detector whose words follow the config: per-persona ``sensitivity`` (through the model
    card's calibration; words without one keep the card's threshold) and
    ``[listen] refractory_s``. A configured word the model lacks is a ConfigError."""
    if config is not None:
        sens = config.sensitivities(scorer.words)
        if sens:
            kwargs.setdefault("sensitivity", sens)
        if config.listen.refractory_s is not None:
            kwargs.setdefault("refractory_s", config.listen.refractory_s)
    return Detector(scorer, **kwargs)


def detector_factory(model_path: str | os.PathLike | None = None,
                     config: RuntimeConfig | None = None,
                     backend: str = "auto") -> Callable[[], Detector]:
    """Load the model once; return a function that makes a fresh Detector per stream."""
    try:
        from ..model_io import load_scorer
    except ImportError as e:
        raise PolywakeError(
            f"cannot load a model: polywake.model_io is not available in this install ({e})"
        ) from None
    scorer = load_scorer(model_path, backend=backend)
    make_detector(scorer, config)  # fail now, at startup, on a config the model cannot serve
    return lambda: make_detector(scorer, config)


def pcm_chunks(stream: BinaryIO, chunk_samples: int = CHUNK_SAMPLES) -> Iterator[np.ndarray]:
    """Raw 16-bit little-endian mono PCM at 16 kHz -> float32 chunks, until EOF."""
    need = 2 * chunk_samples
    rest = b""
    while True:
        data = stream.read(need)
        if not data:
            break
        data = rest + data
        even = len(data) - len(data) % 2
        rest = data[even:]
        if even:
            yield np.frombuffer(data[:even], dtype="<i2").astype(np.float32) / 32768.0
    if rest:
        log.warning("stdin ended in the middle of a 16-bit sample; dropped the last byte")


def open_source(source: str | None, device: str | None = None,
                stdin: BinaryIO | None = None) -> Iterator[np.ndarray]:
    if source is None:
        dev: int | str | None = int(device) if device and device.isdigit() else device
        return microphone_chunks(dev)
    if source == "-":
        return pcm_chunks(stdin if stdin is not None else sys.stdin.buffer)
    return _file_chunks(source)


def _file_chunks(path: str) -> Iterator[np.ndarray]:
    for block in iter_audio_blocks(path):
        for i in range(0, block.size, CHUNK_SAMPLES):
            yield block[i:i + CHUNK_SAMPLES]


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    if args.list_devices:
        print(list_devices())
        return 0
    config = load_config(args.config) if args.config else None
    detector = load_detector(args.model, config, args.backend)
    handlers = build_handlers(config.personas) if config is not None else {}
    router = WakeRouter(detector, config, handlers)
    if config is None:
        log.info("no --config: printing wake words only")
    source = open_source(args.source, args.device)
    try:
        for chunk in source:
            for ev in router.process(chunk):
                _emit(ev)
        for ev in router.finish():
            _emit(ev)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    # Let handlers of the last requests finish (each is bounded by its own timeout); on Ctrl-C
    # we do not get here, and the daemon worker threads end with the process.
    if config is not None and not router.runner.wait(longest_timeout(config) + 1.0):
        log.warning("exiting with handlers still running")
    log.info("stream ended after %.2f s of audio", router.time_s)
    return 0


def _emit(ev: dict) -> None:
    print(json.dumps(ev), flush=True)

