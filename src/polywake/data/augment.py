"""Seeded, composable audio augmentation at 16 kHz, recording what it did.

Every transform is one job: ``t(samples, rng) -> samples`` with ``rng`` a
``numpy.random.Generator``; it fires with probability ``p`` and leaves what it chose in
``t.params`` (JSON-ready), so a manifest can store the recipe and a clip can be re-made.

    aug = Compose([RoomReverb(p=0.5), RealNoise("train", p=0.6), ColoredNoise(p=0.3),
                   BandLimit(p=0.2), Gain(), Clipping(p=0.05)])
    y = aug(x, np.random.default_rng(seed))
    aug.recipe   # [{"name": "RoomReverb", "rir": 17, "rt60": 0.42, ...}, ...]

Transforms: :class:`RoomReverb` (pyroomacoustics shoebox rooms, a bank of RIRs cached in a
.npz), :class:`RealNoise` (shared-data noise, Speech Commands ``_silence_``, and TRAIN-split
background speech/music), :class:`ColoredNoise` (white/pink/brown), :class:`Gain`,
:class:`SpeedPerturb` (resampling: tempo and pitch together, as Kaldi does),
:class:`TempoStretch` (sox's WSOLA ``tempo``: slower or faster speech at the same pitch),
:class:`PitchShift` (phase-vocoder stretch + resample: pitch only), :class:`BandLimit`
(cheap-microphone band-pass), :class:`Clipping`, and :class:`PlaceInBackground` (put the clip
at a random offset inside longer background audio; records ``offset_s`` so labels follow).

Why not audiomentations: it pulls librosa, numba, scikit-learn and downgrades soxr below the
version this project pins; the handful of transforms needed here are short with numpy/scipy,
and recording parameters for the manifest is simpler in our own classes.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from scipy import signal

from ..audio import SAMPLE_RATE, AudioError, atomic_write_bytes, load_audio
from . import splits

Recipe = list[dict[str, Any]]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def _check(samples: np.ndarray) -> np.ndarray:
    a = np.asarray(samples, dtype=np.float32)
    if a.ndim != 1 or a.size == 0:
        raise AudioError(f"augment: expected non-empty mono samples, got shape {a.shape}")
    return a


def _r(x: float) -> float:
    return round(float(x), 4)


class Transform:
    """Base: subclasses implement ``apply(samples, rng)`` and fill ``self.params``."""

    def __init__(self, p: float = 1.0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p={p} must be in 0..1")
        self.p = p
        self.params: dict[str, Any] = {}

    def __call__(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        self.params = {}
        x = _check(samples)
        if self.p < 1.0 and rng.random() >= self.p:
            return x
        y = self.apply(x, rng)
        self.params = {"name": type(self).__name__, **self.params}
        return np.ascontiguousarray(y, dtype=np.float32)

    def apply(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class Compose:
    """Apply transforms in order (optionally shuffled); ``recipe`` lists those that fired."""

    def __init__(self, transforms: Sequence[Transform], shuffle: bool = False,
                 peak: float | None = 0.99) -> None:
        self.transforms = list(transforms)
        self.shuffle = shuffle
        self.peak = peak  # rescale if above this, so later int16 writing never wraps
        self.recipe: Recipe = []

    def __call__(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = _check(samples)
        order = list(self.transforms)
        if self.shuffle:
            order = [order[i] for i in rng.permutation(len(order))]
        self.recipe = []
        for t in order:
            x = t(x, rng)
            if t.params:
                self.recipe.append(dict(t.params))
        if self.peak is not None:
            m = float(np.max(np.abs(x)))
            if m > self.peak:
                x = x * (self.peak / m)
        return x


# ---------------------------------------------------------------- simple transforms

class Gain(Transform):
    def __init__(self, min_db: float = -12.0, max_db: float = 6.0, p: float = 1.0) -> None:
        super().__init__(p)
        self.min_db, self.max_db = min_db, max_db

    def apply(self, samples, rng):
        db = rng.uniform(self.min_db, self.max_db)
        self.params = {"db": _r(db)}
        return samples * np.float32(10 ** (db / 20))


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white / pink (1/f) / brown (1/f^2) noise, shaped in the frequency domain."""
    exponents = {"white": 0.0, "pink": 1.0, "brown": 2.0}
    if color not in exponents:
        raise ValueError(f"noise color {color!r}; choose white, pink or brown")
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1] if n > 1 else 1.0
    spec /= f ** (exponents[color] / 2)
    x = np.fft.irfft(spec, n)
    return (x / _rms(x)).astype(np.float32)


