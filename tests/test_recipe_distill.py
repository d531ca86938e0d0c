"""recipes/effw_distill_pilot.py: a killed training run resumes to the uninterrupted result."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import effw_distill_pilot as pilot  # noqa: E402


def _material(d: Path) -> None:
    rng = np.random.default_rng(0)
    d.mkdir(parents=True)
    np.save(d / "windows.npy", (rng.standard_normal((40, pilot.STUDENT_N)) * 3000).astype(np.int16))
    np.save(d / "teacher.npy", rng.standard_normal((40, 16)).astype(np.float16))


def _args(**kw) -> argparse.Namespace:
    base = dict(steps=6, minutes=10.0, batch=4, lr=1e-3, save_every=2, eval_every=3, init="",
                with_material_of=[])
    return argparse.Namespace(**{**base, **kw})


def test_killed_training_resumes_to_the_same_student(tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    for name in ("full", "killed"):
        _material(tmp_path / name)
    monkeypatch.setattr(pilot, "OUT", tmp_path / "full")
    pilot.train(_args())
    full = load_file(str(tmp_path / "full" / "student.safetensors"))

    monkeypatch.setattr(pilot, "OUT", tmp_path / "killed")
    calls = {"n": 0}
    real_clip = torch.nn.utils.clip_grad_norm_

    def dies_at_step_5(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # the kill lands mid-step, after the step-4 checkpoint
        return real_clip(*a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        pilot.train(_args())
    assert not (tmp_path / "killed" / "student.safetensors").exists()
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    pilot.train(_args())
    resumed = load_file(str(tmp_path / "killed" / "student.safetensors"))
    assert full.keys() == resumed.keys()
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], rtol=0, atol=0, msg=f"{k}: {resumed[k].flatten()[:3]} vs {full[k].flatten()[:3]}")


def test_windows_of_several_runs_read_as_one() -> None:
    a, b = np.arange(10).reshape(5, 2), np.arange(10, 16).reshape(3, 2)
    w, full = pilot._Windows([a, b]), np.concatenate([a, b])
    idx = np.array([0, 3, 4, 5, 7])
    assert len(w) == 8 and (w[idx] == full[idx]).all()
    with pytest.raises(ValueError, match="sorted"):
        w[np.array([5, 0])]
