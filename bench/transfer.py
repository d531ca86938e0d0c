"""Issue 4: does pretraining transfer? Synthetic-only training, real-voice evaluation.

    python bench/transfer.py --backbone src/polywake/assets/backbone.safetensors \
        --synth work_data/synth_bench/manifest.jsonl [--skip-scratch] [--oww]

For jarvis, smart mirror, snowboy and view glass, heads are trained from SYNTHETIC clips only
(train voices; text -> TTS -> running speech + real noise + reverb), thresholds calibrated on
dev voices + dev background, then measured on the REAL recordings in
../shared/data/real_keywords (positives) and the eval background + the other phrases' real
clips (negatives). Side by side:
  (a) our pretrained backbone (frozen) + heads,
  (b) the same architecture trained from scratch, end to end, on the same windows,
  (c) openWakeWord's frozen Google speech embedding (pyopen-wakeword) + the same heads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from polywake.data.splits import REAL_EVAL_PHRASES  # noqa: E402
from polywake.models.backbone import STANDARD, Backbone  # noqa: E402
from polywake.models.wakeword import load_checkpoint  # noqa: E402
from polywake.train.wakewords import file_sig, load_manifest_clips  # noqa: E402
from wakeword_eval import (  # noqa: E402
    HEADER,
    BackboneEmbedder,
    calibrate_heads,
    evaluate_real,
    results_table,
    save_json,
    set_threads,
    train_and_calibrate,
)

WORDS = list(REAL_EVAL_PHRASES)


def train_scratch(clips, words, *, per_word: int, n_neg: int, steps: int, seed: int = 0,
                  init=None, lr: float = 2e-3):
    """(b): backbone + heads trained end to end on the same synthetic windows, no pretraining.
    With ``init`` (a pretrained backbone), the same end-to-end recipe fine-tunes it instead."""
    import torch.nn.functional as F  # noqa: F401

    from polywake.data import splits
    from polywake.features import logmel_torch
    from polywake.models.heads import WakeWordHeads
    from polywake.train.finetune import background_windows
    from polywake.train.heads import _word_loss
    from polywake.train.pretrain import noise_bank, rir_bank
    from polywake.train.wakewords import build_windows
    from polywake.train.windows import N_SAMPLES, window_labels

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tr = build_windows(clips, words, "train", noise_bank("train"), rir_bank(), per_word,
                       n_neg, seed)
    labels = window_labels(tr, len(words))
    bg_audio = background_windows(splits.background_files("train"), N_SAMPLES)
    audio = np.concatenate([tr.audio, bg_audio])
    labels = np.concatenate([labels, np.zeros((bg_audio.shape[0],) + labels.shape[1:],
                                              np.int8)])
    import copy

    backbone = copy.deepcopy(init).train() if init is not None else Backbone(STANDARD)
    heads = WakeWordHeads(backbone.embed_dim, words)
    # A fine-tuned backbone moves slower than the new heads: it already knows speech.
    groups = [{"params": list(backbone.parameters()), "lr": lr if init is None else lr / 4},
              {"params": list(heads.parameters()), "lr": lr}]
    opt = torch.optim.AdamW(groups, lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, [g["lr"] for g in groups],
                                                total_steps=steps, pct_start=0.1)
    pos = [np.where((labels[:, :, j] == 1).any(1))[0] for j in range(len(words))]
    neg = np.where(~(labels == 1).any((1, 2)))[0]
    from tqdm import tqdm

    for _ in tqdm(range(steps), desc="scratch", mininterval=10):
        idx = np.concatenate([rng.choice(p, 12) for p in pos] + [rng.choice(neg, 48)])
        logits = heads(backbone(logmel_torch(torch.from_numpy(audio[idx]))))
        lab = torch.from_numpy(labels[idx].astype(np.int64))
        loss = sum(_word_loss(logits[:, :, j], lab[:, :, j], 0.05) for j in range(len(words)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return backbone.eval(), heads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", type=Path, required=True)
    ap.add_argument("--synth", type=Path, required=True, help="synth manifest of the 4 phrases")
    ap.add_argument("--manifest-extra", type=Path, action="append", default=[],
                    help="more synth manifests (their positives of the 4 phrases, e.g. a Kokoro "
                    "set, and their negatives: confusables, sentences)")
    ap.add_argument("--balance-engines", action="store_true",
                    help="every TTS engine an equal share of the positives")
    ap.add_argument("--per-word", type=int, default=2000)
    ap.add_argument("--negatives", type=int, default=6000)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--scratch-steps", type=int, default=1500)
    ap.add_argument("--skip-scratch", action="store_true")
    ap.add_argument("--skip-frozen", action="store_true", help="leave out (a)")
    ap.add_argument("--finetune", action="store_true",
                    help="also (a2): the pretrained backbone fine-tuned end to end")
    ap.add_argument("--oww", action="store_true", help="also (c) openWakeWord's embedding")
    ap.add_argument("--out", type=Path, default=Path("work_data/bench/transfer.json"))
    a = ap.parse_args()
    set_threads()
    t0 = time.time()
    clips = load_manifest_clips([a.synth, *a.manifest_extra], WORDS, max_per_word=a.per_word,
                                max_neg=a.negatives, balance_engines=a.balance_engines)
    rows, results = [], {}
    # Embedding caches of trained-here backbones are keyed by the data they were trained on,
    # so a rerun on other data never reads a stale cache.
    data_key = "-".join(file_sig(m) for m in [a.synth, *a.manifest_extra])[:24] \
        + ("-bal" if a.balance_engines else "")
    backbone, _, _, _ = load_checkpoint(a.backbone)
    if not a.skip_frozen:
        emb = BackboneEmbedder(backbone, file_sig(a.backbone))
        heads, thr, info = train_and_calibrate(emb, clips, WORDS, per_word=a.per_word,
                                               n_neg=a.negatives, steps=a.steps)
        ev = evaluate_real(heads, WORDS, REAL_EVAL_PHRASES, emb, thr)
        rows += results_table("(a) pretrained backbone", ev)
        results["pretrained"] = {"info": info, "words": [e.__dict__ for e in ev]}
        print("\n".join(" | ".join(r) for r in rows), flush=True)
    if a.finetune:
        t1 = time.time()
        bb, fheads = train_scratch(clips, WORDS, per_word=a.per_word, n_neg=a.negatives,
                                   steps=a.scratch_steps, init=backbone)
        femb = BackboneEmbedder(bb, f"finetune{a.scratch_steps}-{file_sig(a.backbone)}-"
                                    f"{data_key}")
        fthr = calibrate_heads(femb, fheads, clips, WORDS, a.per_word)
        ev = evaluate_real(fheads, WORDS, REAL_EVAL_PHRASES, femb, fthr)
        rows += results_table("(a2) pretrained backbone, fine-tuned", ev)
        results["finetuned"] = {"seconds": round(time.time() - t1),
                                "words": [e.__dict__ for e in ev]}
        print("\n".join(" | ".join(r) for r in rows), flush=True)
    if not a.skip_scratch:
        t1 = time.time()
        bb, sheads = train_scratch(clips, WORDS, per_word=a.per_word, n_neg=a.negatives,
                                   steps=a.scratch_steps)
        semb = BackboneEmbedder(bb, f"scratch{a.scratch_steps}-{data_key}")
        sthr = calibrate_heads(semb, sheads, clips, WORDS, a.per_word)
        ev = evaluate_real(sheads, WORDS, REAL_EVAL_PHRASES, semb, sthr)
        rows += results_table("(b) same model from scratch", ev)
        results["scratch"] = {"seconds": round(time.time() - t1),
                              "words": [e.__dict__ for e in ev]}
    if a.oww:
        from oww_embedder import OwwEmbedder  # noqa: PLC0415

        oemb = OwwEmbedder()
        oheads, othr, oinfo = train_and_calibrate(oemb, clips, WORDS, per_word=a.per_word,
                                                  n_neg=a.negatives, steps=a.steps)
        ev = evaluate_real(oheads, WORDS, REAL_EVAL_PHRASES, oemb, othr)
        rows += results_table("(c) openWakeWord speech embedding", ev)
        results["oww"] = {"info": oinfo, "words": [e.__dict__ for e in ev]}
    from _common import markdown_table  # noqa: PLC0415

    print()
    print(markdown_table(HEADER, rows))
    print(f"\nwall time {time.time() - t0:.0f} s")
    save_json(a.out, results)


if __name__ == "__main__":
    main()
