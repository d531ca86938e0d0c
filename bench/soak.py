"""Soak: hours of audio through one Detector; memory must stay flat and scores must not drift.

    nice -n 15 python bench/soak.py                   # 24 h of audio (default)
    nice -n 15 python bench/soak.py --hours 0.5       # a quick run
    python bench/soak.py --hours 2 --json work_data/soak.json

The audio is procedural and deterministic: noise whose level wanders, plus speech-like
bursts (harmonic tones with a moving pitch and a syllable envelope) every few seconds. It is
streamed as fast as the CPU allows, in 80 ms chunks, through one Detector with a 5-word model:
the shipped ``assets/default.pwk`` when there is one, else a random-weight model exported here
(``--size standard|tiny``). Thresholds are set so the random model fires now and then, so the
decision logic, its refractory periods and the suppressed-event log all run too.

Measured:

* RSS (VmRSS) and Python object count, sampled every simulated hour (or every 1/12 of a
  shorter run); "flat" means max - min after warm-up (the first sample interval) <= 5 MB;
* score drift: the same 60 s probe (3 s of silence first, chunk-aligned) scored inside the
  stream at the start and at the end must give identical rows, bit for bit; and a fresh
  Detector on the shared scorer must give identical rows before and after the soak;
* wall time, CPU seconds (process time) per audio second, detections per hour.

Exit status 1 if memory is not flat or the scores drifted.
"""

from __future__ import annotations

import argparse
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import gc  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from polywake.audio import SAMPLE_RATE  # noqa: E402
from polywake.detect import Detector  # noqa: E402
from polywake.model_io import DEFAULT_MODEL, OnnxScorer  # noqa: E402

WORDS = ["alexa", "echo", "amazon", "computer", "hey samuel"]
BLOCK_S = 60  # audio is made one simulated minute at a time
PROBE_S = 60
FLAT_MB = 5.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def make_audio(minute: int, seconds: int = BLOCK_S) -> np.ndarray:
    """One simulated minute: wandering noise + speech-like bursts; a pure function of
    ``minute``, so any run can be replayed."""
    rng = np.random.default_rng([7, int(minute < 0), abs(minute)])  # <0: probe, calibration
    n = seconds * SAMPLE_RATE
    level = 10 ** rng.uniform(-3, -1.3)  # -60 .. -26 dBFS background
    x = level * rng.standard_normal(n)
    t = np.arange(n) / SAMPLE_RATE
    start = rng.uniform(0.0, 2.0)
    while start < seconds - 1.2:
        dur = rng.uniform(0.3, 1.1)
        m = (t >= start) & (t < start + dur)
        tt = t[m] - start
        f0 = rng.uniform(90, 260) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 4) * tt))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        voiced = sum(np.sin(k * phase) / k for k in range(1, 9))
        env = np.sin(np.pi * tt / dur) ** 2 * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * tt) ** 2)
        x[m] += rng.uniform(0.05, 0.5) * env * voiced
        start += dur + rng.uniform(0.5, 6.0)
    return np.clip(x, -1, 1).astype(np.float32)


