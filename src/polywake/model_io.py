"""Model files for the runtime, and the scorers that run them. No torch needed here.

A ``.pwk`` file is a small container: ``MAGIC``, a little-endian u32 format version, a u32 header
length, a JSON header, then a payload. The header holds the model card (words, thresholds,
calibration, how it was trained) and a SHA-256, so a truncated, tampered or foreign file fails
with a clear :class:`ModelFileError` before anything parses the payload. Nothing is ever
unpickled.

* Version 1: the payload is an ONNX graph of one streaming step; the SHA-256 covers
  ``json.dumps(card, sort_keys=True)`` and the payload.
* Version 2 (written now): the header is ``{"card", "sha256", "onnx": {"offset", "length"},
  "numpy": {...}}`` and the payload holds the same ONNX graph and, optionally, a numpy section:
  raw little-endian float32 tensors (16-byte aligned). The SHA-256 covers
  ``json.dumps(header without "sha256", sort_keys=True)`` and the payload, so the numpy layer
  program in the header is checked as well as the bytes. The ``numpy`` entry is
  ``{"format": 1, "dtype": "<f4", "offset", "length", "tensors": {name: [offset, shape]},
  "program": [...]}``, offsets relative to the section; its program and the layout of the
  tensors are described in :mod:`polywake.numpy_step`. BN is already folded into the convs,
  so the section is exactly what :class:`polywake.numpy_step.NumpyScorer` runs. An ``--int8``
  export quantizes only the ONNX graph: its numpy section stays float32.

The ONNX step takes ``frames`` (1, k * frames_per_step, n_mels) and the state tensors
``state_0..state_{n-1}``, and returns ``probs`` (1, k, words) and ``new_state_0..``.

Scorers: :class:`OnnxScorer` (onnxruntime, imported only when it is constructed),
:class:`polywake.numpy_step.NumpyScorer` (numpy only; needs a version-2 file with a numpy
section), :class:`TorchScorer` (training checkpoints). :func:`load_scorer` picks one.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audio import atomic_write_bytes
from .errors import ModelFileError, PolywakeError

MAGIC = b"POLYWAKE"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
NUMPY_SECTION_FORMAT = 1
ALIGN = 16  # numpy tensors start on 16-byte boundaries of the payload
MAX_MODEL_BYTES = 64 * 1024 * 1024
MAX_TENSORS = 4096
BACKENDS = ("auto", "numpy", "onnx")
BACKEND_HELP = ("how to run a .pwk: numpy (no onnxruntime), onnx (onnxruntime), or auto "
                "(numpy when the file has a numpy section, else onnx)")
DEFAULT_MODEL = Path(__file__).parent / "assets" / "default.pwk"
TINY_MODEL = Path(__file__).parent / "assets" / "tiny.pwk"
SHIPPED_MODELS = {"default": DEFAULT_MODEL, "tiny": TINY_MODEL}


def _sha256(data: bytes) -> Any:
    """A SHA-256 object. CPython's builtin implementation first: importing hashlib loads
    OpenSSL, ~3.6 MiB of RSS in a detector that needs nothing else from it, and hashing a
    model file of a few MB takes milliseconds either way."""
    try:
        from _sha256 import sha256  # CPython <= 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython >= 3.12
        except ImportError:
            from hashlib import sha256
    return sha256(data)


def _digest_start(version: int, header: dict) -> Any:
    """The checksum over what precedes the payload: version 1 covers the card, version 2 the
    whole header but the checksum itself (so the numpy program and the section table too)."""
    meta = header["card"] if version == 1 else {k: v for k, v in header.items()
                                                 if k != "sha256"}
    return _sha256(json.dumps(meta, sort_keys=True).encode())


def _digest(card: dict, payload: bytes) -> str:
    """Version 1's checksum: the card and the ONNX graph."""
    h = _digest_start(1, {"card": card})
    h.update(payload)
    return h.hexdigest()


def _digest_v2(header: dict, payload: bytes) -> str:
    h = _digest_start(2, header)
    h.update(payload)
    return h.hexdigest()


