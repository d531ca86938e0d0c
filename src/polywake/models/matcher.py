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
G, g, β (the *metric*) instead of the 2,048 × 128 projection. With cohort statistics (the
shipped base since 2026-12-06) a word is scored seq-tnorm (see ``SEQ_STEPS`` below); without
them, as every file written before, its score is the largest of its templates' similarities,
floored at 0 so that it reads like the heads' probabilities.

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


# Scoring "seq-tnorm" (docs/BENCHMARKS.md, "How a matched word's step is scored"): an
# example's SEQ_STEPS consecutive template steps are matched in order against the last
# SEQ_STEPS stream steps, each similarity standardised by its template's mean and spread over
# a cohort of negative audio (T-norm), their mean is the example's score, and the word's score
# is sigmoid(pooled examples - Z_CENTER). A matcher base without cohort statistics (and
# every model file written before it) scores as before: one step, max cosine, clamped to [0, 1].
SEQ_STEPS = 6  # 4 -> 6 by its dev rule (docs/BENCHMARKS.md); the span grows to 0.48 s
# ... and starts 160 ms before the word's end: as accurate on matcher dev (17.9 vs 18.2 %), and
# the word fires 160 ms sooner (docs/BENCHMARKS.md, "Starting the templates earlier")
SEQ_SPAN_START_S = -0.16
Z_CENTER = 4.0
# The word's score pools its POOL_TOP best examples (their mean), so one example that happens
# to resemble some background no longer decides alone (max -> top 3 by its dev rule, stop 21).
# Files written before keep the max (pool 1), which their thresholds were calibrated for.
POOL_TOP = 3
# A word with fewer examples than the fused tensor's n_max is padded with examples that can
# never be among its best: zero weights and this bias.
PAD_BIAS = -1.0e4


