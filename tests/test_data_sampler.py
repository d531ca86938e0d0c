"""Balanced multi-target sampler: the weighting must not follow the clip counts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from polywake.data.manifest import ClipRecord
from polywake.data.sampler import BalancedSampler, SamplerError

# Very unequal counts: 1000 alexa, 10 echo, 3000 sentence negatives, 50 confusables.
TARGETS = ["alexa"] * 1000 + ["echo"] * 10 + [None] * 3000 + [None] * 50
GROUPS = ["p"] * 1010 + ["sentence"] * 3000 + ["confusable"] * 50


def _mass(s: BalancedSampler) -> dict[str, float]:
    w = s.weights
    return {"alexa": w[:1000].sum(), "echo": w[1000:1010].sum(),
            "sentence": w[1010:4010].sum(), "confusable": w[4010:].sum()}


def test_exact_weights_equal_per_word_and_ratio():
    m = _mass(BalancedSampler(TARGETS, GROUPS, pos_fraction=0.3))
    assert m["alexa"] == pytest.approx(0.15) and m["echo"] == pytest.approx(0.15)
    assert m["sentence"] == pytest.approx(0.35) and m["confusable"] == pytest.approx(0.35)


def test_group_weights():
    m = _mass(BalancedSampler(TARGETS, GROUPS, pos_fraction=0.5,
                              neg_group_weights={"sentence": 3, "confusable": 1}))
    assert m["sentence"] == pytest.approx(0.375) and m["confusable"] == pytest.approx(0.125)


def test_draws_follow_weights_not_counts():
    s = BalancedSampler(TARGETS, GROUPS, pos_fraction=0.5, num_samples=40000, seed=1)
    idx = np.array(list(s))
    frac = {"alexa": np.mean(idx < 1000), "echo": np.mean((idx >= 1000) & (idx < 1010)),
            "neg": np.mean(idx >= 1010)}
    # Uniform sampling would give echo 0.25%; balanced gives 25%.
    assert frac["alexa"] == pytest.approx(0.25, abs=0.015)
    assert frac["echo"] == pytest.approx(0.25, abs=0.015)
    assert frac["neg"] == pytest.approx(0.5, abs=0.015)
    # Inside a word, clips are uniform: all 10 echo clips drawn about equally.
    echo = Counter(i for i in idx.tolist() if 1000 <= i < 1010)
    assert len(echo) == 10 and max(echo.values()) < 2 * min(echo.values())


def test_seeded_and_epochs_differ():
    a = BalancedSampler(TARGETS, GROUPS, num_samples=100, seed=3)
    b = BalancedSampler(TARGETS, GROUPS, num_samples=100, seed=3)
    assert list(a) == list(b) and len(a) == 100
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first


def test_edge_cases():
    assert BalancedSampler(["a", "b"], pos_fraction=0.5).weights.tolist() == [0.5, 0.5]
    assert BalancedSampler([None, None]).weights.tolist() == [0.5, 0.5]
    with pytest.raises(SamplerError):
        BalancedSampler([])
    with pytest.raises(SamplerError):
        BalancedSampler(["a"], pos_fraction=1.5)


def test_from_records():
    def rec(i, kind, word=None):
        return ClipRecord(id=str(i), path="x.flac", duration=1, text="t", kind=kind,
                          split="train", word=word)
    recs = [rec(0, "positive", "alexa"), rec(1, "positive", "echo"), rec(2, "positive", "echo"),
            rec(3, "sentence"), rec(4, "confusable")]
    w = BalancedSampler.from_records(recs, pos_fraction=0.5).weights
    assert w.tolist() == pytest.approx([0.25, 0.125, 0.125, 0.25, 0.25])
