"""Few-shot words scored by similarity to their examples: the matcher output of a model.

A word added from real recordings can be matched instead of trained: each example is embedded
once, and every 80 ms step scores its best cosine similarity to those vectors (as
EfficientWord-Net does). That only works in an embedding trained to separate words whatever
the speaker; polywake's is a causal backbone distilled from EfficientWord-Net's
(``recipes/effw_distill_pilot.py``, docs/MODELS.md), whose 128-d step ``e`` was trained
through a linear map ``P e + b`` to a 2,048-d space where cosine similarity is meaningful.

The 2,048-d vectors are never formed at run time. With ``G = PᵀP``, ``g = Pᵀb`` and
``β = bᵀb``, for a template ``t = P e_k + b`` of norm ``n_k``:

    cos(P e + b, t) = (e·u_k + c_k) / sqrt(eᵀG e + 2 g·e + β),
    u_k = (G e_k + g) / n_k,   c_k = (g·e_k + β) / n_k,

so a step costs one 128 × 128 product and one dot product per template, and the matcher ships
G, g, β (the *metric*) instead of the 2,048 × 128 projection. A word's score is the largest of
its templates' similarities, floored at 0 so that it reads like the heads' probabilities.

The matcher has its own backbone (the distilled student), beside the model's main backbone:
adding the first matched word costs one more backbone pass per step; further words cost one
dot product per template.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import Backbone

# The steps after an example's end that become its templates (the VAD endpoint is the word's
# end; the teacher's window and the student's best match trail it by up to ~0.3 s).
TEMPLATE_SPAN_S = (0.0, 0.32)
STEP_S = 0.08


class TemplateMatcher(nn.Module):
    def __init__(self, backbone: Backbone, gram: torch.Tensor, lin: torch.Tensor,
                 const: torch.Tensor) -> None:
        super().__init__()
        d = backbone.embed_dim
        if gram.shape != (d, d) or lin.shape != (d,) or const.numel() != 1:
            raise ValueError(f"metric shapes {tuple(gram.shape)}, {tuple(lin.shape)}, "
                             f"{tuple(const.shape)} do not fit a {d}-d backbone")
        self.backbone = backbone
        self.register_buffer("gram", gram.float().contiguous())
        self.register_buffer("lin", lin.float().contiguous())
        self.register_buffer("const", const.float().reshape(()))
        self.words: list[str] = []
        # Per word its own tensors (as the heads), so adding or removing a word never touches
        # another word's numbers; fused() pads them into one tensor for the run-time op.
        self.u = nn.ParameterList()  # each (n_templates, dim)
        self.c = nn.ParameterList()  # each (n_templates,)

    @classmethod
    def from_projection(cls, backbone: Backbone, weight: torch.Tensor,
                        bias: torch.Tensor) -> TemplateMatcher:
        """The metric of the distilled projection ``P e + b`` (weight (2048, d), bias (2048,)),
        computed in float64."""
        p, b = weight.detach().double(), bias.detach().double()
        return cls(backbone, p.T @ p, p.T @ b, (b @ b).reshape(()))

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    def templates_of(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step embeddings (n, dim) of a word's examples -> its (u, c) templates."""
        e = emb.double()
        gram, lin, const = self.gram.double(), self.lin.double(), self.const.double()
        ge = e @ gram
        norm = ((ge * e).sum(-1) + 2 * e @ lin + const).clamp_min(1e-12).sqrt()
        u = (ge + lin) / norm[:, None]
        c = (e @ lin + const) / norm
        return u.float(), c.float()

    def add_word(self, word: str, emb: torch.Tensor) -> None:
        """Add ``word`` with its examples' template steps ``emb`` (n, dim)."""
        if word in self.words:
            raise ValueError(f"word {word!r} is already matched by this model")
        if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] != self.embed_dim:
            raise ValueError(f"{word!r}: template embeddings {tuple(emb.shape)}, expected "
                             f"(n >= 1, {self.embed_dim})")
        self.add_templates(word, *self.templates_of(emb))

    def add_templates(self, word: str, u: torch.Tensor, c: torch.Tensor) -> None:
        """Add ``word`` with ready templates (as a checkpoint stores them)."""
        if word in self.words:
            raise ValueError(f"word {word!r} is already matched by this model")
        if u.ndim != 2 or u.shape[0] == 0 or u.shape[1] != self.embed_dim \
                or c.shape != (u.shape[0],):
            raise ValueError(f"{word!r}: templates {tuple(u.shape)} / {tuple(c.shape)}")
        self.u.append(nn.Parameter(u.float().contiguous(), requires_grad=False))
        self.c.append(nn.Parameter(c.float().contiguous(), requires_grad=False))
        self.words.append(word)

    def remove_word(self, word: str) -> None:
        i = self.words.index(word)
        for plist in (self.u, self.c):
            kept = [p for j, p in enumerate(plist) if j != i]
            plist.__init__(kept)
        self.words.pop(i)

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All words' templates as (words, n_max, dim) and (words, n_max): a word with fewer
        templates repeats its first one, which leaves its maximum unchanged."""
        n = max(u.shape[0] for u in self.u)
        us, cs = [], []
        for u, c in zip(self.u, self.c, strict=True):
            pad = n - u.shape[0]
            us.append(torch.cat([u, u[:1].expand(pad, -1)]) if pad else u)
            cs.append(torch.cat([c, c[:1].expand(pad)]) if pad else c)
        return torch.stack(us), torch.stack(cs)

    def score(self, emb: torch.Tensor) -> torch.Tensor:
        """(batch, steps, dim) student embeddings -> (batch, steps, words) scores in [0, 1]."""
        u, c = self.fused()
        w, n, d = u.shape
        # Written without a scaled or transposed MatMul: onnxruntime 1.32's MatMulScaleFusion
        # and MatmulTransposeFusion turned those into wrong numbers for steps > 1 (found by
        # tests/test_matcher.py against torch).
        norm = ((emb @ self.gram) * emb).sum(-1) + (emb * (2 * self.lin)).sum(-1) + self.const
        sims = torch.einsum("bsd,md->bsm", emb, u.reshape(w * n, d)) + c.reshape(w * n)
        sims = sims.unflatten(-1, (w, n)).amax(-1)
        return (sims / norm.clamp_min(1e-12).sqrt()[..., None]).clamp(0.0, 1.0)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(batch, frames, mels) -> scores (batch, steps, words)."""
        return self.score(self.backbone(feats))

    def init_state(self, batch: int = 1) -> list[torch.Tensor]:
        return self.backbone.init_state(batch)

    def stream(self, feats: torch.Tensor, state: list[torch.Tensor]
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        emb, new = self.backbone.stream(feats, state)
        return self.score(emb), new


def template_steps(n_steps: int, end_s: float) -> list[int]:
    """Indices of the steps whose end lies in ``TEMPLATE_SPAN_S`` after ``end_s``."""
    lo, hi = TEMPLATE_SPAN_S
    return [j for j in range(n_steps) if end_s + lo <= (j + 1) * STEP_S <= end_s + hi]
