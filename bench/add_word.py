"""Issue 10: add a wake word to the default model from k real examples (k = 0: text only).

    python bench/add_word.py --model runs/default/model.safetensors \
        --synth work_data/synth_bench/manifest.jsonl [--draws 5] [--ks 0 1 3 10]

For jarvis, smart mirror, snowboy, view glass and each k, ``--draws`` random draws (fixed seeds)
of k real clips are the enrollment examples; FRR is measured on the REMAINING real clips of the
word (never on an example), false accepts on the eval background + the other phrases' real
clips. The synthetic part (TTS clips of the phrase: what `polywake add-word` synthesizes) is
embedded once per word and shared by its runs. Existing words: their head tensors are checked
bit-identical after each add, and their scores on held-out data re-measured. Also: the
wall time of a full `add_word()` (k = 10) and the peers' numbers on jarvis (bench/peers.py).
Writes a learning-curve PNG. ``--model`` may also be a pretrained backbone checkpoint (no
heads): the new word then gets the only head, which compares backbones as bases.

``--method matcher``: each run is `polywake add-word --method matcher` itself
(``add_matched_word``: the examples' templates in the distilled embedding, threshold on the
dev background), scored on the same draws. k = 0 (text only) runs when ``--synth`` is given:
``--synth-templates`` TTS clips of the phrase are the examples.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _common import dev_frr_at, example_draw, markdown_table  # noqa: E402
from polywake.audio import load_audio  # noqa: E402
from polywake.data import splits  # noqa: E402
from polywake.data.augment import TempoStretch  # noqa: E402
from polywake.train.add_word import (  # noqa: E402
    add_word,
    real_example_windows,
    real_word_negative_windows,
)
from polywake.train.heads import EmbeddedSet, mine_hard_negatives, train_heads  # noqa: E402
from polywake.train.pretrain import noise_bank, rir_bank  # noqa: E402
from polywake.train.wakewords import (  # noqa: E402
    build_windows,
    calibrate,
    chop,
    load_manifest_clips,
)
from polywake.train.windows import window_labels  # noqa: E402
from wakeword_eval import (  # noqa: E402
    cached_streams,
    embedder_for,
    evaluate_real,
    set_threads,
)

ROOT = Path(__file__).resolve().parents[1]
WORDS = dict(splits.REAL_EVAL_PHRASES)
# Real phrases that no benchmark reports and no training sees: a REAL-voice dev set for
# choosing a recipe (few speakers each; false accepts on the dev background).
DEV_WORDS = {w: splits.REAL_OTHER_PHRASES[w] for w in ("athena", "amelia", "hey savant")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "src/polywake/assets/default.safetensors")
    ap.add_argument("--synth", type=Path, nargs="+",
                    default=[ROOT / "work_data/synth_bench/manifest.jsonl"],
                    help="synth manifests (several are merged, e.g. a Kokoro set beside it)")
    ap.add_argument("--balance-engines", action="store_true",
                    help="every TTS engine an equal share of the positives (wakewords."
                    "engine_balanced)")
    ap.add_argument("--dev-phrases", action="store_true",
                    help="measure on the real DEV phrases (athena, amelia, hey savant; dev "
                    "background) instead of the eval ones: for choosing a recipe")
    ap.add_argument("--backbone-key-from", type=Path,
                    default=ROOT / "src/polywake/assets/backbone.safetensors")
    ap.add_argument("--ks", type=int, nargs="+", default=[0, 1, 3, 10])
    ap.add_argument("--publish-curve", action="store_true",
                    help="write the plot to docs/add_word_learning_curve.png (the published "
                    "run) instead of OUT/curve.png")
    ap.add_argument("--pad-real", type=float, default=0.0, metavar="S",
                    help="append S s of quiet room to every real clip before streaming it (the "
                    "Precise dev takes end right after the word; 0: the published protocol)")
    ap.add_argument("--room-lead", action="store_true",
                    help="put 2 s of each real clip's own room tone before it (no cold stream "
                    "start near the word, as live audio; off: the published protocol)")
    ap.add_argument("--real-speed", type=float, default=0.0,
                    help="speed-perturb half of the real examples' copies by up to this "
                    "fraction (add_word.real_example_windows)")
    ap.add_argument("--tempo", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                    help="stretch every synthetic train clip (positives and negatives) by a "
                    "factor log-uniform in [MIN, MAX] at constant pitch (augment.TempoStretch)")
    ap.add_argument("--real-negatives", type=int, default=0, metavar="N",
                    help="N negative windows of real isolated words (train speakers of "
                    "../shared/data/real_words; add_word.real_word_negative_windows)")
    ap.add_argument("--seed-offset", type=int, default=0,
                    help="added to every training seed (a replicate run measures seed noise)")
    ap.add_argument("--synth-seed-per-draw", action="store_true",
                    help="each draw builds its own synthetic windows (seed + draw), k = 0 "
                    "included, so the spread covers the synthetic data's randomness as well as "
                    "the examples drawn; draw d of every k shares its windows (paired)")
    ap.add_argument("--hidden", type=int, default=8,
                    help="hidden units of the new head when --model is a backbone checkpoint "
                    "(no heads of its own); 8 as in the shipped default")
    ap.add_argument("--method", choices=["heads", "matcher"], default="heads",
                    help="heads: train a head (the default add-word); matcher: add_matched_word")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--words", nargs="+", default=None)
    ap.add_argument("--per-word", type=int, default=1200)
    ap.add_argument("--synth-templates", type=int, default=30,
                    help="--method matcher, k = 0: this many TTS clips of --synth are the examples")
    ap.add_argument("--negatives", type=int, default=2500)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", type=Path, default=ROOT / "work_data/bench/add_word")
    ap.add_argument("--summarize", type=Path, nargs="+", metavar="RESULTS_JSON",
                    help="only merge results.json files of earlier (parallel) runs")
    ap.add_argument("--time-full", action="store_true",
                    help="time one complete add_word() call (jarvis, k=10); alone, only that")
    a = ap.parse_args()
    phrases = DEV_WORDS if a.dev_phrases else WORDS
    a.words = a.words or list(phrases)
    if a.time_full and not a.summarize:
        set_threads()
        print("full add_word() call (jarvis, k=10, 1 thread):", time_full_add(a.model, a.synth))
        return
    if a.summarize:
        results = [r for f in a.summarize for r in json.loads(f.read_text())]
        a.words = [w for w in {**WORDS, **DEV_WORDS} if any(r["word"] == w for r in results)]
        summarize(results, a)
        if a.time_full:
            print("full add_word() call (jarvis, k=10, 1 thread):",
                  time_full_add(a.model, a.synth))
        return
    set_threads()
    if a.method == "matcher":
        results = run_matcher(a, phrases)
        summarize(results, a)
        return
    backbone, base_heads, card, emb = embedder_for(a.model, a.backbone_key_from)
    if base_heads is None:  # a pretrained backbone alone: compare backbones as bases
        from polywake.models.heads import WakeWordHeads

        base_heads = WakeWordHeads(backbone.embed_dim, [], a.hidden)
    noise_tr, noise_dev = noise_bank("train", 10), noise_bank("dev", 8)
    rirs = rir_bank(24)
    bg = chop(cached_streams(emb, splits.background_files("train"), "bg-train"), emb.dim)
    dev_streams = cached_streams(emb, splits.background_files("dev"), "bg-dev")
    base_state = {k: v.clone() for k, v in base_heads.state_dict().items()}
    results: list[dict] = []
    a.out.mkdir(parents=True, exist_ok=True)
    for word in a.words:
        folder = phrases[word]
        clips = load_manifest_clips(a.synth, [word], max_per_word=a.per_word,
                                    max_neg=a.negatives, balance_engines=a.balance_engines)
        t0 = time.time()
        synth_sets: dict[int, EmbeddedSet] = {}

        def synth_set_for(seed: int, word=word, clips=clips, cache=synth_sets) -> EmbeddedSet:
            if seed not in cache:
                cache[seed] = synth_windows(a, word, clips, emb, backbone, bg, noise_tr, rirs,
                                            seed)
            return cache[seed]

        synth_set_for(a.seed_offset)
        dv = build_windows(clips, [word], "dev", noise_dev, rirs, 150, 0, 1)
        dv_emb = emb.windows(dv.audio)
        shared_s = time.time() - t0
        real_files = splits.real_keyword_files(folder)
        real_audio = {str(f): load_audio(f) for f in real_files}
        for k in a.ks:
            for draw in range(a.draws if k or a.synth_seed_per_draw else 1):
                t1 = time.time()
                ex_idx = example_draw(len(real_files), k, draw, word)
                examples = [real_audio[str(real_files[i])] for i in sorted(ex_idx)]
                data = synth_set_for(a.seed_offset + (draw if a.synth_seed_per_draw else 0))
                if examples:
                    data = data.concat(real_example_windows(backbone, examples, word, clips,
                                                            noise_tr, rirs, draw,
                                                            speed=a.real_speed))
                heads = copy.deepcopy(base_heads)
                heads.add_word(word, seed=draw + a.seed_offset)
                weights = None
                for r in range(2):
                    train_heads(heads, data, [word], steps=a.steps, seed=draw + r + a.seed_offset,
                                neg_weights=weights, progress=False)
                    if r == 0:
                        weights = mine_hard_negatives(heads, data, [word])
                cal = calibrate(heads, [word], {word: dv_emb}, dev_streams, 0.5,
                                {word: dv.end})[word]
                untouched = all(torch.equal(heads.state_dict()[k_], v)
                                for k_, v in base_state.items())
                held_out = [f for i, f in enumerate(real_files) if i not in ex_idx]
                ev = evaluate_real(heads, [word], {word: folder}, emb,
                                   {word: cal["threshold"]}, held_out_files={word: held_out},
                                   background="dev" if a.dev_phrases else "eval",
                                   pad_real_s=a.pad_real, room_lead=a.room_lead)[0]
                results.append({"word": word, "k": k, "draw": draw, "seed_offset": a.seed_offset,
                                "synth_seed": a.seed_offset + (draw if a.synth_seed_per_draw
                                                               else 0),
                                "frr_at_0.5": ev.frr_at[0.5], "frr_at_1": ev.frr_at[1.0],
                                "frr_at_dev_thr": ev.frr_at_dev_threshold,
                                # DEV (TTS dev voices, dev background): the number a choice
                                # between base models may use; the rest is eval.
                                "dev_frr_at_0.5": dev_frr_at(cal, 0.5),
                                "fa_at_dev_thr": ev.fa_per_hour_at_dev_threshold,
                                "eval_clips": ev.positives, "existing_heads_identical": untouched,
                                "train_s": round(time.time() - t1, 1),
                                "shared_synth_s": round(shared_s, 1)})
                print(json.dumps(results[-1]), flush=True)
        (a.out / "results.json").write_text(json.dumps(results, indent=1))
    summarize(results, a)


def run_matcher(a, phrases: dict[str, str]) -> list[dict]:
    """Every (word, k >= 1, draw) run is ``add_matched_word`` on ``--model``, written to a
    scratch file and read back, as `polywake add-word --method matcher` does it."""
    from polywake.models.wakeword import (
        load_checkpoint,
        load_matcher,
        load_matcher_base,
        state_digest,
    )
    from polywake.train.add_word import add_matched_word
    from wakeword_eval import BackboneEmbedder

    base, _ = load_matcher_base()
    emb = BackboneEmbedder(base.backbone, "matcher-" + state_digest(base.backbone))
    _, base_heads, _, _ = load_checkpoint(a.model)
    base_state = {k: v.clone() for k, v in base_heads.state_dict().items()}
    scratch = a.out / "scratch.safetensors"
    results: list[dict] = []
    a.out.mkdir(parents=True, exist_ok=True)
    for word in a.words:
        folder = phrases[word]
        real_files = splits.real_keyword_files(folder)
        real_audio = {str(f): load_audio(f) for f in real_files}
        for k in [k for k in a.ks if k > 0 or a.synth]:
            for draw in range(a.draws):
                t1 = time.time()
                ex_idx = example_draw(len(real_files), k, draw, word)
                examples = [real_audio[str(real_files[i])] for i in sorted(ex_idx)] if k else \
                    synth_examples(a.synth, word, a.synth_templates, draw)
                out, _ = add_matched_word(a.model, word, scratch, examples)
                train_s = time.time() - t1
                matcher = load_matcher(out)
                _, heads_after, card, _ = load_checkpoint(out)
                untouched = all(torch.equal(heads_after.state_dict()[k_], v)
                                for k_, v in base_state.items())
                j = matcher.words.index(word)

                def scores_of(e: np.ndarray, m=matcher, j=j) -> np.ndarray:
                    with torch.no_grad():
                        s = m.score(torch.from_numpy(e.astype(np.float32))[None])[0]
                    return s[:, j:j + 1].numpy()

                thr = card["per_word"][word]["threshold"]
                held_out = [f for i, f in enumerate(real_files) if i not in ex_idx]
                ev = evaluate_real(matcher, [word], {word: folder}, emb, {word: thr},
                                   held_out_files={word: held_out},
                                   background="dev" if a.dev_phrases else "eval",
                                   pad_real_s=a.pad_real, scores_of=scores_of,
                                   room_lead=a.room_lead)[0]
                results.append({"word": word, "k": k, "draw": draw, "method": "matcher",
                                "frr_at_0.5": ev.frr_at[0.5], "frr_at_1": ev.frr_at[1.0],
                                "frr_at_dev_thr": ev.frr_at_dev_threshold,
                                "fa_at_dev_thr": ev.fa_per_hour_at_dev_threshold,
                                "threshold": thr, "eval_clips": ev.positives,
                                "existing_heads_identical": untouched,
                                "train_s": round(train_s, 1)})
                print(json.dumps(results[-1]), flush=True)
        (a.out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def synth_examples(manifests: list[Path], word: str, n: int, draw: int) -> list[np.ndarray]:
    """k = 0 for the matcher (text only): ``n`` TTS clips of the phrase from train voices, the
    engines in equal shares, as its examples; each draw takes other clips."""
    clips = load_manifest_clips(manifests, [word], max_per_word=n, max_neg=0, seed=draw,
                                balance_engines=True)
    return clips.positives[word]["train"]


def synth_windows(a, word: str, clips, emb, backbone, bg: np.ndarray, noise, rirs,
                  seed: int) -> EmbeddedSet:
    """The word's synthetic train windows + the train background, embedded, for one seed."""
    tr = build_windows(clips, [word], "train", noise, rirs, a.per_word, a.negatives, seed,
                       tempo=TempoStretch(*a.tempo) if a.tempo else None)
    s = EmbeddedSet(emb.windows(tr.audio), window_labels(tr, 1), [word])
    s = s.concat(EmbeddedSet(bg, np.zeros(bg.shape[:2] + (1,), np.int8), [word]))
    if a.real_negatives:
        s = s.concat(real_word_negative_windows(backbone, word, a.real_negatives, noise, rirs,
                                                seed))
    return s


