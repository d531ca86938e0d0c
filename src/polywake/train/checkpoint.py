"""Resumable training state: model + optimizer + step, in one safetensors file, atomically.

A run that is killed (SIGKILL included) restarts from its last checkpoint; because batches and
dropout are seeded by step, the resumed run reproduces the uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load, save

from ..audio import atomic_write_bytes
from ..errors import ModelFileError


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_training_state(path: str | Path, modules: dict[str, torch.nn.Module],
                        opt: torch.optim.Optimizer, step: int, extra: dict | None = None) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().contiguous().clone()
    otensors, ometa = _flatten_optimizer(opt)
    tensors.update(otensors)
    meta = {"step": str(step), "optimizer": json.dumps(ometa), "extra": json.dumps(extra or {})}
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def load_training_state(path: str | Path, modules: dict[str, torch.nn.Module],
                        opt: torch.optim.Optimizer) -> tuple[int, dict]:
    p = Path(path)
    raw = p.read_bytes()
    try:
        tensors = load(raw)
        header = json.loads(raw[8: 8 + int.from_bytes(raw[:8], "little")])
        meta = header["__metadata__"]
    except Exception as e:  # safetensors raises its own error type
        raise ModelFileError(f"{p}: unreadable training checkpoint ({e})") from e
    for name, m in modules.items():
        m.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items()
                           if k.startswith(name + ".")})
    ometa = json.loads(meta["optimizer"])
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, sc in ometa["scalars"].items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": ometa["param_groups"]})
    return int(meta["step"]), json.loads(meta["extra"])
