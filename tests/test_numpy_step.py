"""NumpyScorer (polywake.numpy_step): the probabilities of torch's ``WakeWordModel.stream`` and of
the ONNX graph, from the numpy section of a version-2 ``.pwk``; version-1 files still load with
onnxruntime; ``load_scorer``'s backend choice and ``--backend`` on the command line."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from polywake.audio import load_audio
from polywake.commands.demo import EXAMPLE
from polywake.detect import Detector
from polywake.errors import ModelFileError
from polywake.export import export_checkpoint
from polywake.features import STREAM_LEAD, num_frames
from polywake.model_io import (
    DEFAULT_MODEL,
    MAGIC,
    OnnxScorer,
    TorchScorer,
    _digest,
    load_scorer,
    read_pwk_file,
    write_pwk,
)
from polywake.models.backbone import CONFIGS, Backbone
from polywake.models.heads import WakeWordHeads
from polywake.models.wakeword import save_checkpoint
from polywake.numpy_step import NumpyScorer

TOL = 1e-5
DEFAULT_CKPT = DEFAULT_MODEL.with_suffix(".safetensors")


def make_model(folder: Path, size: str, n_words: int, *, int8: bool = False,
               seed: int = 0) -> tuple[Path, Path]:
    """A random model whose BatchNorms have non-trivial statistics (so folding them shows)
    and whose heads score all over (0, 1); -> (checkpoint, exported .pwk)."""
    torch.manual_seed(seed)
    bb = Backbone(CONFIGS[size])
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    bb.eval()
    heads = WakeWordHeads(bb.embed_dim, [f"word {i}" for i in range(n_words)])
    with torch.no_grad():
        for b in heads.b2:
            b.normal_()
    name = f"{size}_{n_words}{'_int8' if int8 else ''}"
    ckpt = save_checkpoint(folder / f"{name}.safetensors", backbone=bb, heads=heads,
                           card={"name": name})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ckpt, export_checkpoint(ckpt, folder / f"{name}.pwk", int8=int8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp("numpy_step")


@pytest.fixture(scope="module")
def tiny5(folder: Path) -> tuple[Path, Path]:
    return make_model(folder, "tiny", 5)


def real_ish_audio(speechlike: np.ndarray) -> np.ndarray:
    """The shipped example (TTS words over real kitchen noise), then the synthetic voice."""
    return np.concatenate([load_audio(EXAMPLE)[: 6 * 16000], speechlike])


def stream(scorer, audio: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    det = Detector(scorer)
    return np.concatenate([det.scores(c) for c in np.split(audio, cuts)])


def chunkings(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    random = [np.cumsum(rng.integers(1, 5001, n // 1000 + 2)) for _ in range(3)]
    return [c[c < n] for c in random] + [np.arange(1280, n, 1280), np.array([], int)]


@pytest.mark.parametrize(("size", "n_words"), [("standard", 1), ("standard", 10),
                                               ("tiny", 1), ("tiny", 10)])
def test_numpy_equals_torch_stream_and_onnx(folder: Path, speechlike: np.ndarray,
                                            rng: np.random.Generator, size: str,
                                            n_words: int) -> None:
    ckpt, pwk = make_model(folder, size, n_words)
    audio = real_ish_audio(speechlike)
    torch_scorer, onnx_scorer, numpy_scorer = TorchScorer(ckpt), OnnxScorer(pwk), \
        NumpyScorer(pwk)
    ref = stream(torch_scorer, audio, np.array([], int))  # WakeWordModel.stream, one block
    assert ref.shape == (num_frames(audio.size + STREAM_LEAD) // 8, n_words)
    assert ref.std() > 0.005  # scores move
    onnx = stream(onnx_scorer, audio, np.array([], int))
    for cuts in chunkings(audio.size, rng):
        got = stream(numpy_scorer, audio, cuts)
        assert got.shape == ref.shape and got.dtype == np.float32
        assert np.abs(got - ref).max() <= TOL
        assert np.abs(got - onnx).max() <= TOL


def test_shipped_default_model_numpy_equals_onnx_and_torch() -> None:
    audio = load_audio(EXAMPLE)
    f = read_pwk_file(DEFAULT_MODEL)
    assert f.version == 2 and f.numpy is not None, "re-export assets/default.pwk"
    numpy_scorer = load_scorer()
    assert isinstance(numpy_scorer, NumpyScorer)
    onnx_scorer = load_scorer(backend="onnx")
    cuts = np.arange(1280, audio.size, 1280)
    got = stream(numpy_scorer, audio, cuts)
    assert np.abs(got - stream(onnx_scorer, audio, cuts)).max() <= TOL
    if DEFAULT_CKPT.exists():
        assert np.abs(got - stream(TorchScorer(DEFAULT_CKPT), audio, cuts)).max() <= TOL
    # Same scores, same decisions: the two backends fire the same events.
    events = [[(d.word, d.start_s, d.end_s) for d in Detector(s).iter_file(EXAMPLE)]
              for s in (numpy_scorer, onnx_scorer)]
    assert events[0] == events[1] and {w for w, _, _ in events[0]} >= {"alexa", "hey samuel"}


def test_interface_matches_onnx_scorer(tiny5: tuple[Path, Path], rng: np.random.Generator
                                       ) -> None:
    n, o = NumpyScorer(tiny5[1]), OnnxScorer(tiny5[1])
    assert (n.card, n.words, n.frames_per_step) == (o.card, o.words, o.frames_per_step)
    # The same state tensors as the graph's, time-major: (1, cin, p) -> (p, cin).
    assert [s.shape for s in n.new_state()] == [s.shape[:0:-1] for s in o.new_state()]
    frames = rng.standard_normal((3 * n.frames_per_step, n.n_mels)).astype(np.float32)
    state = [s + 1.0 for s in n.new_state()]
    before = [s.copy() for s in state]
    whole, new = n.step(frames, state)
    assert all(np.array_equal(a, b) for a, b in zip(state, before, strict=True))
    one, st = [], state
    for i in range(3):  # three steps one at a time == the three at once
        p, st = n.step(frames[i * 8:(i + 1) * 8], st)
        one.append(p)
    assert np.abs(np.concatenate(one) - whole).max() <= 1e-6
    assert all(np.abs(a - b).max() <= 1e-6 for a, b in zip(st, new, strict=True))
    empty, same = n.step(frames[:0], state)
    assert empty.shape == (0, 5) and all(np.array_equal(a, b) for a, b in zip(same, state,
                                                                               strict=True))
    for bad in (frames[:7], frames[:, :10], frames[None]):
        with pytest.raises(ValueError, match="frames"):
            n.step(bad, n.new_state())
    with pytest.raises(ValueError, match="state"):
        n.step(frames, n.new_state()[1:])


def test_threads_share_one_scorer(tiny5: tuple[Path, Path], speechlike: np.ndarray) -> None:
    scorer = NumpyScorer(tiny5[1])
    clips = [np.roll(speechlike, 4000 * i) for i in range(4)]
    want = [Detector(scorer).scores(c) for c in clips]
    got: list[np.ndarray | None] = [None] * len(clips)

    def run(i: int) -> None:
        det = Detector(scorer)
        got[i] = np.concatenate([det.scores(clips[i][j:j + 640])
                                 for j in range(0, clips[i].size, 640)])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(got, want, strict=True):
        assert a is not None and np.abs(a - b).max() <= 1e-6


def test_int8_export_keeps_a_float32_numpy_section(folder: Path,
                                                   speechlike: np.ndarray) -> None:
    ckpt, pwk = make_model(folder, "tiny", 5, int8=True)
    assert read_pwk_file(pwk).card["quantization"] == "int8-dynamic"
    ref = Detector(TorchScorer(ckpt)).scores(speechlike)
    assert np.abs(Detector(load_scorer(pwk)).scores(speechlike) - ref).max() <= TOL


def test_onnx_only_export_is_smaller_and_runs_on_onnxruntime(folder: Path,
                                                              speechlike: np.ndarray) -> None:
    ckpt, both = make_model(folder, "tiny", 5, int8=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        only = export_checkpoint(ckpt, folder / "onnx_only.pwk", int8=True, numpy=False)
    f = read_pwk_file(only)
    assert f.numpy is None and f.onnx == read_pwk_file(both).onnx
    assert only.stat().st_size < both.stat().st_size
    scorer = load_scorer(only)  # auto: no numpy section -> onnxruntime
    assert isinstance(scorer, OnnxScorer)
    assert np.abs(Detector(scorer).scores(speechlike)
                  - Detector(load_scorer(both, backend="onnx")).scores(speechlike)).max() == 0
    with pytest.raises(ModelFileError, match="exported with --onnx-only and has no numpy"):
        load_scorer(only, backend="numpy")


def write_v1(path: Path, card: dict, onnx: bytes) -> Path:
    """A format-version-1 file, as polywake wrote them before the numpy section."""
    header = json.dumps({"card": card, "sha256": _digest(card, onnx)}).encode()
    path.write_bytes(MAGIC + struct.pack("<II", 1, len(header)) + header + onnx)
    return path


def test_backend_choice_and_old_files(folder: Path, tiny5: tuple[Path, Path],
                                      speechlike: np.ndarray) -> None:
    ckpt, pwk = tiny5
    assert isinstance(load_scorer(pwk), NumpyScorer)
    assert isinstance(load_scorer(pwk, backend="numpy"), NumpyScorer)
    assert isinstance(load_scorer(pwk, backend="onnx"), OnnxScorer)
    assert isinstance(load_scorer(ckpt), TorchScorer)
    with pytest.raises(ModelFileError, match="export"):
        load_scorer(ckpt, backend="numpy")
    with pytest.raises(ValueError, match="backend"):
        load_scorer(pwk, backend="tflite")
    f = read_pwk_file(pwk)
    assert f.onnx is not None
    ref = Detector(OnnxScorer(pwk)).scores(speechlike)
    v1 = write_v1(folder / "v1.pwk", f.card, f.onnx)
    no_numpy = write_pwk(folder / "no_numpy.pwk", f.onnx, f.card)
    for old in (v1, no_numpy):
        scorer = load_scorer(old)  # auto: onnxruntime, the only step these files have
        assert isinstance(scorer, OnnxScorer)
        assert np.array_equal(Detector(scorer).scores(speechlike), ref)
        for load in (NumpyScorer, lambda p: load_scorer(p, backend="numpy")):
            with pytest.raises(ModelFileError, match="no numpy section; run it with the "
                               "onnx backend") as e:
                load(old)
            assert str(old) in str(e.value)
        assert ("format version 1" in str(e.value)) == (old == v1)


def test_detect_cli_backends_agree() -> None:
    out = {}
    for backend in ("numpy", "onnx", "auto"):
        r = subprocess.run([sys.executable, "-m", "polywake.cli", "detect", "--json",
                            "--backend", backend, str(EXAMPLE)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        out[backend] = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out["numpy"]) >= 2
    for other in ("onnx", "auto"):
        assert len(out[other]) == len(out["numpy"])
        for x, y in zip(out["numpy"], out[other], strict=True):
            a, b = dict(x), dict(y)
            assert abs(a.pop("score") - b.pop("score")) <= TOL
            assert abs(a.pop("margin") - b.pop("margin")) <= 1e-3  # log-odds: p near 1
            assert a == b