def summarize(results: list[dict], a) -> None:
    rows = []
    for word in a.words:
        for k in a.ks:
            r = [x for x in results if x["word"] == word and x["k"] == k]
            if not r:
                continue
            f = np.array([x["frr_at_0.5"] for x in r])
            rows.append([word, str(k), str(len(r)), f"{100 * f.mean():.1f}% ± {100 * f.std():.1f}",
                         f"{100 * np.mean([x['frr_at_1'] for x in r]):.1f}%",
                         f"{100 * np.mean([x['frr_at_dev_thr'] for x in r]):.1f}%",
                         f"{np.mean([x['fa_at_dev_thr'] for x in r]):.2f}",
                         f"{np.mean([x['train_s'] for x in r]):.1f}",
                         "yes" if all(x["existing_heads_identical"] for x in r) else "NO"])
    for k in a.ks:
        r = [x for x in results if x["k"] == k]
        if r:
            dev = [x["dev_frr_at_0.5"] for x in r if "dev_frr_at_0.5" in x]
            if dev:
                print(f"k={k}: mean DEV FRR @0.5 FA/h (TTS dev voices) {100 * np.mean(dev):.1f}%")
            rows.append(["**mean**", str(k), str(len(r)),
                         f"**{100 * np.mean([x['frr_at_0.5'] for x in r]):.1f}%**",
                         f"{100 * np.mean([x['frr_at_1'] for x in r]):.1f}%",
                         f"{100 * np.mean([x['frr_at_dev_thr'] for x in r]):.1f}%",
                         f"{np.mean([x['fa_at_dev_thr'] for x in r]):.2f}", "", ""])
    print(markdown_table(["word", "k real", "draws", "FRR @0.5 FA/h (mean ± sd)", "FRR @1 FA/h",
                          "FRR @dev thr", "FA/h @dev thr", "s per add", "existing heads "
                          "bit-identical"], rows))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for word in a.words:
        ks = [k for k in a.ks if any(x["word"] == word and x["k"] == k for x in results)]
        m = [100 * np.mean([x["frr_at_0.5"] for x in results if x["word"] == word
                            and x["k"] == k]) for k in ks]
        ax.plot(ks, m, marker="o", label=word)
    ax.set_xlabel("real examples k (0 = text only)")
    ax.set_ylabel("FRR at 0.5 FA/h on held-out real clips (%)")
    ax.set_title("polywake add-word learning curve")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    # Each run plots beside its results; the published curve is written only when asked, so a
    # partial or exploratory run never overwrites it.
    out = ROOT / "docs" / "add_word_learning_curve.png" if a.publish_curve else a.out / "curve.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"\nlearning curve: {out}")


def time_full_add(model: Path, synth: list[Path], word: str = "jarvis", k: int = 10) -> dict:
    """Wall time of one complete add_word() call (data build + train + calibrate + save)."""
    clips = load_manifest_clips(synth, [word], max_per_word=1200, max_neg=2500)
    ex = [load_audio(f) for f in splits.real_keyword_files(WORDS[word])[:k]]
    _, t = add_word(model, word, Path("/tmp/polywake_add_word_timing.safetensors"),
                    examples=ex, clips=clips, progress=False)
    return t


if __name__ == "__main__":
    main()