class TemplateMatcher(nn.Module):
    def __init__(self, backbone: Backbone, gram: torch.Tensor, lin: torch.Tensor,
                 const: torch.Tensor, cohort_mean: torch.Tensor | None = None,
                 cohort_cov: torch.Tensor | None = None, seq_len: int | None = None,
                 pool: int | None = None) -> None:
        super().__init__()
        d = backbone.embed_dim
        if gram.shape != (d, d) or lin.shape != (d,) or const.numel() != 1:
            raise ValueError(f"metric shapes {tuple(gram.shape)}, {tuple(lin.shape)}, "
                             f"{tuple(const.shape)} do not fit a {d}-d backbone")
        self.backbone = backbone
        self.register_buffer("gram", gram.float().contiguous())
        self.register_buffer("lin", lin.float().contiguous())
        self.register_buffer("const", const.float().reshape(()))
        self.seq_len = 1
        self.pool = 1
        if (cohort_mean is None) != (cohort_cov is None):
            raise ValueError("give both cohort statistics or neither")
        if cohort_mean is not None and cohort_cov is not None:
            if cohort_mean.shape != (d + 1,) or cohort_cov.shape != (d + 1, d + 1):
                raise ValueError(f"cohort statistics {tuple(cohort_mean.shape)}, "
                                 f"{tuple(cohort_cov.shape)} do not fit a {d}-d backbone")
            self.register_buffer("cohort_mean", cohort_mean.double().contiguous())
            self.register_buffer("cohort_cov", cohort_cov.double().contiguous())
            # a file records what its templates were made for; a new matcher takes today's
            self.seq_len = SEQ_STEPS if seq_len is None else int(seq_len)
            self.pool = POOL_TOP if pool is None else int(pool)
            if not 2 <= self.seq_len <= 64 or not 1 <= self.pool <= 1024:
                raise ValueError(f"seq-tnorm with {self.seq_len} steps, pool {self.pool}")
        self.words: list[str] = []
        # Per word its own tensors (as the heads), so adding or removing a word never touches
        # another word's numbers; fused() pads them into one tensor for the run-time op.
        self.u = nn.ParameterList()  # each (n_examples, seq_len, dim)
        self.c = nn.ParameterList()  # each (n_examples, seq_len)
        self.b = nn.ParameterList()  # each (n_examples,)

    @property
    def scoring(self) -> str:
        if self.seq_len == 1:
            return "max-cosine"
        return "seq-tnorm" if self.pool == 1 else f"seq-tnorm-top{self.pool}"

    @classmethod
    def from_projection(cls, backbone: Backbone, weight: torch.Tensor,
                        bias: torch.Tensor) -> TemplateMatcher:
        """The metric of the distilled projection ``P e + b`` (weight (2048, d), bias (2048,)),
        computed in float64."""
        p, b = weight.detach().double(), bias.detach().double()
        return cls(backbone, p.T @ p, p.T @ b, (b @ b).reshape(()))

    def with_cohort(self, emb: torch.Tensor) -> TemplateMatcher:
        """A matcher without words on the same metric, with the T-norm statistics of the
        cohort's step embeddings ``emb`` (n, dim): the mean and covariance of the normalised
        features :meth:`features`, so each template's mean and spread over the cohort is one
        dot product and one quadratic form (float64)."""
        a = self.features(emb.double()[None])[0]
        mean = a.mean(0)
        cov = (a - mean).T @ (a - mean) / max(1, a.shape[0] - 1)
        return TemplateMatcher(self.backbone, self.gram, self.lin, self.const, mean, cov)

    def empty(self) -> TemplateMatcher:
        """A matcher without words on the same backbone, metric and cohort statistics."""
        if self.seq_len == 1:
            return TemplateMatcher(self.backbone, self.gram, self.lin, self.const)
        return TemplateMatcher(self.backbone, self.gram, self.lin, self.const, self.cohort_mean,
                               self.cohort_cov, self.seq_len, self.pool)

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    def features(self, emb: torch.Tensor) -> torch.Tensor:
        """(batch, steps, dim) -> (batch, steps, dim + 1): ``[e, 1] / |P e + b|``, so that a
        template's cosine is one dot product with ``[u, c]``."""
        gram, lin, const = (t.to(emb.dtype) for t in (self.gram, self.lin, self.const))
        norm = ((emb @ gram) * emb).sum(-1) + (emb * (2 * lin)).sum(-1) + const
        ones = torch.ones_like(emb[..., :1])
        return torch.cat([emb, ones], -1) / norm.clamp_min(1e-12).sqrt()[..., None]

    def templates_of(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Template steps (n * seq_len, dim), ``seq_len`` consecutive steps per example ->
        that word's (u, c, b)."""
        gram, lin, const = self.gram.double(), self.lin.double(), self.const.double()
        # [u, c] = M [e, 1] / |P e + b| with M = [[G, g], [gᵀ, β]]: M times the features
        metric = torch.cat([torch.cat([gram, lin[:, None]], 1),
                            torch.cat([lin, const.reshape(1)])[None]], 0)
        w = self.features(emb.double()[None])[0] @ metric
        L, d = self.seq_len, self.embed_dim
        u, c = w[:, :d].reshape(-1, L, d), w[:, d].reshape(-1, L)
        b = torch.zeros(u.shape[0], dtype=torch.float64)
        if L > 1:
            w = torch.cat([u, c[..., None]], -1)  # (n, L, dim + 1)
            mu = w @ self.cohort_mean
            sd = torch.einsum("nlk,kj,nlj->nl", w, self.cohort_cov, w).clamp_min(1e-12).sqrt()
            u, c = u / (sd * L)[..., None], c / (sd * L)
            b = -(mu / (sd * L)).sum(-1) - Z_CENTER
        return u.float(), c.float(), b.float()

    def add_word(self, word: str, emb: torch.Tensor) -> None:
        """Add ``word`` with its examples' template steps ``emb`` (n * seq_len, dim)."""
        if word in self.words:
            raise ValueError(f"word {word!r} is already matched by this model")
        if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] != self.embed_dim \
                or emb.shape[0] % self.seq_len:
            raise ValueError(f"{word!r}: template embeddings {tuple(emb.shape)}, expected "
                             f"(n * {self.seq_len}, {self.embed_dim}), n >= 1")
        self.add_templates(word, *self.templates_of(emb))

    def add_templates(self, word: str, u: torch.Tensor, c: torch.Tensor,
                      b: torch.Tensor | None = None) -> None:
        """Add ``word`` with ready templates (as a checkpoint stores them; a file written
        before seq-tnorm scoring has (n, dim) and (n,) and no ``b``)."""
        if word in self.words:
            raise ValueError(f"word {word!r} is already matched by this model")
        if u.ndim == 2 and c.ndim == 1 and self.seq_len == 1:
            u, c = u[:, None], c[:, None]
        if b is None:
            b = torch.zeros(u.shape[0] if u.ndim else 0)
        if u.ndim != 3 or u.shape[0] == 0 or u.shape[1:] != (self.seq_len, self.embed_dim) \
                or c.shape != u.shape[:2] or b.shape != (u.shape[0],):
            raise ValueError(f"{word!r}: templates {tuple(u.shape)} / {tuple(c.shape)} / "
                             f"{tuple(b.shape)} for {self.seq_len}-step matching")
        self.u.append(nn.Parameter(u.float().contiguous(), requires_grad=False))
        self.c.append(nn.Parameter(c.float().contiguous(), requires_grad=False))
        self.b.append(nn.Parameter(b.float().contiguous(), requires_grad=False))
        self.words.append(word)

    def remove_word(self, word: str) -> None:
        i = self.words.index(word)
        for plist in (self.u, self.c, self.b):
            kept = [p for j, p in enumerate(plist) if j != i]
            plist.__init__(kept)
        self.words.pop(i)

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All words' templates as (words, n_max, seq_len, dim + 1) weights ``[u, c]`` and
        (words, n_max) biases: a word with fewer examples is padded with zero weights and
        ``PAD_BIAS``, examples that are never among its best."""
        n = max(u.shape[0] for u in self.u)
        ws, bs = [], []
        for u, c, b in zip(self.u, self.c, self.b, strict=True):
            w = torch.cat([u, c[..., None]], -1)
            pad = n - u.shape[0]
            ws.append(torch.cat([w, w.new_zeros(pad, *w.shape[1:])]) if pad else w)
            bs.append(torch.cat([b, b.new_full((pad,), PAD_BIAS)]) if pad else b)
        return torch.stack(ws), torch.stack(bs)

    def pool_weights(self) -> torch.Tensor:
        """(words, m) weights of each word's m best examples, best first: the mean of its
        ``min(pool, n_examples)`` best (a one-hot first column is the max)."""
        n = max(u.shape[0] for u in self.u)
        m = min(self.pool, n)
        w = torch.zeros(len(self.u), m)
        for i, u in enumerate(self.u):
            top = min(m, u.shape[0])
            w[i, :top] = 1.0 / top
        return w

    def _score_features(self, a: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        """(batch, steps, dim + 1) features (and the seq_len - 1 before them) -> scores."""
        w, b = self.fused()
        nw, n, L, k = w.shape
        x = a if history is None else torch.cat([history, a], 1)
        steps = a.shape[1]
        # Written without a scaled or transposed MatMul: onnxruntime 1.32's MatMulScaleFusion
        # and MatmulTransposeFusion turned those into wrong numbers for steps > 1 (found by
        # tests/test_matcher.py against torch).
        z = b.reshape(nw * n)
        for j in range(L):
            z = z + torch.einsum("bsk,mk->bsm", x[:, j:j + steps], w[:, :, j].reshape(nw * n, k))
        z = z.unflatten(-1, (nw, n))
        if self.pool > 1:
            pw = self.pool_weights()
            z = (z.topk(pw.shape[1], -1).values * pw).sum(-1)
        else:
            z = z.amax(-1)
        return torch.sigmoid(z) if L > 1 else z.clamp(0.0, 1.0)

    def score(self, emb: torch.Tensor) -> torch.Tensor:
        """(batch, steps, dim) student embeddings -> (batch, steps, words) scores in [0, 1];
        the steps before the first count as all-zero features."""
        a = self.features(emb)
        hist = a.new_zeros(a.shape[0], self.seq_len - 1, a.shape[2]) if self.seq_len > 1 \
            else None
        return self._score_features(a, hist)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(batch, frames, mels) -> scores (batch, steps, words)."""
        return self.score(self.backbone(feats))

    def init_state(self, batch: int = 1) -> list[torch.Tensor]:
        # the last seq_len - 1 steps' features, channel-major as the convs' states
        extra = [torch.zeros(batch, self.embed_dim + 1, self.seq_len - 1)] \
            if self.seq_len > 1 else []
        return self.backbone.init_state(batch) + extra

    def stream(self, feats: torch.Tensor, state: list[torch.Tensor]
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        nb = self.backbone.n_states
        emb, new = self.backbone.stream(feats, state[:nb])
        a = self.features(emb)
        if self.seq_len == 1:
            return self._score_features(a, None), new
        hist = state[nb].transpose(1, 2)
        scores = self._score_features(a, hist)
        keep = torch.cat([hist, a], 1)[:, -(self.seq_len - 1):]
        return scores, new + [keep.transpose(1, 2)]


def template_steps(n_steps: int, end_s: float, seq_len: int = 1,
                   start_s: float | None = None) -> list[int]:
    """Indices of the steps whose end lies in ``TEMPLATE_SPAN_S`` after ``end_s``, the span
    stretched to ``seq_len`` steps when that is longer; for seq-tnorm (``seq_len`` > 1) it
    starts at ``start_s`` (default ``SEQ_SPAN_START_S``) after ``end_s``."""
    lo, hi = TEMPLATE_SPAN_S
    if seq_len > 1:
        lo = SEQ_SPAN_START_S if start_s is None else start_s
    hi = max(hi, lo + seq_len * STEP_S)
    return [j for j in range(n_steps) if end_s + lo <= (j + 1) * STEP_S <= end_s + hi]
