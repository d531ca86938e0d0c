"""The runtime path (load a .pwk, stream audio, decide) must work where torch is not installed."""

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

BLOCK_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _Block())
"""


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
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")
