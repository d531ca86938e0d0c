"""`polywake demo` (what `make demo` runs): the shipped default model on the shipped example.

The example recording has "alexa, ..." and "hey samuel, ..." requests (TTS voices that the
model never trained on, over real background noise). The demo prints each detection, then
routes each request to its persona's handler (assets/personas.toml), which prints what it got.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..model_io import BACKEND_HELP, BACKENDS, DEFAULT_MODEL, load_scorer

ASSETS = Path(__file__).resolve().parents[1] / "assets"
EXAMPLE = ASSETS / "examples" / "alexa_hey_samuel.flac"
PERSONAS = ASSETS / "personas.toml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    p.add_argument("--audio", type=Path, default=EXAMPLE)
    p.add_argument("--config", type=Path, default=PERSONAS)


def run(args: argparse.Namespace) -> int:
    from ..runtime.listen import make_detector
    from ..runtime.personas import load_config
    from ..runtime.router import run_demo

    scorer = load_scorer(args.model, backend=args.backend)
    config = load_config(args.config)
    print(f"model: {args.model.name} — words: {', '.join(scorer.words)}")
    print(f"audio: {args.audio}")
    detector = make_detector(scorer, config)
    results = run_demo(detector, args.audio, args.config)
    personas = sorted({r["persona"] for r in results})
    print(f"{len(results)} request(s) routed to persona(s): {', '.join(personas) or 'none'}")
    return 0
