"""The pieces every resumable training loop here shares (pretrain, distill): its command-line
options, the learning-rate schedule (a pure function of the step, so a resumed run sets
exactly the rates an uninterrupted one would) and one optimizer step."""

from __future__ import annotations

import argparse
import math

import torch


def warmup_cosine(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps to ``peak``, then a cosine decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * 0.5 * (1 + math.cos(math.pi * frac))


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor,
                   params: list[torch.nn.Parameter], lr: float, clip: float = 5.0) -> float:
    """Set every group's rate (times its ``scale`` when it has one), back-propagate, clip the
    gradient norm, step; returns the loss as a float."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("scale", 1.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return float(loss.detach())


def add_loop_arguments(p: argparse.ArgumentParser, *, steps: int, batch: int) -> None:
    """Options of a resumable loop: length, batch, rate, checkpoints, time limit, seed, data
    augmentation banks, threads."""
    p.add_argument("--steps", type=int, default=steps, help="total steps (LR schedule length)")
    p.add_argument("--max-minutes", type=float, default=0, help="stop (and save) after this")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop this invocation after N steps (checkpointed; for kill/resume tests)")
    p.add_argument("--noise-minutes", type=float, default=25.0)
    p.add_argument("--rirs", type=int, default=48, help="simulated rooms for reverberation")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared 2-core CPU more threads spin and slow down)")
