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

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _common import dev_frr_at  # noqa: E402
from polywake.models.wakeword import load_checkpoint  # noqa: E402
from polywake.train.wakewords import recalibrate  # noqa: E402

DATA = Path("work_data")
SETS = {
    "Cdev": ([DATA / d / "manifest.jsonl" for d in ("synth_product", "synth_bench",
                                                     "synth_kokoro_product")], True),
    "Adev": ([DATA / d / "manifest.jsonl" for d in ("synth_product", "synth_bench")], False),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("tag", help="re-calibrated copies go to runs/<TAG>_on_<set>/")
    ap.add_argument("sets", nargs="*", help=f"any of {', '.join(SETS)} (default: all)")
    a = ap.parse_args()
    # (not argparse choices: Python 3.11 checks an empty nargs="*" list against them)
    if unknown := sorted(set(a.sets) - set(SETS)):
        ap.error(f"unknown dev set(s) {unknown}; known: {', '.join(SETS)}")
    torch.set_num_threads(1)
    for name in a.sets or list(SETS):
        manifests, balance = SETS[name]
        ckpt = recalibrate(a.model, manifests, Path(f"runs/{a.tag}_on_{name}"),
                           balance_engines=balance)
        card = load_checkpoint(ckpt)[2]
        frr = {w: dev_frr_at(entry, 0.5) for w, entry in card["per_word"].items()}
        print(name, json.dumps({w: round(100 * v, 1) for w, v in frr.items()}),
              "mean", round(100 * sum(frr.values()) / len(frr), 1), flush=True)


if __name__ == "__main__":
    main()
