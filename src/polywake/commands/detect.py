"""`polywake detect FILE...`: wake-word detections in audio files, as text or JSON lines.

Files are streamed through the same Detector path as a microphone (80 ms chunks), so what is
printed here is what `polywake listen` would have fired.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..audio import AudioError
from ..detect import Detector
from ..model_io import BACKEND_HELP, BACKENDS, load_scorer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="audio files (WAV/FLAC/OGG, any rate/channels)")
    p.add_argument("--model", help="a .pwk or .safetensors model, or a shipped one: default "
                   "(the default) or tiny")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object per detection")
    p.add_argument("--sensitivity", type=float, help="0..1 for every word (default: card)")
    p.add_argument("--threshold", action="append", default=[], metavar="WORD=T",
                   help="a fixed score threshold for a word (repeatable)")
    p.add_argument("--vad", action="store_true", help="skip model work on silence")


def _thresholds(specs: list[str]) -> dict[str, float]:
    out = {}
    for s in specs:
        word, sep, val = s.rpartition("=")
        if not sep or not word:
            raise SystemExit(f"--threshold takes WORD=VALUE, got {s!r}")
        out[word] = float(val)
    return out


def run(args: argparse.Namespace) -> int:
    scorer = load_scorer(args.model, backend=args.backend)
    failed = 0
    for path in args.files:
        det = Detector(scorer, thresholds=_thresholds(args.threshold) or None,
                       sensitivity=args.sensitivity, vad=args.vad)
        try:
            found = list(det.iter_file(path)) + det.flush()
        except AudioError as e:
            print(f"polywake detect: {e}", file=sys.stderr)
            failed += 1
            continue
        for d in found:
            if args.json:
                print(json.dumps({"file": str(path), **d.to_dict()}), flush=True)
            else:
                print(f"{path}\t{d.word}\t{d.start_s:7.2f}-{d.end_s:7.2f} s\tscore {d.score:.3f}",
                      flush=True)
        if not found and not args.json:
            print(f"{path}\t(no wake word)")
    return 1 if failed else 0
