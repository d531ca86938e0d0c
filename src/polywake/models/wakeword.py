"""Backbone + per-word heads = one multi-target wake-word model (torch; training side)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelFileError
from .backbone import Backbone, BackboneConfig
from .heads import WakeWordHeads

CHECKPOINT_FORMAT = "1"
MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024


def _tensor_digest(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """SHA-256 over the metadata (card, configs; all but the digest itself) and the tensors."""
    import hashlib

    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "sha256"},
                                  sort_keys=True).encode())
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def state_digest(module: nn.Module) -> str:
    """A short digest of a module's tensors (what embedding caches of that module key on)."""
    return _tensor_digest({k: v.detach() for k, v in module.state_dict().items()}, {})[:12]


class WakeWordModel(nn.Module):
    def __init__(self, backbone: Backbone, heads: WakeWordHeads,
                 card: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.card: dict[str, Any] = card or {}

    @property
    def words(self) -> list[str]:
        return list(self.heads.words)

    @property
    def frames_per_step(self) -> int:
        return self.backbone.frames_per_step

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(batch, frames, mels) -> logits (batch, steps, words)."""
        return self.heads(self.backbone(feats))

    def init_state(self, batch: int = 1) -> list[torch.Tensor]:
        return self.backbone.init_state(batch) + [self.heads.init_state(batch)]

    def stream(self, feats: torch.Tensor, state: list[torch.Tensor]
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Probabilities (batch, steps, words) for the next frames, and the new state."""
        emb, bstate = self.backbone.stream(feats, state[:-1])
        logits, hstate = self.heads.stream(emb, state[-1])
        return torch.sigmoid(logits), bstate + [hstate]


def _flat_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}


def save_checkpoint(path: str | Path, *, backbone: Backbone,
                    heads: WakeWordHeads | None = None, card: dict | None = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Safetensors (never pickle) with the configs in its metadata; written atomically."""
    from safetensors.torch import save

    from ..audio import atomic_write_bytes

    tensors = {f"backbone.{k}": v for k, v in _flat_tensors(backbone).items()}
    meta: dict[str, str] = {
        "polywake_format": CHECKPOINT_FORMAT,
        "backbone_config": json.dumps(backbone.config.to_dict()),
        "card": json.dumps(card or {}),
    }
    if heads is not None:
        tensors.update({f"heads.{k}": v for k, v in _flat_tensors(heads).items()})
        meta["heads"] = json.dumps({"words": heads.words, "hidden": heads.hidden,
                                    "context": heads.context})
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().contiguous()
    # safetensors has no checksum of its own: a flipped bit would load as other weights.
    meta["sha256"] = _tensor_digest(tensors, meta)
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def load_checkpoint(path: str | Path) -> tuple[Backbone, WakeWordHeads | None, dict,
                                               dict[str, torch.Tensor]]:
    """-> (backbone, heads or None, card, extra tensors). Clear errors for bad files."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such model file")
    size = p.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise ModelFileError(f"{p}: {size} bytes is too large for a polywake checkpoint")
    try:
        raw = p.read_bytes()
        tensors = load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8:8 + header_len]).get("__metadata__", {})
    except (SafetensorError, ValueError, OSError, RecursionError, AttributeError) as e:
        raise ModelFileError(f"{p}: not a readable polywake checkpoint ({e})") from e
    if not isinstance(meta, dict) or meta.get("polywake_format") != CHECKPOINT_FORMAT:
        got = meta.get("polywake_format") if isinstance(meta, dict) else None
        raise ModelFileError(f"{p}: checkpoint format {got!r}, "
                             f"this polywake reads format {CHECKPOINT_FORMAT}")
    # A missing checksum is refused, not skipped: one flipped bit in the key "sha256" would
    # otherwise switch the check off and let damaged tensors load (found by the fuzz test).
    if "sha256" not in meta:
        raise ModelFileError(f"{p}: no checksum in the metadata: damaged, or not written by "
                             "polywake's save_checkpoint")
    if meta["sha256"] != _tensor_digest(tensors, meta):
        raise ModelFileError(f"{p}: checksum mismatch: the file was modified or damaged")
    try:
        backbone = Backbone(BackboneConfig.from_dict(json.loads(meta["backbone_config"])))
        backbone.load_state_dict({k[9:]: v for k, v in tensors.items()
                                  if k.startswith("backbone.")})
        heads = None
        if "heads" in meta:
            h = json.loads(meta["heads"])
            heads = WakeWordHeads(backbone.embed_dim, h["words"], h["hidden"], h["context"])
            heads.load_state_dict({k[6:]: v for k, v in tensors.items()
                                   if k.startswith("heads.")})
        card = json.loads(meta.get("card", "{}"))
        if not isinstance(card, dict):
            raise TypeError("card is not an object")
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError,
            RecursionError, ZeroDivisionError) as e:
        raise ModelFileError(f"{p}: metadata and tensors do not describe a valid model "
                             f"({type(e).__name__}: {e})") from e
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    return backbone.eval(), heads, card, extra