def stable_malloc() -> bool:
    """Fix glibc's mmap threshold (256 KiB) so big temporary arrays (the generated minutes of
    audio) are returned to the OS when freed; with the default *dynamic* threshold they stay
    in the heap and RSS wanders by tens of MB with allocation order, hiding what the detector
    itself holds. The detector's own allocations are small and unaffected."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 256 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def probe_audio() -> np.ndarray:
    """3 s of silence (flushes the model's ~2 s of context) + the 60 s probe; both starts fall
    on 80 ms chunk boundaries, so in-stream scores can be compared bit for bit."""
    return np.concatenate([np.zeros(3 * SAMPLE_RATE, np.float32), make_audio(-1, PROBE_S)])


def random_model(size: str, folder: Path) -> Path:
    import torch

    from polywake.export import export_checkpoint
    from polywake.models.backbone import CONFIGS, Backbone
    from polywake.models.heads import WakeWordHeads
    from polywake.models.wakeword import save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = Backbone(CONFIGS[size]).eval()
    heads = WakeWordHeads(backbone.embed_dim, WORDS)
    ckpt = save_checkpoint(folder / f"soak_{size}.safetensors", backbone=backbone, heads=heads,
                           card={"kind": "soak-random-weights"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_checkpoint(ckpt, folder / f"soak_{size}.pwk")


def feed(det: Detector, audio: np.ndarray, chunk: int) -> tuple[int, list]:
    n_found, found = 0, []
    for i in range(0, audio.size, chunk):
        d = det.process(audio[i:i + chunk])
        n_found += len(d)
        found += d
    return n_found, found


class Recording:
    """Passes steps through to the shared scorer; keeps the rows while ``on``."""

    def __init__(self, scorer: Any) -> None:
        self.scorer, self.words = scorer, scorer.words
        self.frames_per_step = scorer.frames_per_step
        self.card = getattr(scorer, "card", None)
        self.on, self.rows = False, []

    def new_state(self) -> Any:
        return self.scorer.new_state()

    def step(self, frames: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        out, state = self.scorer.step(frames, state)
        if self.on:
            self.rows.append(np.array(out, copy=True))
        return out, state


def in_stream_probe(det: Detector, rec: Recording, probe: np.ndarray, chunk: int) -> np.ndarray:
    """Rows of the probe's last 60 s, fed inside the running stream. The probe starts on a
    step boundary of the stream, so its steps group the same frames whenever it is fed; the
    first rows (silence, and a step that straddles the start) depend on what came before and
    are left out."""
    step = det.scorer.frames_per_step * 160
    feed(det, np.zeros((-det.samples_seen) % step, np.float32), chunk)
    rec.on, rec.rows = True, []
    feed(det, probe, chunk)
    rec.on = False
    keep = PROBE_S * SAMPLE_RATE // step
    return np.concatenate(rec.rows)[-keep:]


def fresh_probe(scorer: Any, probe: np.ndarray, chunk: int) -> np.ndarray:
    rec = Recording(scorer)
    rec.on = True
    feed(Detector(rec), probe, chunk)
    return np.concatenate(rec.rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=24.0, help="hours of audio (default 24)")
    ap.add_argument("--model", type=Path, help="a .pwk (default: assets/default.pwk, else a "
                    "random-weight model of --size)")
    ap.add_argument("--size", choices=["standard", "tiny"], default="standard")
    ap.add_argument("--chunk-ms", type=float, default=80.0)
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("--default-malloc", action="store_true",
                    help="keep glibc's dynamic mmap threshold (RSS then wanders with the "
                    "audio generator's temporaries)")
    args = ap.parse_args(argv)
    mallopt = False if args.default_malloc else stable_malloc()

    with tempfile.TemporaryDirectory() as tmp:
        if args.model is not None:
            model = args.model
        elif DEFAULT_MODEL.exists():
            model = DEFAULT_MODEL
        else:
            model = random_model(args.size, Path(tmp))
        scorer = OnnxScorer(model)
        model_sha = hashlib.sha256(Path(model).read_bytes()).hexdigest()
        gc.collect()

    chunk = int(round(args.chunk_ms / 1000 * SAMPLE_RATE))
    probe = probe_audio()
    # thresholds the random model crosses a few times per hour of this audio
    cal = fresh_probe(scorer, make_audio(-2), chunk)
    thresholds = {w: float(np.quantile(cal[:, k], 0.999)) for k, w in enumerate(scorer.words)}
    fresh_before = fresh_probe(scorer, probe, chunk)

    rec = Recording(scorer)
    det = Detector(rec, thresholds=thresholds)
    stream_before = in_stream_probe(det, rec, probe, chunk)

    minutes = max(1, int(round(args.hours * 60)))
    every = max(1, min(60, minutes // 12))  # sample interval, simulated minutes
    print(f"soak: {minutes / 60:g} h of audio, {args.chunk_ms:g} ms chunks, model {model} "
          f"({len(scorer.words)} words), sampling every {every} min", flush=True)
    samples: list[dict[str, float]] = []
    detections = 0
    audio_s = 0.0
    gen_s = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    proc_wall = 0.0
    proc_cpu = 0.0
    for minute in range(minutes):
        if minute % every == 0:
            gc.collect()
            samples.append({"minute": minute, "rss_mb": round(rss_mb(), 2),
                            "objects": len(gc.get_objects()),
                            "wall_s": round(time.perf_counter() - t0, 1),
                            "suppressed": len(det.suppressed)})
            s = samples[-1]
            print(f"  t={minute / 60:6.2f} h  rss {s['rss_mb']:8.2f} MB  objects "
                  f"{s['objects']:7d}  detections {detections:6d}  wall {s['wall_s']:8.1f} s",
                  flush=True)
        g = time.perf_counter()
        audio = make_audio(minute)
        gen_s += time.perf_counter() - g
        w, c = time.perf_counter(), time.process_time()
        n, _ = feed(det, audio, chunk)
        proc_wall += time.perf_counter() - w
        proc_cpu += time.process_time() - c
        detections += n
        audio_s += audio.size / SAMPLE_RATE
        del audio
    detections += len(det.flush())
    gc.collect()
    samples.append({"minute": minutes, "rss_mb": round(rss_mb(), 2),
                    "objects": len(gc.get_objects()),
                    "wall_s": round(time.perf_counter() - t0, 1),
                    "suppressed": len(det.suppressed)})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0

    stream_after = in_stream_probe(det, rec, probe, chunk)
    fresh_after = fresh_probe(scorer, probe, chunk)
    after_warmup = samples[1:] if len(samples) > 2 else samples
    rss = [s["rss_mb"] for s in after_warmup]
    summary = {
        "hours": audio_s / 3600, "chunk_ms": args.chunk_ms, "model": str(model),
        "model_sha256": model_sha,
        "fixed_mmap_threshold": mallopt,
        "words": scorer.words, "steps": det.gate_stats["steps"],
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
        "detector_wall_s": round(proc_wall, 1), "detector_cpu_s": round(proc_cpu, 1),
        "audio_generation_s": round(gen_s, 1),
        "cpu_s_per_audio_s": round(proc_cpu / audio_s, 6),
        "realtime_factor": round(proc_wall / audio_s, 6),
        "detections": detections, "detections_per_hour": round(detections / (audio_s / 3600), 2),
        "rss_mb_first": samples[0]["rss_mb"], "rss_mb_last": samples[-1]["rss_mb"],
        "rss_mb_spread_after_warmup": round(max(rss) - min(rss), 2),
        "objects_spread_after_warmup": max(s["objects"] for s in after_warmup)
        - min(s["objects"] for s in after_warmup),
        "memory_flat": max(rss) - min(rss) <= FLAT_MB,
        "in_stream_probe_identical": bool(np.array_equal(stream_before, stream_after)),
        "in_stream_probe_max_abs_diff": float(np.max(np.abs(stream_before - stream_after))),
        "fresh_probe_identical": bool(np.array_equal(fresh_before, fresh_after)),
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    ok = summary["memory_flat"] and summary["in_stream_probe_identical"] \
        and summary["fresh_probe_identical"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
