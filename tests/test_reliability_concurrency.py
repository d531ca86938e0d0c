"""Reliability (issue 9): many streams on one model give each stream exactly its own result.

* threads: several Detectors share one OnnxScorer (one onnxruntime session), one NumpyScorer,
  or one TorchScorer; every stream's scores and detections equal the single-threaded run bit
  for bit;
* processes: several processes open the same ``.pwk`` at once; same check.

Each stream is chunked identically in the reference and in the concurrent run (chunking alone
changes scores by float rounding, see test_reliability_fuzz).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from polywake.audio import SAMPLE_RATE
from polywake.detect import Detection, Detector
from polywake.model_io import OnnxScorer, TorchScorer
from polywake.numpy_step import NumpyScorer

WORDS = ["alexa", "echo", "amazon", "computer", "hey samuel"]
N_STREAMS = 6
SECONDS = 6


def make_tiny_model(folder: Path, words: list[str] = WORDS, seed: int = 0) -> tuple[Path, Path]:
    """A TINY backbone + heads with random weights: (.safetensors checkpoint, exported .pwk)."""
    import torch

    from polywake.export import export_checkpoint
    from polywake.models.backbone import TINY, Backbone
    from polywake.models.heads import WakeWordHeads
    from polywake.models.wakeword import save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    backbone = Backbone(TINY).eval()
    heads = WakeWordHeads(backbone.embed_dim, list(words))
    ckpt = save_checkpoint(folder / "tiny.safetensors", backbone=backbone, heads=heads,
                           card={"kind": "reliability-test"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pwk = export_checkpoint(ckpt, folder / "tiny.pwk")
    return ckpt, pwk


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_tiny_model(tmp_path_factory.mktemp("model"))


def stream_audio(i: int) -> np.ndarray:
    """Stream i: noise plus speech-like bursts at its own times and pitches."""
    rng = np.random.default_rng(100 + i)
    n = SECONDS * SAMPLE_RATE
    t = np.arange(n) / SAMPLE_RATE
    x = 0.05 * rng.standard_normal(n)
    for start in rng.uniform(0, SECONDS - 1, 4):
        m = (t >= start) & (t < start + 0.6)
        f0 = rng.uniform(90, 250)
        x[m] += 0.3 * np.sin(2 * np.pi * f0 * t[m]) * np.sin(np.pi * (t[m] - start) / 0.6)
    return x.astype(np.float32)


def chunk_sizes(i: int) -> list[int]:
    """Stream i's chunking: 80 ms for some streams, random sizes for others."""
    if i % 2 == 0:
        return [1280]
    return [int(v) for v in np.random.default_rng(i).integers(1, 4000, 50)]


def thresholds_for(scorer: Any) -> dict[str, float]:
    rows = Detector(scorer).scores(stream_audio(99))
    return {w: float(np.quantile(rows[:, k], 0.7)) for k, w in enumerate(scorer.words)}


class Recording:
    """A per-stream view of a shared scorer that keeps the score rows it hands out."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.words = scorer.words
        self.frames_per_step = scorer.frames_per_step
        self.card = getattr(scorer, "card", None)
        self.rows: list[np.ndarray] = []

    def new_state(self) -> Any:
        return self.scorer.new_state()

    def step(self, frames: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        out, state = self.scorer.step(frames, state)
        self.rows.append(np.array(out, copy=True))
        return out, state


def run_stream(scorer: Any, i: int, thresholds: dict[str, float],
               barrier: threading.Barrier | None = None) -> tuple[np.ndarray, list[Detection]]:
    rec = Recording(scorer)
    det = Detector(rec, thresholds=thresholds)
    audio, sizes = stream_audio(i), chunk_sizes(i)
    found: list[Detection] = []
    pos, k = 0, 0
    if barrier is not None:
        barrier.wait()
    while pos < audio.size:
        n = sizes[k % len(sizes)]
        found += det.process(audio[pos:pos + n])
        pos += n
        k += 1
    return np.concatenate(rec.rows), found + det.flush()


def run_threads(scorer: Any, thresholds: dict[str, float], repeat: int = 2
                ) -> list[tuple[np.ndarray, list[Detection]]]:
    """N_STREAMS x ``repeat`` threads at once; stream i runs ``repeat`` times concurrently."""
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(N_STREAMS * repeat)

    def work(slot: int) -> None:
        try:
            results[slot] = run_stream(scorer, slot % N_STREAMS, thresholds, barrier)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: more interleavings
    try:
        threads = [threading.Thread(target=work, args=(s,)) for s in range(N_STREAMS * repeat)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    return [results[s] for s in range(N_STREAMS * repeat)]


def _assert_same(got: tuple[np.ndarray, list[Detection]],
                 want: tuple[np.ndarray, list[Detection]], what: str) -> None:
    np.testing.assert_array_equal(got[0], want[0], err_msg=what)
    assert got[1] == want[1], what


@pytest.mark.parametrize("kind", ["onnx", "numpy", "torch"])
def test_threads_sharing_one_scorer(model: tuple[Path, Path], kind: str) -> None:
    import torch

    torch.set_num_threads(1)
    scorer = {"onnx": lambda: OnnxScorer(model[1]), "numpy": lambda: NumpyScorer(model[1]),
              "torch": lambda: TorchScorer(model[0])}[kind]()
    thresholds = thresholds_for(scorer)
    reference = [run_stream(scorer, i, thresholds) for i in range(N_STREAMS)]
    assert sum(len(r[1]) for r in reference) > 0, "no detections: thresholds too high"
    for slot, got in enumerate(run_threads(scorer, thresholds)):
        _assert_same(got, reference[slot % N_STREAMS], f"{kind} stream {slot}")


def test_threads_each_with_its_own_scorer_agree(model: tuple[Path, Path]) -> None:
    """One session per thread and one shared session give the same numbers."""
    shared = OnnxScorer(model[1])
    thresholds = thresholds_for(shared)
    results: dict[int, Any] = {}

    def work(i: int) -> None:
        results[i] = run_stream(OnnxScorer(model[1]), i, thresholds)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for i in range(3):
        _assert_same(results[i], run_stream(shared, i, thresholds), f"stream {i}")


_CHILD = textwrap.dedent("""
    import sys, json
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_reliability_concurrency import run_stream
    from polywake.model_io import OnnxScorer
    scorer = OnnxScorer(sys.argv[2])
    thresholds = json.loads(sys.argv[3])
    for i in map(int, sys.argv[5].split(",")):
        rows, found = run_stream(scorer, i, thresholds)
        np.save(f"{sys.argv[4]}/rows_{i}.npy", rows)
        with open(f"{sys.argv[4]}/found_{i}.json", "w") as fh:
            json.dump([d.to_dict() for d in found], fh)
""")


def test_processes_sharing_one_model_file(tmp_path: Path, model: tuple[Path, Path]) -> None:
    import json

    scorer = OnnxScorer(model[1])
    thresholds = thresholds_for(scorer)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    groups = ["0,1", "2,3", "4,5"]
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(Path(__file__).parent),
                               str(model[1]), json.dumps(thresholds), str(tmp_path), g],
                              env=env, stderr=subprocess.PIPE) for g in groups]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    for i in range(N_STREAMS):
        want = run_stream(scorer, i, thresholds)
        np.testing.assert_array_equal(np.load(tmp_path / f"rows_{i}.npy"), want[0])
        found = json.loads((tmp_path / f"found_{i}.json").read_text())
        assert [Detection(**d) for d in found] == want[1], f"stream {i}"
