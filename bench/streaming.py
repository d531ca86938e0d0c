"""Streaming cost, memory, latency and exactness of the whole detector (issue 6 part 5).

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python bench/streaming.py \
        [--seconds 600] [--repeats 3] [--latency-voices 24] [--doc docs/STREAMING_BENCH.md]

One run measures, on one pinned core, one thread everywhere:

1. CPU seconds per audio second of the whole detector, ``Detector.process`` (int16 front end
   + log-mel + ONNX step + decisions) fed 80 ms int16 chunks, for models of 1, 5 and 10 words
   on the STANDARD and TINY backbones, float32 and int8 ``.pwk``. Cost does not depend on
   weights, so the models are the shipped backbone (``assets/backbone.safetensors``, if it is
   there, else a random one) with random heads, saved with ``save_checkpoint`` and exported
   with ``export_checkpoint`` in a temp dir. Each setup runs in a fresh process that imports
   only the runtime (polywake.detect, polywake.model_io) and streams the audio ``--repeats``
   times (reset between); the table gives the fastest pass (others only add interference
   from the shared CPU) and the median.
2. Peak RSS (VmHWM) of those processes, minus a baseline process that only imports numpy
   and holds and chunks the same audio; and whether torch was imported (it must not be).
3. Detection latency with the shipped default model (``assets/default.pwk``, or
   ``--latency-model``): each product word spoken by test-split TTS voices, trimmed with
   ``trim_silence``, placed in silence + stationary noise (Speech Commands' noise files) at
   20 dB SNR with a known start and end sample, streamed through a fresh ``Detector``.
   Reported: emitted time - word end (emitted = the end of the 80 ms chunk whose
   ``process()`` returned the event; ``decided_s``, the audio the decision had heard, too),
   and the start/end estimates' errors against the true placement. Skipped with a message
   when the model or the TTS engines are missing.
4. Streaming == offline: ``Detector.scores()`` over random chunkings (1..5000 samples, 80 ms,
   all at once) of the float32 ``.pwk`` against ``sigmoid(WakeWordModel.forward(logmel_torch(
   whole signal)))`` in torch; max |difference| must be <= 1e-4 (int8 reported alongside).
5. openWakeWord (pyopen-wakeword in the peers' venv, bench/peers.py's OwwEngine with TFLite on
   one thread) with 1, 5 and 10 models loaded at once (the wheel has 5; 10 loads each twice),
   on the same audio, in the same kind of process, with its own numpy-only baseline.

Audio: bench/peers.py's timing audio (600 s of eval-split LibriSpeech and music, int16) when
the shared data is there, else noise with speech-like bursts. The tables are printed and
written, with this command, into the section of ``--doc`` between the markers below.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # before numpy loads its BLAS (bench/_common does the rest)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ROOT,
    WORK,
    cpu_timer,
    markdown_table,
    peak_rss_mb,
    pin_to_one_core,
    single_thread_env,
    thread_count,
)

SR = 16000
CHUNK = 1280  # 80 ms, as a microphone driver delivers it
ASSETS = ROOT / "src" / "polywake" / "assets"
PROJECT_PY = ROOT / ".venv" / "bin" / "python"
BEGIN = "<!-- bench/streaming.py: begin -->"
END = "<!-- bench/streaming.py: end -->"
WORDS = ["alexa", "echo", "amazon", "computer", "hey samuel", "jarvis", "smart mirror",
         "snowboy", "view glass", "hey computer"]
N_WORDS = (1, 5, 10)
TOL = 1e-4
TARGET_CPU = 0.01
AIM_CPU = 0.003
TARGET_RATIO = 1.1
TARGET_POS_S = 0.1
MAX_LATE_S = 2.0


# --------------------------------------------------------------------------------------------
# Workers (fresh processes; the detector's imports nothing but the runtime)


def worker_detect(job: dict) -> dict:
    """Stream the audio through Detector.process ``repeats`` times; CPU per pass, peak RSS."""
    pin_to_one_core()
    from polywake.detect import Detector
    from polywake.features import StreamingLogMel
    from polywake.model_io import OnnxScorer

    import_rss = peak_rss_mb()
    pcm = np.load(job["audio"])
    t0 = time.perf_counter()
    scorer = OnnxScorer(job["model"], threads=1)
    det = Detector(scorer)
    load_s = time.perf_counter() - t0
    for i in range(0, SR, CHUNK):  # warm-up: onnxruntime's first-call allocations
        det.process(pcm[i:i + CHUNK])
    cpu, wall, events = [], [], 0
    for _ in range(job["repeats"]):
        det.reset()
        with cpu_timer() as t:
            for i in range(0, pcm.size, CHUNK):
                events += len(det.process(pcm[i:i + CHUNK]))
            events += len(det.flush())
        cpu.append(t.cpu_s)
        wall.append(t.wall_s)
    mel = StreamingLogMel()
    with cpu_timer() as tm:  # the front end alone, for the split (int16 -> float as Detector)
        for i in range(0, pcm.size, CHUNK):
            mel.process(pcm[i:i + CHUNK].astype(np.float32) / 32767.0)
    return {"cpu_s": cpu, "wall_s": wall, "frontend_cpu_s": tm.cpu_s,
            "audio_s": pcm.size / SR, "peak_rss_mb": peak_rss_mb(), "threads": thread_count(),
            "torch_imported": "torch" in sys.modules, "load_s": load_s, "events": events,
            "import_rss_mb": import_rss,
            "words": len(scorer.words)}


def worker_baseline(job: dict) -> dict:
    """Python + numpy holding and chunking the same audio: what every setup's RSS is over."""
    pin_to_one_core()
    pcm = np.load(job["audio"])
    with cpu_timer() as t:
        for i in range(0, pcm.size, CHUNK):
            pcm[i:i + CHUNK].tobytes()
    return {"cpu_s": [t.cpu_s], "audio_s": pcm.size / SR, "peak_rss_mb": peak_rss_mb(),
            "threads": thread_count(), "torch_imported": "torch" in sys.modules}