@dataclass(frozen=True)
class PwkFile:
    """A checked ``.pwk``: the card, the ONNX graph and, when there is one, the numpy section
    (its header entry and its bytes)."""

    path: Path
    version: int
    card: dict
    onnx: bytes | None  # None: not read (see read_pwk_file's ``want``)
    numpy: dict | None = None
    numpy_blob: bytes | bytearray = b""

    def numpy_tensors(self) -> dict[str, np.ndarray]:
        """The numpy section's tensors (float32 views of its bytes; copy what you keep), after
        checking every entry of the tensor table against the section."""
        if self.numpy is None:
            why = ("was exported with --onnx-only" if self.version >= FORMAT_VERSION else
                   f"is format version {self.version}")
            raise ModelFileError(
                f"{self.path}: this model file {why} and has no numpy section; run it with "
                "the onnx backend (`--backend onnx`, pip install 'polywake[onnx]'), or "
                "re-export it without --onnx-only (`polywake export CHECKPOINT --out FILE` "
                f"writes version {FORMAT_VERSION} with both sections)")
        sec = self.numpy
        if len(self.numpy_blob) != sec.get("length"):
            raise ValueError(f"{self.path}: the numpy section was not read (want='numpy')")
        if sec.get("format") != NUMPY_SECTION_FORMAT or sec.get("dtype") != "<f4":
            raise ModelFileError(f"{self.path}: numpy section format {sec.get('format')!r} / "
                                 f"dtype {sec.get('dtype')!r}; this polywake reads format "
                                 f"{NUMPY_SECTION_FORMAT}, '<f4'; re-export the model")
        table = sec.get("tensors")
        if not isinstance(table, dict) or len(table) > MAX_TENSORS:
            raise ModelFileError(f"{self.path}: corrupt numpy section (tensor table)")
        out: dict[str, np.ndarray] = {}
        for name, entry in table.items():
            try:
                offset, shape = entry
                if not _is_int(offset) or not isinstance(shape, list) or len(shape) > 4 \
                        or not all(_is_int(d) and d >= 0 for d in shape):
                    raise ValueError
                count = math.prod(shape)  # Python ints: a crafted shape cannot overflow
                if offset < 0 or offset % 4 or offset + 4 * count > len(self.numpy_blob):
                    raise ValueError
            except (ValueError, TypeError) as e:
                raise ModelFileError(f"{self.path}: corrupt numpy section (tensor {name!r}: "
                                     f"{entry!r} does not fit the section)") from e
            a = np.frombuffer(self.numpy_blob, "<f4", count, offset).reshape(shape)
            out[name] = a.astype(np.float32, copy=False)
        return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _encode_numpy(program: list, tensors: Mapping[str, np.ndarray]) -> tuple[dict, bytes]:
    table: dict[str, list] = {}
    parts: list[bytes] = []
    pos = 0
    for name, t in tensors.items():
        b = np.ascontiguousarray(t, dtype="<f4").tobytes()
        table[name] = [pos, [int(d) for d in np.shape(t)]]
        parts.append(b + b"\0" * (-len(b) % ALIGN))
        pos += len(parts[-1])
    entry = {"format": NUMPY_SECTION_FORMAT, "dtype": "<f4", "tensors": table,
             "program": program}
    return entry, b"".join(parts)


def write_pwk(path: str | os.PathLike, onnx_bytes: bytes, card: dict,
              numpy_section: tuple[list, Mapping[str, np.ndarray]] | None = None) -> Path:
    """Write a version-2 ``.pwk`` atomically: the ONNX graph and, given ``(program,
    tensors)``, the numpy section (tensors are stored as little-endian float32)."""
    header: dict[str, Any] = {"card": card, "onnx": {"offset": 0, "length": len(onnx_bytes)}}
    payload = onnx_bytes
    if numpy_section is not None:
        entry, blob = _encode_numpy(*numpy_section)
        offset = len(onnx_bytes) + (-len(onnx_bytes) % ALIGN)
        header["numpy"] = {**entry, "offset": offset, "length": len(blob)}
        payload = onnx_bytes + b"\0" * (offset - len(onnx_bytes)) + blob
    header["sha256"] = _digest_v2(header, payload)
    raw = json.dumps(header).encode()
    blob = MAGIC + struct.pack("<II", FORMAT_VERSION, len(raw)) + raw + payload
    return atomic_write_bytes(path, blob)


def _section(p: Path, entry: Any, what: str, size: int) -> tuple[int, int]:
    try:
        offset, length = entry["offset"], entry["length"]
    except (KeyError, TypeError) as e:
        raise ModelFileError(f"{p}: corrupt model header (no valid {what} section)") from e
    if not (_is_int(offset) and _is_int(length) and offset >= 0 and length >= 0
            and offset + length <= size):
        raise ModelFileError(f"{p}: corrupt model header ({what} section "
                             f"[{offset!r}, +{length!r}] is outside the {size}-byte payload)")
    return offset, length


