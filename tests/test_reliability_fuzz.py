"""Reliability (issue 9): fuzz every entry point that takes audio or audio files.

Contract under test: any input gives a correct result or a :class:`PolywakeError` whose message
is non-empty and names the file (when there is one), never another exception type; a running
:class:`Detector` that is handed a bad chunk raises that error and is unchanged by it.

Example counts are sized so the whole file runs in ~15 s on a loaded 2-core machine;
``POLYWAKE_FUZZ_SCALE=20`` multiplies them for a longer campaign (docs/RELIABILITY.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from polywake.audio import (
    MAX_CHANNELS,
    MAX_RATE,
    MIN_RATE,
    SAMPLE_RATE,
    AudioError,
    iter_audio_blocks,
    load_audio,
    to_mono_16k,
    write_audio,
)
from polywake.cli import main
from polywake.detect import Detection, Detector
from polywake.errors import PolywakeError
from polywake.model_io import OnnxScorer

WORDS = ["alexa", "echo", "amazon", "computer", "hey samuel"]
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large,
                                                      HealthCheck.filter_too_much])


# POLYWAKE_FUZZ_SCALE=20 runs 20x the examples (a longer campaign; docs/RELIABILITY.md).
SCALE = float(os.environ.get("POLYWAKE_FUZZ_SCALE", "1"))


def fuzz(n: int) -> settings:
    """Hypothesis settings with ``n`` examples (times POLYWAKE_FUZZ_SCALE)."""
    return settings(FUZZ, max_examples=max(1, round(n * SCALE)))

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


# -- a small real model (random weights), shared by the module ----------------------------------
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


@pytest.fixture(scope="module")
def scorer(model: tuple[Path, Path]) -> OnnxScorer:
    return OnnxScorer(model[1])


@pytest.fixture(scope="module")
def thresholds(scorer: OnnxScorer) -> dict[str, float]:
    """Per-word thresholds that a random-weight model crosses now and then on noise, so the
    decision logic (candidates, refractory, arbitration) is exercised, not only the scores."""
    noise = (0.1 * np.random.default_rng(7).standard_normal(8 * SAMPLE_RATE)).astype(np.float32)
    rows = Detector(scorer).scores(noise)
    return {w: float(np.quantile(rows[:, i], 0.8)) for i, w in enumerate(scorer.words)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def assert_clear(err: BaseException, path: Path | None = None) -> None:
    assert isinstance(err, PolywakeError), f"{type(err).__name__}: {err}"
    msg = str(err)
    assert msg.strip(), "empty error message"
    if path is not None:
        assert str(path) in msg, f"message does not name the file: {msg}"


@contextlib.contextmanager
def clear_error(path: Path | None = None) -> Iterator[None]:
    """Let a PolywakeError through (checked: message, file name); any other exception fails."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - the point is to catch everything
        assert_clear(e, path)


# ==============================================================================================
# to_mono_16k: arrays
# ==============================================================================================
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32]
FLOAT_DTYPES = [np.float16, np.float32, np.float64]
GOOD_RATES = [MIN_RATE, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000, 192000, MAX_RATE]
BAD_RATES: list[Any] = [0, -16000, 1, MIN_RATE - 1, MAX_RATE + 1, 16000.0, 2**40, None, "16000"]


@st.composite
def sample_arrays(draw: st.DrawFn, *, specials: bool = True, max_n: int = 2500
                  ) -> tuple[np.ndarray, int]:
    """(array shaped (n,) or (n, ch), rate). Integers may be at their extremes; floats may hold
    NaN/inf (if ``specials``) and values up to +-1e9 (may be refused when far above 1)."""
    dtype = np.dtype(draw(st.sampled_from(INT_DTYPES + FLOAT_DTYPES)))
    n = draw(st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(4, max_n)))
    ch = draw(st.one_of(st.none(), st.integers(1, 8)))
    shape = (n,) if ch is None else (n, ch)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fill = draw(st.sampled_from(["uniform", "extremes", "zeros", "sine"]))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if fill == "uniform":
            a = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        elif fill == "extremes":
            a = rng.choice(np.array([info.min, info.max], dtype), size=shape)
        elif fill == "zeros":
            a = np.zeros(shape, dtype)
        else:
            mid = (int(info.max) + int(info.min)) / 2
            s = np.sin(np.arange(n) / 7.0)
            s = s if ch is None else np.repeat(s[:, None], ch, 1)
            a = (mid + 0.45 * (int(info.max) - int(info.min)) * s).astype(dtype)
    else:
        scale = draw(st.sampled_from([1e-30, 1e-3, 1.0, 100.0, 1e6, 1e9]))
        a = (scale * rng.uniform(-1, 1, size=shape)).astype(dtype)
        if fill == "zeros":
            a[...] = 0
        if specials and n:
            for _ in range(draw(st.integers(0, 3))):
                v = draw(st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 5e-324]))
                a.reshape(-1)[draw(st.integers(0, a.size - 1))] = v
    rate = draw(st.sampled_from(GOOD_RATES))
    return a, rate