def worker_oww(job: dict) -> dict:
    """openWakeWord (peers' venv) with ``models`` models, as bench/peers.py times it, repeated."""
    pin_to_one_core()
    from peers import make_engine, run_engine, tflite_one_thread

    tflite_one_thread()
    pcm = np.load(job["audio"])
    eng = make_engine("oww", job["models"])
    run_engine(eng, pcm[:SR])  # warm-up
    cpu, wall = [], []
    for _ in range(job["repeats"]):
        eng.reset()
        with cpu_timer() as t:
            run_engine(eng, pcm)
        cpu.append(t.cpu_s)
        wall.append(t.wall_s)
    return {"cpu_s": cpu, "wall_s": wall, "audio_s": pcm.size / SR,
            "peak_rss_mb": peak_rss_mb(), "threads": thread_count(), "models": eng.columns}


WORKERS = {"detect": worker_detect, "baseline": worker_baseline, "oww": worker_oww}


def run_worker(python: Path, kind: str, job: dict) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(job, fh)
    env = single_thread_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench")])
    try:
        r = subprocess.run([str(python), __file__, "--worker", kind, fh.name], env=env,
                           stdout=subprocess.PIPE, text=True, check=True)
    finally:
        os.unlink(fh.name)
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Models


def base_backbone(name: str):
    """The shipped backbone of this size if there is one, else a random one (seed 0)."""
    import torch

    from polywake.models.backbone import CONFIGS, Backbone
    from polywake.models.wakeword import load_checkpoint

    for f in (ASSETS / "backbone.safetensors", ASSETS / f"backbone_{name}.safetensors"):
        if f.exists():
            bb = load_checkpoint(f)[0]
            if bb.config.name == name:
                return bb, f"shipped {f.name}"
    torch.manual_seed(0)
    return Backbone(CONFIGS[name]).eval(), "random init"


def build_models(tmp: Path) -> tuple[list[dict], dict[str, str]]:
    """Checkpoints and .pwk files for every (backbone, words, quantization) setup."""
    import torch

    from polywake.export import export_checkpoint
    from polywake.models.backbone import count_parameters
    from polywake.models.heads import WakeWordHeads
    from polywake.models.wakeword import save_checkpoint

    setups, sources = [], {}
    for name in ("standard", "tiny"):
        bb, sources[name] = base_backbone(name)
        for n in N_WORDS:
            heads = WakeWordHeads(bb.embed_dim, WORDS[:n])
            g = torch.Generator().manual_seed(n)
            with torch.no_grad():  # scores spread over (0, 1), so the exactness check bites
                for b in heads.b2:
                    b.copy_(torch.randn(1, generator=g))
            ckpt = tmp / f"{name}_{n}.safetensors"
            save_checkpoint(ckpt, backbone=bb, heads=heads, card={"name": f"bench {name} {n}"})
            params = count_parameters(bb) + count_parameters(heads)
            for q in ("float32", "int8"):
                pwk = export_checkpoint(ckpt, tmp / f"{name}_{n}_{q}.pwk", int8=q == "int8")
                setups.append({"backbone": name, "words": n, "quant": q, "ckpt": str(ckpt),
                               "pwk": str(pwk), "kib": pwk.stat().st_size / 1024,
                               "params": params})
    return setups, sources


