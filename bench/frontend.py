"""Front-end cost: CPU seconds per audio second of the streaming log-mel, single thread.

    python bench/frontend.py [--seconds 600] [--chunk-ms 80]

Target (issue 2): <= 0.002 CPU s per audio s.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from polywake.features import StreamingLogMel  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--chunk-ms", type=float, nargs="+", default=[10, 20, 80, 160])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(int(args.seconds * 16000))).astype(np.float32)
    print(f"audio: {args.seconds:.0f} s synthetic noise, single thread")
    print("| chunk (ms) | CPU s per audio s | frames |")
    print("|---|---|---|")
    for ms in args.chunk_ms:
        n = int(16000 * ms / 1000)
        mel = StreamingLogMel()
        mel.process(audio[:n])  # warm-up: caches the window and filterbank
        mel.reset()
        t0 = time.process_time()
        frames = 0
        for i in range(0, audio.size, n):
            frames += mel.process(audio[i : i + n]).shape[0]
        cpu = time.process_time() - t0
        print(f"| {ms:g} | {cpu / args.seconds:.5f} | {frames} |")


if __name__ == "__main__":
    main()
