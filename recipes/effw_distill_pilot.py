"""Pilot (information only): distil EfficientWord-Net's word embedding into polywake's small
streaming backbone, and test the student as a few-shot matcher.

    python recipes/effw_distill_pilot.py --tag p3 label --copies 2 --libri-hop 0.25 \
        --synth work_data/pretrain_words16/manifest.jsonl --hold-out-dev-words   # ~8 min
    python recipes/effw_distill_pilot.py --tag p3 train --steps 36000 --minutes 75  # resumable
    python recipes/effw_distill_pilot.py --tag p3 eval --model shipped|student \
        --set matcher-dev|dev-phrases|phrases
    python recipes/effw_distill_pilot.py --tag p4 export-matcher \
        --out src/polywake/assets/matcher.safetensors     # the shipped matcher base

Why: on the add-word protocol EfficientWord-Net (a ResNet-50 trained on real speech) matches
k = 10 examples at 5 % FRR @0.5 FA/h where polywake's trained heads reach 60 % and template
matching on polywake's own backbone ~90 % (docs/BENCHMARKS.md): the gap is the embedding. The
question this pilot asks is whether a 400k-parameter causal backbone can learn that embedding
from the real speech at hand (LibriSpeech train speakers, Speech Commands and Arabic Speech
Commands train speakers; none of the benchmark phrases), with the teacher's 2,048-d vector of
each 1.5 s window as the target of the student's step at the window's end (through a linear
projection, cosine loss).

``eval`` matches like the teacher: every 80 ms step of a file scores its best cosine
similarity to the examples' vectors (the steps 0-320 ms after each VAD-endpointed example's
end), with the add-word draws of bench/add_word.py. ``--set phrases``: the eval phrases, false
accepts on the eval background; ``dev-phrases``: athena, amelia, hey savant on the dev
background; ``matcher-dev``: the real words held out of the material
(``splits.MATCHER_DEV_WORDS``), the dev background and the other held-out words' clips as
negatives. Choices are made on the dev sets only. Nothing here is shipped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from _common import WORK, example_draw  # noqa: E402

OUT = WORK / "effw_distill"
SR = 16000
TEACHER_N = int(1.5 * SR)
STUDENT_N = int(2.0 * SR)  # 0.5 s of context before the teacher's window


def build_windows(seed: int = 0, copies: int = 1, libri_hop_s: float = 0.5,
                  synth: list[Path] | None = None, hold_out: bool = False,
                  only_synth: bool = False, room_tone: float = 0.0) -> np.ndarray:
    """int16 (n, 2 s) windows of train speech; the teacher hears the last 1.5 s. Real isolated
    words ``copies`` times (other offsets and noise), LibriSpeech train speakers every
    ``libri_hop_s``, and the train split of a synthetic word manifest if given. ``hold_out``
    leaves out every clip of ``splits.MATCHER_DEV_WORDS`` (the matcher dev set); ``only_synth``
    makes windows of the synthetic manifests alone (material added to an earlier run's)."""
    from polywake.audio import load_audio
    from polywake.data import splits
    from polywake.train.pretrain import noise_bank, real_word_items, synth_items

    rng = np.random.default_rng(seed)
    noise = noise_bank("train", 10)
    out: list[np.ndarray] = []

    def pcm(x: np.ndarray) -> np.ndarray:
        # int16 as each window is made: 56.5k float32 windows and their stack ran out of 24 GB
        return (np.clip(x, -1, 1) * 32767).astype(np.int16)

    def noisy(x: np.ndarray, p: float) -> np.ndarray:
        if rng.random() < p:
            n = noise.slice(rng, x.size)
            g = np.sqrt((x ** 2).mean() + 1e-10) / (np.sqrt((n ** 2).mean()) + 1e-6)
            x = x + n * g * 10 ** (-rng.uniform(5, 20) / 20)
        return x

    def placed(c: np.ndarray, bounds: tuple[int, int] | None = None) -> np.ndarray:
        c = c[:TEACHER_N]
        off = STUDENT_N - TEACHER_N + int(rng.integers(0, TEACHER_N - c.size + 1))
        if bounds is not None:
            # the clip inside its own room, as a live stream has it: its pre-speech audio
            # looped before it, its post-speech audio looped after it (add_word.room_lead)
            from polywake.train.add_word import room_lead

            lead = room_lead(c, bounds[0], off / SR)
            tail_n = STUDENT_N - lead.size
            after = room_lead(c[::-1], c.size - min(c.size, bounds[1]), tail_n / SR)[::-1]
            return noisy(np.concatenate([lead, after[c.size:]])[:STUDENT_N].copy(), 0.5)
        w = (rng.standard_normal(STUDENT_N) * 10 ** (-60 / 20)).astype(np.float32)
        w[off:off + c.size] += c
        return noisy(w, 0.5)

    vad = None
    if room_tone > 0:
        from polywake.train.add_word import _example_vad
        from polywake.vad import speech_bounds

        vad = _example_vad()

    for f, word, _ in [] if only_synth else real_word_items("train"):
        if hold_out and splits.is_matcher_dev_word(word):
            continue
        c = load_audio(f)
        b = speech_bounds(c[:TEACHER_N], vad) if vad is not None else None
        out += [pcm(placed(c, b if b is not None and rng.random() < room_tone else None))
                for _ in range(copies)]
    for f, word, _ in [it for m in synth or [] for it in synth_items(m, "train")]:
        if hold_out and any(splits.is_matcher_dev_word(t) for t in word.split()):
            continue  # a two-word phrase holding a dev word is held out too
        out.append(pcm(placed(load_audio(f))))
    for f in [] if only_synth else splits.background_files("train"):
        if "librispeech" not in f.parts:
            continue
        x = load_audio(f)
        for s in range(0, x.size - STUDENT_N, int(libri_hop_s * SR)):
            out.append(pcm(noisy(x[s:s + STUDENT_N].copy(), 0.3)))
    return np.stack(out)


def _save_npy(path: Path, x: np.ndarray) -> None:
    """Atomic: a killed run leaves no truncated array for the next one to trust."""
    from polywake.audio import atomic_open

    with atomic_open(path) as fh:
        np.save(fh, x)


def _teacher_chunk(job: tuple[str, int, int]) -> np.ndarray:
    import fewshot_peer as fp

    path, a, b = job
    if fp._MODEL is None:
        fp._init_worker()
    w = np.load(path, mmap_mode="r")[a:b, -TEACHER_N:].astype(np.float32) / 32767
    # The engine asserts a 1.5 s input; its vectors are unit length.
    return np.stack([fp._MODEL.audioToVector(x)[0] for x in w]).astype(np.float16)


class _Windows:
    """Several runs' memory-mapped window arrays read as one (row i of the concatenation)."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0] + [p.shape[0] for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        if np.any(np.diff(idx) < 0):
            raise ValueError("rows are read in sorted order only (they are concatenated by part)")
        part = np.searchsorted(self.starts, idx, side="right") - 1
        return np.concatenate([self.parts[j][idx[part == j] - self.starts[j]]
                               for j in range(len(self.parts)) if (part == j).any()])


def label(a) -> None:
    from tqdm import tqdm

    OUT.mkdir(parents=True, exist_ok=True)
    wpath = OUT / "windows.npy"
    if not wpath.exists():
        _save_npy(wpath, build_windows(copies=a.copies, libri_hop_s=a.libri_hop, synth=a.synth,
                                       hold_out=a.hold_out_dev_words, only_synth=a.only_synth,
                                       room_tone=a.room_tone))
    n = np.load(wpath, mmap_mode="r").shape[0]
    jobs = [(str(wpath), a, min(n, a + 500)) for a in range(0, n, 500)]
    ctx = multiprocessing.get_context("spawn")
    t0 = time.time()
    with ctx.Pool(2) as pool:
        vecs = list(tqdm(pool.imap(_teacher_chunk, jobs), total=len(jobs), desc="teacher",
                         mininterval=10))
    _save_npy(OUT / "teacher.npy", np.concatenate(vecs))
    print(f"{n} windows labelled in {time.time() - t0:.0f} s")


def train(a) -> None:
    """Distil; resumable: re-running the same command continues from ``ckpt.safetensors``
    (saved atomically every ``--save-every`` steps and when ``--minutes`` runs out). Batches
    are a pure function of the step and the schedule of ``--steps``, so a resumed run equals
    an uninterrupted one. (Pilots 1 and 2 ran a wall-clock schedule without checkpoints.)"""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save
    from tqdm import tqdm

    from polywake.audio import atomic_write_bytes
    from polywake.features import logmel_torch
    from polywake.models.wakeword import load_checkpoint
    from polywake.train.checkpoint import load_training_state, save_training_state

    torch.set_num_threads(2)
    torch.manual_seed(0)
    dirs = [OUT] + [OUT.parent / tag for tag in a.with_material_of]
    w = _Windows([np.load(d / "windows.npy", mmap_mode="r") for d in dirs])
    t = torch.from_numpy(np.concatenate([np.load(d / "teacher.npy") for d in dirs])
                         .astype(np.float32))
    n = t.shape[0]
    if n != len(w):
        raise ValueError(f"{len(w)} windows but {n} teacher vectors in {dirs}")
    perm = np.random.default_rng(0).permutation(n)
    dev, tr = perm[: n // 20], perm[n // 20:]
    student = load_checkpoint(ROOT / "src/polywake/assets/backbone.safetensors")[0]
    proj = torch.nn.Linear(student.embed_dim, t.shape[1])
    if a.init:  # warm start: another run's finished student, backbone and projection
        sd = load_file(str(OUT.parent / a.init / "student.safetensors"))
        student.load_state_dict({k[9:]: v for k, v in sd.items() if k.startswith("backbone.")})
        proj.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("proj.")})
    params = list(student.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=1e-2)
    modules = {"backbone": student, "proj": proj}
    ckpt = OUT / "ckpt.safetensors"

    def loss_of(idx: np.ndarray) -> torch.Tensor:
        idx = np.sort(idx)  # sorted reads from the memory-mapped windows
        x = torch.from_numpy(w[idx].astype(np.float32) / 32767)
        e = proj(student(logmel_torch(x))[:, -1])
        return (1 - F.cosine_similarity(e, t[idx], dim=-1)).mean()

    def dev_loss() -> float:
        student.eval()
        with torch.no_grad():
            v = float(np.mean([float(loss_of(dev[i:i + 256])) for i in range(0, dev.size, 256)]))
        student.train()
        return v

    if ckpt.exists():
        step, extra = load_training_state(ckpt, modules, opt)
        hist = extra["hist"]
        print(f"resumed at step {step}")
    else:
        step, hist = 0, [{"step": 0, "dev": dev_loss()}]
        print(hist[-1])
    student.train()  # load_checkpoint returns eval mode; only dev_loss() used to switch it
    t0 = time.time()
    bar = tqdm(desc="distil", unit="step", initial=step, total=a.steps, mininterval=10)
    while step < a.steps and time.time() - t0 < a.minutes * 60:
        lr = a.lr * 0.5 * (1 + np.cos(np.pi * step / a.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        batch = np.random.default_rng([1, step]).choice(tr, a.batch, replace=False)
        torch.manual_seed(1_000_003 + step)  # dropout masks too, so a resumed run is exact
        loss = loss_of(batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
        if step % a.eval_every == 0:
            hist.append({"step": step, "dev": dev_loss(), "train": float(loss)})
            tqdm.write(json.dumps(hist[-1]))
        if step % a.save_every == 0:
            save_training_state(ckpt, modules, opt, step, {"hist": hist})
    bar.close()
    save_training_state(ckpt, modules, opt, step, {"hist": hist})
    if step < a.steps:
        print(f"stopped at step {step} of {a.steps} ({a.minutes} min); re-run to resume")
        return
    hist.append({"step": step, "dev": dev_loss()})
    print(hist[-1])
    sd = {f"backbone.{k}": v.contiguous() for k, v in student.state_dict().items()}
    sd.update({f"proj.{k}": v.contiguous() for k, v in proj.state_dict().items()})
    atomic_write_bytes(OUT / "student.safetensors", save(sd))
    atomic_write_bytes(OUT / "history.json", json.dumps(hist, indent=1).encode())


class Matcher:
    """A backbone (+ projection) as a per-step embedder, unit-normalised."""

    def __init__(self, which: str) -> None:
        import torch
        from safetensors.torch import load_file

        from polywake.models.wakeword import load_checkpoint

        self.backbone = load_checkpoint(ROOT / "src/polywake/assets/backbone.safetensors")[0]
        self.proj = None
        if which == "student":
            sd = load_file(str(OUT / "student.safetensors"))
            self.backbone.load_state_dict({k[9:]: v for k, v in sd.items()
                                           if k.startswith("backbone.")})
            self.proj = torch.nn.Linear(self.backbone.embed_dim, sd["proj.weight"].shape[0])
            self.proj.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("proj.")})
        self.backbone.eval()

    def stream(self, audio: np.ndarray) -> np.ndarray:
        import torch

        from polywake.train.windows import embed_stream

        e = embed_stream(self.backbone, audio)
        if self.proj is not None:
            with torch.no_grad():
                e = self.proj(torch.from_numpy(e.astype(np.float32))).numpy()
        return (e / (np.linalg.norm(e, axis=-1, keepdims=True) + 1e-9)).astype(np.float32)


def _templates(m: Matcher, clips: list[np.ndarray], vad) -> np.ndarray:
    """The examples' vectors: the steps 0-320 ms after each VAD-endpointed example's end."""
    from polywake.train.add_word import endpoint_example
    from wakeword_eval import _padded

    tm = []
    for x in clips:
        c = endpoint_example(x, vad)
        e = m.stream(_padded(c, 0.5, "ref"))
        end = c.size / SR
        tm.append(e[[j for j in range(len(e)) if end <= (j + 1) * 0.08 <= end + 0.32]])
    return np.concatenate(tm)


def evaluate(a) -> None:
    from tqdm import tqdm

    from add_word import DEV_WORDS, WORDS
    from polywake.audio import load_audio
    from polywake.data import splits
    from polywake.evaluate import ScoreStream, det_curve, frr_at_fa
    from polywake.train.add_word import _example_vad
    from wakeword_eval import _padded

    m = Matcher(a.model)
    split = "eval" if a.set == "phrases" else "dev"
    if a.set == "matcher-dev":
        from polywake.train.pretrain import matcher_dev_files

        items = matcher_dev_files()
    else:
        items = {w: [(f, "") for f in splits.real_keyword_files(folder)]
                 for w, folder in (DEV_WORDS if a.set == "dev-phrases" else WORDS).items()}
    bg = [(str(f), m.stream(load_audio(f))) for f in
          tqdm(splits.background_files(split), desc="background", mininterval=10)]
    vad = _example_vad()
    audio = {w: [load_audio(f) for f, _ in v] for w, v in items.items()}
    pos = {w: [m.stream(_padded(x, 0.5, Path(f).name))
               for x, (f, _) in zip(audio[w], items[w], strict=True)]
           for w in tqdm(items, desc="clips", mininterval=10)}
    rows: dict[str, list[float]] = {}
    for word, its in items.items():
        # matcher-dev: the other dev words' clips are negatives too (1 s each, in the FA/h)
        others = [] if a.set != "matcher-dev" else [
            (str(f), e) for w2 in items if w2 != word
            for (f, _), e in zip(items[w2], pos[w2], strict=True)]
        for k in a.ks:
            frr: dict[float, list[float]] = {fa: [] for fa in a.fa}
            for draw in range(a.draws):
                ex = example_draw(len(its), k, draw, word)
                tm = _templates(m, [audio[word][i] for i in sorted(ex)], vad)
                # a speaker among the examples is not scored (Arabic speakers repeat a word 10x)
                spk = {its[i][1] for i in ex} - {""}
                held = [i for i in range(len(its)) if i not in ex and its[i][1] not in spk]
                p = [float((pos[word][i] @ tm.T).max()) for i in held]
                negs = [ScoreStream(n, (e @ tm.T).max(1), 0.08) for n, e in bg + others]
                curve = det_curve(p, negs, refractory_s=1.0)
                for fa in a.fa:
                    frr[fa].append(frr_at_fa(curve, fa)[0])
            for fa in a.fa:
                rows[f"{word}|{k}|{fa:g}"] = frr[fa]
                print(f"{a.model} {word} k={k}: FRR @{fa:g} FA/h {100 * np.mean(frr[fa]):.1f} % "
                      f"± {100 * np.std(frr[fa]):.1f} ({len(held)} clips scored)", flush=True)
    summary = {}
    for k in a.ks:
        for fa in a.fa:
            per_draw = np.mean([[v[d] for key, v in rows.items() if key.endswith(f"|{k}|{fa:g}")]
                                for d in range(a.draws)], axis=1)
            se = float(per_draw.std(ddof=1) / np.sqrt(a.draws)) if a.draws > 1 else 0.0
            summary[f"{k}|{fa:g}"] = {"mean": float(per_draw.mean()), "se": se,
                                      "per_draw": per_draw.tolist()}
            print(f"{a.model} {a.set} mean k={k} @{fa:g} FA/h: {100 * per_draw.mean():.1f} % "
                  f"(SE over draws {100 * se:.1f})")
    from polywake.audio import atomic_write_bytes

    atomic_write_bytes(OUT / f"eval_{a.set}_{a.model}.json", json.dumps(
        {"rows": rows, "summary": summary, "fa": a.fa, "draws": a.draws}, indent=1).encode())


def export_matcher(a) -> None:
    """The student as the product's matcher base (``polywake add-word --method matcher``): its
    backbone and the metric of its projection (models/matcher.py), plus a default threshold
    for installs without the dev background: the median over the matcher dev words (k = 10,
    draw 0) of the threshold at 0.5 FA/h on the dev background, as add-word calibrates it."""
    import torch
    from safetensors.torch import load_file

    from polywake.audio import load_audio
    from polywake.models.matcher import TemplateMatcher
    from polywake.models.wakeword import load_checkpoint, save_matcher_base, state_digest
    from polywake.train.add_word import _example_vad, calibrate_matched, example_templates
    from polywake.train.pretrain import matcher_dev_files
    from polywake.train.wakewords import background_streams

    torch.set_num_threads(2)
    sd = load_file(str(OUT / "student.safetensors"))
    backbone = load_checkpoint(ROOT / "src/polywake/assets/backbone.safetensors")[0]
    backbone.load_state_dict({k[9:]: v for k, v in sd.items() if k.startswith("backbone.")})
    backbone.eval()
    base = TemplateMatcher.from_projection(backbone, sd["proj.weight"], sd["proj.bias"])
    # seq-tnorm scoring (docs/BENCHMARKS.md): T-norm statistics of 20,000 steps of the TRAIN
    # background, as recipes/matcher_scoring.py measured it
    cohort = np.concatenate([e for _, e in background_streams(backbone, "train",
                                                               state_digest(backbone))])
    cohort = cohort[np.random.default_rng(0).choice(len(cohort), min(20000, len(cohort)),
                                                    replace=False)]
    base = base.with_cohort(torch.from_numpy(cohort.astype(np.float32)))
    dev = background_streams(backbone, "dev", state_digest(backbone))
    vad, thr = _example_vad(), {}
    for word, its in matcher_dev_files().items():
        ex = example_draw(len(its), 10, 0, word)
        per = example_templates(backbone, [load_audio(its[i][0]) for i in sorted(ex)], vad,
                                base.seq_len)
        m = base.empty()
        m.add_word(word, torch.from_numpy(np.concatenate(per)))
        thr[word] = calibrate_matched(m, word, per, dev, 0.5, 0.0)["threshold"]
        print(f"{word}: threshold {thr[word]:.3f}")
    card = {"default_threshold": float(np.median(list(thr.values()))),
            "default_threshold_per_dev_word": thr,
            "recipe": f"recipes/effw_distill_pilot.py --tag {a.tag} (label, train, "
                      "export-matcher); docs/MODELS.md",
            "teacher": "EfficientWord-Net 1.0.5 (Apache-2.0)"}
    out = save_matcher_base(a.out, base, card)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB); default threshold "
          f"{card['default_threshold']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lb = sub.add_parser("label")
    lb.add_argument("--copies", type=int, default=1)
    lb.add_argument("--libri-hop", type=float, default=0.5)
    lb.add_argument("--hold-out-dev-words", action="store_true",
                    help="leave splits.MATCHER_DEV_WORDS out of the material (pilot 3 on)")
    lb.add_argument("--synth", type=Path, nargs="*", default=None,
                    help="synthetic word manifests (recipes/pretrain_words.py) as more material")
    lb.add_argument("--only-synth", action="store_true",
                    help="windows of --synth alone (material added to another run's with "
                         "train --with-material-of)")
    lb.add_argument("--room-tone", type=float, default=0.0, metavar="P",
                    help="this share of the real words' windows put the word inside its own "
                    "room tone (looped) instead of -60 dB quiet (pilot 6)")
    t = sub.add_parser("train")
    t.add_argument("--minutes", type=float, default=25, help="this invocation's budget")
    t.add_argument("--steps", type=int, default=36000, help="the cosine schedule's length")
    t.add_argument("--save-every", type=int, default=500)
    t.add_argument("--eval-every", type=int, default=1000)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--init", default="", help="warm start from this tag's finished student")
    t.add_argument("--with-material-of", nargs="*", default=[],
                   help="also train on these tags' windows and teacher vectors")
    e = sub.add_parser("eval")
    e.add_argument("--model", choices=["shipped", "student"], default="student")
    e.add_argument("--set", choices=["phrases", "dev-phrases", "matcher-dev"], default="phrases",
                   help="phrases: the eval phrases on the eval background; dev-phrases: athena, "
                        "amelia, hey savant on the dev background; matcher-dev: the real words "
                        "held out of the distillation material (splits.MATCHER_DEV_WORDS)")
    e.add_argument("--ks", type=int, nargs="+", default=[3, 10])
    e.add_argument("--draws", type=int, default=5)
    e.add_argument("--fa", type=float, nargs="+", default=[0.5, 1.0])
    x = sub.add_parser("export-matcher")
    x.add_argument("--out", type=Path, default=ROOT / "src/polywake/assets/matcher.safetensors")
    ap.add_argument("--tag", default="", help="a run's own folder under work_data/effw_distill")
    a = ap.parse_args()
    global OUT
    OUT = OUT / a.tag if a.tag else OUT
    {"label": label, "train": train, "eval": evaluate,
     "export-matcher": export_matcher}[a.cmd](a)


if __name__ == "__main__":
    main()
