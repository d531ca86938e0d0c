"""Footprint of a detecting process per model size, for both backends (issue 8).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python bench/footprint.py \
        [--seconds 300] [--pass-seconds 60] [--sweeps 2] [--mem-seconds 60]

For the STANDARD and TINY backbones with five words, float32, run by onnxruntime
(``OnnxScorer``) and by numpy (``NumpyScorer``): parameters, file size (and the size of the
section the backend reads), CPU seconds per audio second of the whole detector on one core,
and peak RSS over the Python + numpy baseline; and the accuracy of the shipped model of each size
(mean FRR at 0.5 FA/h, read from bench/default_model.py's JSON). Everything else is
bench/streaming.py's: the same
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
ROOT = Path(__file__).resolve().parents[1]
# Accuracy of the shipped model of each size, as bench/default_model.py measured it (same
# evaluation for both: held-out TTS voices at 10 dB, false accepts on the eval background).
FRR_JSON = {"standard": WORK / "bench" / "default_model-assets-default.json",
            "tiny": WORK / "bench" / "default_model-tiny-model.json"}
FRR_COMMAND = {"standard": "bench/default_model.py",
               "tiny": "bench/default_model.py --model runs/tiny/model.safetensors"}


def frr_cell(size: str) -> str:
    f = FRR_JSON.get(size)
    if f is None or not f.exists():
        return f"(run {FRR_COMMAND.get(size, 'bench/default_model.py')})"
    return f"{100 * json.loads(f.read_text())['mean_frr_at_0.5']:.1f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    streaming.add_timing_arguments(ap, seconds=300.0)
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
                     r[12], frr_cell(s["backbone"])])
    table = markdown_table(
        ["size", "backend", "parameters (5 words)", "file KiB (section the backend reads)",
         "CPU s / audio s, 1 core (fastest)", "median", "step µs", "peak RSS MiB",
         f"over Python + numpy MiB (target <= {TARGET_RSS_MB:g})",
         "torch / onnxruntime imported",
         "mean FRR @0.5 FA/h (shipped model, held-out TTS, 10 dB)"], rows)
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