def _read_payload(fh: Any, size: int, h: Any, keep: list[tuple[int, int]]) -> list[bytearray]:
    """Hash the ``size``-byte payload in pieces, copying out only the (offset, length) ranges
    in ``keep``: a process that runs the numpy section never holds the ONNX graph, nor the
    whole file at once."""
    out = [bytearray(n) for _, n in keep]
    pos = 0
    while pos < size:
        piece = fh.read(min(1 << 20, size - pos))
        if not piece:
            break
        h.update(piece)
        end = pos + len(piece)
        for (o, n), buf in zip(keep, out, strict=True):
            lo, hi = max(o, pos), min(o + n, end)
            if lo < hi:
                buf[lo - o: hi - o] = piece[lo - pos: hi - pos]
        pos = end
    if pos != size or fh.read(1):
        raise ModelFileError(f"{fh.name}: the model file changed while it was read")
    return out


def read_pwk_file(path: str | os.PathLike,
                  want: Collection[str] = ("onnx", "numpy")) -> PwkFile:
    """Read and check a ``.pwk`` (magic, version, lengths, checksum, section table). Only the
    sections named in ``want`` are kept in memory (the others are still checksummed); a
    section not kept reads as ``onnx=None`` / ``numpy_blob=b""``."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such model file")
    size = p.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"{p}: {size} bytes is too large for a polywake model")
    with open(p, "rb") as fh:
        raw = fh.read(len(MAGIC) + 8)
        if len(raw) < len(MAGIC) + 8 or raw[: len(MAGIC)] != MAGIC:
            raise ModelFileError(f"{p}: not a polywake model file (bad magic); "
                                 "expected a .pwk written by `polywake export`")
        version, hlen = struct.unpack("<II", raw[len(MAGIC):])
        if version not in READ_VERSIONS:
            raise ModelFileError(f"{p}: model format version {version}, this polywake reads "
                                 f"versions {READ_VERSIONS[0]}-{READ_VERSIONS[-1]}; re-export "
                                 "it with this version")
        start = len(raw)
        if start + hlen > size:
            raise ModelFileError(f"{p}: truncated model file (header cut short)")
        try:
            header = json.loads(fh.read(hlen))
            card, want_sha = header["card"], header["sha256"]
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise ModelFileError(f"{p}: corrupt model header ({type(e).__name__})") from e
        if not isinstance(card, dict) or not isinstance(want_sha, str):
            raise ModelFileError(f"{p}: corrupt model header (card is not an object)")
        n_payload = size - start - hlen
        sec = header.get("numpy") if version == 2 else None
        if version == 1:
            onnx_at = (0, n_payload)
        else:
            onnx_at = _section(p, header.get("onnx"), "onnx", n_payload)
            if sec is not None and not isinstance(sec, dict):
                raise ModelFileError(f"{p}: corrupt model header (numpy section is not an "
                                     "object)")
        numpy_at = _section(p, sec, "numpy", n_payload) if sec is not None else (0, 0)
        keep = [onnx_at if "onnx" in want else (0, 0), numpy_at if "numpy" in want else (0, 0)]
        h = _digest_start(version, header)
        onnx, blob = _read_payload(fh, n_payload, h, keep)
    if h.hexdigest() != want_sha:
        raise ModelFileError(f"{p}: checksum mismatch: the file is truncated or was modified")
    return PwkFile(p, version, card, bytes(onnx) if "onnx" in want else None, sec, blob)


def read_pwk(path: str | os.PathLike) -> tuple[dict, bytes]:
    """-> (card, onnx bytes), after checking magic, version, length and checksum."""
    f = read_pwk_file(path)
    return f.card, f.onnx


def check_card(path: Path, card: dict) -> tuple[list[str], int]:
    """The fields every runtime needs, validated so a bad card is a clear error, not a crash."""
    words = card.get("words")
    if (not isinstance(words, list) or not words
            or not all(isinstance(w, str) and w.strip() for w in words)
            or len(set(words)) != len(words)):
        raise ModelFileError(f"{path}: the model card has no valid 'words' list")
    fps = card.get("frames_per_step")
    if not isinstance(fps, int) or isinstance(fps, bool) or not 1 <= fps <= 1000:
        raise ModelFileError(f"{path}: the model card's frames_per_step {fps!r} is invalid")
    return list(words), fps


class OnnxScorer:
    """Runs a ``.pwk`` model with onnxruntime. One session is shared by all streams (its
    ``run`` is thread-safe); each stream carries its own state from :meth:`new_state`."""

    def __init__(self, path: str | os.PathLike = DEFAULT_MODEL, threads: int = 1, *,
                 pwk: PwkFile | None = None) -> None:
        self.path = Path(path)
        if pwk is None or pwk.onnx is None:
            pwk = read_pwk_file(self.path, want=("onnx",))
        self.card, payload = pwk.card, pwk.onnx
        # Imported here, not at the top: a process that scores with numpy never loads it.
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise PolywakeError(
                f"{self.path}: the onnx backend needs onnxruntime, which cannot be imported "
                f"({e}); `pip install polywake[onnx]`, or run a version-2 .pwk with the numpy backend") from e

        opts = ort.SessionOptions()
        # One thread: the detector is meant to share a small CPU; more threads cost more
        # synchronisation than they save on an 80 ms step.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(payload, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several private exception types
            raise ModelFileError(f"{self.path}: onnxruntime cannot load the graph ({e})") from e
        self.words, self.frames_per_step = check_card(self.path, self.card)
        self._state_inputs = [i for i in self.session.get_inputs() if i.name.startswith("state_")]
        self._state_shapes = [tuple(int(d) for d in i.shape) for i in self._state_inputs]
        self._outputs = ["probs"] + [f"new_{i.name}" for i in self._state_inputs]
        probs = [o for o in self.session.get_outputs() if o.name == "probs"]
        n_out = probs[0].shape[-1] if probs else None
        if not probs or (isinstance(n_out, int) and n_out != len(self.words)):
            raise ModelFileError(f"{self.path}: the graph scores {n_out} words but the card "
                                 f"names {len(self.words)}")

    def new_state(self) -> list[np.ndarray]:
        return [np.zeros(s, np.float32) for s in self._state_shapes]

    def step(self, frames: np.ndarray, state: list[np.ndarray]
             ) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds: dict[str, Any] = {"frames": np.ascontiguousarray(frames[None], np.float32)}
        for inp, s in zip(self._state_inputs, state, strict=True):
            feeds[inp.name] = s
        out = self.session.run(self._outputs, feeds)
        return out[0][0], out[1:]


class TorchScorer:
    """Runs a safetensors checkpoint with torch (training machines; also the export reference)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import torch

        from .models.wakeword import load_model

        self._torch = torch
        self.model = load_model(path)
        self.card = self.model.card
        self.words = self.model.words
        self.frames_per_step = self.model.frames_per_step
        self._lock = threading.Lock()

    def new_state(self) -> list:
        return self.model.init_state(1)

    def step(self, frames: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        torch = self._torch
        with torch.no_grad(), self._lock:
            probs, state = self.model.stream(torch.from_numpy(np.asarray(frames))[None], state)
        return probs[0].numpy(), state



def load_scorer(path: str | os.PathLike | None = None, threads: int = 1,
                backend: str = "auto"):
    """Open a model: a ``.pwk`` (no torch) or a ``.safetensors`` training checkpoint (torch).

    ``backend`` (``.pwk`` only): ``"numpy"`` (:class:`polywake.numpy_step.NumpyScorer`, no
    onnxruntime), ``"onnx"`` (:class:`OnnxScorer`, ``threads`` intra-op threads), or
    ``"auto"``: numpy when the file has a numpy section (every file this polywake exports;
    it is as fast as onnxruntime here and adds a few MB instead of ~36 MiB), else onnx.
    ``path`` may also name a shipped model: ``"default"`` (5 words) or ``"tiny"`` (the same
    words, <= 50k parameters, for old devices).
    """
    if str(path) in SHIPPED_MODELS and not Path(str(path)).exists():
        path = SHIPPED_MODELS[str(path)]
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    p = Path(path) if path is not None else DEFAULT_MODEL
    if p.suffix == ".safetensors":
        if backend != "auto":
            raise ModelFileError(f"{p}: the {backend} backend runs .pwk files; export the "
                                 "checkpoint first (`polywake export`)")
        return TorchScorer(p)
    if not p.exists() and path is None:
        raise ModelFileError(f"the default model {p} is missing from this install; "
                             "reinstall polywake or pass --model")
    if backend == "onnx":
        return OnnxScorer(p, threads=threads)
    pwk = read_pwk_file(p, want=("numpy",))
    if backend == "numpy" or pwk.numpy is not None:
        from .numpy_step import NumpyScorer

        return NumpyScorer(p, pwk=pwk)
    return OnnxScorer(p, threads=threads)  # reads the file again, for its graph this time


def word_settings(card: dict, word: str) -> dict:
    """The card's per-word entry (threshold, calibration, duration_s, latency_s), or {}."""
    return dict(card.get("per_word", {}).get(word, {}))
