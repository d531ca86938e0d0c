"""Model files for the runtime, and the scorers that run them. No torch needed here.

A ``.pwk`` file is a small container: ``MAGIC``, a little-endian u32 format version, a u32 header
length, a JSON header, then an ONNX graph of one streaming step. The header holds the model card
(words, thresholds, calibration, how it was trained) and a SHA-256 over the card and the graph,
so a truncated, tampered or foreign file fails with a clear :class:`ModelFileError` before
onnxruntime parses anything. Nothing is ever unpickled.

The ONNX step takes ``frames`` (1, k * frames_per_step, n_mels) and the state tensors
``state_0..state_{n-1}``, and returns ``probs`` (1, k, words) and ``new_state_0..``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .audio import atomic_write_bytes
from .errors import ModelFileError

MAGIC = b"POLYWAKE"
FORMAT_VERSION = 1
MAX_MODEL_BYTES = 64 * 1024 * 1024
DEFAULT_MODEL = Path(__file__).parent / "assets" / "default.pwk"
TINY_MODEL = Path(__file__).parent / "assets" / "tiny.pwk"


def _digest(card: dict, payload: bytes) -> str:
    h = hashlib.sha256(json.dumps(card, sort_keys=True).encode())
    h.update(payload)
    return h.hexdigest()


def write_pwk(path: str | os.PathLike, onnx_bytes: bytes, card: dict) -> Path:
    header = json.dumps({"card": card, "sha256": _digest(card, onnx_bytes)}).encode()
    blob = MAGIC + struct.pack("<II", FORMAT_VERSION, len(header)) + header + onnx_bytes
    return atomic_write_bytes(path, blob)


def read_pwk(path: str | os.PathLike) -> tuple[dict, bytes]:
    """-> (card, onnx bytes), after checking magic, version, length and checksum."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such model file")
    size = p.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"{p}: {size} bytes is too large for a polywake model")
    raw = p.read_bytes()
    if len(raw) < len(MAGIC) + 8 or raw[: len(MAGIC)] != MAGIC:
        raise ModelFileError(f"{p}: not a polywake model file (bad magic); "
                             "expected a .pwk written by `polywake export`")
    version, hlen = struct.unpack("<II", raw[len(MAGIC): len(MAGIC) + 8])
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{p}: model format version {version}, this polywake reads "
                             f"version {FORMAT_VERSION}; re-export it with this version")
    start = len(MAGIC) + 8
    if start + hlen > len(raw):
        raise ModelFileError(f"{p}: truncated model file (header cut short)")
    try:
        header = json.loads(raw[start: start + hlen])
        card, want = header["card"], header["sha256"]
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise ModelFileError(f"{p}: corrupt model header ({type(e).__name__})") from e
    if not isinstance(card, dict) or not isinstance(want, str):
        raise ModelFileError(f"{p}: corrupt model header (card is not an object)")
    payload = raw[start + hlen:]
    if _digest(card, payload) != want:
        raise ModelFileError(f"{p}: checksum mismatch: the file is truncated or was modified")
    return card, payload


def _check_card(path: Path, card: dict) -> tuple[list[str], int]:
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

    def __init__(self, path: str | os.PathLike = DEFAULT_MODEL, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.card, payload = read_pwk(self.path)
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
        self.words, self.frames_per_step = _check_card(self.path, self.card)
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

        from .models.wakeword import WakeWordModel, load_checkpoint

        backbone, heads, card, _ = load_checkpoint(path)
        if heads is None:
            raise ModelFileError(f"{path}: a backbone checkpoint has no wake-word heads")
        self._torch = torch
        self.model = WakeWordModel(backbone, heads, card).eval()
        self.card = card
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


def load_scorer(path: str | os.PathLike | None = None, threads: int = 1):
    """Open a model: ``.pwk`` (ONNX, no torch) or a ``.safetensors`` training checkpoint."""
    p = Path(path) if path is not None else DEFAULT_MODEL
    if p.suffix == ".safetensors":
        return TorchScorer(p)
    if not p.exists() and path is None:
        raise ModelFileError(f"the default model {p} is missing from this install; "
                             "reinstall polywake or pass --model")
    return OnnxScorer(p, threads=threads)


def word_settings(card: dict, word: str) -> dict:
    """The card's per-word entry (threshold, calibration, duration_s, latency_s), or {}."""
    return dict(card.get("per_word", {}).get(word, {}))