@fuzz(300)
@given(sample_arrays())
def test_to_mono_16k_arrays(case: tuple[np.ndarray, int]) -> None:
    a, rate = case
    bad_value = a.dtype.kind == "f" and not np.all(np.isfinite(a))
    # Float audio is nominally in [-1, 1]; far above (MAX_FLOAT_AMPLITUDE) may be refused.
    loud = a.dtype.kind == "f" and a.size > 0 and not bad_value \
        and float(np.max(np.abs(a.astype(np.float64)))) > 1.0
    too_short = a.shape[0] * SAMPLE_RATE / rate < 0.5  # less than one sample at 16 kHz
    try:
        y = to_mono_16k(a, rate)
    except Exception as e:  # noqa: BLE001
        assert_clear(e)
        assert too_short or bad_value or loud, f"refused good audio: {e}"
        if bad_value:
            assert "NaN" in str(e)
        return
    assert not bad_value, "NaN/inf was accepted"
    assert y.size > 0, "empty result instead of an error"
    assert y.dtype == np.float32 and y.ndim == 1 and y.flags.c_contiguous
    assert np.all(np.isfinite(y))
    n = a.shape[0]
    assert abs(y.size - n * SAMPLE_RATE / rate) <= 1.0
    if a.dtype.kind in "iu":
        # Integer PCM is scaled into [-1, 1]: int extremes must not wrap or overflow.
        # (a band-limited resampler overshoots steps: Gibbs, up to ~1.3 seen; 4 catches wraps)
        limit = 1.0 if rate == SAMPLE_RATE else 4.0
        assert float(np.max(np.abs(y), initial=0.0)) <= limit + 1e-6
    if rate == SAMPLE_RATE and a.dtype.kind == "f":
        want = a.astype(np.float64)
        want = want.mean(axis=1) if want.ndim == 2 else want
        # mixing channels rounds in the input's precision, the result in float32's
        eps = max(float(np.finfo(a.dtype).eps), float(np.finfo(np.float32).eps))
        atol = 8 * eps * float(np.max(np.abs(a), initial=0.0)) + 1e-30
        np.testing.assert_allclose(y, want.astype(np.float32), rtol=4 * eps, atol=atol)


@fuzz(60)
@given(st.data())
def test_to_mono_16k_rejects_what_is_not_audio(data: st.DataObject) -> None:
    bad = data.draw(st.sampled_from([
        "rate", "channels0", "channels_many", "3d", "0d", "bool", "complex", "object", "str",
    ]))
    a: Any = np.zeros(100, np.float32)
    rate: Any = 16000
    if bad == "rate":
        rate = data.draw(st.sampled_from(BAD_RATES))
    elif bad == "channels0":
        a = np.zeros((100, 0), np.float32)
    elif bad == "channels_many":
        a = np.zeros((10, data.draw(st.integers(MAX_CHANNELS + 1, 300))), np.float32)
    elif bad == "3d":
        a = np.zeros((4, 2, 2), np.float32)
    elif bad == "0d":
        a = np.float32(0.5)
    elif bad == "bool":
        a = np.ones(10, bool)
    elif bad == "complex":
        a = np.ones(10, np.complex64)
    elif bad == "object":
        a = np.array([None, 1.0], dtype=object)
    else:
        a = "not audio"
    with pytest.raises(AudioError) as info:
        to_mono_16k(a, rate, what="mic")
    assert_clear(info.value)
    assert "mic" in str(info.value)


@pytest.mark.parametrize("case", ["f64_1e300", "f64_stereo_max", "f32_max_resampled"])
def test_to_mono_16k_huge_floats_do_not_become_inf(case: str) -> None:
    """Was bug 1 (docs/RELIABILITY.md): inf/NaN out of finite input."""
    a, rate = {
        "f64_1e300": (np.full(400, 1e300), 16000),
        "f64_stereo_max": (np.full((400, 2), 1.7e308), 16000),
        "f32_max_resampled": (np.full(400, 3e38, np.float32), 8000),
    }[case]
    with clear_error():
        y = to_mono_16k(a, rate)
        assert np.all(np.isfinite(y)), "to_mono_16k returned inf/NaN samples"


