"""bench/streaming.py and bench/oww_embedder.py: step conventions, the doc section writer, the
exactness check on a tiny model, and (where the peers' venv exists) the openWakeWord embedder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import oww_embedder  # noqa: E402
import streaming  # noqa: E402
from polywake.detect import Detector  # noqa: E402
from polywake.features import STREAM_LEAD, num_frames  # noqa: E402
from polywake.scoring import ConstantScorer  # noqa: E402

HAVE_OWW = (oww_embedder._model_dir() is not None
            and (oww_embedder.VENV / "bin" / "python").exists())


@pytest.mark.parametrize("n", [0, 399, 400, 1679, 1680, 13039, 13040, 41199, 41200, 160000])
def test_oww_step_convention_is_polywakes(n: int) -> None:
    # The embedder keeps polywake's window grid (train.windows); the Detector's stream is the
    # same grid on the signal with STREAM_LEAD zeros in front.
    from polywake.train.windows import step_end_samples

    det = Detector(ConstantScorer(["a"]))
    assert oww_embedder.polywake_steps(n) == num_frames(n) // 8
    assert det.scores(np.zeros(n, np.float32)).shape[0] == \
        oww_embedder.polywake_steps(n + STREAM_LEAD) == n // 1280
    ends = step_end_samples(3)
    for i in range(3):
        assert oww_embedder.step_end_sample(i) == ends[i] == det.step_end_sample(i) + STREAM_LEAD


def test_oww_group_geometry() -> None:
    # A mel input of 1632 samples yields 8 frames of 512 (the model's (n - 512) // 160 + 1);
    # minus the zero-weight edges it is exactly polywake's 8 frames of 400 at hop 160.
    g = oww_embedder.GROUP_SAMPLES
    assert (g - 512) // 160 + 1 == 8
    assert g - 2 * oww_embedder.EDGE == oww_embedder.step_end_sample(0)


def test_write_doc_replaces_only_its_section(tmp_path: Path) -> None:
    doc = tmp_path / "d.md"
    doc.write_text("# T\n\nintro\n")
    streaming.write_doc(doc, "first")
    doc.write_text(doc.read_text() + "\n## other section\n\nkept\n")
    streaming.write_doc(doc, "second")
    text = doc.read_text()
    assert "first" not in text and "second" in text
    assert text.startswith("# T\n\nintro\n") and "kept" in text
    assert text.count(streaming.BEGIN) == 1 and text.count(streaming.END) == 1


@pytest.mark.parametrize("backend", ["onnx", "numpy"])
def test_exactness_on_a_tiny_model(tmp_path: Path, speechlike: np.ndarray, backend: str) -> None:
    import torch

    from polywake.export import export_checkpoint
    from polywake.models.backbone import TINY, Backbone
    from polywake.models.heads import WakeWordHeads
    from polywake.models.wakeword import save_checkpoint

    torch.manual_seed(0)
    bb = Backbone(TINY).eval()
    heads = WakeWordHeads(bb.embed_dim, streaming.WORDS[:5])
    ckpt = save_checkpoint(tmp_path / "m.safetensors", backbone=bb, heads=heads)
    pwk = export_checkpoint(ckpt, tmp_path / "m.pwk")
    setup = {"backbone": "tiny", "words": 5, "quant": "float32", "backend": backend,
             "exact_ckpt": str(ckpt), "exact_pwk": str(pwk)}
    rows = streaming.exactness([setup], np.round(speechlike * 32767).astype(np.int16))
    assert len(rows) == 1 and rows[0][-1] == "**yes**"
    assert float(rows[0][-2]) <= streaming.TOL


def test_measure_setups_both_backends(tmp_path: Path, speechlike: np.ndarray) -> None:
    """The CPU/memory workers on a 1-word tiny model: one onnx and one numpy setup; the numpy
    process never imports onnxruntime, neither imports torch."""
    setups, _ = streaming.build_models(tmp_path, names=("tiny",), n_words=(1,),
                                       quants=("float32",))
    assert [s["backend"] for s in setups] == ["onnx", "numpy"]
    assert all(s["section_kib"] > 0 and s["kib"] > s["section_kib"] for s in setups)
    audio = tmp_path / "a.npy"
    np.save(audio, np.round(np.tile(speechlike, 2) * 32767).astype(np.int16))
    tm, base = streaming.measure_setups(setups, audio, {"pass_s": 2.0, "sweeps": 1}, 2.0)
    assert not tm["torch_imported"] and base["peak_rss_mb"] > 0
    onnx, numpy_ = (s["mem"] for s in setups)
    assert onnx["ort_imported"] and not numpy_["ort_imported"]
    assert not onnx["torch_imported"] and not numpy_["torch_imported"]
    rows = streaming.polywake_rows(setups, tm, base)
    assert [len(r) for r in rows] == [len(streaming.CPU_HEADER)] * 2
    assert all(s["time"]["step_us"] > 0 and s["time"]["events"] == 0 for s in setups)
    assert rows[1][-2] == "no / no" and rows[0][-2] == "no / yes"


@pytest.mark.skipif(not HAVE_OWW, reason="the peers' venv (bench/peers.py) is not there")
def test_oww_embedder_shapes_determinism_and_stream() -> None:
    rng = np.random.default_rng(0)
    with oww_embedder.OwwEmbedder() as emb:
        assert emb.dim == 96 and emb.key.startswith("oww-")
        w = (0.1 * rng.standard_normal((2, 16000))).astype(np.float32)
        a = emb.windows(w)
        assert a.shape == (2, oww_embedder.polywake_steps(16000), 96) and a.dtype == np.float16
        assert np.array_equal(a, emb.windows(w))
        assert np.array_equal(emb.stream(w[1]), a[1])
        assert np.all(a[:, :9] == a[:, 9:10])  # lead="repeat": steps 0..8 copy step 9
        assert emb.windows(np.zeros((0, 16000), np.float32)).shape == (0, 12, 96)