def _mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    scale = _rms(clean) / (_rms(noise) * 10 ** (snr_db / 20))
    return clean + noise * np.float32(scale)


class ColoredNoise(Transform):
    def __init__(self, min_snr: float = 0.0, max_snr: float = 20.0,
                 colors: Sequence[str] = ("white", "pink", "brown"), p: float = 1.0) -> None:
        super().__init__(p)
        self.min_snr, self.max_snr, self.colors = min_snr, max_snr, tuple(colors)

    def apply(self, samples, rng):
        color = str(rng.choice(self.colors))
        snr = rng.uniform(self.min_snr, self.max_snr)
        self.params = {"color": color, "snr_db": _r(snr)}
        return _mix_at_snr(samples, colored_noise(len(samples), color, rng), snr)


class SpeedPerturb(Transform):
    """Resample by a factor: faster *and* higher, like playing a tape fast (Kaldi-style)."""

    def __init__(self, min_factor: float = 0.9, max_factor: float = 1.1, p: float = 1.0) -> None:
        super().__init__(p)
        self.lo, self.hi = min_factor, max_factor

    def apply(self, samples, rng):
        f = rng.uniform(self.lo, self.hi)
        self.params = {"factor": _r(f)}
        return soxr.resample(samples, SAMPLE_RATE * f, SAMPLE_RATE, quality="HQ")


class TempoStretch(Transform):
    """Slower or faster speech at the same pitch: the clip lasts ``factor`` times as long,
    ``factor`` log-uniform in [min_factor, max_factor].

    sox's ``tempo -s`` (WSOLA tuned for speech, what ESPnet's tempo perturbation runs) rather
    than our phase vocoder (``_time_stretch``), whose smeared phases sound like a room. People
    say a wake word slower than the TTS engines' default rates, but slowing the synthetic
    clips made added words worse on real dev voices (docs/BENCHMARKS.md, "Slower synthetic
    speech"), so no recipe uses it by default."""

    def __init__(self, min_factor: float = 0.95, max_factor: float = 1.45, p: float = 1.0) -> None:
        super().__init__(p)
        if not 0.25 <= min_factor <= max_factor <= 4.0:
            raise ValueError(f"TempoStretch: need 0.25 <= min_factor <= max_factor <= 4, got "
                             f"{min_factor}, {max_factor}")
        self.lo, self.hi = min_factor, max_factor

    def apply(self, samples, rng):
        f = float(np.exp(rng.uniform(np.log(self.lo), np.log(self.hi))))
        self.params = {"factor": _r(f)}
        return tempo_stretch(samples, f)