@pytest.mark.parametrize("where", ["to_mono_16k", "Detector.process"])
def test_ragged_sequences_are_a_clear_error(where: str, scorer: OnnxScorer) -> None:
    """Was bug 2: a bare ValueError from np.asarray."""
    ragged = [[0.1], [0.1, 0.2]]
    with pytest.raises(AudioError):
        if where == "to_mono_16k":
            to_mono_16k(ragged, 16000)
        else:
            Detector(scorer).process(ragged)  # type: ignore[arg-type]


def test_unsigned_pcm_full_scale_maps_to_full_scale(scorer: OnnxScorer) -> None:
    """Was bug 3: uint8 full scale became +-0.5; the Detector kept unsigned PCM's offset."""
    u8 = np.array([0, 128, 255], np.uint8)
    np.testing.assert_allclose(to_mono_16k(u8, 16000), [-1.0, 0.0, 127 / 128], atol=1e-6)
    x = (np.random.default_rng(0).uniform(-0.9, 0.9, 16000) * 32767).astype(np.int16)
    unsigned = (x.astype(np.int32) + 32768).astype(np.uint16)
    a = Detector(scorer).scores(unsigned)
    b = Detector(scorer).scores(x)
    np.testing.assert_allclose(a, b, atol=1e-5)


# ==============================================================================================
# files: load_audio / iter_audio_blocks
# ==============================================================================================
# (format, extension, subtypes, rates it takes, max channels)
FORMATS: list[tuple[str, str, list[str], list[int], int]] = [
    ("WAV", "wav", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW",
                    "IMA_ADPCM"], [8000, 11025, 16000, 22050, 44100, 48000, 96000], 8),
    ("FLAC", "flac", ["PCM_S8", "PCM_16", "PCM_24"], [8000, 16000, 22050, 44100, 48000, 96000], 8),
    ("OGG", "ogg", ["VORBIS"], [8000, 16000, 22050, 44100, 48000], 8),
    ("OGG", "opus", ["OPUS"], [8000, 16000, 48000], 2),
    ("MP3", "mp3", ["MPEG_LAYER_III"], [8000, 16000, 22050, 44100, 48000], 2),
    ("AIFF", "aiff", ["PCM_16", "FLOAT"], [8000, 16000, 44100, 96000], 8),
]
LOSSY = {"VORBIS", "OPUS", "MPEG_LAYER_III", "ULAW", "IMA_ADPCM", "PCM_U8", "PCM_S8"}
MAGICS = [b"", b"RIFF", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS", b"ID3", b"\xff\xfb",
          b"FORM", b"caff", b"RF64", b"RIFX"]