# --------------------------------------------------------------------------------------------
# Audio


def timing_audio(seconds: float, tmp: Path) -> tuple[Path, str]:
    """bench/peers.py's timing audio (real eval speech + music) or, without the shared data,
    noise with speech-like bursts; int16 .npy."""
    try:
        from _common import peer_eval_set
        from peers import timing_audio as peers_audio

        path = peers_audio(peer_eval_set().negatives, seconds)
        return path, f"{seconds:.0f} s of eval-split LibriSpeech + music (bench/peers.py)"
    except (SystemExit, ImportError, OSError) as e:
        print(f"no shared data ({e}); timing on synthetic audio", file=sys.stderr)
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    env = (np.sin(2 * np.pi * 0.4 * t) > 0.2) * 0.2
    x = 0.02 * rng.standard_normal(n) + env * np.sin(2 * np.pi * 180 * t)
    path = tmp / "timing.npy"
    np.save(path, np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16))
    return path, f"{seconds:.0f} s of synthetic noise + tone bursts (no shared data)"


# --------------------------------------------------------------------------------------------
# 4. Streaming == offline


def exactness(setups: list[dict], audio: np.ndarray, seed: int = 0) -> list[list[str]]:
    import torch

    from polywake.detect import Detector
    from polywake.features import logmel_torch
    from polywake.model_io import OnnxScorer
    from polywake.models.wakeword import WakeWordModel, load_checkpoint

    rng = np.random.default_rng(seed)
    x = audio.astype(np.float32) / 32767.0
    rows = []
    for s in setups:
        if s["words"] != 5:
            continue
        bb, heads, card, _ = load_checkpoint(s["ckpt"])
        model = WakeWordModel(bb, heads, card).eval()
        with torch.no_grad():
            ref = torch.sigmoid(model(logmel_torch(torch.from_numpy(x)[None])))[0].numpy()
        det = Detector(OnnxScorer(s["pwk"]))
        worst, lengths = 0.0, []
        chunkings = {"random 1..5000": None, "80 ms": CHUNK, "whole signal": x.size}
        for size in chunkings.values():
            det.reset()
            if size is None:
                cuts = np.cumsum(rng.integers(1, 5001, x.size // 1000 + 2))
                cuts = cuts[cuts < x.size]
            else:
                cuts = np.arange(size, x.size, size)
            got = np.concatenate([det.scores(c) for c in np.split(x, cuts)])
            lengths.append(got.shape[0])
            n = min(got.shape[0], ref.shape[0])
            worst = max(worst, float(np.abs(got[:n] - ref[:n]).max()))
        same_len = len(set(lengths)) == 1 and lengths[0] == ref.shape[0]
        ok = same_len and (worst <= TOL if s["quant"] == "float32" else True)
        rows.append([s["backbone"], s["quant"], f"{x.size / SR:.0f} s, {ref.shape[0]} steps",
                     ", ".join(chunkings), f"{worst:.2e}",
                     ("**yes**" if ok else "**NO**") if s["quant"] == "float32"
                     else "(not required)"])
    return rows


# --------------------------------------------------------------------------------------------
# 3. Latency


def latency(model: Path, n_voices: int, seed: int = 0) -> tuple[str, list[list[str]]]:
    """-> (what was measured, table rows), or (reason it was skipped, [])."""
    if not model.exists():
        return (f"skipped: {model.relative_to(ROOT) if model.is_relative_to(ROOT) else model} "
                "does not exist yet (re-run once the default model is shipped)"), []
    from polywake.audio import load_audio
    from polywake.data import splits, tts
    from polywake.detect import Detector
    from polywake.model_io import OnnxScorer
    from polywake.train.mixing import rms, trim_silence

    voices = [v for v in tts.list_voices() if splits.split_of_key(v.speaker) == "test"]
    if not voices:
        return "skipped: no TTS engine with test-split voices is installed", []
    # Spread over speakers (round robin), then engines and accents.
    by_spk: dict[str, list] = {}
    for v in sorted(voices, key=lambda v: v.voice_id):
        by_spk.setdefault(v.speaker, []).append(v)
    picked: list = []
    while len(picked) < n_voices and any(by_spk.values()):
        for lst in by_spk.values():
            if lst and len(picked) < n_voices:
                picked.append(lst.pop(0))
    noise_dir = splits.shared_data_dir() / "noise" / "speech_commands"
    noise = [load_audio(f) for f in sorted(noise_dir.glob("*.flac"))] if noise_dir.exists() \
        else []
    scorer = OnnxScorer(model)
    det = Detector(scorer)
    rng = np.random.default_rng(seed)
    res: dict[str, list[dict]] = {w: [] for w in scorer.words}
    failed = 0
    for w in scorer.words:
        for v in picked:
            try:
                clip = trim_silence(tts.synthesize(w, v))
            except tts.TTSError:
                failed += 1
                continue
            clip = clip * (10 ** (-20 / 20) / rms(clip))  # -20 dBFS speech
            lead, tail = int(rng.uniform(1.0, 1.6) * SR), int(1.5 * SR)
            x = np.zeros(lead + clip.size + tail, np.float32)
            x[lead:lead + clip.size] = clip
            if noise:
                nz = noise[int(rng.integers(len(noise)))]
                i = int(rng.integers(0, max(1, nz.size - x.size)))
                seg = np.resize(nz[i:i + x.size], x.size)
                x += seg * (rms(clip) / rms(seg) / 10 ** (20 / 20))
            x += (1e-4 * rng.standard_normal(x.size)).astype(np.float32)
            start_s, end_s = lead / SR, (lead + clip.size) / SR
            det.reset()
            found = []
            for i in range(0, x.size, CHUNK):
                found += [(d, det.now_s) for d in det.process(x[i:i + CHUNK])]
            found += [(d, det.now_s) for d in det.flush()]
            # A detection of the word counts if it was emitted after the word began and at
            # most MAX_LATE_S after it ended; anything else is a false accept.
            mine = [(d, t) for d, t in found
                    if d.word == w and start_s < t <= end_s + MAX_LATE_S]
            r = {"others": len(found) - min(1, len(mine)), "hit": bool(mine)}
            if mine:
                d, t = mine[0]
                r.update(emit=t - end_s, decided=d.decided_s - end_s,
                         start_err=d.start_s - start_s, end_err=d.end_s - end_s)
            res[w].append(r)
    rows = []

    def row(name: str, rs: list[dict]) -> list[str]:
        hits = [r for r in rs if r["hit"]]
        if not hits:
            return [name, str(len(rs)), "0%", "-", "-", "-", "-", "-",
                    str(sum(r["others"] for r in rs))]
        em = np.array([r["emit"] for r in hits])
        dc = np.array([r["decided"] for r in hits])
        se = np.array([r["start_err"] for r in hits])
        ee = np.array([r["end_err"] for r in hits])
        within = np.mean((np.abs(se) <= TARGET_POS_S) & (np.abs(ee) <= TARGET_POS_S))
        return [name, str(len(rs)), f"{100 * len(hits) / len(rs):.0f}%",
                f"{1000 * np.median(em):.0f} / {1000 * np.percentile(em, 90):.0f}",
                f"{1000 * np.median(dc):.0f} / {1000 * np.percentile(dc, 90):.0f}",
                f"{1000 * np.median(se):+.0f} ({1000 * np.median(np.abs(se)):.0f})",
                f"{1000 * np.median(ee):+.0f} ({1000 * np.median(np.abs(ee)):.0f})",
                f"{100 * within:.0f}%", str(sum(r["others"] for r in rs))]

    for w, rs in res.items():
        rows.append(row(w, rs))
    rows.append(row("**all**", [r for rs in res.values() for r in rs]))
    what = (f"{model.name}, {len(picked)} test-split voices "
            f"({', '.join(sorted({v.engine for v in picked}))}), "
            f"{failed} syntheses failed; words at -20 dBFS in Speech Commands noise at 20 dB "
            f"SNR, 1.0-1.6 s lead, 1.5 s tail; card thresholds")
    return what, rows


# --------------------------------------------------------------------------------------------
# Orchestration


def summarize(r: dict) -> tuple[float, float]:
    """(fastest, median) CPU s per audio s over the passes."""
    c = [x / r["audio_s"] for x in r["cpu_s"]]
    return min(c), statistics.median(c)


def write_doc(doc: Path, text: str) -> None:
    """Replace this script's section of ``doc`` (between BEGIN and END), keeping the rest."""
    block = f"{BEGIN}\n{text.rstrip()}\n{END}\n"
    old = doc.read_text() if doc.exists() else "# Streaming benchmark\n\n"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):].lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="timing audio (s)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over it per setup")
    ap.add_argument("--exact-seconds", type=float, default=30.0)
    ap.add_argument("--latency-model", type=Path, default=ASSETS / "default.pwk")
    ap.add_argument("--latency-voices", type=int, default=24)
    ap.add_argument("--no-oww", action="store_true")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "STREAMING_BENCH.md")
    ap.add_argument("--no-doc", action="store_true")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    t_start = time.time()
    cmd = "OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python bench/streaming.py " + " ".join(
        sys.argv[1:])
    out: list[str] = []
    results: dict[str, Any] = {"argv": sys.argv[1:]}
    with tempfile.TemporaryDirectory(prefix="pw-stream-") as d:
        tmp = Path(d)
        setups, sources = build_models(tmp)
        audio_path, audio_what = timing_audio(a.seconds, tmp)
        pcm = np.load(audio_path)
        print(f"models built ({sources}); audio: {audio_what}", file=sys.stderr)

        # 1 + 2: CPU and memory, fresh processes.
        base = run_worker(PROJECT_PY, "baseline", {"audio": str(audio_path)})
        for s in setups:
            s["run"] = run_worker(PROJECT_PY, "detect", {"model": s["pwk"], "audio":
                                                         str(audio_path),
                                                         "repeats": a.repeats})
            print(f"  timed {s['backbone']} x{s['words']} {s['quant']}: "
                  f"{summarize(s['run'])[0]:.4f}", file=sys.stderr)
        oww: list[dict] = []
        oww_base: dict | None = None
        oww_note = ""
        if not a.no_oww:
            try:
                from peers import venv_python

                py = venv_python()
                oww_base = run_worker(py, "baseline", {"audio": str(audio_path)})
                for n in N_WORDS:
                    r = run_worker(py, "oww", {"models": n, "audio": str(audio_path),
                                               "repeats": a.repeats})
                    oww.append(r)
                    print(f"  timed openWakeWord x{n}: {summarize(r)[0]:.4f}", file=sys.stderr)
            except (subprocess.CalledProcessError, OSError) as e:
                oww_note = f"openWakeWord not measured: {e}"

        rows = []
        by = {(s["backbone"], s["words"], s["quant"]): s for s in setups}
        for s in setups:
            r = s["run"]
            fast, med = summarize(r)
            one = summarize(by[(s["backbone"], 1, s["quant"])]["run"])[0]
            rows.append([f"polywake {s['backbone']}", s["quant"], s["words"],
                         f"{s['params'] / 1000:.0f}k / {s['kib']:.0f} KiB",
                         f"{fast:.4f}", f"{med:.4f}", f"{fast / one:.2f}",
                         f"{r['frontend_cpu_s'] / r['audio_s']:.4f}",
                         f"{r['peak_rss_mb']:.1f}", f"{r['peak_rss_mb'] - base['peak_rss_mb']:.1f}",
                         "yes (FAIL)" if r["torch_imported"] else "no", r["threads"]])
        for n, r in zip(N_WORDS, oww, strict=False):
            fast, med = summarize(r)
            rows.append(["openWakeWord", "float32 (TFLite)", n, ", ".join(r["models"][:5])
                         + (" (x2)" if n > 5 else ""),
                         f"{fast:.4f}", f"{med:.4f}", f"{fast / summarize(oww[0])[0]:.2f}",
                         "-", f"{r['peak_rss_mb']:.1f}",
                         f"{r['peak_rss_mb'] - oww_base['peak_rss_mb']:.1f}" if oww_base
                         else "-", "-", r["threads"]])
        cpu_table = markdown_table(
            ["engine", "weights", "words", "params / file", "CPU s / audio s (fastest)",
             "median", "x vs 1 word", "of which log-mel", "peak RSS MiB",
             "over baseline MiB", "torch imported", "threads"], rows)
        std5 = summarize(by[("standard", 5, "float32")]["run"])[0]
        std10 = summarize(by[("standard", 10, "float32")]["run"])[0]
        std1 = summarize(by[("standard", 1, "float32")]["run"])[0]
        checks = [
            f"- standard, 5 words, float32: {std5:.4f} CPU s / audio s "
            f"(target <= {TARGET_CPU}, aim {AIM_CPU}): "
            f"{'**met**' if std5 <= TARGET_CPU else '**missed**'}"
            f"{', aim met' if std5 <= AIM_CPU else ''}",
            f"- 10 words / 1 word (standard, float32): {std10 / std1:.2f} "
            f"(target <= {TARGET_RATIO}): {'**met**' if std10 / std1 <= TARGET_RATIO else '**missed**'}",
            f"- torch imported by a detecting process: "
            f"{'**yes (FAIL)**' if any(s['run']['torch_imported'] for s in setups) else 'no'}",
        ]
        if oww:
            o5 = summarize(oww[1])[0] if len(oww) > 1 else float("nan")
            checks.append(f"- openWakeWord with 5 models costs {o5 / std5:.1f}x polywake "
                          "standard with 5 words (float32)")
        base_line = (f"Baseline processes (numpy + the same audio, chunked): project venv "
                     f"{base['peak_rss_mb']:.1f} MiB"
                     + (f", peers' venv {oww_base['peak_rss_mb']:.1f} MiB" if oww_base else "")
                     + ".")

        # 4: exactness (in this process; torch is allowed here).
        n_exact = min(pcm.size, int(a.exact_seconds * SR))
        exact_rows = exactness(setups, pcm[:n_exact])
        exact_table = markdown_table(
            ["backbone (5 words)", "weights", "audio", "chunkings", "max abs(stream - offline)",
             f"<= {TOL:g}"], exact_rows)

    # 3: latency.
    lat_what, lat_rows = latency(a.latency_model, a.latency_voices)
    lat_table = markdown_table(
        ["word", "clips", "detected", "emitted - word end, ms (median / p90)",
         "decided_s - word end, ms (median / p90)", "start error ms, median (|median|)",
         "end error ms, median (|median|)", f"start and end within ±{TARGET_POS_S * 1000:.0f} ms",
         "other events"], lat_rows) if lat_rows else ""

    out += [
        "## Streaming cost, memory, latency, exactness (bench/streaming.py)", "",
        "Command (2 CPU cores shared with a training run; every setup in a fresh process "
        "pinned to one core, one thread):", "", f"    {cmd}", "",
        f"Measured {time.strftime('%Y-%m-%d')}. Audio: {audio_what}, fed as 80 ms int16 "
        f"chunks, {a.repeats} passes per setup (fastest and median pass shown). Models: "
        f"{', '.join(f'{k} backbone {v}' for k, v in sources.items())}, random heads "
        "(cost does not depend on the weights). polywake's row is `Detector.process` (int16 -> "
        "log-mel -> ONNX step -> decisions) with onnxruntime on one thread; openWakeWord's is "
        "bench/peers.py's OwwEngine (shared mel + embedding front end, one head per model, "
        "TFLite on one thread).", "",
        "### CPU and memory", "", cpu_table, "", base_line, "", *checks, "",
    ]
    if oww_note:
        out += [oww_note, ""]
    out += ["### Streaming scores == offline scores", "",
            "`Detector.scores()` (onnxruntime, .pwk) over each chunking against "
            "`sigmoid(WakeWordModel.forward(logmel_torch(whole signal)))` in torch; the same "
            "number of steps for every chunking is required too.", "", exact_table, "",
            "### Detection latency", "", lat_what, ""]
    if lat_table:
        out += [lat_table, "",
                "Emitted = end of the 80 ms chunk whose `process()` returned the event; "
                "`decided_s` = the end of the audio the decision had heard. Errors are "
                "estimate - true placement (negative: early). Target: start and end within "
                f"±{TARGET_POS_S * 1000:.0f} ms. A clip is detected when its word is emitted "
                f"after the word began and at most {MAX_LATE_S:g} s after it ended; other "
                "events = every other event on the clip (other words, or the word outside "
                "that span).", ""]
    out.append(f"Run time {time.time() - t_start:.0f} s.")
    text = "\n".join(out)
    print(text)
    results["text"] = text
    (WORK / "bench").mkdir(parents=True, exist_ok=True)
    (WORK / "bench" / "streaming.json").write_text(json.dumps(
        {"setups": setups, "baseline": base, "oww": oww, "oww_baseline": oww_base,
         "exact": exact_rows, "latency": lat_rows}, indent=1, default=str))
    if not a.no_doc:
        write_doc(a.doc, text)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        res = WORKERS[sys.argv[2]](json.loads(Path(sys.argv[3]).read_text()))
        print(json.dumps(res))
    else:
        main()
