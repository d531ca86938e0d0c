"""Audio I/O: read anything soundfile reads, return 16 kHz mono float32; write atomically.

Every entry point that takes audio goes through :func:`load_audio` or :func:`to_mono_16k`, so
bad input fails here, early, with an :class:`AudioError` that says what was wrong.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from .errors import PolywakeError

SAMPLE_RATE = 16000
# One call without streaming may not exceed this (use the streaming Detector for longer audio).
MAX_SECONDS = 2 * 3600
MIN_RATE, MAX_RATE = 4000, 384000
MAX_CHANNELS = 64


class AudioError(PolywakeError, ValueError):
    """Audio that polywake cannot use; the message says why and what to do."""


# Float audio is nominally in [-1, 1]; a little above is clipping. Beyond this the front end's
# float32 power spectrum would overflow to inf/NaN (~1e17), so it is refused, not computed.
MAX_FLOAT_AMPLITUDE = 1e8


def as_float_samples(samples, *, what: str = "audio") -> np.ndarray:
    """Any numeric array-like -> a float array of the same shape (float input keeps its
    precision, so channel mixing happens before rounding), integers scaled to [-1, 1)
    (signed: / 2^(bits-1); unsigned: offset 2^(bits-1) removed first). Rejects ragged input,
    NaN/inf and absurd amplitudes with an :class:`AudioError`; never mutates its input."""
    try:
        a = np.asarray(samples)
    except (ValueError, TypeError) as e:
        raise AudioError(f"{what}: not an array of samples ({e})") from e
    if a.dtype.kind not in "iuf":
        raise AudioError(f"{what}: samples must be numeric, got dtype {a.dtype}")
    if a.dtype.kind in "iu":
        half = float(2 ** (8 * a.dtype.itemsize - 1))
        offset = half if a.dtype.kind == "u" else 0.0
        return (a.astype(np.float64) - offset) / half
    if a.size:
        if not np.all(np.isfinite(a)):
            raise AudioError(f"{what}: contains NaN or infinite samples")
        peak = float(np.max(np.abs(a)))
        if peak > MAX_FLOAT_AMPLITUDE:
            raise AudioError(f"{what}: float samples reach {peak:.3g}; audio is expected in "
                             "[-1, 1] (scale integer PCM by its full scale)")
    return a


def to_mono_16k(samples: np.ndarray, sample_rate: int, *, what: str = "audio") -> np.ndarray:
    """Convert an array shaped (n,) or (n, channels) at any rate to float32 mono 16 kHz.

    Integer arrays are scaled to [-1, 1]; NaN/inf are rejected rather than silently zeroed,
    because they mean the producer is broken.
    """
    a = as_float_samples(samples, what=what)
    if not isinstance(sample_rate, (int, np.integer)) or not MIN_RATE <= sample_rate <= MAX_RATE:
        raise AudioError(
            f"{what}: unsupported sample rate {sample_rate!r} (need {MIN_RATE}..{MAX_RATE} Hz)"
        )
    if a.ndim == 2:
        if a.shape[1] < 1 or a.shape[1] > MAX_CHANNELS:
            raise AudioError(f"{what}: {a.shape[1]} channels is not audio (max {MAX_CHANNELS})")
    elif a.ndim != 1:
        raise AudioError(f"{what}: expected shape (samples,) or (samples, channels), got {a.shape}")
    if a.shape[0] == 0:
        raise AudioError(f"{what}: no samples (empty audio)")
    if a.shape[0] > MAX_SECONDS * sample_rate:
        raise AudioError(
            f"{what}: {a.shape[0] / sample_rate / 3600:.1f} h in one call is more than "
            f"{MAX_SECONDS // 3600} h; stream it through Detector.process() in chunks instead"
        )
    if a.ndim == 2:
        a = a.mean(axis=1)
    a = a.astype(np.float32, copy=False)
    if sample_rate != SAMPLE_RATE:
        # soxr: a real band-limited resampler (VHQ), much better than linear interpolation.
        a = soxr.resample(a, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
        if a.size == 0:
            raise AudioError(f"{what}: too short to resample to {SAMPLE_RATE} Hz (no samples)")
    return np.ascontiguousarray(a)


def load_audio(path: str | os.PathLike, *, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Read a WAV/FLAC/OGG/... file and return float32 mono samples at 16 kHz."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: empty file (0 bytes)")
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{p}: not a readable audio file ({e})") from e
    if info.frames <= 0:
        raise AudioError(f"{p}: no samples (empty audio)")
    if info.samplerate <= 0 or info.frames / info.samplerate > max_seconds:
        raise AudioError(
            f"{p}: {info.frames / max(info.samplerate, 1) / 3600:.1f} h is more than "
            f"{max_seconds / 3600:g} h in one call; stream it with Detector.iter_file() instead"
        )
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioError(f"{p}: corrupt or truncated audio ({e})") from e
    if data.shape[0] == 0:
        raise AudioError(f"{p}: no samples (empty or truncated audio)")
    return to_mono_16k(data, int(rate), what=str(p))


def iter_audio_blocks(path: str | os.PathLike, block_seconds: float = 1.0):
    """Yield 16 kHz mono float32 blocks of a file of any length without loading it whole."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    try:
        f = sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{p}: not a readable audio file ({e})") from e
    with f:
        rate = f.samplerate
        if not MIN_RATE <= rate <= MAX_RATE:
            raise AudioError(f"{p}: unsupported sample rate {rate}")
        block = max(1, int(block_seconds * rate))
        try:
            # As sf.read does before reading: libsndfile's MP3 decoder gives slightly other
            # samples (1 ulp) without this seek, and streaming must decode what load_audio does.
            if f.seekable():
                f.seek(0)
        except (sf.LibsndfileError, RuntimeError, ValueError) as e:
            raise AudioError(f"{p}: corrupt or truncated audio ({e})") from e
        resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(
            rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
        )
        produced = False
        while True:
            try:
                data = f.read(block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError) as e:
                raise AudioError(f"{p}: corrupt or truncated audio ({e})") from e
            last = data.shape[0] < block
            if data.shape[0]:
                # NaN/inf and absurd amplitudes are refused here, naming the file, rather
                # than later by Detector.process, which cannot know the file's name.
                data = as_float_samples(data, what=str(p))
                mono = np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                if mono.size:
                    produced = True
                    yield mono
            elif resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                if tail.size:
                    yield tail
            if last:
                break
        if not produced:
            raise AudioError(f"{p}: no samples (empty audio)")


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path`` for binary writing; on success fsync and rename it over
    ``path``; on any error remove it. Readers only ever see a complete file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        # mkstemp makes 0600 files; a model or recording should get the usual umask modes.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


