"""VAD backends compared, and the CPU the VAD gate saves the detector on a realistic day.

    python bench/vad_gate.py compare [--utterances 30] [--seconds-per-noise 60]
    python bench/vad_gate.py gate [--minutes 10] [--duty 0.1] [--step-ms 1.0] [--model PATH]
                                  [--backends silero webrtc:0.5 ...] [--lookback 1.0]

``compare`` (dev split only: LibriSpeech dev speakers, hedgewars dev music; never eval):
  * speech recall: share of the reference speech frames (10 ms frames of the CLEAN utterance
    within 30 dB of its loud frames) flagged, with background noise or music mixed in at
    30, 10 and 0 dB SNR;
  * onset delay: first flag after the reference onset of each utterance (1 s of the same
    background before it), median and 95th percentile; "missed" = none within 1 s;
  * false-alarm share: frames flagged on non-speech alone (Speech Commands noises, music);
  * CPU seconds per audio second, single thread, through VoiceActivity.process in 80 ms chunks.
``gate``: a day of ``--minutes`` of background (noise files at -50 dBFS, music at -40 dBFS)
  with 2-5 s snippets of LibriSpeech dev utterances (-26 dBFS) at ``--duty`` of the time,
  at least 2 s apart; the Detector runs it with
  and without ``vad=...`` and a stand-in scorer that does a fixed amount of numpy work per
  80 ms step (``--step-ms``), or the real model with ``--model``. Reports the share of steps
  the model ran, CPU per audio second of the whole detector, the VAD's own share, and for
  each snippet whether the model was already running at its onset (thanks to the look-back)
  or started after it ("caught late": the first syllable never reached the model).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from polywake.audio import SAMPLE_RATE, load_audio  # noqa: E402
from polywake.data.splits import background_files, have_shared_data, shared_data_dir  # noqa: E402
from polywake.vad import VoiceActivity  # noqa: E402

CHUNK = int(0.08 * SAMPLE_RATE)
REF_FRAME = SAMPLE_RATE // 100
CONFIGS: list[tuple[str, dict]] = [
    ("webrtc mode 0", {"backend": "webrtc", "mode": 0}),
    ("webrtc mode 1", {"backend": "webrtc", "mode": 1}),
    ("webrtc mode 2", {"backend": "webrtc", "mode": 2}),
    ("webrtc mode 3", {"backend": "webrtc", "mode": 3}),
    ("silero onnx 0.5", {"backend": "silero", "threshold": 0.5}),
    ("silero onnx 0.3", {"backend": "silero", "threshold": 0.3}),
    ("silero ggml 0.5", {"backend": "silero-ggml", "threshold": 0.5}),
    ("ten 0.5", {"backend": "ten", "threshold": 0.5}),
    ("energy", {"backend": "energy"}),
]


def _speech_and_music() -> tuple[list[Path], list[Path]]:
    files = background_files("dev")
    return ([f for f in files if "librispeech" in f.parts],
            [f for f in files if "music" in f.parts])


def _noise_files() -> list[Path]:
    return sorted((shared_data_dir() / "noise" / "speech_commands").glob("*.flac"))


def _db(x: np.ndarray) -> np.ndarray:
    n = x.size // REF_FRAME
    f = x[: n * REF_FRAME].reshape(n, REF_FRAME).astype(np.float64)
    return 10 * np.log10(np.mean(f * f, axis=1) + 1e-12)


def reference_speech(clean: np.ndarray) -> np.ndarray:
    """10 ms frames of a clean utterance that are speech: within 30 dB of its loud frames."""
    e = _db(clean)
    return e > np.percentile(e, 95) - 30.0


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    ref = reference_speech(speech)
    p_s = np.mean(speech[: ref.size * REF_FRAME].reshape(-1, REF_FRAME)[ref] ** 2)
    p_n = np.mean(noise ** 2) + 1e-12
    return speech + noise * np.sqrt(p_s / p_n / 10 ** (snr_db / 10))


def run_vad(cfg: dict, audio: np.ndarray) -> tuple[np.ndarray, float, float]:
    """-> (flags on the 10 ms reference grid, CPU seconds, VAD frame seconds)."""
    vad = VoiceActivity(**cfg)
    t0 = time.process_time()
    flags = [vad.process(audio[i:i + CHUNK]) for i in range(0, audio.size, CHUNK)]
    cpu = time.process_time() - t0
    f = np.concatenate(flags)
    # A reference frame takes the flag of the VAD frame that covers its centre.
    centres = (np.arange(audio.size // REF_FRAME) * REF_FRAME + REF_FRAME // 2)
    idx = np.minimum(centres // vad.frame_samples, max(f.size - 1, 0))
    grid = f[idx] if f.size else np.zeros(centres.size, bool)
    grid[centres >= f.size * vad.frame_samples] = False
    return grid, cpu, vad.frame_seconds


def compare(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    speech_files, music_files = _speech_and_music()
    noise_files = _noise_files()
    picks = rng.choice(len(speech_files), size=min(args.utterances, len(speech_files)),
                       replace=False)
    utts = [load_audio(speech_files[i]) for i in sorted(picks)]
    backgrounds = [load_audio(f)[: int(args.seconds_per_noise * SAMPLE_RATE)]
                   for f in noise_files + music_files[: args.music_files]]
    kinds = ["noise"] * len(noise_files) + ["music"] * min(args.music_files, len(music_files))
    # One mixture per (utterance, SNR): 1 s of background, then utterance + background.
    mixtures: list[tuple[float, np.ndarray, np.ndarray]] = []
    lead = SAMPLE_RATE
    for snr in (30.0, 10.0, 0.0):
        for u in utts:
            bg = backgrounds[int(rng.integers(len(backgrounds)))]
            n = lead + u.size
            start = int(rng.integers(0, max(1, bg.size - n)))
            noise = np.resize(bg[start:start + n], n)
            s = np.concatenate([np.zeros(lead, np.float32), u])
            ref = np.concatenate([np.zeros(lead // REF_FRAME, bool), reference_speech(u)])
            mixtures.append((snr, mix_at_snr(s, noise, snr).astype(np.float32), ref))
    speech_seconds = sum(m[1].size for m in mixtures) / SAMPLE_RATE
    bg_seconds = sum(b.size for b in backgrounds) / SAMPLE_RATE
    print(f"speech: {len(utts)} dev utterances x 3 SNRs = {speech_seconds / 60:.1f} min; "
          f"non-speech: {len(noise_files)} noise files + {kinds.count('music')} music files = "
          f"{bg_seconds / 60:.1f} min; single thread")
    print("| VAD | frame ms | recall 30 dB | recall 10 dB | recall 0 dB | onset delay median / "
          "p95 ms (10 dB) | onsets missed | FA share noise | FA share music | "
          "CPU s per audio s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, cfg in CONFIGS:
        try:
            VoiceActivity(**cfg)
        except RuntimeError as e:
            print(f"| {name} | not available: {e} |")
            continue
        cpu = 0.0
        audio_s = 0.0
        recall: dict[float, list[float]] = {30.0: [], 10.0: [], 0.0: []}
        delays: list[float] = []
        missed = 0
        frame_s = 0.0
        for snr, mix, ref in mixtures:
            grid, c, frame_s = run_vad(cfg, mix)
            cpu += c
            audio_s += mix.size / SAMPLE_RATE
            m = min(grid.size, ref.size)
            recall[snr].append(float(np.mean(grid[:m][ref[:m]])))
            if snr == 10.0:
                onset = int(np.argmax(ref))
                window = grid[max(0, onset - 20): onset + 100]
                hit = np.flatnonzero(window)
                if hit.size:
                    delays.append((hit[0] + max(0, onset - 20) - onset) * 10.0)
                else:
                    missed += 1
        fa = {"noise": [], "music": []}
        for kind, bg in zip(kinds, backgrounds, strict=True):
            grid, c, _ = run_vad(cfg, bg)
            cpu += c
            audio_s += bg.size / SAMPLE_RATE
            fa[kind].append(float(np.mean(grid)))
        d = np.array(delays) if delays else np.array([np.nan])
        print(f"| {name} | {frame_s * 1000:.0f} | {np.mean(recall[30.0]):.3f} | "
              f"{np.mean(recall[10.0]):.3f} | {np.mean(recall[0.0]):.3f} | "
              f"{np.median(d):.0f} / {np.percentile(d, 95):.0f} | {missed}/{len(utts)} | "
              f"{np.mean(fa['noise']):.3f} | {np.mean(fa['music']):.3f} | "
              f"{cpu / audio_s:.5f} |", flush=True)


# -- gate -------------------------------------------------------------------------------
class StandInScorer:
    """Costs a fixed amount of numpy work per step, like a small streaming model: a dense
    layer over a 1.5 s context of log-mel frames, sized to ``step_ms`` on this machine."""

    def __init__(self, words: list[str], step_ms: float, frames_per_step: int = 8) -> None:
        self.words = list(words)
        self.frames_per_step = frames_per_step
        rng = np.random.default_rng(0)
        self._ctx = 150
        self._w = rng.standard_normal((self._ctx * 40, 64)).astype(np.float32) * 0.01
        # Repeat the layer until one step costs about step_ms (measured once, here).
        state = self.new_state()
        frames = np.zeros((frames_per_step, 40), np.float32)
        self._reps = 1
        t0 = time.process_time()
        for _ in range(200):
            self.step(frames, state)
        per = (time.process_time() - t0) / 200
        self._reps = max(1, round(step_ms / 1000 / max(per, 1e-6)))

    def new_state(self) -> np.ndarray:
        return np.zeros((self._ctx, 40), np.float32)

    def step(self, frames: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = frames.shape[0] // self.frames_per_step
        out = np.zeros((k, len(self.words)), np.float32)
        for j in range(k):
            state = np.concatenate([state, frames[j * 8:(j + 1) * 8]])[-self._ctx:]
            v = state.reshape(-1)
            for _ in range(self._reps):
                h = v @ self._w
            out[j] = 1 / (1 + np.exp(-h[: len(self.words)]))
        return out, state


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12))


def build_day(minutes: float, duty: float, rng: np.random.Generator, speech_db: float,
              noise_db: float, music_db: float) -> tuple[np.ndarray, list[float]]:
    """A day: background beds of 60 s (Speech Commands noises at ``noise_db``, dev music at
    ``music_db`` dBFS RMS), with snippets of dev utterances (their first 2-5 s, so there are
    many onsets) at ``speech_db`` dBFS active-speech level, placed at random until ``duty`` of
    the time is speech. -> (audio, reference speech onsets in seconds)."""
    speech_files, music_files = _speech_and_music()
    n = int(minutes * 60 * SAMPLE_RATE)
    day = np.zeros(n, np.float32)
    beds = [(f, noise_db) for f in _noise_files() if "white" not in f.name] + [
        (f, music_db) for f in music_files[:6]]
    pos = 0
    while pos < n:
        f, level = beds[int(rng.integers(len(beds)))]
        x = load_audio(f)[: int(60 * SAMPLE_RATE)]
        x = x * 10 ** ((level - _rms_db(x)) / 20)
        m = min(x.size, n - pos)
        day[pos:pos + m] = x[:m]
        pos += m
    onsets: list[float] = []
    taken = np.zeros(n, bool)
    placed = 0
    fade = np.linspace(1.0, 0.0, SAMPLE_RATE // 20, dtype=np.float32)
    for k in rng.permutation(len(speech_files)):
        if placed >= duty * n:
            break
        u = load_audio(speech_files[k])[: int(rng.uniform(2.0, 5.0) * SAMPLE_RATE)].copy()
        u[-fade.size:] *= fade
        ref = reference_speech(u)
        active = u[: ref.size * REF_FRAME].reshape(-1, REF_FRAME)[ref]
        u *= 10 ** ((speech_db - _rms_db(active)) / 20)
        start = int(rng.integers(SAMPLE_RATE, n - u.size - SAMPLE_RATE))
        # At least 2 s of background between snippets, so every onset is a real onset.
        region = slice(start - 2 * SAMPLE_RATE, start + u.size + 2 * SAMPLE_RATE)
        if taken[region].any():
            continue
        taken[start:start + u.size] = True
        day[start:start + u.size] += u
        onsets.append((start + int(np.argmax(ref)) * REF_FRAME) / SAMPLE_RATE)
        placed += u.size
    return day, sorted(onsets)


def _vad(spec: str) -> VoiceActivity:
    """"silero" or "silero:0.3" (backend:threshold)."""
    name, _, thr = spec.partition(":")
    return VoiceActivity(name, threshold=float(thr)) if thr else VoiceActivity(name)


def gate(args: argparse.Namespace) -> None:
    from polywake.detect import Detector

    rng = np.random.default_rng(1)
    day, onsets = build_day(args.minutes, args.duty, rng, args.speech_db, args.noise_db,
                            args.music_db)
    if args.model:
        from polywake.model_io import load_scorer

        scorer = load_scorer(args.model)
        what = f"model {args.model}"
    else:
        scorer = StandInScorer(["a", "b", "c"], args.step_ms)
        what = f"stand-in scorer ({args.step_ms:g} ms per step target)"
    print(f"day: {args.minutes:g} min, {len(onsets)} speech snippets (2-5 s), speech "
          f"{args.speech_db:g} dBFS, noise {args.noise_db:g} dBFS, music {args.music_db:g} dBFS, "
          f"duty {args.duty:.0%}; {what}; look-back {args.lookback:g} s, hangover "
          f"{args.hangover:g} s; 80 ms chunks; single thread")
    print("| gate | steps run | CPU s per audio s | of which VAD | CPU saved | onsets with the "
          "model running from before the onset | median lead (s) | onsets caught late |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    audio_s = day.size / SAMPLE_RATE
    for name in ["off", *args.backends]:
        vad = False if name == "off" else _vad(name)
        det = Detector(scorer, vad=vad, vad_lookback_s=args.lookback,
                       vad_hangover_s=args.hangover)
        cpu = 0.0
        todo = list(onsets)
        leads: list[float] = []
        late = 0
        for i in range(0, day.size, CHUNK):
            t0 = time.process_time()
            det.process(day[i:i + CHUNK])
            cpu += time.process_time() - t0
            # Judged 1.5 s after each onset (the detector keeps only recent runs): the run
            # that covers the first 0.3 s of speech, and how long before the onset it began.
            while todo and det.now_s > todo[0] + 1.5:
                o = todo.pop(0)
                run = next(((a, b) for a, b in det.scored_runs if a <= o + 0.3 <= b), None)
                if run is not None and run[0] <= o:
                    leads.append(o - run[0])
                elif run is not None or any(o < a < o + 1.5 for a, _ in det.scored_runs):
                    late += 1
        vad_cpu = 0.0
        if vad:
            v2 = _vad(name)
            t1 = time.process_time()
            for i in range(0, day.size, CHUNK):
                v2.process(day[i:i + CHUNK])
            vad_cpu = time.process_time() - t1
        st = det.gate_stats
        base = cpu if base is None else base
        lead = "always on" if not vad else f"{np.median(leads):.2f}" if leads else "-"
        print(f"| {name} | {st['steps_scored'] / max(st['steps'], 1):.1%} | "
              f"{cpu / audio_s:.5f} | {vad_cpu / audio_s:.5f} | {1 - cpu / base:.0%} | "
              f"{len(leads)}/{len(onsets)} | {lead} | {late} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--utterances", type=int, default=30)
    c.add_argument("--seconds-per-noise", type=float, default=60.0)
    c.add_argument("--music-files", type=int, default=6)
    g = sub.add_parser("gate")
    g.add_argument("--minutes", type=float, default=10.0)
    g.add_argument("--duty", type=float, default=0.1)
    g.add_argument("--step-ms", type=float, default=1.0)
    g.add_argument("--model", default=None)
    g.add_argument("--backends", nargs="+", default=["silero", "webrtc", "energy"])
    g.add_argument("--speech-db", type=float, default=-26.0)
    g.add_argument("--noise-db", type=float, default=-50.0)
    g.add_argument("--music-db", type=float, default=-40.0)
    g.add_argument("--lookback", type=float, default=1.0)
    g.add_argument("--hangover", type=float, default=1.0)
    args = ap.parse_args()
    if not have_shared_data():
        raise SystemExit("needs ../shared/data (the project's machines have it)")
    compare(args) if args.cmd == "compare" else gate(args)


if __name__ == "__main__":
    main()
