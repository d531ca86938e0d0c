"""Peer wake-word engines on the same real data and the same metric code as polywake.

    nice -n 10 .venv/bin/python bench/peers.py [--engines oww mww porcupine] [--time-seconds 600]

Engines (each ships its models inside its PyPI wheel, so all run offline):
* openWakeWord via ``pyopen-wakeword`` (model "hey_jarvis"): one score every 80 ms.
* microWakeWord via ``pymicro-wakeword`` ("hey_jarvis"): the engine's own decision statistic,
  the mean of its last 5 outputs, every 30 ms.
* Porcupine via ``pvporcupine==1.9.5`` (built-in keyword "jarvis"; 1.9.5 needs no access
  key): binary detections, so one operating point per sensitivity instead of a curve.

Data (bench/_common.peer_eval_set): positives = all real "jarvis" clips (the peers' models are
trained on "hey jarvis": they are measured on a phrase without "hey", which handicaps them;
Porcupine's keyword is "jarvis" itself). Negatives = the eval split of the background audio
(LibriSpeech eval speakers + wesnoth music) + the real clips of smart mirror, snowboy and
view glass. Positive clips get 0.5 s of trailing silence (as `polywake eval` does).

The peers need packages that should not enter the project's venv (pvporcupine 1.9.5 drags in
the ``enum34`` backport), so they run in their own venv, work_data/peers_venv, which this script
creates on first use. That venv runs this same file with ``--worker``: it scores files into
work_data/peers_cache (one .npz per engine and file; reruns only score what is missing) and
times the engines in fresh single-thread processes. This process then computes every metric
with polywake.evaluate, writes work_data/peers/{results.json,det.png,manifests} and prints the
tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Workers get their one-thread environment from the parent (single_thread_env), so importing
# numpy before _common here is harmless.
import numpy as np  # noqa: E402

from _common import (  # noqa: E402
    ROOT,
    WORK,
    cpu_timer,
    file_key,
    markdown_table,
    peak_rss_mb,
    pin_to_one_core,
    single_thread_env,
    thread_count,
    to_int16,
)

VENV = WORK / "peers_venv"
CACHE = WORK / "peers_cache"
OUT = WORK / "peers"
PEER_PACKAGES = ["numpy==2.4.6", "soundfile==0.14.0", "soxr==1.1.0", "pyopen-wakeword==1.1.0",
                 "pymicro-wakeword==2.5.0", "pvporcupine==1.9.5"]
CACHE_VERSION = 1
POS_PAD_S = 0.5
REFRACTORY_S = 1.0
FA_TARGETS = (0.1, 0.5, 1.0)
PV_SENSITIVITIES = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
OWW_BUILTIN = ["hey_jarvis", "alexa", "hey_mycroft", "hey_rhasspy", "okay_nabu"]
ENGINES = ("oww", "mww", "porcupine")


# --------------------------------------------------------------------------------------------
# Engines (imported and run only inside the peers' venv)


class OwwEngine:
    """openWakeWord: shared mel + speech-embedding front end, one head per model."""

    step_s = 0.08
    chunk = 1280

    def __init__(self, models: list[str]) -> None:
        from pyopen_wakeword import OpenWakeWord, OpenWakeWordFeatures
        from pyopen_wakeword.const import Model

        self.columns = list(models)
        self.feat = OpenWakeWordFeatures.from_builtin()
        self.heads = [OpenWakeWord.from_builtin(Model(m)) for m in models]
        # The front end starts with 8 s of silence to fill its windows and re-processes it on
        # every reset(); do that once and restore the state per file instead: the same as a
        # file preceded by 8 s of digital silence, without 8 s of compute per clip.
        self.process(np.zeros(self.chunk, np.int16))
        self._snap = (self.feat.audio.copy(), self.feat.new_audio_samples,
                      self.feat.mels.copy(), self.feat.new_mels,
                      [(h.embeddings.copy(), h.new_embeddings) for h in self.heads])

    def reset(self) -> None:
        audio, n_audio, mels, n_mels, heads = self._snap
        self.feat.audio, self.feat.new_audio_samples = audio.copy(), n_audio
        self.feat.mels, self.feat.new_mels = mels.copy(), n_mels
        for h, (emb, n) in zip(self.heads, heads, strict=True):
            h.embeddings, h.new_embeddings = emb.copy(), n

    def process(self, pcm: np.ndarray) -> list[list[float]]:
        best = [-1.0] * len(self.heads)
        for emb in self.feat.process_streaming(pcm.tobytes()):
            for i, h in enumerate(self.heads):
                for p in h.process_streaming(emb):
                    best[i] = max(best[i], p)
        # One row per 80 ms chunk (a chunk yields one score once the windows are full).
        return [best] if best[0] >= 0 else []


class MwwEngine:
    """microWakeWord: 10 ms micro-frontend features, one streaming inference every 3 frames."""

    chunk = 1280

    def __init__(self, model: str = "hey_jarvis") -> None:
        from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures
        from pymicro_wakeword.const import Model

        self.columns = [model]
        self.feat = MicroWakeWordFeatures()
        self.model = MicroWakeWord.from_builtin(Model(model))
        self.step_s = 0.01 * self.model.stride
        self.cutoff = float(self.model.probability_cutoff)

    def reset(self) -> None:
        self.feat.reset()
        self.model.reset()  # reloads the model: its streaming layers keep internal state

    def process(self, pcm: np.ndarray) -> list[list[float]]:
        rows = []
        for f in self.feat.process_streaming(pcm.tobytes()):
            p = self.model.process_streaming_prob(f)
            if not self.model._features:  # an inference ran (it clears its feature buffer)
                rows.append([float(p)])
        return rows


class PorcupineEngine:
    """Porcupine 1.9.5, one instance per sensitivity fed the same frames; 1.0 = detection."""

    chunk = 512

    def __init__(self, keyword: str = "jarvis",
                 sensitivities: tuple[float, ...] = PV_SENSITIVITIES) -> None:
        import ctypes

        import pvporcupine

        self._pv, self._ct = pvporcupine, ctypes
        self.keyword, self.sens = keyword, sensitivities
        self.columns = [f"{keyword}@{s:g}" for s in sensitivities]
        self.step_s = 512 / 16000
        self.handles: list = []
        self.reset()

    def reset(self) -> None:
        for h in self.handles:
            h.delete()
        self.handles = [self._pv.create(keywords=[self.keyword], sensitivities=[s])
                        for s in self.sens]

    def process(self, pcm: np.ndarray) -> list[list[float]]:
        if pcm.size != 512:
            return []
        ct = self._ct
        ptr = np.ascontiguousarray(pcm).ctypes.data_as(ct.POINTER(ct.c_short))
        res, row = ct.c_int(), []
        for h in self.handles:
            # The C call itself: the wrapper's process() copies the frame element by element
            # in Python, which would bill Python overhead to the engine.
            h.process_func(h._handle, ptr, ct.byref(res))
            row.append(1.0 if res.value >= 0 else 0.0)
        return [row]


def tflite_one_thread() -> None:
    """Make every TFLite interpreter the two tflite packages create use one thread.

    Neither package exposes a thread option and both pass no interpreter options, so TFLite
    starts its own thread pools (9 threads seen for openWakeWord). Wrap TfLiteInterpreterCreate
    on each library handle to pass options with num_threads = 1.
    """
    import ctypes as C

    import pymicro_wakeword.wakeword as mw
    import pyopen_wakeword.wakeword as ow

    for mod in (ow, mw):
        cls = mod.TfLiteWakeWord
        if getattr(cls, "_one_thread", False):
            continue
        orig = cls.__init__

        def init(self, *a, _orig=orig, **kw) -> None:
            _orig(self, *a, **kw)
            lib = self.lib
            real = lib.TfLiteInterpreterCreate
            lib.TfLiteInterpreterOptionsCreate.restype = C.c_void_p
            lib.TfLiteInterpreterOptionsSetNumThreads.argtypes = [C.c_void_p, C.c_int32]
            lib.TfLiteInterpreterOptionsDelete.argtypes = [C.c_void_p]

            def create(model, _options, _lib=lib, _real=real):
                opts = _lib.TfLiteInterpreterOptionsCreate()
                _lib.TfLiteInterpreterOptionsSetNumThreads(opts, 1)
                interp = _real(model, opts)
                _lib.TfLiteInterpreterOptionsDelete(opts)  # the interpreter keeps a copy
                return interp

            lib.TfLiteInterpreterCreate = create

        cls.__init__ = init
        cls._one_thread = True


def make_engine(name: str, n_models: int = 1):
    if name == "oww":
        return OwwEngine([OWW_BUILTIN[i % len(OWW_BUILTIN)] for i in range(n_models)])
    if name == "mww":
        return MwwEngine()
    if name == "porcupine":
        return PorcupineEngine()
    raise ValueError(name)


def run_engine(engine, pcm: np.ndarray) -> np.ndarray:
    rows: list[list[float]] = []
    for i in range(0, pcm.size, engine.chunk):
        rows += engine.process(pcm[i:i + engine.chunk])
    return np.asarray(rows, np.float32).reshape(-1, len(engine.columns))


def cache_path(engine: str, path: str | Path, pad_s: float) -> Path:
    return CACHE / engine / f"{file_key(path, engine, pad_s, CACHE_VERSION)}.npz"


def worker_score(job: dict) -> None:
    """Score the job's files with the engines whose cache entry is missing (decode once)."""
    from polywake.audio import atomic_open, iter_audio_blocks

    pin_to_one_core()
    tflite_one_thread()
    engines = {e: make_engine(e) for e in job["engines"]}
    for n, (path, pad_s) in enumerate(job["files"], 1):
        todo = [e for e in engines if not cache_path(e, path, pad_s).exists()]
        if not todo:
            continue
        pcm = to_int16(np.concatenate(list(iter_audio_blocks(path))))
        samples = pcm.size
        pcm = np.concatenate([pcm, np.zeros(int(round(pad_s * 16000)), np.int16)])
        for e in todo:
            eng = engines[e]
            eng.reset()
            scores = run_engine(eng, pcm)
            with atomic_open(cache_path(e, path, pad_s)) as fh:
                np.savez(fh, scores=scores, step_s=eng.step_s, duration_s=samples / 16000,
                         columns=np.array(eng.columns))
        if n % 100 == 0:
            print(f"  scored {n}/{len(job['files'])}", file=sys.stderr, flush=True)


