"""Balanced sampling for multi-target wake-word training.

Clip counts differ wildly between words (one phrase may have 10x the voices of another) and
negatives outnumber positives. Sampling uniformly would let the big classes decide the loss.
:class:`BalancedSampler` draws indices with replacement so that

* positives make up ``pos_fraction`` of draws, whatever the counts;
* inside that, every target word gets the same share;
* negatives are split between their groups (e.g. kinds ``confusable``/``sentence``/
  ``background``) by ``neg_group_weights`` (equal by default);
* inside a word or group, clips are uniform.

It is seeded and numpy-only, and usable as a torch ``DataLoader(sampler=...)`` (it is an
iterable of ints with ``__len__``); call :meth:`set_epoch` to draw a new, reproducible order.

API::

    BalancedSampler(targets, neg_groups=None, pos_fraction=0.5, num_samples=None, seed=0,
                    neg_group_weights=None)
    BalancedSampler.from_records(records, pos_fraction=0.5, neg_group="kind", ...)
    sampler.weights -> np.ndarray   # probability of each item per draw (sums to 1)
    list(sampler) -> [indices]      # num_samples draws
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from ..errors import PolywakeError


class SamplerError(PolywakeError, ValueError):
    """Sampler settings that cannot be satisfied."""


class BalancedSampler:
    def __init__(self, targets: Sequence[str | None], neg_groups: Sequence[str] | None = None,
                 pos_fraction: float = 0.5, num_samples: int | None = None, seed: int = 0,
                 neg_group_weights: Mapping[str, float] | None = None) -> None:
        """``targets[i]``: the word item i is a positive of, or None for a negative.
        ``neg_groups[i]``: the group of negative item i (ignored for positives)."""
        n = len(targets)
        if n == 0:
            raise SamplerError("no items to sample from")
        if not 0.0 <= pos_fraction <= 1.0:
            raise SamplerError(f"pos_fraction={pos_fraction} must be in 0..1")
        if neg_groups is not None and len(neg_groups) != n:
            raise SamplerError(f"{len(neg_groups)} negative groups for {n} items")
        self.seed, self.epoch = seed, 0
        self.num_samples = n if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise SamplerError(f"num_samples={num_samples} must be >= 1")

        pos_idx: dict[str, list[int]] = {}
        neg_idx: dict[str, list[int]] = {}
        for i, t in enumerate(targets):
            if t is None:
                neg_idx.setdefault(neg_groups[i] if neg_groups is not None else "neg", []).append(i)
            else:
                pos_idx.setdefault(t, []).append(i)
        if not pos_idx and pos_fraction > 0 and neg_idx:
            pos_fraction = 0.0  # nothing positive to draw: all draws are negatives
        if not neg_idx and pos_fraction < 1:
            pos_fraction = 1.0
        gw = {g: float((neg_group_weights or {}).get(g, 1.0)) for g in neg_idx}
        if any(w < 0 for w in gw.values()) or (neg_idx and sum(gw.values()) <= 0):
            raise SamplerError(f"negative group weights must be >= 0 and not all 0: {gw}")
        self.words = sorted(pos_idx)
        self.neg_group_names = sorted(neg_idx)
        self.pos_fraction = pos_fraction

        w = np.zeros(n, dtype=np.float64)
        for idx in pos_idx.values():
            w[idx] = pos_fraction / len(pos_idx) / len(idx)
        total_gw = sum(gw.values())
        for g, idx in neg_idx.items():
            w[idx] = (1.0 - pos_fraction) * gw[g] / total_gw / len(idx)
        self.weights = w / w.sum()

    @classmethod
    def from_records(cls, records: Sequence, pos_fraction: float = 0.5,
                     neg_group: str = "kind", **kw) -> BalancedSampler:
        """From manifest records: positives by ``word``; negatives grouped by the record
        attribute ``neg_group`` (``kind``, ``negative_for``, ``engine``...)."""
        targets = [r.word if r.kind == "positive" else None for r in records]
        groups = [str(getattr(r, neg_group)) for r in records]
        return cls(targets, groups, pos_fraction=pos_fraction, **kw)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        draws = rng.choice(len(self.weights), size=self.num_samples, replace=True,
                           p=self.weights)
        return iter(draws.tolist())
