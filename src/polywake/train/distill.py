"""Pretrain a small backbone by distillation from a larger pretrained one (the tiny model).

    polywake distill --teacher src/polywake/assets/backbone.safetensors \
        --manifest work_data/synth_product/manifest.jsonl --size tiny --out runs/distill_tiny

The tiny backbone (<= 50k parameters with five heads, for old devices) learns to reproduce the
standard backbone's embedding at every 80 ms step, through a linear projection that exists only
during training. No labels are needed, so any speech works as material: the train split of
synthetic manifests (positives, confusables, sentences), the real isolated words of the train
speakers, and real background; each of these groups gets an equal share of every batch. The
word-recognition knowledge of the teacher (pretrained on >= 500 words, real voices included)
is what the student inherits; the wake-word heads are then trained on the student as on any
backbone (``polywake train --backbone runs/distill_tiny/backbone.safetensors --hidden 8``).

Why not pretrain the tiny backbone on the word task itself: that needs the 22k-clip
pretraining vocabulary synthesized again; distillation reuses whatever audio is at hand and
matches the teacher's embedding, which is what the heads consume.

Checkpoints every ``--save-every`` steps (atomic); re-running the same command resumes. Each
batch is a pure function of (seed, step), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import splits
from ..features import logmel_torch
from ..models.backbone import CONFIGS, Backbone, count_parameters
from ..models.wakeword import load_checkpoint, save_checkpoint
from .checkpoint import load_training_state, save_training_state
from .mixing import window_samples
from .pretrain import ClipBank, load_bank, make_batch, noise_bank, real_word_items, rir_bank
from .schedule import add_loop_arguments, optimizer_step, warmup_cosine

STEPS_PER_WINDOW = 32  # 2.56 s: longer than the backbone's 1.9 s receptive field
P_NOISE_ONLY = 0.15  # windows of background alone: the student must also be quiet on noise


def distill_items(manifests: list[Path], split: str, use_real: bool
                  ) -> list[tuple[Path, str, str, bool]]:
    """(path, group, speaker, real) of the clips of ``split`` (the benchmark phrases and their
    confusables left out); the group (clip kind, or real words) balances batches."""
    items: list[tuple[Path, str, str, bool]] = []
    for m in manifests:
        with open(m) as fh:
            for line in fh:
                r = json.loads(line)
                if r.get("split") != split:
                    continue
                # The benchmark phrases stay unheard, as in pretraining: the transfer and
                # add-word benchmarks measure words the backbone never met.
                if {r.get("word"), r.get("negative_for")} & set(splits.REAL_EVAL_PHRASES):
                    continue
                p = Path(r["path"])
                if not p.is_absolute():
                    p = m.parent / p
                items.append((p, "synth:" + str(r.get("kind", "?")),
                              str(r.get("speaker") or r.get("voice") or "?"), False))
    if use_real:
        items += [(p, "real:words", s, True) for p, _, s in real_word_items(split)]
    return items


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between per-step embeddings, each scaled to unit RMS so that loud
    and quiet steps count alike."""
    s = student / (student.pow(2).mean(-1, keepdim=True).sqrt() + 1e-4)
    t = teacher / (teacher.pow(2).mean(-1, keepdim=True).sqrt() + 1e-4)
    return F.mse_loss(s, t)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", type=Path, required=True, help="pretrained backbone checkpoint")
    p.add_argument("--manifest", type=Path, action="append", required=True,
                   help="synth manifest(s) whose train-split clips are material (repeatable)")
    p.add_argument("--out", type=Path, default=Path("runs/distill_tiny"))
    p.add_argument("--size", choices=sorted(CONFIGS), default="tiny")
    p.add_argument("--no-real", action="store_true", help="leave out the real word sets")
    add_loop_arguments(p, steps=3000, batch=48)
    p.add_argument("--max-clips", type=int, default=40000,
                   help="at most this many train clips in memory (a seeded sample)")


def _batch(bank: ClipBank, groups: dict[int, list[int]], noise, rng: np.random.Generator,
           batch: int, n_samples: int, rirs) -> torch.Tensor:
    x, _ = make_batch(bank, groups, noise, rng, batch, n_samples, rirs)
    for b in np.where(rng.random(batch) < P_NOISE_ONLY)[0]:
        x[b] = noise.slice(rng, n_samples) * 10 ** (rng.uniform(-20, 6) / 20)
    return logmel_torch(torch.from_numpy(np.clip(x, -1, 1)))


