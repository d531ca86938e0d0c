"""Reliability (issue 9): damaged model files give a clear ModelFileError; nothing unpickles.

Covers ``.pwk`` (read_pwk, OnnxScorer, NumpyScorer, load_scorer) and ``.safetensors``
(load_checkpoint, TorchScorer, load_scorer): truncated, bit-flipped, wrong magic, wrong version,
huge, empty, random bytes, crafted headers, and crafted numpy sections (layer program, tensor
table) under a valid checksum. A damaged file may load only if it decodes to exactly what was
written (e.g. a flip that JSON normalises away).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import polywake
from polywake.errors import ModelFileError
from polywake.model_io import (
    FORMAT_VERSION,
    MAGIC,
    MAX_MODEL_BYTES,
    OnnxScorer,
    TorchScorer,
    _digest_v2,
    load_scorer,
    read_pwk,
    read_pwk_file,
    write_pwk,
)
from polywake.numpy_step import NumpyScorer

WORDS = ["alexa", "echo", "amazon", "computer", "hey samuel"]
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])


# POLYWAKE_FUZZ_SCALE=20 runs 20x the examples (a longer campaign; docs/RELIABILITY.md).
SCALE = float(os.environ.get("POLYWAKE_FUZZ_SCALE", "1"))


def fuzz(n: int) -> settings:
    """Hypothesis settings with ``n`` examples (times POLYWAKE_FUZZ_SCALE)."""
    return settings(FUZZ, max_examples=max(1, round(n * SCALE)))


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
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def expect_model_error(fn: Any, path: Path) -> ModelFileError:
    try:
        fn(path)
    except ModelFileError as e:
        msg = str(e)
        assert msg.strip() and str(path) in msg, msg
        return e
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"{type(e).__name__} instead of ModelFileError: {e}")
    pytest.fail("a damaged model file was accepted")


def _position(n: int, draw: st.DrawFn) -> int:
    """An index into n bytes: near the start (headers) or anywhere, uniformly."""
    if draw(st.booleans()):
        return draw(st.integers(0, min(n - 1, 300)))
    return min(n - 1, int(draw(st.floats(0, 1)) * n))


def _damage(data: bytes, draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["truncate", "bitflip", "bitflip", "tail", "splice", "empty",
                                 "random"]))
    if kind == "truncate":
        return kind, data[: _position(len(data), draw)]
    if kind == "bitflip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 6))):
            b[_position(len(b), draw)] ^= 1 << draw(st.integers(0, 7))
        return kind, bytes(b)
    if kind == "tail":
        return kind, data + draw(st.binary(min_size=1, max_size=64))
    if kind == "splice":
        i = _position(len(data), draw)
        return kind, data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i + 1:]
    if kind == "empty":
        return kind, b""
    return kind, draw(st.binary(max_size=2000))


# ==============================================================================================
# .pwk
# ==============================================================================================
@fuzz(250)
@given(st.data())
def test_damaged_pwk_is_a_model_file_error(workdir: Path, model: tuple[Path, Path],
                                           data: st.DataObject) -> None:
    good = model[1].read_bytes()
    kind, bad = _damage(good, data.draw)
    path = workdir / "damaged.pwk"
    path.write_bytes(bad)
    loader = data.draw(st.sampled_from([read_pwk, OnnxScorer, NumpyScorer, load_scorer]))
    try:
        got = read_pwk_file(path)
    except ModelFileError as e:
        assert str(path) in str(e)
        expect_model_error(loader, path)
        return
    # Accepted only if it decodes to the same card, graph and numpy section (a header flip
    # that JSON maps back to the same value, e.g. "1e-05" -> "1E-05").
    want = read_pwk_file(model[1])
    assert (got.version, got.card, got.onnx, got.numpy, bytes(got.numpy_blob)) == \
        (want.version, want.card, want.onnx, want.numpy, bytes(want.numpy_blob)), \
        f"{kind}: a modified model was accepted"


def _pwk_bytes(version: int = FORMAT_VERSION, header: bytes = b"{}", magic: bytes = MAGIC,
               hlen: int | None = None, payload: bytes = b"") -> bytes:
    n = len(header) if hlen is None else hlen
    return magic + struct.pack("<II", version, n) + header + payload


@pytest.mark.parametrize("case", [
    "empty", "magic_only", "wrong_magic", "lower_magic", "version_0", "version_2", "version_max",
    "hlen_huge", "hlen_short", "header_not_json", "header_list", "header_string",
    "header_no_sha", "header_not_utf8", "checksum_zero",
])
def test_crafted_pwk_headers(workdir: Path, model: tuple[Path, Path], case: str) -> None:
    card, onnx = read_pwk(model[1])
    header = json.dumps({"card": card, "sha256": "0" * 64}).encode()
    data = {
        "empty": b"",
        "magic_only": MAGIC,
        "wrong_magic": _pwk_bytes(magic=b"NOTAWAKE", header=header, payload=onnx),
        "lower_magic": _pwk_bytes(magic=MAGIC.lower(), header=header, payload=onnx),
        "version_0": _pwk_bytes(version=0, header=header, payload=onnx),
        "version_2": _pwk_bytes(version=FORMAT_VERSION + 1, header=header, payload=onnx),
        "version_max": _pwk_bytes(version=2**32 - 1, header=header, payload=onnx),
        "hlen_huge": _pwk_bytes(header=header, hlen=2**32 - 1, payload=onnx),
        "hlen_short": _pwk_bytes(header=header, hlen=10, payload=onnx),
        "header_not_json": _pwk_bytes(header=b"{card:", payload=onnx),
        "header_list": _pwk_bytes(header=b"[1, 2]", payload=onnx),
        "header_string": _pwk_bytes(header=b'"card"', payload=onnx),
        "header_no_sha": _pwk_bytes(header=json.dumps({"card": card}).encode(), payload=onnx),
        "header_not_utf8": _pwk_bytes(header=b"\xff\xfe{}", payload=onnx),
        "checksum_zero": _pwk_bytes(header=header, payload=onnx),
    }[case]
    path = workdir / f"{case}.pwk"
    path.write_bytes(data)
    e = expect_model_error(OnnxScorer, path)
    if "version" in case:
        assert "version" in str(e)
    if "magic" in case or case == "empty":
        assert "not a polywake model" in str(e)


def test_huge_and_missing_pwk(workdir: Path, model: tuple[Path, Path]) -> None:
    huge = workdir / "huge.pwk"
    with open(huge, "wb") as fh:  # sparse: costs no disk
        fh.write(model[1].read_bytes())
        fh.truncate(MAX_MODEL_BYTES + 1)
    e = expect_model_error(read_pwk, huge)
    assert "too large" in str(e)
    expect_model_error(OnnxScorer, workdir / "missing.pwk")
    expect_model_error(NumpyScorer, workdir / "missing.pwk")
    expect_model_error(load_scorer, workdir / "missing.pwk")
    expect_model_error(load_scorer, workdir)  # a directory


def test_deeply_nested_pwk_header(workdir: Path) -> None:
    """Was bug 5: RecursionError."""
    path = workdir / "nested.pwk"
    path.write_bytes(_pwk_bytes(header=b"[" * 200_000 + b"]" * 200_000))
    expect_model_error(read_pwk, path)


@pytest.mark.parametrize("change", ["no_words", "fps_text", "fps_zero", "words_mismatch",
                                    "card_list"])
def test_pwk_with_a_valid_checksum_but_a_bad_card(workdir: Path, model: tuple[Path, Path],
                                                  change: str) -> None:
    """Was bug 6: KeyError/ValueError/TypeError instead of ModelFileError."""
    from polywake.detect import Detector

    card, onnx = read_pwk(model[1])
    bad: Any = {
        "no_words": {k: v for k, v in card.items() if k != "words"},
        "fps_text": {**card, "frames_per_step": "x"},
        "fps_zero": {**card, "frames_per_step": 0},
        "words_mismatch": {**card, "words": ["alexa"]},
        "card_list": [card],
    }[change]
    path = write_pwk(workdir / f"card_{change}.pwk", onnx, bad)

    def load_and_run(p: Path) -> None:
        Detector(OnnxScorer(p)).process(np.zeros(16000, np.float32))

    expect_model_error(load_and_run, path)


def test_pwk_with_a_valid_checksum_but_no_onnx_graph(workdir: Path,
                                                     model: tuple[Path, Path]) -> None:
    card, _ = read_pwk(model[1])
    for name, payload in {"empty": b"", "garbage": os.urandom(512)}.items():
        path = write_pwk(workdir / f"graph_{name}.pwk", payload, card)
        e = expect_model_error(OnnxScorer, path)
        assert "onnxruntime cannot load" in str(e)


def _split_v2(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    hlen = struct.unpack("<I", raw[len(MAGIC) + 4: len(MAGIC) + 8])[0]
    start = len(MAGIC) + 8
    return json.loads(raw[start: start + hlen]), raw[start + hlen:]


def _write_v2(path: Path, header: dict, payload: bytes) -> Path:
    """A version-2 file whose checksum is valid for whatever ``header`` says."""
    header = {k: v for k, v in header.items() if k != "sha256"}
    header["sha256"] = _digest_v2(header, payload)
    raw = json.dumps(header).encode()
    path.write_bytes(MAGIC + struct.pack("<II", 2, len(raw)) + raw + payload)
    return path


def _ops(program: list) -> list[dict]:
    """Every op of a program, residual bodies included, in order."""
    out = []
    for op in program:
        if isinstance(op, dict):
            out.append(op)
            if isinstance(op.get("body"), list):
                out += _ops(op["body"])
    return out


NUMPY_CASES = [
    "program_not_list", "program_empty", "op_not_object", "unknown_op", "missing_tensor",
    "weight_is_bias", "bias_wrong_shape", "stride_zero", "stride_bool", "stride_text",
    "dilation_huge", "groups_not_dividing", "relu_text", "empty_residual",
    "residual_changes_stride", "deep_nesting", "swapped_layers", "dropped_layer",
    "words_mismatch", "fps_mismatch", "tensor_outside", "tensor_negative", "tensor_unaligned",
    "tensor_shape_text", "tensor_shape_negative", "tensor_shape_overflow", "tensor_entry_short",
    "tensor_table_list", "too_many_tensors", "dtype_f8", "format_2", "dense_too_large",
    "state_too_large",
]
SECTION_CASES = ["section_outside", "section_negative", "section_length_text",
                 "section_not_object", "onnx_outside", "onnx_missing"]


@pytest.mark.parametrize("case", NUMPY_CASES + SECTION_CASES)
def test_crafted_numpy_section_is_a_model_file_error(workdir: Path, model: tuple[Path, Path],
                                                     case: str) -> None:
    """A numpy section that does not describe a runnable step, under a valid checksum:
    a ModelFileError at load, never a crash at the first step."""
    header, payload = _split_v2(model[1])
    h = copy.deepcopy(header)
    sec = h["numpy"]
    prog, table = sec["program"], sec["tensors"]
    conv = next(op for op in prog if op["op"] == "conv")  # the stem, right after the input norm
    res = next(op for op in prog if op["op"] == "residual")
    big = [0, [32768, 1, 1]]  # fits the tiny model's section; 32768 groups -> 4 GB dense
    change = {
        "program_not_list": lambda: sec.update(program={"op": "conv"}),
        "program_empty": lambda: sec.update(program=[]),
        "op_not_object": lambda: prog.insert(0, 3),
        "unknown_op": lambda: prog.insert(1, {"op": "lstm"}),
        "missing_tensor": lambda: conv.update(weight="nope"),
        "weight_is_bias": lambda: conv.update(weight=conv["bias"]),
        "bias_wrong_shape": lambda: conv.update(bias="input_norm.scale"),
        "stride_zero": lambda: conv.update(stride=0),
        "stride_bool": lambda: conv.update(stride=True),
        "stride_text": lambda: conv.update(stride="2"),
        "dilation_huge": lambda: conv.update(dilation=10**9),
        "groups_not_dividing": lambda: conv.update(groups=3),
        "relu_text": lambda: conv.update(relu="yes"),
        "empty_residual": lambda: res.update(body=[]),
        "residual_changes_stride": lambda: res["body"][0].update(stride=2),
        "deep_nesting": lambda: prog.insert(2, json.loads('{"op": "residual", "body": [' * 20
                                                          + "]}" * 20)),
        "swapped_layers": lambda: prog.insert(1, prog.pop(2)),
        "dropped_layer": lambda: prog.pop(1),
        "words_mismatch": lambda: h["card"].update(words=h["card"]["words"][:1]),
        "fps_mismatch": lambda: h["card"].update(frames_per_step=4),
        "tensor_outside": lambda: table[conv["weight"]].__setitem__(0, sec["length"]),
        "tensor_negative": lambda: table[conv["weight"]].__setitem__(0, -16),
        "tensor_unaligned": lambda: table[conv["weight"]].__setitem__(0, 2),
        "tensor_shape_text": lambda: table[conv["weight"]].__setitem__(1, "32"),
        "tensor_shape_negative": lambda: table[conv["weight"]].__setitem__(1, [-1, 40, 5]),
        "tensor_shape_overflow": lambda: table[conv["weight"]].__setitem__(1, [2**62, 2**62]),
        "tensor_entry_short": lambda: table.__setitem__(conv["weight"], [0]),
        "tensor_table_list": lambda: sec.update(tensors=[]),
        "too_many_tensors": lambda: table.update({f"t{i}": [0, [1]] for i in range(5000)}),
        "dtype_f8": lambda: sec.update(dtype="<f8"),
        "format_2": lambda: sec.update(format=2),
        "dense_too_large": lambda: (table.update(big=big, big_b=[0, [32768]]), sec.update(
            program=[{"op": "conv", "weight": "big", "bias": "big_b", "groups": 32768}])),
        "state_too_large": lambda: [op.update(dilation=4096) for op in _ops(prog)
                                    if op["op"] == "conv"],
        "section_outside": lambda: sec.update(offset=len(payload)),
        "section_negative": lambda: sec.update(offset=-16),
        "section_length_text": lambda: sec.update(length="10"),
        "section_not_object": lambda: h.update(numpy=[1, 2]),
        "onnx_outside": lambda: h["onnx"].update(length=len(payload) + 1),
        "onnx_missing": lambda: h.pop("onnx"),
    }[case]
    change()
    path = _write_v2(workdir / f"numpy_{case}.pwk", h, payload)

    def load_and_run(p: Path) -> None:
        from polywake.detect import Detector

        Detector(load_scorer(p)).process(np.zeros(16000, np.float32))

    for loader in (NumpyScorer, load_and_run):
        e = expect_model_error(loader, path)
        if case in NUMPY_CASES and "tensor" not in case and case not in ("dtype_f8", "format_2"):
            assert "invalid numpy section" in str(e) and "re-export" in str(e), str(e)
    if case in SECTION_CASES:
        expect_model_error(OnnxScorer, path)


def _mutated_program(program: list, data: st.DataObject) -> list:
    """The program with one random edit: an op's field set to a random value or removed, an
    op removed, duplicated or moved."""
    program = copy.deepcopy(program)
    ops = _ops(program)
    kind = data.draw(st.sampled_from(["set", "set", "set", "del_key", "del_op", "dup_op",
                                      "move_op"]))
    op = data.draw(st.sampled_from(ops))
    value = st.one_of(st.integers(-3, 70_000), st.booleans(), st.none(), st.text(max_size=3),
                      st.floats(allow_nan=True), st.lists(st.integers(0, 9), max_size=3),
                      st.sampled_from(["conv", "residual", "sigmoid", "scale_shift",
                                       "heads.w1", "input_norm.scale"]))
    keys = sorted(op) + ["stride", "dilation", "groups", "relu", "body"]
    if kind == "set":
        op[data.draw(st.sampled_from(keys))] = data.draw(value)
    elif kind == "del_key":
        op.pop(data.draw(st.sampled_from(sorted(op))), None)
    else:
        parents = [program] + [o["body"] for o in ops if isinstance(o.get("body"), list)]
        parent = data.draw(st.sampled_from([p for p in parents if p]))
        i = data.draw(st.integers(0, len(parent) - 1))
        if kind == "del_op":
            parent.pop(i)
        elif kind == "dup_op":
            parent.insert(i, copy.deepcopy(parent[i]))
        else:
            parent.insert(data.draw(st.integers(0, len(parent) - 1)), parent.pop(i))
    return program


@fuzz(150)
@given(st.data())
def test_mutated_numpy_program_loads_and_runs_or_is_refused(workdir: Path,
                                                            model: tuple[Path, Path],
                                                            data: st.DataObject) -> None:
    """Any edit of the layer program under a valid checksum: a ModelFileError at load, or a
    scorer whose steps run and give (k, words) scores; nothing else."""
    header, payload = _split_v2(model[1])
    h = copy.deepcopy(header)
    h["numpy"]["program"] = _mutated_program(h["numpy"]["program"], data)
    path = _write_v2(workdir / "mutated.pwk", h, payload)
    try:
        scorer = NumpyScorer(path)
    except ModelFileError as e:
        assert str(path) in str(e)
        event("ModelFileError")
        return
    probs, state = scorer.step(np.zeros((16, scorer.n_mels), np.float32), scorer.new_state())
    probs, _ = scorer.step(np.ones((8, scorer.n_mels), np.float32), state)
    assert probs.shape == (1, len(WORDS)) and probs.dtype == np.float32
    event("loaded and ran")


# ==============================================================================================
# .safetensors checkpoints
# ==============================================================================================
def _load_ckpt(p: Path) -> Any:
    from polywake.models.wakeword import load_checkpoint

    return load_checkpoint(p)


def _same_checkpoint(a: Any, b: Any) -> bool:
    import torch

    (ba, ha, ca, ea), (bb, hb, cb, eb) = a, b
    sa, sb = ba.state_dict(), bb.state_dict()
    if ca != cb or ba.config != bb.config or sa.keys() != sb.keys():
        return False
    if (ha is None) != (hb is None) or (ha is not None and ha.words != hb.words):
        return False
    if ha is not None:
        sa = {**sa, **{f"h.{k}": v for k, v in ha.state_dict().items()}}
        sb = {**sb, **{f"h.{k}": v for k, v in hb.state_dict().items()}}
    return all(torch.equal(sa[k], sb[k]) for k in sa) and ea.keys() == eb.keys()


def _header_len(raw: bytes) -> int:
    return 8 + int.from_bytes(raw[:8], "little")


@fuzz(200)
@given(st.data())
def test_damaged_safetensors_is_a_model_file_error(workdir: Path, model: tuple[Path, Path],
                                                   data: st.DataObject) -> None:
    """Any damage: a ModelFileError naming the file, or a load of exactly the original model
    (a header change that JSON maps back to the same values)."""
    good = model[0].read_bytes()
    end = _header_len(good)
    where = data.draw(st.sampled_from(["header", "header", "anywhere"]))
    if where == "header":  # the 8-byte length and the JSON header: where parsing happens
        kind, head = _damage(good[:end], data.draw)
        bad = head + good[end:] if kind not in ("empty", "random") else head
    else:
        kind, bad = _damage(good, data.draw)
    path = workdir / "damaged.safetensors"
    path.write_bytes(bad)
    loader = data.draw(st.sampled_from([_load_ckpt, TorchScorer, load_scorer]))
    try:
        loader(path)
    except ModelFileError as e:
        assert str(e).strip() and str(path) in str(e)
        event("ModelFileError")
        return
    assert _same_checkpoint(_load_ckpt(path), _load_ckpt(model[0])), f"{kind}: accepted"
    event("loaded, identical")


def test_card_flip_in_checkpoint_metadata_is_detected(workdir: Path) -> None:
    """Was bug 10: the checksum covered the tensors only; a changed threshold loaded."""
    from polywake.models.backbone import TINY, Backbone
    from polywake.models.heads import WakeWordHeads
    from polywake.models.wakeword import save_checkpoint

    backbone = Backbone(TINY).eval()
    heads = WakeWordHeads(backbone.embed_dim, ["echo"])
    path = save_checkpoint(workdir / "card.safetensors", backbone=backbone, heads=heads,
                           card={"per_word": {"echo": {"threshold": 0.5}}})
    raw = path.read_bytes()
    i = raw.index(b"0.5}")
    path.write_bytes(raw[:i] + b"0.1}" + raw[i + 4:])  # same length, still valid JSON
    expect_model_error(_load_ckpt, path)


def test_bit_flip_in_checkpoint_tensors_is_detected(workdir: Path,
                                                    model: tuple[Path, Path]) -> None:
    """Was bug 9: no checksum, a flipped bit loaded as other weights."""
    good = bytearray(model[0].read_bytes())
    start = _header_len(bytes(good))
    good[start + (len(good) - start) // 2] ^= 0x40
    path = workdir / "flipped.safetensors"
    path.write_bytes(bytes(good))
    expect_model_error(_load_ckpt, path)



def test_flip_in_the_checksum_key_does_not_switch_the_check_off(workdir: Path,
                                                                 model: tuple[Path, Path]) -> None:
    """Was bug 15 (found by CI's fuzz run): a checkpoint without "sha256" skipped the check,
    so one flip in the key's name plus one in the tensors loaded other weights."""
    raw = bytearray(model[0].read_bytes())
    i = raw.index(b'"sha256"')
    raw[i + 6] ^= 0x01  # "sha256" -> "sha257": same length, still valid JSON
    raw[-1] ^= 0x01
    path = workdir / "unkeyed.safetensors"
    path.write_bytes(bytes(raw))
    e = expect_model_error(_load_ckpt, path)
    assert "no checksum" in str(e)

def _with_metadata(raw: bytes, meta: dict[str, str]) -> bytes:
    end = _header_len(raw)
    header = json.loads(raw[8:end])
    header["__metadata__"] = meta
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    return len(hb).to_bytes(8, "little") + hb + raw[end:]


METADATA_CASES = ["no_backbone_config", "backbone_config_not_json", "backbone_config_keys",
                  "negative_channels", "kernel_zero", "card_not_json", "heads_list"]


@pytest.mark.parametrize("case", METADATA_CASES)
def test_checkpoint_metadata_is_validated(workdir: Path, model: tuple[Path, Path],
                                          case: str) -> None:
    """Was bug 8: metadata parsed outside the try/except."""
    raw = model[0].read_bytes()
    meta = json.loads(raw[8:_header_len(raw)])["__metadata__"]
    cfg = json.loads(meta["backbone_config"])
    new = {
        "no_backbone_config": {k: v for k, v in meta.items() if k != "backbone_config"},
        "backbone_config_not_json": {**meta, "backbone_config": "{"},
        "backbone_config_keys": {**meta, "backbone_config": json.dumps({"foo": 1})},
        "negative_channels": {**meta, "backbone_config": json.dumps({**cfg,
                                                                     "stem_channels": -3})},
        "kernel_zero": {**meta, "backbone_config": json.dumps({**cfg, "kernel": 0})},
        "card_not_json": {**meta, "card": "{"},
        "heads_list": {**meta, "heads": "[]"},
    }[case]
    path = workdir / f"meta_{case}.safetensors"
    path.write_bytes(_with_metadata(raw, new))
    expect_model_error(_load_ckpt, path)


@pytest.mark.parametrize("case", ["empty", "random", "pwk_renamed", "wrong_format", "no_meta",
                                  "backbone_only", "missing", "directory"])
def test_bad_checkpoints(workdir: Path, model: tuple[Path, Path], case: str) -> None:
    raw = model[0].read_bytes()
    path = workdir / f"bad_{case}.safetensors"
    meta = json.loads(raw[8:_header_len(raw)])["__metadata__"]
    if case == "empty":
        path.write_bytes(b"")
    elif case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "pwk_renamed":
        path.write_bytes(model[1].read_bytes())
    elif case == "wrong_format":
        path.write_bytes(_with_metadata(raw, {**meta, "polywake_format": "999"}))
    elif case == "no_meta":
        path.write_bytes(_with_metadata(raw, {}))
    elif case == "backbone_only":
        from polywake.models.wakeword import save_checkpoint

        backbone, _, _, _ = _load_ckpt(model[0])
        save_checkpoint(path, backbone=backbone)
        assert _load_ckpt(path)[1] is None  # a backbone checkpoint is fine to load ...
        expect_model_error(TorchScorer, path)  # ... but not to score with
        return
    elif case == "directory":
        path.mkdir(exist_ok=True)
    for loader in (_load_ckpt, TorchScorer, load_scorer):
        e = expect_model_error(loader, path)
        if case == "wrong_format":
            assert "format" in str(e)


_HUGE_SCRIPT = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from polywake.errors import ModelFileError
    from polywake.models.wakeword import load_checkpoint
    vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status")
              if l.startswith("VmSize"))
    # 1 GiB of headroom, far below the file's 4 GiB: a regression cannot eat the machine.
    resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
    try:
        load_checkpoint(Path(sys.argv[1]))
    except ModelFileError as e:
        print("MODELFILEERROR", e)
    except MemoryError:
        print("MEMORYERROR")
