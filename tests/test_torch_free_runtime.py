"""The runtime path (load a .pwk, stream audio, decide) must work where torch is not installed,
and, with the numpy backend (the default for files that have a numpy section), where
onnxruntime is not installed either."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from polywake.audio import write_audio
from polywake.export import export_checkpoint
from polywake.models.backbone import TINY, Backbone
from polywake.models.heads import WakeWordHeads
from polywake.models.wakeword import save_checkpoint

BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, _Block())
"""
BLOCK_TORCH = 'BLOCKED = {"torch"}' + BLOCK
BLOCK_TORCH_AND_ORT = 'BLOCKED = {"torch", "onnxruntime"}' + BLOCK


def run_ok(code: str) -> str:
    """Run ``code`` in a fresh interpreter; it must exit 0 and print "ok" last. -> stdout."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok"), r.stdout
    return r.stdout


def test_detect_cli_and_api_run_without_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bb = Backbone(TINY).eval()
    ckpt = save_checkpoint(tmp_path / "m.safetensors", backbone=bb,
                           heads=WakeWordHeads(bb.embed_dim, ["alexa", "hey samuel"], hidden=8))
    pwk = export_checkpoint(ckpt, tmp_path / "m.pwk")
    wav = write_audio(tmp_path / "a.wav",
                      (np.random.default_rng(0).standard_normal(32000) * 0.05).astype(np.float32))
    code = BLOCK_TORCH + f"""
import numpy as np
from polywake.cli import main
from polywake.detect import Detector
from polywake.model_io import load_scorer
s = load_scorer({str(pwk)!r})
d = Detector(s)
rows = d.scores(np.zeros(16000, np.float32))
assert rows.shape == (12, 2), rows.shape
assert main(["detect", "--model", {str(pwk)!r}, {str(wav)!r}]) == 0
assert "torch" not in sys.modules
print("ok")
"""
    run_ok(code)


def test_default_model_detects_without_torch_or_onnxruntime() -> None:
    """The shipped model through the API and `polywake detect`: numpy alone scores it."""
    code = BLOCK_TORCH_AND_ORT + """
import numpy as np
from polywake.cli import main
from polywake.commands.demo import EXAMPLE
from polywake.detect import Detector
from polywake.model_io import load_scorer
d = Detector(load_scorer())
found = list(d.iter_file(EXAMPLE))
assert {x.word for x in found} >= {"alexa", "hey samuel"}, found
assert main(["detect", str(EXAMPLE)]) == 0
assert main(["detect", "--backend", "numpy", str(EXAMPLE)]) == 0
assert "torch" not in sys.modules and "onnxruntime" not in sys.modules
print("ok")
"""
    assert "alexa" in run_ok(code)


def test_shipped_tiny_model_detects_the_example_and_is_small() -> None:
    """The tiny model (old devices) by name, numpy alone; <= 50k parameters with 5 words."""
    from polywake.model_io import TINY_MODEL, read_pwk_file

    pwk = read_pwk_file(TINY_MODEL, want=("numpy",))
    params = sum(int(np.prod(shape)) for _, shape in pwk.numpy["tensors"].values())
    assert params <= 50_000, params
    code = BLOCK_TORCH_AND_ORT + """
from polywake.commands.demo import EXAMPLE
from polywake.detect import Detector
from polywake.model_io import load_scorer
s = load_scorer("tiny")
assert s.words == ["alexa", "echo", "amazon", "computer", "hey samuel"], s.words
found = list(Detector(s).iter_file(EXAMPLE))
assert [x.word for x in found] == ["alexa", "hey samuel"], found
print("ok")
"""
    run_ok(code)


def test_onnx_backend_says_so_when_onnxruntime_is_missing() -> None:
    code = BLOCK_TORCH_AND_ORT + """
from polywake.cli import main
from polywake.commands.demo import EXAMPLE
assert main(["detect", "--backend", "onnx", str(EXAMPLE)]) == 1
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().endswith("ok"), r.stderr
    assert "the onnx backend needs onnxruntime" in r.stderr and "Traceback" not in r.stderr