def tempo_stretch(samples: np.ndarray, factor: float) -> np.ndarray:
    """``samples`` made ``factor`` times as long (pitch kept) by the sox binary's ``tempo``."""
    import shutil
    import subprocess

    if abs(factor - 1.0) < 1e-3:
        return np.asarray(samples, np.float32)
    sox = shutil.which("sox")
    if sox is None:
        raise RuntimeError("tempo stretch needs the sox program (Debian package sox; "
                           "`make install` installs it when run as root)")
    raw = np.ascontiguousarray(samples, dtype="<f4").tobytes()
    fmt = ["-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1"]
    p = subprocess.run([sox, "-q", *fmt, "-", "-t", "f32", "-", "tempo", "-s",
                        f"{1.0 / factor:.5f}"], input=raw, capture_output=True)
    if p.returncode != 0:
        raise RuntimeError(f"sox tempo failed: {p.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(p.stdout, dtype="<f4").astype(np.float32)


def _time_stretch(x: np.ndarray, rate: float, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Phase-vocoder time stretch (rate > 1 shorter), keeping pitch."""
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    _, _, z = signal.stft(x, nperseg=n_fft, noverlap=n_fft - hop, boundary="zeros")
    steps = np.arange(0, z.shape[1] - 1, rate)
    expected = np.pi * hop * np.arange(z.shape[0]) / (n_fft / 2)
    phase = np.angle(z[:, 0])
    out = np.empty((z.shape[0], len(steps)), dtype=np.complex64)
    for i, s in enumerate(steps):
        k = int(s)
        frac = s - k
        mag = (1 - frac) * np.abs(z[:, k]) + frac * np.abs(z[:, k + 1])
        out[:, i] = mag * np.exp(1j * phase)
        dphi = np.angle(z[:, k + 1]) - np.angle(z[:, k]) - expected
        dphi -= 2 * np.pi * np.round(dphi / (2 * np.pi))
        phase = phase + expected + dphi
    _, y = signal.istft(out, nperseg=n_fft, noverlap=n_fft - hop, boundary=True)
    return y.astype(np.float32)


class PitchShift(Transform):
    def __init__(self, min_semitones: float = -2.0, max_semitones: float = 2.0,
                 p: float = 1.0) -> None:
        super().__init__(p)
        self.lo, self.hi = min_semitones, max_semitones

    def apply(self, samples, rng):
        st = rng.uniform(self.lo, self.hi)
        self.params = {"semitones": _r(st)}
        f = 2 ** (st / 12)
        # Stretch to f x longer, then resample back to the original length: pitch x f.
        y = _time_stretch(samples, 1 / f)
        y = soxr.resample(y, SAMPLE_RATE * f, SAMPLE_RATE, quality="HQ")
        return y[: len(samples)] if len(y) >= len(samples) else np.pad(y, (0, len(samples) - len(y)))


class BandLimit(Transform):
    """Cheap microphone / phone line: band-pass between a random low and high cut-off."""

    def __init__(self, low_hz: tuple[float, float] = (100.0, 500.0),
                 high_hz: tuple[float, float] = (2500.0, 7000.0), p: float = 1.0) -> None:
        super().__init__(p)
        self.low_hz, self.high_hz = low_hz, high_hz

    def apply(self, samples, rng):
        lo = rng.uniform(*self.low_hz)
        hi = rng.uniform(*self.high_hz)
        order = int(rng.integers(2, 7))
        self.params = {"low_hz": _r(lo), "high_hz": _r(hi), "order": order}
        sos = signal.butter(order, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        return signal.sosfilt(sos, samples)


class Clipping(Transform):
    """Overdriven input: clip the loudest ``percent`` of samples."""

    def __init__(self, min_percent: float = 0.5, max_percent: float = 10.0, p: float = 1.0) -> None:
        super().__init__(p)
        self.lo, self.hi = min_percent, max_percent

    def apply(self, samples, rng):
        pct = rng.uniform(self.lo, self.hi)
        thr = float(np.percentile(np.abs(samples), 100 - pct))
        self.params = {"percent": _r(pct)}
        return np.clip(samples, -thr, thr) if thr > 0 else samples


# ---------------------------------------------------------------- room reverb

def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "polywake"


def build_rir_bank(n_rooms: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """Simulate ``n_rooms`` shoebox rooms (image method): RT60 0.15-0.9 s, 3x3-10x8 m."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs, meta = [], []
    for _ in range(n_rooms):
        dims = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 4.0])
        rt60 = rng.uniform(0.15, 0.9)
        absorption, max_order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption),
                           max_order=min(max_order, 40))  # 40: tails long enough, 0.05 s/room
        src = rng.uniform(0.5, dims - 0.5)
        mic = rng.uniform(0.5, dims - 0.5)
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float32)[: SAMPLE_RATE]
        rirs.append(rir / (np.max(np.abs(rir)) + 1e-9))
        meta.append([*dims, rt60, float(np.linalg.norm(src - mic))])
    lengths = np.array([len(r) for r in rirs], dtype=np.int64)
    return {"rirs": np.concatenate(rirs), "offsets": np.concatenate([[0], np.cumsum(lengths)]),
            "meta": np.array(meta, dtype=np.float32)}