""")


def test_huge_checkpoint_is_refused_before_reading(tmp_path: Path) -> None:
    """Was bug 7: read whole whatever its size."""
    huge = tmp_path / "huge.safetensors"
    with open(huge, "wb") as fh:  # sparse: costs no disk
        fh.truncate(4 << 30)
    r = subprocess.run([sys.executable, "-c", _HUGE_SCRIPT, str(huge)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "MODELFILEERROR" in r.stdout, r.stdout + r.stderr[-2000:]


# ==============================================================================================
# nothing is ever unpickled
# ==============================================================================================
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal",
                     "cloudpickle"}


def _calls(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            out.append(ast.unparse(node.func))
    return out


def test_no_module_unpickles() -> None:
    root = Path(polywake.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 20
    problems = []
    for f in files:
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            bad = [n for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
            problems += [f"{f.name}:{node.lineno}: imports {n}" for n in bad]
        for call in _calls(tree):
            if call in ("torch.load", "torch.jit.load", "torch.package.PackageImporter") or \
                    call.endswith(("pickle.load", "pickle.loads")):
                problems.append(f"{f.name}: calls {call}")
        for node in ast.walk(tree):
            # np.load(..., allow_pickle=True) and torch.load(..., weights_only=False)
            unsafe = {"allow_pickle": "True", "weights_only": "False"}
            if isinstance(node, ast.keyword) and node.arg in unsafe \
                    and ast.unparse(node.value) == unsafe[node.arg]:
                problems.append(f"{f.name}:{node.value.lineno}: {node.arg}="
                                f"{ast.unparse(node.value)}")
    assert not problems, problems


def test_loading_models_imports_no_pickle(model: tuple[Path, Path]) -> None:
    """In a fresh interpreter, loading both model kinds never calls pickle.load(s)."""
    code = textwrap.dedent(f"""
        import pickle, sys
        def refuse(*a, **k):
            raise SystemExit("pickle used")
        pickle.load = pickle.loads = refuse
        import torch
        torch.load = refuse
        from polywake.model_io import load_scorer
        load_scorer({str(model[1])!r}); load_scorer({str(model[0])!r})
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.stdout.strip() == "ok", r.stderr[-2000:]
