"""Heads on top of the backbone's 80 ms embeddings.

* :class:`WakeWordHeads`: one small head per wake word, each looking at the last ``context``
  embeddings. Each word's weights are its own tensors, so adding or removing a word never
  touches another word's numbers; at run time they are fused into one grouped convolution, so
  the cost of ten words is one op, not ten.
* :class:`PretrainHeads`: word classification + phoneme CTC, used only to pretrain the backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WakeWordHeads(nn.Module):
    def __init__(self, dim: int, words: list[str] | None = None, hidden: int = 16,
                 context: int = 3) -> None:
        super().__init__()
        self.dim, self.hidden, self.context = dim, hidden, context
        self.words: list[str] = []
        self.w1 = nn.ParameterList()  # each (hidden, dim, context)
        self.b1 = nn.ParameterList()  # each (hidden,)
        self.w2 = nn.ParameterList()  # each (1, hidden, 1)
        self.b2 = nn.ParameterList()  # each (1,)
        for w in words or []:
            self.add_word(w)

    def add_word(self, word: str, seed: int | None = None) -> int:
        if word in self.words:
            raise ValueError(f"word {word!r} is already in the model")
        g = torch.Generator().manual_seed(seed if seed is not None else len(self.words))
        fan1 = self.dim * self.context
        self.w1.append(nn.Parameter(torch.randn(self.hidden, self.dim, self.context,
                                                generator=g) / fan1 ** 0.5))
        self.b1.append(nn.Parameter(torch.zeros(self.hidden)))
        self.w2.append(nn.Parameter(torch.randn(1, self.hidden, 1, generator=g)
                                    / self.hidden ** 0.5))
        # Start every new word "off": a prior of ~1% keeps early false accepts low.
        self.b2.append(nn.Parameter(torch.full((1,), -4.6)))
        self.words.append(word)
        return len(self.words) - 1

    def remove_word(self, word: str) -> None:
        i = self.words.index(word)
        for plist in (self.w1, self.b1, self.w2, self.b2):
            kept = [p for j, p in enumerate(plist) if j != i]
            plist.__init__(kept)
        self.words.pop(i)

    def fused(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All words' weights as one conv (W*H, D, k) and one grouped 1x1 conv (W, H, 1)."""
        return (torch.cat(list(self.w1)), torch.cat(list(self.b1)),
                torch.cat(list(self.w2)), torch.cat(list(self.b2)))

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = self.fused()
        h = F.relu(F.conv1d(x, w1, b1))
        return F.conv1d(h, w2, b2, groups=len(self.words))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """(batch, steps, dim) -> logits (batch, steps, words)."""
        x = F.pad(emb.transpose(1, 2), (self.context - 1, 0))
        return self._apply(x).transpose(1, 2)

    def init_state(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.dim, self.context - 1)

    def stream(self, emb: torch.Tensor, state: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([state, emb.transpose(1, 2)], dim=-1)
        return self._apply(x).transpose(1, 2), x[..., x.shape[-1] - (self.context - 1):]


class PretrainHeads(nn.Module):
    """Word classification (pooled over time) + per-step phoneme logits for CTC."""

    def __init__(self, dim: int, n_words: int, n_phonemes: int) -> None:
        super().__init__()
        self.words = nn.Linear(dim, n_words)
        self.phonemes = nn.Linear(dim, n_phonemes + 1)  # +1: the CTC blank, index 0

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, steps, dim) -> (word logits (batch, words), phoneme logits (b, s, p+1)).

        Word logits are pooled with log-sum-exp over time: the clip's word may be anywhere in
        it, and the pooled score trains the step that hears it best without a hard max."""
        per_step = self.words(emb)
        pooled = torch.logsumexp(per_step, dim=1) - torch.log(
            torch.tensor(float(emb.shape[1])))
        return pooled, self.phonemes(emb)
