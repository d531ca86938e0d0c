"""Footprint of a detecting process per model size, for both backends (issue 8).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/footprint.py \
        [--seconds 300] [--pass-seconds 60] [--sweeps 2] [--mem-seconds 60]

For the STANDARD and TINY backbones with five words, float32, run by onnxruntime
(``OnnxScorer``) and by numpy (``NumpyScorer``): parameters, file size (and the size of the
section the backend reads), CPU seconds per audio second of the whole detector on one core,
and peak RSS over the Python + numpy baseline. Everything is bench/streaming.py's: the same
models (the shipped backbone of each size if there is one, random heads biased off), audio,
worker processes (CPU: all setups in one fresh process pinned to one core, interleaved
passes, the fastest pass is the estimate; RSS: a fresh process per setup that only detects,
minus a process that imports numpy and holds the same audio) and table cells. Prints a
markdown table; writes work_data/bench/footprint.json, no docs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # before numpy loads its BLAS (bench/_common does the rest)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import streaming  # noqa: E402
from _common import WORK, markdown_table  # noqa: E402

WORDS = 5
TARGET_RSS_MB = 30.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=300.0, help="timing audio (s)")
    ap.add_argument("--pass-seconds", type=float, default=60.0,
                    help="audio per timed pass (each a fresh stream; the fastest counts)")
    ap.add_argument("--sweeps", type=int, default=2, help="times through the whole audio")
    ap.add_argument("--mem-seconds", type=float, default=60.0,
                    help="audio streamed by the memory processes")
    a = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="pw-footprint-") as d:
        tmp = Path(d)
        setups, sources = streaming.build_models(tmp, n_words=(WORDS,), quants=("float32",))
        audio_path, audio_what = streaming.timing_audio(a.seconds, tmp)
        pcm = np.load(audio_path)
        passes = {"pass_s": min(a.pass_seconds, pcm.size / streaming.SR), "sweeps": a.sweeps}
        tm, base = streaming.measure_setups(setups, audio_path, passes, a.mem_seconds)
    rows = []
    for s, r in zip(setups, streaming.polywake_rows(setups, tm, base), strict=True):
        over = s["mem"]["peak_rss_mb"] - base["peak_rss_mb"]
        rows.append([s["backbone"], s["backend"], f"{s['params']:,}",
                     f"{s['kib']:.0f} ({s['section_kib']:.0f})", r[5], r[6],
                     f"{s['time']['step_us']:.0f}", r[10],
                     f"{over:.1f}" + (" (**met**)" if over <= TARGET_RSS_MB else " (missed)"),
                     r[12]])
    table = markdown_table(
        ["size", "backend", "parameters (5 words)", "file KiB (section the backend reads)",
         "CPU s / audio s, 1 core (fastest)", "median", "step µs", "peak RSS MiB",
         f"over Python + numpy MiB (target <= {TARGET_RSS_MB:g})",
         "torch / onnxruntime imported"], rows)
    text = "\n".join([
        f"## Footprint per model size ({WORDS} words, float32; bench/footprint.py)", "",
        f"Audio: {audio_what}, 80 ms int16 chunks through `Detector.process`; "
        f"{passes['pass_s']:g} s passes, {a.sweeps} sweeps. Backbones: "
        f"{', '.join(f'{k} {v}' for k, v in sources.items())}. Baseline (Python + numpy "
        f"holding the audio): {base['peak_rss_mb']:.1f} MiB; memory processes stream "
        f"{a.mem_seconds:g} s. Events during the timing: "
        f"{sum(s['time']['events'] for s in setups)} (should be 0).", "",
        table, "", f"Run time {time.time() - t0:.0f} s."])
    print(text)
    (WORK / "bench").mkdir(parents=True, exist_ok=True)
    (WORK / "bench" / "footprint.json").write_text(json.dumps(
        {"setups": setups, "baseline": base, "frontend": tm["frontend_cpu_s"] / tm["audio_s"],
         "text": text}, indent=1, default=str))


if __name__ == "__main__":
    main()