def worker_time(job: dict) -> None:
    """CPU s per audio s of one engine setup on one pinned core, and this process's peak RSS.
    engine "none" is the baseline: Python + numpy + the same audio, chunked, no engine."""
    pin_to_one_core()
    if job.get("tflite_threads", 1) == 1:
        tflite_one_thread()
    pcm = np.load(job["audio"])
    name, n = job["engine"], job.get("models", 1)
    if name == "none":
        with cpu_timer() as t:
            for i in range(0, pcm.size, 1280):
                pcm[i:i + 1280].tobytes()
    else:
        # Porcupine is timed as deployed: one instance (scoring runs one per sensitivity).
        eng = PorcupineEngine(sensitivities=(0.5,)) if name == "porcupine" \
            else make_engine(name, n)
        run_engine(eng, pcm[:16000])  # warm-up: first-call allocations, lazy init
        eng.reset()
        with cpu_timer() as t:
            run_engine(eng, pcm)
    print(json.dumps({"engine": name, "models": n, "tflite_threads": job.get("tflite_threads", 1),
                      "cpu_s": t.cpu_s, "wall_s": t.wall_s,
                      "audio_s": pcm.size / 16000, "peak_rss_mb": peak_rss_mb(),
                      "threads": thread_count()}))


# --------------------------------------------------------------------------------------------
# Orchestration (project venv)


