"""`polywake enroll "hey jarvis" --out DIR -k 5`: record k clean examples of a new wake word.

Each take is checked by :func:`check_take` (a pure function of the samples): silent, too
quiet, clipped, no speech, too long / too short, or cut off at either edge. A bad take is
explained and asked for again; a good one is trimmed around the speech and written atomically
as ``DIR/<word>-NN.wav`` (numbering continues after files already there).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, write_audio
from ..errors import PolywakeError
from .microphone import Microphone, StreamFactory

FRAME_S = 0.02


@dataclass(frozen=True)
class TakeReport:
    problems: tuple[str, ...]      # messages for the speaker, empty when the take is good
    codes: tuple[str, ...]         # silent, too_quiet, clipped, no_speech, too_long, ...
    peak_dbfs: float
    noise_dbfs: float
    speech_dbfs: float | None
    speech_start_s: float | None
    speech_end_s: float | None
    clipped_samples: int

    @property
    def ok(self) -> bool:
        return not self.codes

    @property
    def speech_s(self) -> float:
        if self.speech_start_s is None or self.speech_end_s is None:
            return 0.0
        return self.speech_end_s - self.speech_start_s


def _db(power: np.ndarray | float) -> np.ndarray | float:
    return 10.0 * np.log10(np.asarray(power, np.float64) + 1e-12)


def check_take(samples: np.ndarray, sample_rate: int = SAMPLE_RATE, *, max_word_s: float = 2.0,
               min_word_s: float = 0.2, quiet_peak_dbfs: float = -30.0,
               silent_peak_dbfs: float = -50.0, clip_level: float = 0.99,
               edge_s: float = 0.1) -> TakeReport:
    """Judge one recorded take of a wake word. Pure: same samples, same verdict."""
    x = np.asarray(samples, np.float64).reshape(-1)
    n = x.size
    peak = float(np.max(np.abs(x))) if n else 0.0
    peak_db = float(20.0 * np.log10(peak + 1e-12))
    clipped = int(np.count_nonzero(np.abs(x) >= clip_level))
    hop = max(1, int(round(FRAME_S * sample_rate)))
    k = n // hop
    energy = (np.asarray(_db(np.mean(x[: k * hop].reshape(k, hop) ** 2, axis=1)))
              if k else np.zeros(0))
    noise_db = float(np.percentile(energy, 10)) if k else -120.0
    # Speech: frames well above the take's own background, in runs of >= 60 ms (not clicks).
    loud = energy > max(noise_db + 12.0, silent_peak_dbfs)
    speech = np.zeros(k, bool)
    run_start = None
    for i in range(k + 1):
        on = i < k and loud[i]
        if on and run_start is None:
            run_start = i
        elif not on and run_start is not None:
            if i - run_start >= 3:
                speech[run_start:i] = True
            run_start = None
    idx = np.flatnonzero(speech)
    start = end = level = None
    if idx.size:
        start, end = idx[0] * hop / sample_rate, (idx[-1] + 1) * hop / sample_rate
        level = float(_db(np.mean(10.0 ** (energy[speech] / 10.0))))
    dur = n / sample_rate
    found: list[tuple[str, str]] = []
    if peak_db < silent_peak_dbfs:
        found.append(("silent", f"no sound at all (peak {peak_db:.0f} dBFS): is the microphone "
                                f"muted, or is it the wrong --device?"))
    elif start is None:
        found.append(("no_speech", "no speech stood out from the background: speak closer to "
                                   "the microphone, with a short pause before and after"))
    if clipped >= max(8, int(0.0002 * n)):
        found.append(("clipped", f"clipped ({clipped} samples at full scale): lower the input "
                                 f"gain or move back a little"))
    elif silent_peak_dbfs <= peak_db < quiet_peak_dbfs:
        found.append(("too_quiet", f"too quiet (peak {peak_db:.0f} dBFS): move closer or raise "
                                   f"the input gain"))
    if start is not None and end is not None:
        span = end - start
        if span > max_word_s:
            found.append(("too_long", f"too long ({span:.1f} s of speech; a wake word takes "
                                      f"under {max_word_s:g} s): say just the wake word, once"))
        elif span < min_word_s:
            found.append(("too_short", f"too short ({span:.2f} s of sound): was that the wake "
                                       f"word?"))
        if start < edge_s:
            found.append(("cut_off_start", "speech was already under way when recording "
                                           "started: wait for the prompt"))
        if end > dur - edge_s:
            found.append(("cut_off_end", "speech runs to the end of the recording: start "
                                         "sooner, or use a longer --seconds"))
    return TakeReport(tuple(m for _, m in found), tuple(c for c, _ in found), peak_db, noise_db,
                      level, start, end, clipped)


def trim(samples: np.ndarray, report: TakeReport, pad_s: float = 0.3,
         sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The take cut to its speech plus ``pad_s`` either side (soft onsets such as "h" are
    quieter than the energy threshold, so the padding keeps them)."""
    if report.speech_start_s is None or report.speech_end_s is None:
        return samples
    a = max(0, int((report.speech_start_s - pad_s) * sample_rate))
    b = min(samples.size, int(np.ceil((report.speech_end_s + pad_s) * sample_rate)))
    return samples[a:b]


