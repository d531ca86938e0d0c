"""openWakeWord's frozen front end (mel spectrogram + Google speech embedding) as an embedder
with polywake's step convention, for bench/wakeword_eval.py (train_and_calibrate,
evaluate_real) and bench/transfer.py ``--oww``.

    emb = OwwEmbedder()                   # lead="repeat" (default), "zeros" or "silence"
    emb.windows(audio)   # (N, samples) float32 16 kHz -> (N, steps, 96) float16
    emb.stream(audio)    # (samples,) float32          -> (steps, 96) float16
    emb.key, emb.dim     # cache key (models' SHA-1 + alignment), 96
    python bench/oww_embedder.py --check  # shapes, determinism, == pyopen-wakeword, speed

The two TFLite models ship inside the ``pyopen-wakeword`` wheel, which lives in the peers'
venv (work_data/peers_venv, made by bench/peers.py), not in the project's. So the work runs
in a worker process of that venv (this same file with ``--worker``, one thread, started on
first use and kept until :meth:`OwwEmbedder.close`); arrays travel as int16 ``.npy`` files in
a temp dir, up to ``batch_windows`` windows a request.

What the models do (measured, ``--check`` re-verifies the parts marked *):

* The mel model takes int16-scaled samples and returns ``(n - 512) // 160 + 1`` frames of 32
  bands; frame ``j`` is a 400-sample periodic-Hann window zero-padded to 512, so it depends on
  samples ``[160 j + 56, 160 j + 456)`` of its input and on nothing else (*: the first and
  last 56 samples of an input have exactly zero weight).
* Its output is in dB with a floor of ``max - 80 dB`` taken over the WHOLE input tensor (batch
  included). The runtime calls it on 1760 samples at a time (8 new frames every 80 ms), so each
  group of 8 frames is floored by its own maximum. Calling it on a whole signal, or on a batch,
  gives different numbers; here each 8-frame group is one call, as in the runtime.
* Features are ``mel / 10 + 2``; the embedding model maps 76 frames (``EMB_FEATURES``) to 96
  numbers and is run every 8 frames: the embedding hop is 8 x 10 ms = **80 ms**, polywake's.
  The runtime's 76-frame windows start at a group boundary: 9 whole groups and the first half
  of the newest one, whose last 4 frames reach the embedding only through its dB floor.

Alignment with polywake's windows (``polywake.train.windows``: ``embed``, ``step_end_samples``,
the labels). Polywake frame ``j`` covers samples ``[160 j, 160 j + 400)`` and step
``i`` has heard audio up to ``((i + 1) * 8 - 1) * 160 + 400`` samples; a window of ``S``
samples has ``floor(((S - 400) // 160 + 1) / 8)`` steps. (The Detector, and
``polywake.train.windows.embed_stream``, start a stream with 240 zero samples,
``polywake.features.STREAM_LEAD``: the same as this on the signal with 240 zeros in front,
their step ``i`` ending at ``(i + 1) * 1280``. ``stream()`` here keeps the windows' grid, so
that it equals ``windows()``.) Here, group ``g`` is the mel model
run on samples ``[1280 g - 56, 1280 g + 1576)`` (zeros outside the signal; they have zero
weight), so its frames are exactly polywake's frames ``8 g .. 8 g + 7``. Step ``i`` gets the
embedding of groups ``i - 9 .. i``: frames ``8 i - 72 .. 8 i + 3`` as content, and group
``i``'s maximum through the floor. So every step has heard audio up to exactly polywake's
step end (nothing later), the number of steps equals polywake's for every ``S``, and the
embedding's newest content frame ends 4 frames (40 ms) before the step end, which is how the
openWakeWord runtime itself lags.

Steps 0..8 lack the 9 earlier groups. ``lead`` says what they get:

* ``"repeat"`` (default): the first full embedding (step 9) is repeated back to step 0;
  audio shorter than 10 steps (< 13040 samples) gets zeros, as it has no full embedding.
* ``"zeros"``: zero vectors.
* ``"silence"``: the missing groups are computed from digital silence, which is what the
  runtime does after a reset (it starts with 8 s of zeros): every step is a real embedding.
  9 more embedding calls per window (of 32 for 2.56 s).

Cost (one thread, measured by ``--check`` on a shared 2-core machine): ~2 ms per embedding
call (batches of 8; larger batches are slower) plus 0.12 ms per mel group, so 0.026 CPU s per
audio second for streams, and 0.018 per audio second for 32-step windows (41200 samples,
~46 ms each, as lead="repeat" computes 23 of the 32 embeddings; "silence" computes all 32).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

HOP = 160
WIN = 400
FRAMES_PER_STEP = 8
STEP_SAMPLES = HOP * FRAMES_PER_STEP  # 1280: 80 ms
EMB_FRAMES = 76  # openWakeWord's EMB_FEATURES
GROUPS_PER_EMB = 10  # 76 frames reach into 10 groups of 8
EDGE = 56  # zero-weight samples at each end of a mel input: (512 - 400) / 2
GROUP_SAMPLES = (FRAMES_PER_STEP - 1) * HOP + WIN + 2 * EDGE  # 1632: 8 frames of 512
DIM = 96
LEAD_MODES = ("repeat", "zeros", "silence")
ALIGN_VERSION = 1
ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "work_data" / "peers_venv"


def polywake_steps(n_samples: int) -> int:
    """Steps polywake gives for a window of ``n_samples`` samples (polywake.train.windows.embed;
    a Detector stream of ``n`` samples has ``polywake_steps(n + STREAM_LEAD)``)."""
    frames = 0 if n_samples < WIN else 1 + (n_samples - WIN) // HOP
    return frames // FRAMES_PER_STEP


def step_end_sample(i: int) -> int:
    """Samples step ``i`` of a window has heard (polywake.train.windows.step_end_samples;
    polywake.detect.Detector.step_end_sample(i) + STREAM_LEAD)."""
    return ((i + 1) * FRAMES_PER_STEP - 1) * HOP + WIN


def _to_int16(x: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> int16 PCM, as a microphone driver (and bench/_common) gives it."""
    return np.clip(np.round(np.asarray(x, np.float32) * 32767.0), -32768, 32767).astype(np.int16)