def venv_python() -> Path:
    py = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    want = "\n".join(PEER_PACKAGES)
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return py
    print(f"creating {VENV} with {' '.join(PEER_PACKAGES)}", file=sys.stderr)
    # The system interpreter (not this venv's) as the base, so nothing leaks between them.
    base = os.environ.get("PEERS_BASE_PYTHON", "python3")
    subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    stamp.write_text(want)
    return py


def run_worker(py: Path, mode: str, job: dict) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=WORK) as fh:
        json.dump(job, fh)
    env = single_thread_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench")])
    try:
        r = subprocess.run([str(py), __file__, "--worker", mode, fh.name], env=env,
                           stdout=subprocess.PIPE, text=True, check=True)
    finally:
        os.unlink(fh.name)
    return r.stdout


def load_stream(engine: str, path: Path, pad_s: float):
    from polywake.evaluate import ScoreStream

    z = np.load(cache_path(engine, path, pad_s))
    return ScoreStream(str(path), z["scores"], float(z["step_s"]), float(z["duration_s"])), \
        [str(c) for c in z["columns"]]


def timing_audio(negatives: list[Path], seconds: float) -> Path:
    """Half LibriSpeech speech, half music from the eval negatives, int16, cached as .npy."""
    from polywake.audio import load_audio

    out = CACHE / f"timing_{file_key(negatives[0], int(seconds), len(negatives))}.npy"
    if out.exists():
        return out
    parts = []
    for kind in ("librispeech", "music"):
        got = 0.0
        for f in (f for f in negatives if kind in f.parts):
            x = load_audio(f)
            parts.append(x)
            got += x.size / 16000
            if got >= seconds / 2:
                break
    pcm = to_int16(np.concatenate(parts)[: int(seconds * 16000)])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, pcm)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--time-seconds", type=float, default=600.0,
                    help="audio used for the CPU timing (default 600 s)")
    ap.add_argument("--oww-models", type=int, nargs="+", default=[1, 2, 5, 10])
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--limit", type=int, default=0,
                    help="smoke test: only the first N positives and N negatives")
    args = ap.parse_args()

    from _common import peer_eval_set
    from polywake.evaluate import det_curve, frr_at_fa, plot_det

    es = peer_eval_set()
    word = next(iter(es.positives))
    pos_files, neg_files = es.positives[word], es.negatives
    if args.limit:
        neg_files = neg_files[: args.limit // 2] + neg_files[-(args.limit - args.limit // 2):]
        pos_files = pos_files[: args.limit]
    OUT.mkdir(parents=True, exist_ok=True)
    # Manifests, so `polywake eval` can be run on exactly these files.
    (OUT / f"{word}.txt").write_text("".join(f"{f}\n" for f in pos_files))
    (OUT / "negatives.txt").write_text("".join(f"{f}\n" for f in neg_files))

    py = venv_python()
    jobs = [(str(f), POS_PAD_S) for f in pos_files] + [(str(f), 0.0) for f in neg_files]
    missing = [j for j in jobs if any(not cache_path(e, *j).exists() for e in args.engines)]
    if missing:
        print(f"scoring {len(missing)} files with {args.engines}", file=sys.stderr)
        run_worker(py, "score", {"files": missing, "engines": args.engines})

    results: dict = {"positives": {word: len(pos_files)}, "negative_files": len(neg_files),
                     "refractory_s": REFRACTORY_S, "positive_pad_s": POS_PAD_S, "engines": {}}
    curves = {}
    lines = []
    for e in args.engines:
        pos = [load_stream(e, f, POS_PAD_S) for f in pos_files]
        neg = [load_stream(e, f, 0.0) for f in neg_files]
        columns = pos[0][1]
        pos_s, neg_s = [p[0] for p in pos], [n[0] for n in neg]
        hours = sum(s.duration_s for s in neg_s) / 3600
        pmax = np.stack([s.max_scores() for s in pos_s])
        r: dict = {"columns": columns, "negative_hours": hours, "step_s": pos_s[0].step_s}
        if e == "porcupine":
            ops = []
            for j, col in enumerate(columns):
                c = det_curve(pmax[:, j], neg_s, REFRACTORY_S, word_index=j)
                frr, fa = c.at(0.5)
                ops.append({"sensitivity": float(col.split("@")[1]), "frr": frr,
                            "fa_per_hour": fa, "events": c.events_at(0.5),
                            "by_source": by_source(neg_s, es.negative_source, j, 0.5)})
            r["operating_points"] = ops
        else:
            c = det_curve(pmax[:, 0], neg_s, REFRACTORY_S)
            curves[e] = c
            r["frr_at_fa"] = {f"{t:g}": dict(zip(("frr", "threshold"), frr_at_fa(c, t),
                                                 strict=True)) for t in FA_TARGETS}
            # The engine's own default decision rule, on the same metric.
            default = 0.5 if e == "oww" else float(np.nextafter(np.float32(0.97), np.float32(2)))
            frr, fa = c.at(default)
            r["default_threshold"] = {"threshold": default, "frr": frr, "fa_per_hour": fa,
                                      "by_source": by_source(neg_s, es.negative_source, 0,
                                                             default)}
        results["engines"][e] = r
    pv = results["engines"].get("porcupine")
    points = {"porcupine (sensitivities)": [(o["fa_per_hour"], o["frr"])
                                            for o in pv["operating_points"]]} if pv else None
    names = {"oww": "openWakeWord hey_jarvis", "mww": "microWakeWord hey_jarvis"}
    plot_det({names[e]: c for e, c in curves.items()}, OUT / "det.png",
             title=f"peers on {len(pos_files)} real '{word}' clips", points=points,
             hours=next(iter(results["engines"].values()))["negative_hours"])

    if not args.no_timing:
        audio = timing_audio(es.negatives, args.time_seconds)
        timing = []
        setups = [("none", 1, 1)] + [(e, n, 1) for e in args.engines
                                     for n in (args.oww_models if e == "oww" else [1])]
        # openWakeWord as the package runs it by default, for comparison (TFLite's own pools).
        setups += [("oww", 1, 0)] if "oww" in args.engines else []
        for e, n, th in setups:
            out = run_worker(py, "time", {"engine": e, "models": n, "audio": str(audio),
                                          "tflite_threads": th})
            timing.append(json.loads(out.strip().splitlines()[-1]))
            print(f"  timed {e} x{n}", file=sys.stderr)
        base = timing[0]["peak_rss_mb"]
        for t in timing:
            t["cpu_s_per_audio_s"] = t["cpu_s"] / t["audio_s"]
            t["rss_over_baseline_mb"] = t["peak_rss_mb"] - base
        results["timing"] = timing
        results["timing_audio_s"] = timing[0]["audio_s"]
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    lines.append(format_results(results, word))
    print("\n".join(lines))


def by_source(neg, source: dict[str, str], j: int, threshold: float) -> dict[str, dict]:
    """Events and hours per negative source at one threshold (where false accepts come from)."""
    from polywake.evaluate import det_curve

    out = {}
    for s in sorted({source[st.path] for st in neg}):
        sub = [st for st in neg if source[st.path] == s]
        c = det_curve([], sub, REFRACTORY_S, word_index=j)
        out[s] = {"events": c.events_at(threshold), "hours": round(c.hours, 3)}
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_results(res: dict, word: str) -> str:
    eng = res["engines"]
    n_pos = res["positives"][word]
    hours = next(iter(eng.values()))["negative_hours"] if eng else 0.0
    out = [f"Positives: {n_pos} real '{word}' clips (+{res['positive_pad_s']} s silence each). "
           f"Negatives: {res['negative_files']} files, {hours:.2f} h. "
           f"FA events merge within {res['refractory_s']:g} s.", ""]
    rows = []
    names = {"oww": "openWakeWord hey_jarvis", "mww": "microWakeWord hey_jarvis",
             "porcupine": "Porcupine 1.9.5 jarvis"}
    for e, r in eng.items():
        if "frr_at_fa" in r:
            cells = [f"{_pct(v['frr'])} (thr {v['threshold']:.4g})"
                     for v in r["frr_at_fa"].values()]
            d = r["default_threshold"]
            rows.append([names[e], *cells,
                         f"thr {d['threshold']:.4g}: FRR {_pct(d['frr'])}, "
                         f"{d['fa_per_hour']:.2f} FA/h"])
        else:
            ops = {o["sensitivity"]: o for o in r["operating_points"]}
            d = ops.get(0.5, next(iter(ops.values())))
            rows.append([names[e], "binary", "binary", "binary",
                         f"sens 0.5: FRR {_pct(d['frr'])}, {d['fa_per_hour']:.2f} FA/h"])
    out.append(markdown_table(["engine", *(f"FRR @ {t:g} FA/h" for t in FA_TARGETS),
                               "engine's default operating point"], rows))
    if "porcupine" in eng:
        out += ["", "Porcupine, one operating point per sensitivity:", ""]
        out.append(markdown_table(
            ["sensitivity", "FRR", "FA/h", "FA events (speech / music / other phrases)"],
            [[f"{o['sensitivity']:g}", _pct(o["frr"]), f"{o['fa_per_hour']:.2f}",
              _sources(o["by_source"])] for o in eng["porcupine"]["operating_points"]]))
    src_rows = [[names[e], _sources(r["default_threshold"]["by_source"])]
                for e, r in eng.items() if "default_threshold" in r]
    if src_rows:
        out += ["", "False-accept events at each engine's default threshold, by source:", ""]
        out.append(markdown_table(["engine", "events (speech / music / other phrases)"],
                                  src_rows))
    if "timing" in res:
        out += ["", f"CPU on one pinned core ({res['timing_audio_s']:.0f} s of real audio, "
                    "half speech, half music); peak RSS minus that of a Python + numpy "
                    "process holding the same audio:", ""]
        rows = []
        for t in res["timing"]:
            label = "baseline (Python + numpy)" if t["engine"] == "none" else \
                f"{names[t['engine']].split(' ')[0]} x{t['models']}"
            if t["engine"] != "none" and t["tflite_threads"] != 1 and t["engine"] != "porcupine":
                label += " (TFLite default threads)"
            rows.append([label, f"{t['cpu_s_per_audio_s']:.4f}",
                         f"{t['wall_s'] / t['audio_s']:.4f}",
                         f"{t['peak_rss_mb']:.1f}",
                         "-" if t["engine"] == "none" else f"{t['rss_over_baseline_mb']:.1f}",
                         t["threads"]])
        out.append(markdown_table(["setup", "CPU s / audio s", "wall s / audio s",
                                   "peak RSS MiB", "over baseline MiB", "threads"], rows))
    return "\n".join(out)


def _sources(d: dict) -> str:
    speech = d.get("librispeech", {}).get("events", 0)
    music = d.get("music", {}).get("events", 0)
    other = sum(v["events"] for k, v in d.items() if k not in ("librispeech", "music"))
    return f"{speech} / {music} / {other}"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        job = json.loads(Path(sys.argv[3]).read_text())
        {"score": worker_score, "time": worker_time}[sys.argv[2]](job)
    else:
        main()
