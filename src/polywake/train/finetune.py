"""Fine-tune the pretrained backbone together with the wake-word heads, end to end.

Heads on a frozen backbone can only reweight what pretraining learned; on real voices that was
not enough (bench/transfer.py: (a) frozen vs (a2) fine-tuned). Here the backbone and the heads
learn together from the same synthetic windows and real background, the backbone at a quarter
of the heads' learning rate so it keeps what it knows about speech.

Batches are balanced: ``pos_per_word`` positive windows of every word and ``neg_per_batch``
negatives (confusables, sentences, real background) per step. Each batch is a pure function of
(seed, step) and the learning rate a function of the step, so a run killed and resumed from its
checkpoint (``state_path``, written atomically every ``save_every`` steps) equals an
uninterrupted one.

After this, the fine-tuned backbone is frozen again: adding a word later trains only a head
on it, so existing words stay bit-identical.

``anchor`` > 0 adds ``anchor`` x the distance (mean squared error over the pretrained
embedding's mean square) between the fine-tuned backbone's embeddings and the pretrained
one's on the same batch. Fine-tuning for five words made the backbone worse for words added
later (docs/BENCHMARKS.md, add-word); the anchor keeps what the words' heads do not need close
to the pretrained features ("learning without forgetting").
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..features import logmel_torch
from ..models.backbone import Backbone
from ..models.heads import WakeWordHeads
from .checkpoint import load_training_state, save_training_state
from .heads import _word_loss
from .schedule import optimizer_step, warmup_cosine

BACKBONE_LR_SCALE = 0.25


def finetune(backbone: Backbone, heads: WakeWordHeads, audio: np.ndarray, labels: np.ndarray,
             words: list[str], *, steps: int, extra_negatives: np.ndarray | None = None,
             lr: float = 2e-3, seed: int = 0,
             pos_per_word: int = 12, neg_per_batch: int = 48, hard_frac: float = 0.05,
             state_path: Path | None = None, save_every: int = 100,
             stop_after: int = 0, progress: bool = True, anchor: float = 0.0,
             ) -> tuple[Backbone, WakeWordHeads]:
    """Train ``backbone`` and ``heads`` (in place) on raw windows ``audio`` (N, samples) with
    per-step ``labels`` (N, steps, words) as :func:`polywake.train.windows.window_labels`
    makes them. ``extra_negatives`` (M, samples) are more negative windows (real background),
    kept apart so the caller's arrays are never copied. ``stop_after``: return after that many
    steps of this call, checkpointed, as a killed run would (tests use it). Returns both in
    eval mode."""
    pos = [np.where((labels[:, :, j] == 1).any(1))[0] for j in range(len(words))]
    n_extra = 0 if extra_negatives is None else extra_negatives.shape[0]
    # indexes >= len(audio) point into extra_negatives
    neg = np.concatenate([np.where(~(labels == 1).any((1, 2)))[0],
                          audio.shape[0] + np.arange(n_extra)])
    if any(p.size == 0 for p in pos) or neg.size == 0:
        raise ValueError("fine-tuning needs positives of every word and some negatives")
    groups = [{"params": list(backbone.parameters()), "lr": lr * BACKBONE_LR_SCALE,
               "scale": BACKBONE_LR_SCALE},
              {"params": list(heads.parameters()), "lr": lr, "scale": 1.0}]
    opt = torch.optim.AdamW(groups, lr, weight_decay=1e-2)
    # The pretrained backbone as it is now, before a resumed run loads its fine-tuned state.
    reference = copy.deepcopy(backbone).eval().requires_grad_(False) if anchor > 0 else None
    step = 0
    if state_path is not None and state_path.exists():
        step, _ = load_training_state(state_path, {"backbone": backbone, "heads": heads}, opt)
        print(f"fine-tuning: resuming from step {step}")

    backbone.train()
    heads.train()
    params = [p for g in groups for p in g["params"]]
    first = step
    bar = tqdm(total=steps, initial=step, desc="fine-tune", unit="step", mininterval=10,
               disable=not progress)
    while step < steps:
        rng = np.random.default_rng([seed, step])
        torch.manual_seed(seed * 1_000_003 + step)
        idx = np.concatenate([rng.choice(p, pos_per_word) for p in pos]
                             + [rng.choice(neg, neg_per_batch)])
        x = np.stack([audio[i] if i < audio.shape[0] else extra_negatives[i - audio.shape[0]]
                      for i in idx])
        lab_np = np.stack([labels[i] if i < audio.shape[0] else np.zeros_like(labels[0])
                           for i in idx])
        mel = logmel_torch(torch.from_numpy(x))
        emb = backbone(mel)
        logits = heads(emb)
        lab = torch.from_numpy(lab_np.astype(np.int64))
        loss = sum(_word_loss(logits[:, :, j], lab[:, :, j], hard_frac)
                   for j in range(len(words)))
        if reference is not None:
            with torch.no_grad():
                ref = reference(mel)
            loss = loss + anchor * ((emb - ref) ** 2).mean() / (ref ** 2).mean().clamp_min(1e-8)
        optimizer_step(opt, loss, params, warmup_cosine(step, steps, lr, max(1, steps // 10)))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        stop = bool(stop_after and step - first >= stop_after)
        if state_path is not None and (step % save_every == 0 or step == steps or stop):
            save_training_state(state_path, {"backbone": backbone, "heads": heads}, opt, step)
        if stop:
            break
    bar.close()
    return backbone.eval(), heads.eval()


def background_windows(files: list[Path], n_samples: int, max_windows: int | None = None
                       ) -> np.ndarray:
    """Real background cut into training windows (N, n_samples), float32."""
    from ..audio import load_audio

    parts = []
    for f in files:
        x = load_audio(f)
        n = x.size // n_samples
        if n:
            parts.append(x[: n * n_samples].reshape(n, n_samples))
    out = np.concatenate(parts) if parts else np.zeros((0, n_samples), np.float32)
    return out[:max_windows] if max_windows else out