def _model_dir(venv: Path = VENV) -> Path | None:
    hits = sorted(venv.glob("lib/python3*/site-packages/pyopen_wakeword/models"))
    return hits[0] if hits else None


# --------------------------------------------------------------------------------------------
# Project side


class OwwEmbedder:
    """openWakeWord's frozen speech embedding on polywake's 80 ms step grid (module docstring).

    ``lead``: what steps 0..8 get ("repeat", "zeros" or "silence"); ``batch_windows``: windows
    per worker request; ``python``: the interpreter with pyopen-wakeword (default: the peers'
    venv, created by bench/peers.py if missing). ``cpu_s``/``audio_s`` add up the worker's
    CPU time and the audio it embedded.
    """

    dim: int = DIM

    def __init__(self, lead: str = "repeat", batch_windows: int = 256,
                 python: str | os.PathLike | None = None) -> None:
        if lead not in LEAD_MODES:
            raise ValueError(f"lead must be one of {LEAD_MODES}, got {lead!r}")
        self.lead = lead
        self.batch_windows = max(1, int(batch_windows))
        self._python = Path(python) if python is not None else None
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._n = 0
        self.cpu_s = 0.0
        self.audio_s = 0.0
        self.key = f"oww-{self._models_sha1()}-{lead}-a{ALIGN_VERSION}"

    # -- setup -------------------------------------------------------------------------------
    def _interpreter(self) -> Path:
        if self._python is None:
            py = VENV / "bin" / "python"
            if not (py.exists() and _model_dir() is not None):
                sys.path.insert(0, str(Path(__file__).resolve().parent))
                from peers import venv_python  # noqa: PLC0415 - creates the venv

                py = venv_python()
            self._python = py
        return self._python

    def _models_sha1(self) -> str:
        self._interpreter()
        d = _model_dir(self._python.parents[1]) if self._python else None
        if d is None:
            raise FileNotFoundError(f"no pyopen_wakeword models under {VENV}")
        h = hashlib.sha1()
        for name in ("melspectrogram.tflite", "embedding_model.tflite"):
            h.update((d / name).read_bytes())
        return h.hexdigest()[:12]

    def _start(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        env = dict(os.environ)
        for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                  "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            env[v] = "1"
        env.pop("PYTHONPATH", None)
        self._tmp = tempfile.TemporaryDirectory(prefix="oww-emb-")
        self._proc = subprocess.Popen(
            [str(self._interpreter()), str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1)
        atexit.register(self.close)
        return self._proc

    def close(self) -> None:
        """Stop the worker and remove the temp dir (also at exit)."""
        p, self._proc = self._proc, None
        if p is not None:
            try:
                if p.stdin:
                    p.stdin.close()
                p.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> OwwEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    # -- requests ----------------------------------------------------------------------------
    def _request(self, op: str, pcm: np.ndarray) -> np.ndarray:
        proc = self._start()
        assert self._tmp is not None and proc.stdin and proc.stdout
        self._n += 1
        src = Path(self._tmp.name) / f"in{self._n}.npy"
        dst = Path(self._tmp.name) / f"out{self._n}.npy"
        np.save(src, pcm)
        try:
            proc.stdin.write(json.dumps({"op": op, "in": str(src), "out": str(dst),
                                         "lead": self.lead}) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        src.unlink(missing_ok=True)
        if not line:
            raise RuntimeError(f"openWakeWord worker died (exit code {proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"openWakeWord worker: {reply['error']}")
        out = np.load(dst)
        dst.unlink()
        self.cpu_s += float(reply["cpu_s"])
        self.audio_s += pcm.size / 16000
        return out

    def windows(self, audio: np.ndarray) -> np.ndarray:
        """(N, samples) float32 16 kHz -> (N, steps, 96) float16, steps as polywake's."""
        a = np.asarray(audio)
        if a.ndim != 2:
            raise ValueError(f"windows() takes (N, samples), got {a.shape}")
        steps = polywake_steps(a.shape[1])
        if a.shape[0] == 0 or steps == 0:
            return np.zeros((a.shape[0], steps, DIM), np.float16)
        out = [self._request("windows", _to_int16(a[i:i + self.batch_windows]))
               for i in range(0, a.shape[0], self.batch_windows)]
        return np.concatenate(out)

    def stream(self, audio: np.ndarray) -> np.ndarray:
        """(samples,) float32 16 kHz -> (steps, 96) float16; the same numbers as
        ``windows(audio[None])[0]`` (each step depends only on audio up to its end)."""
        a = np.asarray(audio).reshape(-1)
        if polywake_steps(a.size) == 0:
            return np.zeros((0, DIM), np.float16)
        return self._request("stream", _to_int16(a))

    def runtime_embeddings(self, audio: np.ndarray) -> np.ndarray:
        """Embeddings of pyopen-wakeword's own streaming front end (80 ms chunks after a
        reset, float32, all it emits): the reference ``--check`` compares against."""
        return self._request("runtime", _to_int16(np.asarray(audio).reshape(-1)))


# --------------------------------------------------------------------------------------------
# Worker side (runs in the peers' venv; numpy + ctypes + pyopen-wakeword's files only)


class _TfLite:
    """One TFLite interpreter on one thread, resized to whatever input shape comes."""

    lib: Any = None

    def __init__(self, model: Path) -> None:
        import ctypes as C

        if _TfLite.lib is None:
            libdir = model.parent.parent / "lib"
            lib = C.CDLL(str(next(libdir.glob("*tensorflowlite_c.*"))))
            V, I32, SZ = C.c_void_p, C.c_int32, C.c_size_t
            sigs = {
                "TfLiteModelCreateFromFile": ([C.c_char_p], V),
                "TfLiteInterpreterOptionsCreate": ([], V),
                "TfLiteInterpreterOptionsSetNumThreads": ([V, I32], None),
                "TfLiteInterpreterOptionsDelete": ([V], None),
                "TfLiteInterpreterCreate": ([V, V], V),
                "TfLiteInterpreterResizeInputTensor": ([V, I32, C.POINTER(I32), I32], I32),
                "TfLiteInterpreterAllocateTensors": ([V], I32),
                "TfLiteInterpreterInvoke": ([V], I32),
                "TfLiteInterpreterGetInputTensor": ([V, I32], V),
                "TfLiteInterpreterGetOutputTensor": ([V, I32], V),
                "TfLiteTensorNumDims": ([V], I32),
                "TfLiteTensorDim": ([V, I32], I32),
                "TfLiteTensorCopyFromBuffer": ([V, V, SZ], I32),
                "TfLiteTensorCopyToBuffer": ([V, V, SZ], I32),
            }
            for name, (args, res) in sigs.items():
                f = getattr(lib, name)
                f.argtypes, f.restype = args, res
            _TfLite.lib = lib
        lib = _TfLite.lib
        self._c = C
        self.model = lib.TfLiteModelCreateFromFile(str(model).encode())
        opts = lib.TfLiteInterpreterOptionsCreate()
        lib.TfLiteInterpreterOptionsSetNumThreads(opts, 1)
        self.interp = lib.TfLiteInterpreterCreate(self.model, opts)
        lib.TfLiteInterpreterOptionsDelete(opts)
        if not self.interp:
            raise RuntimeError(f"TFLite cannot load {model}")
        self.shape: tuple[int, ...] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        lib, C = _TfLite.lib, self._c
        x = np.ascontiguousarray(x, np.float32)
        if x.shape != self.shape:
            dims = (C.c_int32 * x.ndim)(*x.shape)
            if lib.TfLiteInterpreterResizeInputTensor(self.interp, 0, dims, x.ndim) or \
                    lib.TfLiteInterpreterAllocateTensors(self.interp):
                raise RuntimeError(f"TFLite cannot take input shape {x.shape}")
            self.shape = x.shape
        inp = lib.TfLiteInterpreterGetInputTensor(self.interp, 0)
        lib.TfLiteTensorCopyFromBuffer(inp, x.ctypes.data, x.nbytes)
        if lib.TfLiteInterpreterInvoke(self.interp):
            raise RuntimeError("TFLite invoke failed")
        t = lib.TfLiteInterpreterGetOutputTensor(self.interp, 0)
        shape = [lib.TfLiteTensorDim(t, k) for k in range(lib.TfLiteTensorNumDims(t))]
        out = np.empty(shape, np.float32)
        lib.TfLiteTensorCopyToBuffer(t, out.ctypes.data, out.nbytes)
        return out


class _FrontEnd:
    """Mel groups and embeddings on polywake's grid (module docstring: Alignment)."""

    EMB_BATCH = 8  # the fastest batch measured (~1.9 ms per embedding; larger batches are slower)

    def __init__(self) -> None:
        import pyopen_wakeword

        d = Path(pyopen_wakeword.__file__).parent / "models"
        self.mel = _TfLite(d / "melspectrogram.tflite")
        self.emb = _TfLite(d / "embedding_model.tflite")

    def _mels(self, seg: np.ndarray) -> np.ndarray:
        """One group: GROUP_SAMPLES int16-scaled samples -> (8, 32) features (mel / 10 + 2)."""
        return self.mel(seg[None])[0, 0] / 10.0 + 2.0

    def features(self, x: np.ndarray, first_group: int, steps: int) -> np.ndarray:
        """Features of groups ``first_group .. steps - 1`` as (n_groups * 8, 32); audio
        before the signal (negative groups, and group -1 reaches 240 samples into it) is
        digital silence."""
        lead = EDGE + max(0, -first_group) * STEP_SAMPLES
        padded = np.concatenate([np.zeros(lead, np.float32), x.astype(np.float32),
                                 np.zeros(EDGE, np.float32)])
        out = []
        for g in range(first_group, steps):
            s = lead - EDGE + g * STEP_SAMPLES
            out.append(self._mels(padded[s:s + GROUP_SAMPLES]))
        return np.concatenate(out) if out else np.zeros((0, 32), np.float32)

    def contexts(self, x: np.ndarray, lead: str) -> tuple[np.ndarray, int, int]:
        """-> (76-frame inputs of the steps that get a real embedding, first such step,
        steps)."""
        steps = polywake_steps(x.size)
        first = 0 if lead == "silence" else GROUPS_PER_EMB - 1
        if steps <= first:
            return np.zeros((0, EMB_FRAMES, 32), np.float32), first, steps
        g0 = first - (GROUPS_PER_EMB - 1)
        feats = self.features(x, g0, steps)
        idx = (np.arange(steps - first) * FRAMES_PER_STEP)[:, None] + np.arange(EMB_FRAMES)
        return feats[idx], first, steps

    def embed(self, ctx: np.ndarray) -> np.ndarray:
        out = [self.emb(ctx[i:i + self.EMB_BATCH, :, :, None]).reshape(-1, DIM)
               for i in range(0, ctx.shape[0], self.EMB_BATCH)]
        return np.concatenate(out) if out else np.zeros((0, DIM), np.float32)

    def signal(self, x: np.ndarray, lead: str) -> np.ndarray:
        ctx, first, steps = self.contexts(x, lead)
        e = self.embed(ctx)
        out = np.zeros((steps, DIM), np.float32)
        out[first:] = e
        if lead == "repeat" and first < steps:
            out[:first] = e[0]
        return out

    def windows(self, xs: np.ndarray, lead: str) -> np.ndarray:
        ctxs, firsts = [], []
        for x in xs:
            c, first, steps = self.contexts(x, lead)
            ctxs.append(c)
            firsts.append(first)
        flat = self.embed(np.concatenate(ctxs)) if ctxs else np.zeros((0, DIM), np.float32)
        out = np.zeros((xs.shape[0], steps, DIM), np.float32)
        k = 0
        for n, (c, first) in enumerate(zip(ctxs, firsts, strict=True)):
            e = flat[k:k + c.shape[0]]
            k += c.shape[0]
            out[n, first:] = e
            if lead == "repeat" and e.shape[0]:
                out[n, :first] = e[0]
        return out


def _runtime(x: np.ndarray) -> np.ndarray:
    """pyopen-wakeword's OpenWakeWordFeatures.process_streaming over 80 ms chunks."""
    from pyopen_wakeword import OpenWakeWordFeatures

    feat = OpenWakeWordFeatures.from_builtin()
    pcm = x.astype(np.int16)
    out = [e.reshape(-1, DIM) for i in range(0, pcm.size, STEP_SAMPLES)
           for e in feat.process_streaming(pcm[i:i + STEP_SAMPLES].tobytes())]
    return np.concatenate(out)


def _worker(stdin: IO[str], stdout: IO[str]) -> None:
    fe = _FrontEnd()
    for line in stdin:
        if not line.strip():
            continue
        try:
            job = json.loads(line)
            x = np.load(job["in"]).astype(np.float32)
            c0 = time.process_time()
            if job["op"] == "windows":
                y = fe.windows(x, job["lead"])
            elif job["op"] == "stream":
                y = fe.signal(x, job["lead"])
            elif job["op"] == "runtime":
                y = _runtime(x)
            else:
                raise ValueError(f"unknown op {job['op']!r}")
            cpu = time.process_time() - c0
            np.save(job["out"], y if job["op"] == "runtime" else y.astype(np.float16))
            stdout.write(json.dumps({"ok": True, "cpu_s": cpu}) + "\n")
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
            stdout.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        stdout.flush()


# --------------------------------------------------------------------------------------------
# Self-check


def check(seconds: float = 60.0) -> None:
    """Shapes and dtype for several window lengths, determinism, stream == windows, equality
    with pyopen-wakeword's own streaming embeddings, and speed."""
    rng = np.random.default_rng(0)
    ok = True
    with OwwEmbedder() as emb, OwwEmbedder(lead="silence") as sil, \
            OwwEmbedder(lead="zeros") as zer:
        print(f"key {emb.key}, dim {emb.dim}")
        for s in (1000, 13039, 13040, 14319, 14320, 40960, 40961):
            w = (0.1 * rng.standard_normal((3, s))).astype(np.float32)
            a, b = emb.windows(w), emb.windows(w)
            want = polywake_steps(s)
            same = a.shape == (3, want, DIM) and a.dtype == np.float16 and np.array_equal(a, b)
            st = emb.stream(w[1])
            same &= np.array_equal(st, a[1])
            z, q = zer.windows(w), sil.windows(w)
            if want > 9:
                same &= np.array_equal(z[:, 9:], a[:, 9:]) and np.array_equal(q[:, 9:], a[:, 9:])
                same &= not np.any(z[:, :9]) and bool(np.all(a[:, :9] == a[:, 9:10]))
            print(f"S={s}: {a.shape} {a.dtype} (polywake steps {want}) deterministic, "
                  f"stream == windows, lead modes agree from step 9: {same}")
            ok &= bool(same)
        # Causality: changing audio after a step's end never changes that step.
        x = (0.1 * rng.standard_normal(48000)).astype(np.float32)
        e0 = sil.stream(x)
        y = x.copy()
        i = 20
        y[step_end_sample(i):] = 0.3 * rng.standard_normal(y.size - step_end_sample(i))
        e1 = sil.stream(y)
        causal = np.array_equal(e0[:i + 1], e1[:i + 1]) and not np.array_equal(e0[i + 1],
                                                                                 e1[i + 1])
        print(f"step {i} unchanged by audio after its end, step {i + 1} changed: {causal}")
        ok &= bool(causal)
        # The runtime's mel frames sit 56 samples (mod 80 ms) later than polywake's: after
        # 1224 samples of silence, the stream is on our grid, and its embeddings are ours.
        rt = emb.runtime_embeddings(x)
        mine = sil.stream(np.concatenate([np.zeros(STEP_SAMPLES - EDGE, np.float32), x]))
        mine = mine.astype(np.float32)
        best = min(((float(np.abs(rt[d:d + mine.shape[0]] - mine).max()), d)
                    for d in range(rt.shape[0] - mine.shape[0] + 1)), default=(np.inf, -1))
        tol = 1e-3 * max(1.0, float(np.abs(rt).max()))  # float16 rounding
        print(f"pyopen-wakeword's streaming embeddings == ours: max |diff| {best[0]:.2e} "
              f"(tolerance {tol:.1e}, float16), matched at its embedding {best[1]} "
              f"of {rt.shape[0]}")
        ok &= best[0] <= tol
        # Speed.
        emb.cpu_s = emb.audio_s = 0.0
        long = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
        t0 = time.perf_counter()
        emb.stream(long)
        st_cpu = emb.cpu_s / emb.audio_s
        emb.cpu_s = emb.audio_s = 0.0
        w = (0.1 * rng.standard_normal((64, 40960))).astype(np.float32)
        t1 = time.perf_counter()
        emb.windows(w)
        t2 = time.perf_counter()
        print(f"stream: {st_cpu:.4f} CPU s per audio s (wall {(t1 - t0) / seconds:.4f}); "
              f"windows of 2.56 s: {emb.cpu_s / emb.audio_s:.4f} CPU s per audio s, "
              f"{(t2 - t1) / 64 * 1000:.1f} ms wall per window")
    print("ALL OK" if ok else "FAILED")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker(sys.stdin, sys.stdout)
    else:
        ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        ap.add_argument("--check", action="store_true", help="run the self-check")
        ap.add_argument("--seconds", type=float, default=60.0)
        a = ap.parse_args()
        check(a.seconds)