@functools.cache
def load_rir_bank(n_rooms: int = 200, seed: int = 0,
                  path: str | None = None) -> dict[str, np.ndarray]:
    """The RIR bank, simulated once and cached as .npz (default under ~/.cache/polywake)."""
    p = Path(path) if path else _cache_dir() / f"rir_bank_v1_n{n_rooms}_s{seed}.npz"
    if p.exists():
        try:
            with np.load(p) as z:
                return {k: z[k] for k in ("rirs", "offsets", "meta")}
        except (OSError, ValueError, KeyError):
            pass  # a corrupt cache is rebuilt below
    bank = build_rir_bank(n_rooms, seed)
    buf = io.BytesIO()
    np.savez(buf, **bank)
    atomic_write_bytes(p, buf.getvalue())
    return bank


class RoomReverb(Transform):
    """Convolve with a simulated room impulse response; output keeps the input's length and
    level, aligned on the direct path (so word timing labels still hold)."""

    def __init__(self, n_rooms: int = 200, seed: int = 0, bank_path: str | None = None,
                 p: float = 1.0) -> None:
        super().__init__(p)
        self.n_rooms, self.seed, self.bank_path = n_rooms, seed, bank_path

    def apply(self, samples, rng):
        bank = load_rir_bank(self.n_rooms, self.seed, self.bank_path)
        i = int(rng.integers(len(bank["offsets"]) - 1))
        rir = bank["rirs"][bank["offsets"][i]: bank["offsets"][i + 1]]
        lx, ly, lz, rt60, dist = (float(v) for v in bank["meta"][i])
        self.params = {"rir": i, "rt60": _r(rt60), "room": [_r(lx), _r(ly), _r(lz)],
                       "distance_m": _r(dist)}
        direct = int(np.argmax(np.abs(rir)))
        y = signal.fftconvolve(samples, rir)[direct: direct + len(samples)]
        return y * np.float32(_rms(samples) / _rms(y))


# ---------------------------------------------------------------- real noise

def noise_files(split: str = "train", kinds: Sequence[str] = ("noise", "silence", "background")
                ) -> list[Path]:
    """Real noise files: Speech Commands noise recordings, its ``_silence_`` clips, and the
    background speech/music of ``split`` only (never eval audio in training)."""
    root = splits.shared_data_dir()
    out: list[Path] = []
    if "noise" in kinds:
        out += sorted((root / "noise" / "speech_commands").glob("*.flac"))
    if "silence" in kinds:
        out += sorted((root / "real_words" / "speech_commands" / "_silence_").glob("*.opus"))
    if "background" in kinds:
        out += splits.background_files(split)
    return out


def _group_of(path: str) -> str:
    parts = Path(path).parts
    for key in ("_silence_", "librispeech", "music", "noise"):
        if key in parts:
            return key
    return "other"


def _grouped(files: Sequence[str]) -> list[list[str]]:
    """Files by source, so 408 one-second ``_silence_`` clips do not outweigh the rest."""
    groups: dict[str, list[str]] = {}
    for f in files:
        groups.setdefault(_group_of(f), []).append(f)
    return [groups[k] for k in sorted(groups)]


def _pick(groups: list[list[str]], rng: np.random.Generator) -> str:
    g = groups[int(rng.integers(len(groups)))]
    return g[int(rng.integers(len(g)))]