STALE_TEMP_S = 6 * 3600.0


def remove_stale_temps(folder: str | os.PathLike, older_than_s: float = STALE_TEMP_S) -> int:
    """Delete the temp files (``.*.tmp``, :func:`atomic_open`'s names) that killed writers left
    anywhere under ``folder``, if untouched for ``older_than_s``: a live writer's temp file
    is younger (it writes, fsyncs and renames within seconds), so runs sharing the folder are
    safe. Returns how many were removed. A missing folder has none."""
    root = Path(folder)
    if not root.is_dir():
        return 0
    now, n = time.time(), 0
    for f in root.rglob(".*.tmp"):
        try:
            if f.is_file() and now - f.stat().st_mtime > older_than_s:
                f.unlink()
                n += 1
        except FileNotFoundError:  # another run removed or renamed it meanwhile
            continue
    return n


def write_audio(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = SAMPLE_RATE,
                *, subtype: str | None = None) -> Path:
    """Write audio atomically: a temp file in the same folder, fsync, then rename.

    A reader never sees a half-written file, and a killed writer leaves only a stray temp file
    (``.*.tmp``) that no reader picks up.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(samples)
    if a.size == 0:
        raise AudioError(f"{p}: refusing to write empty audio")
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(p.suffix.lower())
    if fmt is None:
        raise AudioError(f"{p}: unsupported extension (use .wav, .flac or .ogg)")
    if subtype is None:
        subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[fmt]
    with atomic_open(p) as fh:
        sf.write(fh, a, sample_rate, format=fmt, subtype=subtype)
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes atomically (temp file + fsync + rename); used for models, manifests, JSON."""
    p = Path(path)
    with atomic_open(p) as fh:
        fh.write(data)
    return p
