"""`polywake features FILE...`: per-frame log-mel features, streamed as the detector sees them."""

from __future__ import annotations

import argparse

import numpy as np

from ..audio import SAMPLE_RATE, iter_audio_blocks
from ..features import HOP, WIN, StreamingLogMel


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+")
    p.add_argument("--every", type=int, default=10, help="print every Nth frame (default 10)")


def run(args: argparse.Namespace) -> int:
    for path in args.files:
        mel = StreamingLogMel()
        i = 0
        print(f"# {path}: frame time_s energy mel[0:8]")
        for block in iter_audio_blocks(path):
            for row in mel.process(block):
                if i % args.every == 0:
                    t = (i * HOP + WIN / 2) / SAMPLE_RATE
                    head = " ".join(f"{v:6.2f}" for v in row[:8])
                    print(f"{i:6d} {t:7.3f} {float(np.mean(row)):7.2f} {head}")
                i += 1
        print(f"# {path}: {i} frames")
    return 0
