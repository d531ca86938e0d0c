"""How soon a matched word fires after the word is said (issue 10; the brief's streaming UX).

    nice -n 5 .venv/bin/python bench/matcher_latency.py [--k 10] [--takes 60]

For each eval phrase, the word is added from k real takes (draw 0 of the add-word table) to the
shipped default with ``add_matched_word`` (its own calibrated threshold), the model is exported
to .pwk and run by the numpy :class:`polywake.detect.Detector` with its defaults, as
``polywake detect`` runs it. Each held-out take is streamed with 2 s of its own room tone
before it (``add_word.room_lead``: no cold start near the word, as live) and 1 s of quiet
after it. Latency = the event's ``decided_s`` minus the take's speech end (Silero VAD, the
end endpointing uses), over the takes that fired; the share that fired is the FRR at the
calibrated threshold on these takes (no background here: this bench times, it does not rank).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from _common import example_draw, markdown_table  # noqa: E402

SR = 16000


def main() -> None:
    from polywake.audio import load_audio
    from polywake.data import splits
    from polywake.detect import Detector
    from polywake.export import export_checkpoint
    from polywake.model_io import load_scorer
    from polywake.train.add_word import _example_vad, add_matched_word, room_lead
    from polywake.vad import speech_bounds

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "src/polywake/assets/default.safetensors")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--takes", type=int, default=60, help="held-out takes per phrase")
    a = ap.parse_args()
    vad = _example_vad()
    rows, all_lat = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for word, folder in splits.REAL_EVAL_PHRASES.items():
            files = splits.real_keyword_files(folder)
            ex = sorted(example_draw(len(files), a.k, 0, word))
            ckpt, _ = add_matched_word(a.model, word, Path(tmp) / "m.safetensors",
                                       [load_audio(files[i]) for i in ex])
            det = Detector(load_scorer(export_checkpoint(ckpt, Path(tmp) / "m.pwk"),
                                       backend="numpy"))
            lat, fired, n = [], 0, 0
            for i in [i for i in range(len(files)) if i not in ex][:a.takes]:
                clip = load_audio(files[i])
                b = speech_bounds(clip, vad)
                if b is None:
                    continue
                x = np.concatenate([room_lead(clip, b[0]), np.zeros(SR, np.float32)])
                end_s = (x.size - SR - clip.size + b[1]) / SR
                det.reset()
                events = [e for e in det.process(x) + det.flush() if e.word == word]
                n += 1
                if events:
                    fired += 1
                    lat.append(events[0].decided_s - end_s)
            all_lat += lat
            rows.append([word, n, f"{fired / max(1, n):.0%}", *_spread(lat)])
    rows.append(["**all**", sum(r[1] for r in rows), "", *_spread(all_lat)])
    print(f"matched word from k = {a.k} real takes (draw 0), numpy Detector defaults")
    print(markdown_table(["phrase", "takes", "fired", "median latency (s)", "p10 / p90 (s)"],
                         rows))


def _spread(lat: list[float]) -> list[str]:
    if not lat:
        return ["-", "-"]
    return [f"{np.median(lat):.2f}",
            f"{np.percentile(lat, 10):.2f} / {np.percentile(lat, 90):.2f}"]


if __name__ == "__main__":
    main()
