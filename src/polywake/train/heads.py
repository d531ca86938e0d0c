"""Train wake-word heads on cached embeddings: balanced per word, hard negatives mined.

Only the heads of the words being trained get gradients; every other word's tensors are left
exactly as they were (adding a word cannot change an existing word's scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..models.heads import WakeWordHeads


@dataclass
class EmbeddedSet:
    """Embedded windows: ``emb`` (N, steps, dim) float16, ``labels`` (N, steps, words) int8
    (1 fire, 0 quiet, -1 don't care), ``words`` the label columns' names."""

    emb: np.ndarray
    labels: np.ndarray
    words: list[str]

    def concat(self, other: EmbeddedSet) -> EmbeddedSet:
        if other.words != self.words:
            raise ValueError("label columns differ")
        return EmbeddedSet(np.concatenate([self.emb, other.emb]),
                           np.concatenate([self.labels, other.labels]), self.words)

    def column(self, word: str) -> np.ndarray:
        return self.labels[:, :, self.words.index(word)]


def _word_loss(logits: torch.Tensor, lab: torch.Tensor, hard_frac: float) -> torch.Tensor:
    """logits, lab: (B, T). Positives: the best step in the 'fire' span must fire (max-pool,
    the model chooses when). Negatives: every quiet step stays quiet, plus extra weight on the
    hardest quiet steps (online hard-negative mining)."""
    pos = lab == 1
    has_pos = pos.any(1)
    loss = logits.new_zeros(())
    if has_pos.any():
        pmax = logits.masked_fill(~pos, -1e4).max(1).values[has_pos]
        loss = loss + F.binary_cross_entropy_with_logits(pmax, torch.ones_like(pmax))
    neg = lab == 0
    if neg.any():
        nl = F.binary_cross_entropy_with_logits(logits[neg], torch.zeros_like(logits[neg]),
                                                reduction="none")
        k = max(1, int(hard_frac * nl.numel()))
        loss = loss + nl.mean() + nl.topk(k).values.mean()
    return loss


def train_heads(heads: WakeWordHeads, data: EmbeddedSet, train_words: list[str], *,
                steps: int = 1500, pos_per_word: int = 32, neg_per_word: int = 96,
                lr: float = 3e-3, hard_frac: float = 0.05, seed: int = 0,
                neg_weights: np.ndarray | None = None, progress: bool = True) -> None:
    """Fit the heads of ``train_words`` (their columns must be in ``data.words``).

    Each batch takes the same number of positive windows for every word, whatever its clip
    count (balanced), and ``neg_per_word`` negatives per word drawn with ``neg_weights``
    (hard-negative mining raises the weight of windows that fired)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    head_idx = [heads.words.index(w) for w in train_words]
    params = []
    for plist in (heads.w1, heads.b1, heads.w2, heads.b2):
        for i, p in enumerate(plist):
            p.requires_grad_(i in head_idx)
            if i in head_idx:
                params.append(p)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-5)
    cols = [data.words.index(w) for w in train_words]
    pos_pool = [np.where((data.labels[:, :, c] == 1).any(1))[0] for c in cols]
    neg_pool = [np.where(~(data.labels[:, :, c] == 1).any(1))[0] for c in cols]
    for w, pp in zip(train_words, pos_pool, strict=True):
        if pp.size == 0:
            raise ValueError(f"no positive windows for {w!r}")
    probs = []
    for npool in neg_pool:
        wts = np.ones(npool.size) if neg_weights is None else neg_weights[npool].astype(float)
        probs.append(wts / wts.sum())
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    bar = tqdm(range(steps), desc="heads", unit="step", disable=not progress, mininterval=5)
    for _ in bar:
        idx = np.concatenate(
            [rng.choice(pp, pos_per_word) for pp in pos_pool]
            + [rng.choice(npool, neg_per_word, p=pr) for npool, pr in zip(neg_pool, probs,
                                                                          strict=True)])
        emb = torch.from_numpy(data.emb[idx].astype(np.float32))
        lab = torch.from_numpy(data.labels[idx][:, :, cols].astype(np.int64))
        logits = heads(emb)
        loss = sum(_word_loss(logits[:, :, hi], lab[:, :, k], hard_frac)
                   for k, hi in enumerate(head_idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    for plist in (heads.w1, heads.b1, heads.w2, heads.b2):
        for p in plist:
            p.requires_grad_(True)


def window_logits(heads: WakeWordHeads, emb: np.ndarray, batch: int = 512) -> np.ndarray:
    """(N, steps, dim) -> logits (N, steps, words), before the sigmoid."""
    out = []
    with torch.no_grad():
        for i in range(0, emb.shape[0], batch):
            out.append(heads(torch.from_numpy(emb[i: i + batch].astype(np.float32))).numpy())
    return np.concatenate(out) if out else np.zeros((0, emb.shape[1], len(heads.words)))


def score_windows(heads: WakeWordHeads, emb: np.ndarray, batch: int = 512) -> np.ndarray:
    """(N, steps, dim) -> probabilities (N, steps, words)."""
    logits = window_logits(heads, emb, batch)
    return torch.sigmoid(torch.from_numpy(logits)).numpy() if logits.size else logits


# A float32 sigmoid returns exactly 1.0 above a logit of ~17, so a saturated false accept
# ties every saturated true detection and no threshold can keep the one and drop the other
# (the calibration then asks for a threshold of 1.0 and rejects everything). Tempering keeps
# the largest logit a word reaches on the given data at or below MAX_LOGIT, where float32
# still resolves scores ~1e-6 apart. The scale is monotone: the ranking is unchanged.
MAX_LOGIT = 10.0


def temper_heads(heads: WakeWordHeads, words: list[str], embs: list[np.ndarray],
                 max_logit: float = MAX_LOGIT) -> dict[str, float]:
    """Divide each word's output layer by a temperature so its logits on ``embs`` (arrays of
    (N, steps, dim)) stay <= ``max_logit``. Only ``words``' heads change (adding a word leaves
    the others' numbers alone). Returns the temperature applied per word (1.0: none)."""
    peak = {w: -np.inf for w in words}
    for e in embs:
        if e.shape[0] == 0:
            continue
        lg = window_logits(heads, e)
        for w in words:
            peak[w] = max(peak[w], float(lg[:, :, heads.words.index(w)].max()))
    out = {}
    with torch.no_grad():
        for w in words:
            t = max(1.0, peak[w] / max_logit) if np.isfinite(peak[w]) else 1.0
            i = heads.words.index(w)
            heads.w2[i].div_(t)
            heads.b2[i].div_(t)
            out[w] = float(t)
    return out


def mine_hard_negatives(heads: WakeWordHeads, data: EmbeddedSet, words: list[str],
                        boost: float = 8.0, floor: float = 0.05) -> np.ndarray:
    """Weights per window: windows where any trained word scores high on a quiet step get
    ``boost`` times more likely to be drawn as negatives in the next round."""
    probs = score_windows(heads, data.emb)
    w = np.ones(data.emb.shape[0])
    for word in words:
        c = data.words.index(word)
        h = heads.words.index(word)
        quiet = data.labels[:, :, c] == 0
        worst = np.where(quiet, probs[:, :, h], 0.0).max(1)
        w += boost * (worst > floor) * worst
    return w


DECISION = {"smoothing": "none", "smooth_steps": 1}


def detector_scores(heads: WakeWordHeads, emb: np.ndarray,
                    decision: dict | None = None) -> np.ndarray:
    """Scores as the Detector thresholds them (the card's ``decision`` smoothing applied per
    window), so calibration and benchmarks measure the same number the Detector decides on.

    Default ``DECISION``: no smoothing. The heads are trained with a max-pooled target, so a
    word shows up as a one- or two-step peak; a mean over 3 steps would cut it to a third."""
    from ..evaluate import smooth_scores

    d = decision or DECISION
    probs = score_windows(heads, emb)
    if not probs.size:
        return probs
    return np.stack([smooth_scores(p, d["smoothing"], d["smooth_steps"]) for p in probs])