def dev_loss(student: Backbone, proj: nn.Module, teacher: Backbone, bank: ClipBank,
             groups: dict[int, list[int]], noise, n_samples: int, n: int = 192) -> float:
    """Distillation loss on fixed, seeded DEV windows (dev voices and speakers)."""
    rng = np.random.default_rng(12345)
    student.eval()
    total = 0.0
    with torch.no_grad():
        for _ in range(n // 48):
            f = _batch(bank, groups, noise, rng, 48, n_samples, None)
            total += float(embedding_loss(proj(student(f)), teacher(f)))
    student.train()
    return total / max(1, n // 48)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    teacher = load_checkpoint(args.teacher)[0].eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    use_real = not args.no_real and splits.have_shared_data()
    rng0 = np.random.default_rng(args.seed)
    train_items = distill_items(args.manifest, "train", use_real)
    rng0.shuffle(train_items)
    train_items = sorted(train_items[: args.max_clips])
    dev_items = sorted(distill_items(args.manifest, "dev", use_real))[:: 4]
    group_names = sorted({g for _, g, _, _ in train_items})
    vocab = {g: i for i, g in enumerate(group_names)}
    print(f"distillation material: {len(train_items)} train clips in groups "
          f"{group_names}, {len(dev_items)} dev clips")
    bank = load_bank(train_items, vocab, "loading train clips")
    dev_bank = load_bank(dev_items, vocab, "loading dev clips")
    groups, dev_groups = bank.by_label(), dev_bank.by_label()
    noise = noise_bank("train", max_minutes=args.noise_minutes)
    dev_noise = noise_bank("dev", max_minutes=min(8.0, args.noise_minutes))
    rirs = rir_bank(args.rirs) if args.rirs else None
    n_samples = window_samples(STEPS_PER_WINDOW)

    torch.manual_seed(args.seed)
    student = Backbone(CONFIGS[args.size])
    proj = nn.Linear(student.embed_dim, teacher.embed_dim)
    params = list(student.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    state_path = args.out / "state.safetensors"
    step, extra = 0, {"best_dev": math.inf, "history": []}
    if state_path.exists():
        step, extra = load_training_state(state_path, {"student": student, "proj": proj}, opt)
        print(f"resuming from step {step}")
    print(f"student {args.size}: {count_parameters(student)} parameters; teacher "
          f"{count_parameters(teacher)}")
    first_step = step

    def lr_at(s: int) -> float:
        return warmup_cosine(s, args.steps, args.lr, 100)

    bar = tqdm(total=args.steps, initial=step, desc="distill", unit="step", mininterval=5)
    student.train()
    loss_ema = None
    while step < args.steps:
        rng = np.random.default_rng([args.seed, step])
        torch.manual_seed(args.seed * 1_000_003 + step)
        feats = _batch(bank, groups, noise, rng, args.batch, n_samples, rirs)
        with torch.no_grad():
            target = teacher(feats)
        loss = embedding_loss(proj(student(feats)), target)
        loss_v = optimizer_step(opt, loss, params, lr_at(step))
        step += 1
        loss_ema = loss_v if loss_ema is None else 0.98 * loss_ema + 0.02 * loss_v
        bar.update(1)
        bar.set_postfix(loss=f"{loss_ema:.4f}", lr=f"{lr_at(step):.2e}")
        out_of_time = bool(args.max_minutes and (time.time() - t_start) / 60 > args.max_minutes)
        out_of_time |= bool(args.stop_after and step - first_step >= args.stop_after)
        if step % args.eval_every == 0 or step == args.steps:
            d = dev_loss(student, proj, teacher, dev_bank, dev_groups, dev_noise, n_samples)
            extra["history"].append({"step": step, "dev_loss": d, "train_loss": loss_ema})
            tqdm.write(f"step {step}: dev distillation loss {d:.4f} (train {loss_ema:.4f})")
            if d < extra["best_dev"]:
                extra["best_dev"], extra["best_step"] = float(d), step
                save_checkpoint(args.out / "backbone.safetensors", backbone=student.eval(),
                                card={"kind": "backbone", "distilled_from": str(args.teacher),
                                      "distill_step": step, "dev_distill_loss": d,
                                      "command": "polywake distill " + " ".join(sys.argv[2:])})
                student.train()
        if step % args.save_every == 0 or step == args.steps or out_of_time:
            save_training_state(state_path, {"student": student, "proj": proj}, opt, step, extra)
        if out_of_time:
            tqdm.write(f"stopping at step {step} (time or --stop-after); "
                       "re-run the same command to continue")
            break
    bar.close()
    print(json.dumps(extra.get("history", [])[-1:], indent=1))
    return 0
