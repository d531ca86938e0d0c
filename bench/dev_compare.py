"""Compare models on ONE dev set: re-calibrate each on the same dev windows, print dev FRR.

    python bench/dev_compare.py MODEL TAG [Cdev] [Adev]

A model's card holds its dev FRR on its *own* dev windows, and recipe C (``--balance-engines``
+ Kokoro) builds different dev windows (a quarter from natural voices) than recipe A, so two
cards are not comparable. Here each model is re-calibrated (``wakewords.recalibrate``: dev
voices + dev background only, nothing of eval) on Cdev (product + bench + Kokoro product
manifests, engine-balanced) and Adev (product + bench, as the shipped default was trained),
written to runs/<TAG>_on_<set>/, and its mean dev FRR at 0.5 FA/h over the words printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from polywake.models.wakeword import load_checkpoint
from polywake.train.wakewords import recalibrate

DATA = Path("work_data")
SETS = {
    "Cdev": ([DATA / d / "manifest.jsonl" for d in ("synth_product", "synth_bench",
                                                     "synth_kokoro_product")], True),
    "Adev": ([DATA / d / "manifest.jsonl" for d in ("synth_product", "synth_bench")], False),
}


def main() -> None:
    torch.set_num_threads(1)
    model, tag, chosen = Path(sys.argv[1]), sys.argv[2], sys.argv[3:] or list(SETS)
    for name in chosen:
        manifests, balance = SETS[name]
        ckpt = recalibrate(model, manifests, Path(f"runs/{tag}_on_{name}"),
                           balance_engines=balance)
        card = load_checkpoint(ckpt)[2]
        frr = {}
        for w, entry in card["per_word"].items():
            op = entry["operating_points"]
            frr[w] = op["frr"][op["fa_per_hour"].index(0.5)]
        print(name, json.dumps({w: round(100 * v, 1) for w, v in frr.items()}),
              "mean", round(100 * sum(frr.values()) / len(frr), 1), flush=True)


if __name__ == "__main__":
    main()
