"""What matched words cost the detector: CPU and memory with 0, 1 and 5 matched words beside the
five trained heads (issue 10 / the brief's "cost almost flat as words are added").

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python bench/matcher_cost.py [--seconds 120]

The models are the shipped default (five trained heads on the standard backbone) and the same
model with 1 and 5 matched words added with `add_matched_word`'s data layout (10 examples
each, the k = 10 count, of the base's seq_len steps: 60 templates, pooled over the best 3) on
the shipped matcher base; as in
bench/streaming.py, the matched words' biases are set far negative so that no candidate opens
(the decisions' Python cost would otherwise depend on random scores). Timing and memory use
bench/streaming.py's fresh worker processes (one pinned core, interleaved passes, fastest pass;
peak RSS over a numpy-only baseline process), both backends.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _common import markdown_table  # noqa: E402
from streaming import (  # noqa: E402
    ASSETS,
    BACKENDS,
    measure_setups,
    summarize,
    timing_audio,
)

EXAMPLES = 10


def build(tmp: Path) -> list[dict]:
    from polywake.export import export_checkpoint
    from polywake.models.wakeword import load_checkpoint, load_matcher_base, save_checkpoint

    backbone, heads, card, _ = load_checkpoint(ASSETS / "default.safetensors")
    setups = []
    for m in (0, 1, 5):
        matcher = None
        if m:
            matcher, _ = load_matcher_base()
            g = torch.Generator().manual_seed(m)
            for i in range(m):
                n, seq = EXAMPLES, matcher.seq_len
                matcher.add_templates(f"matched {i}",
                                      torch.randn(n, seq, matcher.embed_dim, generator=g),
                                      torch.zeros(n, seq), torch.full((n,), -1e4))
        ckpt = save_checkpoint(tmp / f"m{m}.safetensors", backbone=backbone, heads=heads,
                               card=card, matcher=matcher)
        pwk = export_checkpoint(ckpt, tmp / f"m{m}.pwk")
        for be in BACKENDS:
            setups.append({"matched": m, "backend": be, "pwk": str(pwk),
                           "kib": pwk.stat().st_size / 1024})
    return setups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--pass-seconds", type=float, default=30.0)
    ap.add_argument("--sweeps", type=int, default=2)
    ap.add_argument("--mem-seconds", type=float, default=30.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pw-matcher-") as d:
        tmp = Path(d)
        setups = build(tmp)
        audio_path, what = timing_audio(a.seconds, tmp)
        tm, base = measure_setups(setups, audio_path, {"pass_s": a.pass_seconds,
                                                       "sweeps": a.sweeps}, a.mem_seconds)
    rows = []
    for s in setups:
        fast, med = summarize(s["time"])
        zero = next(x for x in setups if x["matched"] == 0 and x["backend"] == s["backend"])
        rows.append(["5 trained", s["matched"], s["backend"], f"{s['kib']:.0f}",
                     f"{fast:.4f}", f"{med:.4f}", f"{fast / summarize(zero['time'])[0]:.2f}",
                     f"{s['time']['step_us']:.0f}",
                     f"{s['mem']['peak_rss_mb'] - base['peak_rss_mb']:.1f}",
                     s["time"]["events"]])
    print(f"audio: {what}; one pinned core, fastest of the passes")
    print(markdown_table(["heads", "matched words", "backend", ".pwk KiB",
                          "CPU s / audio s (fastest)", "median", "x vs 0 matched",
                          "step us", "RSS over numpy (MiB)", "events"], rows))


if __name__ == "__main__":
    main()
