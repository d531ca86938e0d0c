"""Issue 4: word accuracy of the pretrained backbone on HELD-OUT voices and speakers.

    python bench/backbone_accuracy.py --run runs/pretrain \
        --synth work_data/pretrain_words/manifest.jsonl

Test-split TTS voices (never trained on) and eval-split real speakers (Speech Commands by
speaker hash, Arabic Speech Commands test.csv), each clip in a 1.28 s window with real eval
background at 10 dB SNR (and clean), top-1 over all pretraining classes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from polywake.models.backbone import CONFIGS, Backbone
from polywake.models.heads import PretrainHeads
from polywake.train.checkpoint import load_training_state
from polywake.train.mixing import window_samples
from polywake.train.pretrain import (
    STEPS_PER_WINDOW,
    evaluate_accuracy,
    load_bank,
    noise_bank,
    real_word_items,
    synth_items,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/pretrain"))
    ap.add_argument("--synth", type=Path, default=Path("work_data/pretrain_words/manifest.jsonl"))
    ap.add_argument("--size", default="standard")
    a = ap.parse_args()
    torch.set_num_threads(1)
    words = json.loads((a.run / "words.json").read_text())
    vocab = {w: i for i, w in enumerate(words)}
    from polywake.data.vocab import PHONEMES

    backbone = Backbone(CONFIGS[a.size])
    heads = PretrainHeads(backbone.embed_dim, len(words), len(PHONEMES))
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(heads.parameters()))
    step, _ = load_training_state(a.run / "state.safetensors",
                                  {"backbone": backbone, "heads": heads}, opt)
    items = [(p, w, s, False) for p, w, s in synth_items(a.synth, "test")]
    items += [(p, w, s, True) for p, w, s in real_word_items("eval")]
    bank = load_bank(items, vocab, "loading held-out clips")
    noise = noise_bank("eval", max_minutes=10)
    n = window_samples(STEPS_PER_WINDOW)
    print(f"backbone at step {step}; {len(words)} classes; chance {100 / len(words):.2f}%")
    print("| condition | held-out TTS voices | held-out real speakers |")
    print("|---|---|---|")
    for snr in (100.0, 10.0):
        m = evaluate_accuracy(backbone, heads, bank, noise, n, snr_db=snr, limit=4000)
        name = "clean" if snr > 50 else f"{snr:g} dB SNR (real eval background)"
        print(f"| {name} | {100 * m['acc_synth']:.1f}% (n={m['n_synth']}) | "
              f"{100 * m['acc_real']:.1f}% (n={m['n_real']}) |")


if __name__ == "__main__":
    main()