def slug(phrase: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", phrase.strip().lower()).strip("_")
    if not s:
        raise PolywakeError(f"wake word {phrase!r} has no letters or digits to name files by")
    return s


def next_index(out_dir: Path, name: str) -> int:
    used = [int(m.group(1)) for p in out_dir.glob(f"{name}-*.wav")
            if (m := re.fullmatch(rf"{re.escape(name)}-(\d+)\.wav", p.name))]
    return max(used, default=0) + 1


def mic_recorder(device: int | str | None = None,
                 stream_factory: StreamFactory | None = None) -> Callable[[float], np.ndarray]:
    """A recorder that opens the microphone for each take (nothing piles up while the speaker
    reads the prompt)."""
    def record(seconds: float) -> np.ndarray:
        with Microphone(device, stream_factory=stream_factory) as mic:
            return mic.record(seconds)
    return record


def enroll(phrase: str, out_dir: str | os.PathLike, k: int, *,
           record: Callable[[float], np.ndarray], seconds: float = 3.0,
           ask: Callable[[str], str] | None = input, say: Callable[[str], None] = print,
           max_attempts: int | None = None, max_word_s: float = 2.0) -> list[Path]:
    """Record ``k`` good takes; ``ask=None`` records without waiting for Enter."""
    if k < 1:
        raise PolywakeError("-k must be at least 1")
    out = Path(out_dir)
    name = slug(phrase)
    out.mkdir(parents=True, exist_ok=True)
    index = next_index(out, name)
    limit = max_attempts if max_attempts is not None else 3 * k
    saved: list[Path] = []
    attempts = 0
    say(f"Recording {k} examples of {phrase!r} into {out}/ ({seconds:g} s each).")
    while len(saved) < k:
        if attempts >= limit:
            raise PolywakeError(f"gave up after {attempts} takes ({len(saved)} good); check the "
                                f"microphone level and try again")
        attempts += 1
        prompt = f"Take {len(saved) + 1}/{k}: "
        if ask is not None:
            try:
                ask(prompt + f"press Enter, then say {phrase!r} once. ")
            except EOFError:
                raise PolywakeError("no terminal to prompt on; use --no-wait") from None
        else:
            say(prompt + f"say {phrase!r} now.")
        audio = record(seconds)
        report = check_take(audio, max_word_s=max_word_s)
        if not report.ok:
            for problem in report.problems:
                say(f"  again: {problem}")
            continue
        path = write_audio(out / f"{name}-{index:02d}.wav", trim(audio, report))
        index += 1
        saved.append(path)
        say(f"  ok: {report.speech_s:.2f} s of speech, peak {report.peak_dbfs:.0f} dBFS -> {path}")
    return saved


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("phrase", help='the wake word, e.g. "hey jarvis"')
    p.add_argument("--out", required=True, help="folder for the WAV files")
    p.add_argument("-k", type=int, default=5, help="number of good examples (default 5)")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each take (default 3)")
    p.add_argument("--max-word-s", type=float, default=2.0,
                   help="longest acceptable wake word in seconds (default 2)")
    p.add_argument("--device", help="microphone device (number or name substring)")
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait for Enter between takes")


def run(args: argparse.Namespace) -> int:
    if not 0.5 <= args.seconds <= 30:
        raise PolywakeError("--seconds must be between 0.5 and 30")
    device = int(args.device) if args.device and args.device.isdigit() else args.device
    with Microphone(device):  # no microphone: say so before the first prompt
        pass
    paths = enroll(args.phrase, args.out, args.k, record=mic_recorder(device),
                   seconds=args.seconds, ask=None if args.no_wait else input,
                   max_word_s=args.max_word_s)
    print(f"saved {len(paths)} examples of {args.phrase!r} in {args.out}")
    return 0