@functools.lru_cache(maxsize=512)
def _load_cached(path: str) -> np.ndarray:
    return load_audio(path, max_seconds=30 * 60)


def _segment(audio: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A random ``n``-sample piece of ``audio``, tiled if the file is shorter."""
    if len(audio) < n:
        audio = np.tile(audio, n // len(audio) + 1)
    start = int(rng.integers(0, len(audio) - n + 1))
    return audio[start: start + n], start


class RealNoise(Transform):
    """Add a random piece of a real recording at a random SNR."""

    def __init__(self, split: str = "train", min_snr: float = 0.0, max_snr: float = 20.0,
                 kinds: Sequence[str] = ("noise", "silence", "background"),
                 files: Sequence[str | Path] | None = None, p: float = 1.0) -> None:
        super().__init__(p)
        if split == "eval":
            raise ValueError("RealNoise: eval audio is never used for training augmentation")
        self.min_snr, self.max_snr = min_snr, max_snr
        self.files = [str(f) for f in (files if files is not None else noise_files(split, kinds))]
        self._groups = _grouped(self.files)

    def apply(self, samples, rng):
        if not self.files:
            raise AudioError("RealNoise: no noise files (is the shared data present?)")
        f = _pick(self._groups, rng)
        noise, start = _segment(_load_cached(f), len(samples), rng)
        snr = rng.uniform(self.min_snr, self.max_snr)
        self.params = {"file": Path(f).name, "group": _group_of(f), "start": start,
                       "snr_db": _r(snr)}
        return _mix_at_snr(samples, noise, snr)


class PlaceInBackground(Transform):
    """Put the clip at a random offset inside ``min_s..max_s`` seconds of background (running
    speech, music, noise) at ``min_snr..max_snr`` dB; ``params["offset_s"]`` says where."""

    def __init__(self, files: Sequence[str | Path] | None = None, split: str = "train",
                 min_s: float = 2.0, max_s: float = 4.0, min_snr: float = 0.0,
                 max_snr: float = 20.0, p: float = 1.0) -> None:
        super().__init__(p)
        if split == "eval" and files is None:
            raise ValueError("PlaceInBackground: eval audio is never used for training")
        self.files = [str(f) for f in (files if files is not None
                                       else noise_files(split, ("background",)))]
        self._groups = _grouped(self.files)
        self.min_s, self.max_s, self.min_snr, self.max_snr = min_s, max_s, min_snr, max_snr

    def apply(self, samples, rng):
        total = max(len(samples), int(rng.uniform(self.min_s, self.max_s) * SAMPLE_RATE))
        offset = int(rng.integers(0, total - len(samples) + 1))
        snr = rng.uniform(self.min_snr, self.max_snr)
        padded = np.zeros(total, np.float32)
        padded[offset: offset + len(samples)] = samples
        self.params = {"offset_s": _r(offset / SAMPLE_RATE), "total_s": _r(total / SAMPLE_RATE),
                       "snr_db": _r(snr)}
        if not self.files:
            return padded  # no background available: silence padding only
        f = _pick(self._groups, rng)
        bg, start = _segment(_load_cached(f), total, rng)
        self.params.update({"file": Path(f).name, "start": start})
        # SNR relative to the word itself, not to the mostly-silent padded clip.
        scale = _rms(samples) / (_rms(bg) * 10 ** (snr / 20))
        return padded + bg * np.float32(scale)


def default_augmenter(split: str = "train", real_noise: bool = True) -> Compose:
    """The recipe the synth/training code uses unless told otherwise."""
    ts: list[Transform] = [SpeedPerturb(0.92, 1.08, p=0.3), RoomReverb(p=0.5)]
    if real_noise and splits.have_shared_data():
        ts.append(RealNoise(split, p=0.6))
    ts += [ColoredNoise(5.0, 30.0, p=0.3), BandLimit(p=0.2), Gain(-10.0, 4.0), Clipping(p=0.03)]
    return Compose(ts)
