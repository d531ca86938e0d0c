"""Export a trained checkpoint to the runtime format: one streaming step inside a ``.pwk``.

    polywake export runs/default/model.safetensors --out model.pwk [--int8]

The file (format version 2, :mod:`polywake.model_io`) holds the step twice: as an ONNX graph
that carries the causal layers' state explicitly as inputs/outputs (for onnxruntime), and as a
numpy section, a layer program with BN-folded float32 weights (:mod:`polywake.numpy_export`),
which :class:`polywake.numpy_step.NumpyScorer` runs with numpy alone. ``--int8`` applies
onnxruntime's dynamic quantization to the ONNX graph's weights (MatMul/Conv), which shrinks
that part ~3x; the numpy section stays float32 (int8 is an ONNX-only option). The test suite
checks both against torch.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .model_io import write_pwk

OPSET = 17


def _step_module(model):
    import torch
    from torch import nn

    class Step(nn.Module):
        def __init__(self, m) -> None:
            super().__init__()
            self.m = m

        def forward(self, frames: torch.Tensor, *state: torch.Tensor):
            probs, new_state = self.m.stream(frames, list(state))
            return (probs, *new_state)

    return Step(model).eval()


def export_onnx(model, *, int8: bool = False) -> bytes:
    """Torch WakeWordModel -> ONNX bytes of one streaming step (opset 17)."""
    import torch

    model = model.eval()
    step = _step_module(model)
    state = model.init_state(1)
    frames = torch.zeros(1, model.frames_per_step, model.backbone.config.n_mels)
    names_in = ["frames"] + [f"state_{i}" for i in range(len(state))]
    names_out = ["probs"] + [f"new_state_{i}" for i in range(len(state))]
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The matcher pads its words' templates to one count with Python ints: constants of
        # the graph by design, which the tracer warns about.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            step, (frames, *state), buf, input_names=names_in, output_names=names_out,
            opset_version=OPSET, dynamo=False,
            dynamic_axes={"frames": {1: "frames"}, "probs": {1: "steps"}},
        )
    data = buf.getvalue()
    if int8:
        data = quantize_int8(data)
    return data


def quantize_int8(onnx_bytes: bytes) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "f32.onnx", Path(d) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        # Dynamic quantization: int8 weights, activations quantized per call; no calibration
        # set needed, and Conv/MatMul both covered.
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Conv", "MatMul", "Gemm"])
        return dst.read_bytes()


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, int8: bool = False,
                      card_updates: dict | None = None, numpy: bool = True) -> Path:
    """``numpy=False`` writes the ONNX section only: with ``int8`` the smallest file (the
    standard model: ~0.4 MB instead of ~1.9 MB), run by onnxruntime (``backend="auto"``
    falls back to it; ``"numpy"`` refuses the file with a clear error)."""
    from .errors import ModelFileError
    from .models.wakeword import load_model

    try:
        model = load_model(checkpoint)
    except ModelFileError as e:
        raise SystemExit(str(e)) from e
    backbone = model.backbone
    card = dict(model.card)
    card.update(card_updates or {})
    card.update({
        "words": model.words,
        "frames_per_step": model.frames_per_step,
        "backbone": backbone.config.to_dict(),
        "quantization": "int8-dynamic" if int8 else "float32",
        "onnx_opset": OPSET,
    })
    from .numpy_export import numpy_section

    model.eval()
    return write_pwk(out, export_onnx(model, int8=int8), card,
                     numpy_section=numpy_section(model) if numpy else None)


def compare_scores(checkpoint: str | Path, pwk: str | Path, audio: np.ndarray,
                   backend: str = "onnx") -> float:
    """Max |torch - the .pwk's ``backend``| probability over a stream of ``audio``."""
    from .detect import Detector
    from .model_io import TorchScorer, load_scorer

    a = Detector(TorchScorer(checkpoint)).scores(audio)
    b = Detector(load_scorer(pwk, backend=backend)).scores(audio)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .safetensors checkpoint with wake-word heads")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--int8", action="store_true",
                   help="int8 dynamic quantization of the ONNX graph (the numpy step stays "
                        "float32)")
    p.add_argument("--onnx-only", action="store_true",
                   help="leave out the numpy section (with --int8: the smallest file; it then "
                        "needs onnxruntime to run)")
    p.add_argument("--out", required=True, help="output .pwk file")


def run(args: argparse.Namespace) -> int:
    out = export_checkpoint(args.checkpoint, args.out, int8=args.int8,
                            numpy=not args.onnx_only)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0
