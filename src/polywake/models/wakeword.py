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
from .matcher import TemplateMatcher

CHECKPOINT_FORMAT = "1"
# The distilled student that matched words run on (recipes/effw_distill_pilot.py, docs/MODELS.md)
MATCHER_BASE = Path(__file__).resolve().parents[1] / "assets" / "matcher.safetensors"
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
    """Trained heads on the backbone, and optionally matched words (a :class:`TemplateMatcher`
    with its own backbone). Words: the heads' words, then the matcher's; scores in [0, 1]."""

    def __init__(self, backbone: Backbone, heads: WakeWordHeads,
                 card: dict[str, Any] | None = None,
                 matcher: TemplateMatcher | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.matcher = matcher if matcher is not None and matcher.words else None
        if self.matcher is not None and set(heads.words) & set(self.matcher.words):
            raise ValueError("a word is both a trained head and a matched word")
        if self.matcher is not None and \
                self.matcher.backbone.frames_per_step != backbone.frames_per_step:
            raise ValueError("the matcher's backbone steps at another rate than the model's")
        self.card: dict[str, Any] = card or {}

    @property
    def words(self) -> list[str]:
        return list(self.heads.words) + (self.matcher.words if self.matcher else [])

    @property
    def frames_per_step(self) -> int:
        return self.backbone.frames_per_step

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(batch, frames, mels) -> heads' logits (batch, steps, head words): training only;
        matched words have no logits (see :meth:`scores`)."""
        return self.heads(self.backbone(feats))

    def scores(self, feats: torch.Tensor) -> torch.Tensor:
        """(batch, frames, mels) -> scores (batch, steps, words) of every word."""
        probs = torch.sigmoid(self.heads(self.backbone(feats)))
        if self.matcher is None:
            return probs
        return torch.cat([probs, self.matcher(feats)], dim=-1)

    def init_state(self, batch: int = 1) -> list[torch.Tensor]:
        state = self.backbone.init_state(batch) + [self.heads.init_state(batch)]
        return state + (self.matcher.init_state(batch) if self.matcher else [])

    def stream(self, feats: torch.Tensor, state: list[torch.Tensor]
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Scores (batch, steps, words) for the next frames, and the new state."""
        nb = self.backbone.n_states
        emb, bstate = self.backbone.stream(feats, state[:nb])
        logits, hstate = self.heads.stream(emb, state[nb])
        probs, new = torch.sigmoid(logits), bstate + [hstate]
        if self.matcher is not None:
            mprobs, mstate = self.matcher.stream(feats, state[nb + 1:])
            probs, new = torch.cat([probs, mprobs], dim=-1), new + mstate
        return probs, new


def _flat_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}


def save_checkpoint(path: str | Path, *, backbone: Backbone,
                    heads: WakeWordHeads | None = None, card: dict | None = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None,
                    matcher: TemplateMatcher | None = None) -> Path:
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
    if matcher is not None and matcher.words:
        tensors.update({f"matcher.{k}": v for k, v in _flat_tensors(matcher).items()})
        meta["matcher"] = json.dumps({"words": matcher.words, "scoring": matcher.scoring,
                                      "seq_len": matcher.seq_len, "pool": matcher.pool,
                                      "backbone_config": matcher.backbone.config.to_dict()})
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().contiguous()
    # safetensors has no checksum of its own: a flipped bit would load as other weights.
    meta["sha256"] = _tensor_digest(tensors, meta)
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def load_checkpoint(path: str | Path) -> tuple[Backbone, WakeWordHeads | None, dict,
                                               dict[str, torch.Tensor]]:
    """-> (backbone, heads or None, card, extra tensors). Clear errors for bad files. Matched
    words, if any, are read by :func:`load_model` / :func:`load_matcher`."""
    return _load(path)[:4]


def load_matcher(path: str | Path) -> TemplateMatcher | None:
    """The checkpoint's matched words (a :class:`TemplateMatcher`), or None."""
    return _load(path)[4]


def save_matcher_base(path: str | Path, matcher: TemplateMatcher, card: dict) -> Path:
    """A matcher without words (its backbone and metric): what matched words start from."""
    return save_checkpoint(path, backbone=matcher.backbone, card={**card, "kind": "matcher"},
                           extra_tensors={"matcher_gram": matcher.gram,
                                          "matcher_lin": matcher.lin,
                                          "matcher_const": matcher.const.reshape(1),
                                          **({"matcher_cohort_mean": matcher.cohort_mean,
                                              "matcher_cohort_cov": matcher.cohort_cov}
                                             if matcher.seq_len > 1 else {})})


def load_matcher_base(path: str | Path = MATCHER_BASE) -> tuple[TemplateMatcher, dict]:
    """-> (a matcher without words, its card) from :func:`save_matcher_base`'s file."""
    backbone, _, card, extra = load_checkpoint(path)
    if card.get("kind") != "matcher" or not {"matcher_gram", "matcher_lin",
                                              "matcher_const"} <= set(extra):
        raise ModelFileError(f"{path}: not a matcher base (its card kind is "
                             f"{card.get('kind')!r})")
    try:
        m = TemplateMatcher(backbone, extra["matcher_gram"], extra["matcher_lin"],
                            extra["matcher_const"], extra.get("matcher_cohort_mean"),
                            extra.get("matcher_cohort_cov"))
    except ValueError as e:
        raise ModelFileError(f"{path}: {e}") from e
    return m.eval(), card


def load_model(path: str | Path) -> WakeWordModel:
    """A checkpoint with heads as one :class:`WakeWordModel`, matched words included."""
    backbone, heads, card, _, matcher = _load(path)
    if heads is None:
        raise ModelFileError(f"{path}: a backbone checkpoint has no wake-word heads")
    return WakeWordModel(backbone, heads, card, matcher).eval()


def _load(path: str | Path) -> tuple[Backbone, WakeWordHeads | None, dict,
                                     dict[str, torch.Tensor], TemplateMatcher | None]:
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
        matcher = None
        if "matcher" in meta:
            mm = json.loads(meta["matcher"])
            mt = {k[8:]: v for k, v in tensors.items() if k.startswith("matcher.")}
            mb = Backbone(BackboneConfig.from_dict(mm["backbone_config"]))
            mb.load_state_dict({k[9:]: v for k, v in mt.items() if k.startswith("backbone.")})
            # the step count and pooling the file's templates and thresholds were made for
            # (a file from before pooling has no "pool": it keeps the max)
            matcher = TemplateMatcher(mb, mt["gram"], mt["lin"], mt["const"],
                                      mt.get("cohort_mean"), mt.get("cohort_cov"),
                                      mm.get("seq_len"), mm.get("pool", 1))
            for i, word in enumerate(mm["words"]):
                matcher.add_templates(word, mt[f"u.{i}"], mt[f"c.{i}"], mt.get(f"b.{i}"))
            matcher.eval()
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError,
            RecursionError, ZeroDivisionError) as e:
        raise ModelFileError(f"{p}: metadata and tensors do not describe a valid model "
                             f"({type(e).__name__}: {e})") from e
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    return backbone.eval(), heads, card, extra, matcher
