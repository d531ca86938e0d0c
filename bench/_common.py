"""Helpers shared by the bench scripts: the evaluation sets, single-thread CPU timing, peak RSS.

Kept free of polywake's heavy imports (no torch, no matplotlib) and importable by a bare
interpreter with numpy, because bench/peers.py also runs it inside the peers' own venv.
Import this module before numpy wherever the thread limits matter: BLAS and OpenMP read the
environment variables once, when they load.
"""

from __future__ import annotations

import hashlib
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "TF_NUM_INTRAOP_THREADS",
               "TF_NUM_INTEROP_THREADS", "ORT_NUM_THREADS")
for _v in THREAD_VARS:
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "work_data"  # gitignored: caches, venvs, results


def single_thread_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process limited to one thread by every library we know."""
    env = dict(os.environ if base is None else base)
    env.update({v: "1" for v in THREAD_VARS})
    return env


def pin_to_one_core() -> int:
    """Pin this process (and threads it starts later) to one CPU: whatever a library's thread
    pool does, its work then runs on one core. Returns the core, or -1 where unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return -1
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    VmHWM from /proc first: ru_maxrss is carried over from the parent through fork and exec,
    so a child started by a big parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


@dataclass
class CpuTime:
    cpu_s: float = 0.0
    wall_s: float = 0.0


@contextmanager
def cpu_timer() -> Iterator[CpuTime]:
    """CPU seconds of this process (all its threads) and wall seconds spent inside the block."""
    out = CpuTime()
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        yield out
    finally:
        out.cpu_s = time.process_time() - c0
        out.wall_s = time.perf_counter() - w0


def to_int16(x: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> int16 PCM, as a microphone driver delivers it."""
    return np.clip(np.round(np.asarray(x, np.float32) * 32767.0), -32768, 32767).astype(np.int16)


def file_key(path: str | os.PathLike, *extra: object) -> str:
    """Cache key of a file's content version (path, size, mtime) and the settings in ``extra``."""
    p = Path(path).resolve()
    st = p.stat()
    raw = "|".join([str(p), str(st.st_size), str(st.st_mtime_ns), *map(str, extra)])
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


@dataclass
class EvalSet:
    """Positive clips per word and negative audio (with a source label per file)."""

    positives: dict[str, list[Path]]
    negatives: list[Path]
    negative_source: dict[str, str]  # str(path) -> "librispeech" | "music" | phrase folder


def peer_eval_set(word_folder: str = "jarvis",
                  other_folders: tuple[str, ...] = ("smart_mirror", "snowboy", "view_glass"),
                  ) -> EvalSet:
    """The set bench/peers.py measures every engine on: all real clips of ``word_folder`` as
    positives; the eval split of the background audio plus the other phrases' real clips as
    negatives. Needs the shared data (polywake.data.splits finds it)."""
    from polywake.data.splits import background_files, have_shared_data, real_keyword_files

    if not have_shared_data():
        raise SystemExit("../shared/data is absent: the peer benchmark needs the real data")
    negatives: list[Path] = []
    source: dict[str, str] = {}
    for f in background_files("eval"):
        negatives.append(f)
        source[str(f)] = "librispeech" if "librispeech" in f.parts else "music"
    for folder in other_folders:
        for f in real_keyword_files(folder):
            negatives.append(f)
            source[str(f)] = folder
    return EvalSet({word_folder: real_keyword_files(word_folder)}, negatives, source)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def example_draw(n_clips: int, k: int, draw: int, word: str) -> set[int]:
    """Indices of the ``k`` real clips (of ``n_clips``) that draw ``draw`` gives a phrase as its
    enrollment examples. Every bench that adds a word from examples draws through here, so
    their tables are paired: the same examples, FRR on the same remaining clips."""
    if not k:
        return set()
    rng = np.random.default_rng([draw, k, len(word)])
    return set(rng.choice(n_clips, k, replace=False).tolist())


def dev_frr_at(entry: dict, fa: float) -> float:
    """FRR on the dev voices at ``fa`` FA/h, from a card's (calibration entry's) operating
    points."""
    op = entry["operating_points"]
    return float(op["frr"][op["fa_per_hour"].index(fa)])