@st.composite
def audio_files(draw: st.DrawFn) -> dict[str, Any]:
    """Bytes of an audio file (maybe corrupted), with what it was made from."""
    kind = draw(st.sampled_from(["clean", "clean", "truncated", "bitflip", "garbage_tail",
                                 "random"]))
    if kind == "random":
        data = draw(st.sampled_from(MAGICS)) + draw(st.binary(max_size=3000))
        return {"kind": kind, "data": data, "ext": draw(st.sampled_from(["wav", "flac", "ogg",
                                                                          "mp3", "raw"]))}
    fmt, ext, subtypes, rates, max_ch = draw(st.sampled_from(FORMATS))
    subtype = draw(st.sampled_from(subtypes))
    rate = draw(st.sampled_from(rates))
    ch = draw(st.integers(1, max_ch))
    n = draw(st.one_of(st.sampled_from([0, 1, 2]), st.integers(3, rate // 2)))
    seed = draw(st.integers(0, 2**32 - 1))
    x = (0.5 * np.random.default_rng(seed).uniform(-1, 1, (n, ch))).astype(np.float32)
    buf = io.BytesIO()
    try:
        sf.write(buf, x, rate, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, ValueError):
        assume(False)  # a combination libsndfile does not write; not what is under test
    data = buf.getvalue()
    if kind == "truncated":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif kind == "bitflip" and data:
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
        data = bytes(b)
    elif kind == "garbage_tail":
        data = data[: draw(st.integers(0, len(data)))] + draw(st.binary(min_size=1,
                                                                        max_size=2000))
    return {"kind": kind, "data": data, "ext": ext, "x": x, "rate": rate, "subtype": subtype}


def _write_case(folder: Path, case: dict[str, Any], name: str = "case") -> Path:
    p = folder / f"{name}.{case['ext']}"
    p.write_bytes(case["data"])
    return p


def _check_loaded(y: np.ndarray, case: dict[str, Any]) -> None:
    assert y.dtype == np.float32 and y.ndim == 1 and np.all(np.isfinite(y))
    if case["kind"] != "clean":
        return
    x, rate = case["x"], case["rate"]
    expect = x.shape[0] * SAMPLE_RATE / rate
    if case["subtype"] in LOSSY - {"PCM_U8", "PCM_S8", "ULAW"}:
        # codecs pad to whole frames / priming samples
        assert y.size <= expect + 0.1 * SAMPLE_RATE
        return
    assert abs(y.size - expect) <= 1.0
    if rate == SAMPLE_RATE:
        # half a quantisation step: mu-law's steps near full scale are ~1/32
        step = {"ULAW": 2.0 ** -4, "PCM_U8": 2.0 ** -6, "PCM_S8": 2.0 ** -6}.get(
            case["subtype"], 2.0 ** -14)
        np.testing.assert_allclose(y, x.mean(axis=1), atol=step)


@fuzz(300)
@given(audio_files())
def test_load_audio_and_iter_blocks_on_any_file(workdir: Path, case: dict[str, Any]) -> None:
    path = _write_case(workdir, case)
    loaded: np.ndarray | None = None
    try:
        loaded = load_audio(path)
    except Exception as e:  # noqa: BLE001
        assert_clear(e, path)
        if case["kind"] == "clean":
            assert case["x"].shape[0] == 0 or "no samples" in str(e), f"refused a good file: {e}"
    else:
        assert loaded.size > 0, "empty result instead of a 'no samples' error"
        _check_loaded(loaded, case)
    blocks: list[np.ndarray] = []
    try:
        for b in iter_audio_blocks(path, block_seconds=0.37):
            assert b.dtype == np.float32 and b.ndim == 1 and b.size > 0
            assert np.all(np.isfinite(b))
            blocks.append(b)
    except Exception as e:  # noqa: BLE001
        assert_clear(e, path)
        return
    if loaded is not None and loaded.size and case["kind"] == "clean" and case["subtype"] \
            not in LOSSY:
        # the streamed path hears the same audio as the one-shot path
        assert abs(sum(b.size for b in blocks) - loaded.size) <= 2


def test_load_audio_never_returns_empty(tmp_path: Path) -> None:
    """Was bug 4: 1 frame at 96 kHz loaded as an empty array."""
    p = tmp_path / "one.wav"
    sf.write(p, np.full(1, 0.5, np.float32), 96000)
    with pytest.raises(AudioError, match="no samples"):
        list(iter_audio_blocks(p))
    with clear_error(p):
        assert load_audio(p).size > 0


def test_load_audio_special_paths(tmp_path: Path) -> None:
    cases = {"missing": tmp_path / "nope.wav", "dir": tmp_path}
    (tmp_path / "empty.wav").write_bytes(b"")
    cases["empty"] = tmp_path / "empty.wav"
    for name, p in cases.items():
        for fn in (load_audio, lambda q: list(iter_audio_blocks(q))):
            with pytest.raises(AudioError) as info:
                fn(p)
            assert_clear(info.value, p), name


# ==============================================================================================
# Detector.process: good and bad chunks, state never corrupted by a refused chunk
# ==============================================================================================
BAD_CHUNKS = ["nan", "inf", "-inf", "2d", "bool", "complex", "none", "str", "0d", "object",
              "3d"]


def _bad_chunk(kind: str, n: int) -> Any:
    if kind in ("nan", "inf", "-inf"):
        a = (0.1 * np.ones(max(n, 1))).astype(np.float32)
        a[n // 2] = float(kind)
        return a
    return {"2d": np.zeros((max(n, 1), 2), np.float32), "bool": np.ones(n, bool),
            "complex": np.ones(n, np.complex64), "none": None, "str": "audio",
            "0d": np.float32(0.1), "object": np.array([0.1, None], object),
            "3d": np.zeros((2, 2, 2), np.float32)}[kind]


def _good_chunk(rng: np.random.Generator, n: int, dtype: str) -> np.ndarray:
    x = 0.2 * rng.standard_normal(n)
    if rng.random() < 0.3:  # bursts, so the random model's scores move
        x += 0.5 * np.sin(np.arange(n) * rng.uniform(0.02, 0.4))
    x = np.clip(x, -1, 1)
    if dtype in ("int16", "int32"):
        info = np.iinfo(dtype)
        out = (x * info.max).astype(dtype)
        if n and rng.random() < 0.3:  # the integer extremes, including min = -(max + 1)
            idx = rng.integers(0, n, size=max(1, n // 10))
            out[idx] = rng.choice(np.array([info.min, info.max], dtype), size=idx.size)
        return out
    return x.astype(dtype)


@st.composite
def chunk_streams(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """A list of ("good", chunk) / ("bad", chunk): random sizes 0..6000, several dtypes."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    items: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(1, 25))):
        n = draw(st.one_of(st.sampled_from([0, 1, 159, 160, 1279, 1280, 1281]),
                           st.integers(0, 6000)))
        if draw(st.integers(0, 3)) == 0:
            items.append(("bad", _bad_chunk(draw(st.sampled_from(BAD_CHUNKS)), n)))
        else:
            dtype = draw(st.sampled_from(["float32", "float64", "float16", "int16", "int32"]))
            items.append(("good", _good_chunk(rng, n, dtype)))
    return items


@fuzz(60)
@given(chunk_streams())
def test_detector_survives_bad_chunks(scorer: OnnxScorer, thresholds: dict[str, float],
                                      stream: list[tuple[str, Any]]) -> None:
    a = Detector(scorer, thresholds=thresholds)
    b = Detector(scorer, thresholds=thresholds)  # fed only the good chunks
    got: list[Detection] = []
    want: list[Detection] = []
    for kind, chunk in stream:
        if kind == "good":
            got += a.process(chunk)
            want += b.process(chunk)
            continue
        with pytest.raises(PolywakeError) as info:
            a.process(chunk)
        assert_clear(info.value)
    assert got == want
    assert a.samples_seen == b.samples_seen
    probe = _good_chunk(np.random.default_rng(1), 2 * SAMPLE_RATE, "float32")
    np.testing.assert_array_equal(a.scores(probe), b.scores(probe))
    assert a.flush() == b.flush()
    np.testing.assert_array_equal(a.audio_since(0.0), b.audio_since(0.0))


@fuzz(25)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(0, 9000), min_size=1, max_size=30))
def test_detector_any_chunking_gives_the_same_result(scorer: OnnxScorer,
                                                     thresholds: dict[str, float], seed: int,
                                                     sizes: list[int]) -> None:
    sizes = sizes + ([] if any(sizes) else [1280])  # zero-size chunks alone never finish
    audio = _good_chunk(np.random.default_rng(seed), 5 * SAMPLE_RATE, "float32")
    ref = Detector(scorer, thresholds=thresholds)
    want_rows = ref.scores(audio)
    det = Detector(scorer, thresholds=thresholds)
    rows, i, k = [], 0, 0
    while i < audio.size:
        n = sizes[k % len(sizes)]
        rows.append(det.scores(audio[i:i + n]))
        i += n
        k += 1
    # Equal up to float rounding, not bit for bit: numpy's FFT/matmul and onnxruntime's conv
    # round differently for different batch sizes (~1e-7 seen; docs/RELIABILITY.md).
    np.testing.assert_allclose(np.concatenate(rows), want_rows, rtol=0, atol=2e-6)
    assert np.all(np.isfinite(want_rows)) and np.all((want_rows >= 0) & (want_rows <= 1))


@pytest.mark.parametrize("bad", [np.full(3000, 1e300), np.full(3000, 1e30, np.float32)],
                         ids=["f64_1e300", "f32_1e30"])
def test_detector_huge_samples_are_refused_or_harmless(scorer: OnnxScorer,
                                                       bad: np.ndarray) -> None:
    """Was bug 1 in the Detector: NaN scores that stayed in the model state for ~2 s."""
    rng = np.random.default_rng(0)
    g1, g2 = _good_chunk(rng, SAMPLE_RATE, "float32"), _good_chunk(rng, SAMPLE_RATE, "float32")
    a, b = Detector(scorer), Detector(scorer)
    a.scores(g1)
    b.scores(g1)
    try:
        rows = a.scores(bad)
    except PolywakeError:
        pass
    else:
        assert np.all(np.isfinite(rows)), "NaN scores from finite input"
    np.testing.assert_array_equal(a.scores(g2), b.scores(g2))


# ==============================================================================================
# Detector.iter_file and `polywake detect` on any file
# ==============================================================================================
@fuzz(120)
@given(audio_files(), st.sampled_from([0.0001, 0.01, 0.08, 0.5, 3.0]))
def test_iter_file_on_any_file(workdir: Path, scorer: OnnxScorer, thresholds: dict[str, float],
                               case: dict[str, Any], chunk_s: float) -> None:
    path = _write_case(workdir, case, "iter")
    det = Detector(scorer, thresholds=thresholds)
    try:
        found = list(det.iter_file(path, chunk_seconds=chunk_s))
    except Exception as e:  # noqa: BLE001
        assert_clear(e, path)
        return
    assert all(isinstance(d, Detection) and d.word in WORDS for d in found)
    if case["kind"] == "clean" and case["rate"] == SAMPLE_RATE and case["x"].shape[0]:
        # the same as decoding the whole file and feeding it in the same pieces (1 s blocks cut
        # into chunk_s chunks): chunking changes scores by float rounding, so keep it equal
        ref = Detector(scorer, thresholds=thresholds)
        whole, n, want = load_audio(path), max(1, int(chunk_s * SAMPLE_RATE)), []
        for b in range(0, whole.size, SAMPLE_RATE):
            block = whole[b:b + SAMPLE_RATE]
            for i in range(0, block.size, n):
                want += ref.process(block[i:i + n])
        assert found == want + ref.flush()


def test_iter_file_names_the_file_for_absurd_float_samples(tmp_path: Path,
                                                           model: tuple[Path, Path],
                                                           scorer: OnnxScorer) -> None:
    x = np.zeros(SAMPLE_RATE, np.float32)
    x[SAMPLE_RATE // 2] = 1e30  # what a bit flip in a float file's exponent makes
    path = tmp_path / "loud.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert_clear(info.value, path)  # the one-shot path names it
    with pytest.raises(AudioError, match=re.escape(str(path))):
        list(Detector(scorer).iter_file(path))
    rc, _, err = _run_cli(["detect", str(path), "--model", str(model[1])])
    assert rc == 1 and f"polywake detect: {path}:" in err, err


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


@fuzz(40)
@given(st.lists(audio_files(), min_size=1, max_size=3), st.booleans())
def test_cli_detect_on_any_files(workdir: Path, model: tuple[Path, Path],
                                 cases: list[dict[str, Any]], as_json: bool) -> None:
    paths = [_write_case(workdir, c, f"cli{i}") for i, c in enumerate(cases)]
    argv = ["detect", *map(str, paths), "--model", str(model[1]), "--threshold", "echo=0.2"]
    rc, out, err = _run_cli(argv + (["--json"] if as_json else []))
    failed = [p for p in paths if str(p) in err]
    assert rc == (1 if failed else 0), (rc, err)
    for p in failed:  # one clear line per bad file
        assert f"polywake detect: {p}:" in err
    if as_json:
        for line in out.splitlines():
            assert json.loads(line)["file"] in map(str, paths)
    else:
        for p in paths:
            assert (str(p) in out) != (p in failed)


def test_cli_detect_missing_and_directory(tmp_path: Path, model: tuple[Path, Path]) -> None:
    good = write_audio(tmp_path / "good.wav", np.zeros(SAMPLE_RATE, np.float32))
    rc, out, err = _run_cli(["detect", str(tmp_path / "missing.wav"), str(tmp_path), str(good),
                             "--model", str(model[1])])
    assert rc == 1
    assert f"{tmp_path / 'missing.wav'}: no such file" in err
    assert str(tmp_path) in err
    assert f"{good}\t" in out  # the good file is still processed


@fuzz(30)
@given(st.sampled_from([b"", b"POLYWAKE", b"\x00" * 8]), st.binary(max_size=400),
       st.sampled_from([".pwk", ".onnx", ".safetensors", ""]))
def test_cli_detect_with_a_bad_model_file(workdir: Path, prefix: bytes, body: bytes,
                                          suffix: str) -> None:
    bad = workdir / f"bad_model{suffix}"
    bad.write_bytes(prefix + body)
    wav = workdir / "silence.wav"
    if not wav.exists():
        write_audio(wav, np.zeros(SAMPLE_RATE, np.float32))
    rc, out, err = _run_cli(["detect", str(wav), "--model", str(bad)])
    assert rc == 1 and not out
    assert err.startswith("polywake detect: error: ") and str(bad) in err
