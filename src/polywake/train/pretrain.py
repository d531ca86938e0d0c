"""Pretrain the backbone on a medium-vocabulary word-recognition task.

    polywake pretrain --synth work_data/pretrain_words/manifest.jsonl --out runs/pretrain \
        --steps 6000 --max-minutes 70

Classes: the synthetic pretraining vocabulary (>= 500 words, product and benchmark words
excluded, see :mod:`polywake.data.vocab`) plus real-voice words: Speech Commands (train
speakers) and Arabic Speech Commands (its train.csv speakers). Loss: word cross-entropy on
log-sum-exp pooled per-step logits + 0.3 x phoneme CTC (CMU pronunciations) — the phoneme
target teaches sounds rather than whole words, which is what an unseen wake word needs.

Checkpoints every ``--save-every`` steps (atomic); re-running the same command resumes. Each
batch is drawn from an RNG seeded by (seed, step), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from scipy.signal import fftconvolve
from tqdm import tqdm

from ..audio import SAMPLE_RATE, load_audio, remove_stale_temps
from ..data import splits
from ..features import logmel_torch
from ..models.backbone import CONFIGS, Backbone, count_parameters
from ..models.heads import PretrainHeads
from ..models.wakeword import save_checkpoint
from .checkpoint import load_training_state, save_training_state
from .mixing import NoiseBank, mix_with_noise, place, trim_silence, window_samples
from .schedule import add_loop_arguments, optimizer_step, warmup_cosine

STEPS_PER_WINDOW = 16  # 16 x 80 ms = 1.28 s windows: every pretraining word fits


@dataclass
class ClipBank:
    """Clean clips in memory: int16 audio, class index, phoneme ids (or None), identity."""

    words: list[str] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    speaker: list[str] = field(default_factory=list)
    real: list[bool] = field(default_factory=list)

    def add(self, x: np.ndarray, label: int, speaker: str, real: bool) -> None:
        x = trim_silence(x)
        if x.size < 1600:
            return
        self.audio.append(np.clip(x * 32767, -32768, 32767).astype(np.int16))
        self.label.append(label)
        self.speaker.append(speaker)
        self.real.append(real)

    def by_label(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i, lab in enumerate(self.label):
            out[lab].append(i)
        return out


def _read(path: Path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    x = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        from ..audio import to_mono_16k

        x = to_mono_16k(x, rate)
    return x


def real_word_items(split: str) -> list[tuple[Path, str, str]]:
    """(path, class name, speaker) of real isolated words for a split (train/dev/eval)."""
    root = splits.shared_data_dir() / "real_words"
    items: list[tuple[Path, str, str]] = []
    sc = root / "speech_commands"
    if sc.exists():
        for d in sorted(p for p in sc.iterdir() if p.is_dir() and p.name != "_silence_"):
            for f in sorted(d.glob("*.opus")):
                if splits.speech_commands_split(f) != split:
                    continue
                word = f.name.split("_")[0] if d.name == "_unknown_" else d.name
                if word in splits.EXCLUDED_FROM_PRETRAINING:
                    continue
                items.append((f, word, "sc:" + splits.speech_commands_speaker(f)))
    ar = root / "arabic_speech_commands"
    csv_name = {"train": "train.csv", "dev": "val.csv", "eval": "test.csv"}[split]
    if (ar / csv_name).exists():
        with open(ar / csv_name) as fh:
            for row in csv.reader(fh):
                if not row or not row[0].strip() or row[0].startswith(("file", "path")):
                    continue
                # The CSVs name the original WAVs (dataset/<class>/<id>.wav); the shared copy
                # holds them as <class>/<id>.opus.
                rel = Path(row[0].strip())
                f = ar / rel.parent.name / (rel.stem + ".opus")
                if not f.exists():
                    continue
                items.append((f, "ar:" + f.parent.name, "ar:" + f.name[:8]))
    return items


def matcher_dev_files() -> dict[str, list[tuple[Path, str]]]:
    """Word -> sorted [(clip, speaker)] of ``splits.MATCHER_DEV_WORDS``: their train and dev
    speakers' clips (the real words no distillation material may hold; eval speakers stay eval)."""
    out: dict[str, list[tuple[Path, str]]] = {}
    for f, word, speaker in real_word_items("train") + real_word_items("dev"):
        if splits.is_matcher_dev_word(word):
            out.setdefault(word, []).append((f, speaker))
    return {w: sorted(v) for w, v in out.items()}


def synth_items(manifest: Path, split: str) -> list[tuple[Path, str, str]]:
    out = []
    with open(manifest) as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("split") != split:
                continue
            word = (r.get("word") or r.get("text") or "").strip().lower()
            if not word or word in splits.EXCLUDED_FROM_PRETRAINING:
                continue
            p = Path(r["path"])
            if not p.is_absolute():
                p = manifest.parent / p
            out.append((p, word, r.get("speaker") or r.get("voice") or "?"))
    return out


def load_bank(items: list[tuple[Path, str, str, bool]], vocab: dict[str, int],
              desc: str) -> ClipBank:
    bank = ClipBank(words=list(vocab))
    for path, word, spk, real in tqdm(items, desc=desc, unit="clip", mininterval=2):
        if word not in vocab:
            continue
        try:
            bank.add(_read(path), vocab[word], spk, real)
        except (sf.LibsndfileError, RuntimeError, ValueError):
            continue
    return bank


def noise_bank(split: str, max_minutes: float = 25.0) -> NoiseBank:
    """Real background for a split: Speech Commands noise, music and speech (train speakers)."""
    root = splits.shared_data_dir()
    files = sorted((root / "noise" / "speech_commands").glob("*"))
    files = [f for f in files if f.suffix in (".wav", ".opus", ".flac", ".ogg")]
    files += splits.background_files(split)
    rng = np.random.default_rng(0)
    rng.shuffle(files)
    arrays, total = [], 0.0
    for f in files:
        try:
            x = load_audio(f)
        except Exception:  # a damaged noise file is skipped, not fatal
            continue
        x = x[: int(90 * SAMPLE_RATE)]  # many files, a little of each
        arrays.append(x)
        total += x.size / SAMPLE_RATE / 60
        if total >= max_minutes:
            break
    return NoiseBank.from_arrays(arrays)


def phoneme_targets(words: list[str]) -> tuple[list[list[int]], list[str]]:
    from ..data.vocab import PHONEMES, phonemes

    index = {p: i + 1 for i, p in enumerate(PHONEMES)}  # 0 = CTC blank
    out = []
    for w in words:
        try:
            ph = [] if w.startswith("ar:") else phonemes(w)
        except KeyError:
            ph = []
        out.append([index[p] for p in ph if p in index])
    return out, list(PHONEMES)


def make_batch(bank: ClipBank, groups: dict[int, list[int]], noise: NoiseBank,
               rng: np.random.Generator, batch: int, n_samples: int,
               rirs: np.ndarray | None, p_reverb: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    labels = list(groups)
    x = np.zeros((batch, n_samples), np.float32)
    y = np.zeros(batch, np.int64)
    for b in range(batch):
        lab = labels[int(rng.integers(len(labels)))]  # classes equally likely
        idx = groups[lab][int(rng.integers(len(groups[lab])))]
        clip = bank.audio[idx].astype(np.float32) / 32767
        if rng.random() < 0.5:  # speed perturbation 0.9-1.1 (pitch and tempo)
            import soxr

            clip = soxr.resample(clip, SAMPLE_RATE, SAMPLE_RATE * rng.uniform(0.9, 1.1),
                                 quality="LQ").astype(np.float32)
        if rirs is not None and rng.random() < p_reverb:
            rir = rirs[int(rng.integers(len(rirs)))]
            clip = fftconvolve(clip, rir)[: clip.size + rir.size // 4].astype(np.float32)
        lo = min(clip.size, n_samples)
        end = int(rng.integers(lo, n_samples + 1))
        w, _, _ = place(clip, n_samples, end)
        x[b] = mix_with_noise(rng, w, noise)
        y[b] = lab
    return x, y


def rir_bank(n: int = 48, seed: int = 0) -> np.ndarray | None:
    """Simulated small/medium rooms (pyroomacoustics), trimmed to 0.3 s, energy-normalised."""
    try:
        import pyroomacoustics as pra
    except ImportError:
        return None
    rng = np.random.default_rng(seed)
    out = np.zeros((n, int(0.3 * SAMPLE_RATE)), np.float32)
    for i in range(n):
        dims = rng.uniform([3, 3, 2.4], [8, 7, 3.5])
        rt60 = rng.uniform(0.15, 0.7)
        absorption, max_order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption),
                           max_order=min(max_order, 12))
        room.add_source(rng.uniform([0.5, 0.5, 1.0], dims - 0.5))
        room.add_microphone(rng.uniform([0.5, 0.5, 0.8], dims - 0.5))
        room.compute_rir()
        r = np.asarray(room.rir[0][0], np.float32)[: out.shape[1]]
        out[i, : r.size] = r / (np.sqrt(np.sum(r ** 2)) + 1e-9)
    return out


def evaluate_accuracy(backbone: Backbone, heads: PretrainHeads, bank: ClipBank,
                      noise: NoiseBank, n_samples: int, snr_db: float = 10.0,
                      limit: int = 3000, seed: int = 99) -> dict[str, float]:
    """Top-1 word accuracy on fixed, seeded windows at a given SNR (synthetic and real)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(bank.audio))[:limit]
    backbone.eval()
    heads.eval()
    correct = {True: 0, False: 0}
    total = {True: 0, False: 0}
    with torch.no_grad():
        for s in range(0, len(order), 128):
            idxs = order[s: s + 128]
            x = np.zeros((len(idxs), n_samples), np.float32)
            for j, i in enumerate(idxs):
                clip = bank.audio[i].astype(np.float32) / 32767
                w, _, _ = place(clip, n_samples, int(rng.integers(min(clip.size, n_samples),
                                                                  n_samples + 1)))
                x[j] = mix_with_noise(rng, w, noise, snr_db=(snr_db, snr_db), p_clean=0.0)
            logits, _ = heads(backbone(logmel_torch(torch.from_numpy(x))))
            pred = logits.argmax(1).numpy()
            for j, i in enumerate(idxs):
                real = bank.real[i]
                total[real] += 1
                correct[real] += int(pred[j] == bank.label[i])
    backbone.train()
    heads.train()
    out = {"n_synth": total[False], "n_real": total[True]}
    for k, name in ((False, "acc_synth"), (True, "acc_real")):
        out[name] = correct[k] / total[k] if total[k] else float("nan")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--synth", type=Path, required=True, help="manifest of synthetic word clips")
    p.add_argument("--out", type=Path, default=Path("runs/pretrain"))
    p.add_argument("--size", choices=sorted(CONFIGS), default="standard")
    p.add_argument("--no-real", action="store_true", help="leave out the real word sets")
    p.add_argument("--real-manifest", type=Path, action="append", default=[],
                   help="manifest of REAL word clips in the synthetic manifest's format "
                        "(recipes/librispeech_words.py); repeatable")
    add_loop_arguments(p, steps=6000, batch=96)
    p.add_argument("--ctc-weight", type=float, default=0.3)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(args.out)  # what a killed run left beside its checkpoints
    t_start = time.time()
    use_real = not args.no_real and splits.have_shared_data()
    train_items = [(p, w, s, False) for p, w, s in synth_items(args.synth, "train")]
    dev_items = [(p, w, s, False) for p, w, s in synth_items(args.synth, "dev")]
    if use_real:
        train_items += [(p, w, s, True) for p, w, s in real_word_items("train")]
        dev_items += [(p, w, s, True) for p, w, s in real_word_items("dev")]
    for m in args.real_manifest:
        if not m.is_file():
            raise SystemExit(f"{m}: no such manifest")
        train_items += [(p, w, s, True) for p, w, s in synth_items(m, "train")]
        dev_items += [(p, w, s, True) for p, w, s in synth_items(m, "dev")]
    words = sorted({w for _, w, _, _ in train_items})
    vocab = {w: i for i, w in enumerate(words)}
    print(f"pretraining vocabulary: {len(words)} classes "
          f"({sum(not w.startswith('ar:') for w in words)} English), "
          f"{len(train_items)} train clips, {len(dev_items)} dev clips")
    bank = load_bank(train_items, vocab, "loading train clips")
    dev_bank = load_bank(dev_items, vocab, "loading dev clips")
    groups = bank.by_label()
    noise = noise_bank("train", max_minutes=args.noise_minutes)
    dev_noise = noise_bank("dev", max_minutes=min(8.0, args.noise_minutes))
    rirs = rir_bank(args.rirs) if args.rirs else None
    ph_targets, phoneme_list = phoneme_targets(words)
    n_samples = window_samples(STEPS_PER_WINDOW)

    torch.manual_seed(args.seed)
    backbone = Backbone(CONFIGS[args.size])
    heads = PretrainHeads(backbone.embed_dim, len(words), len(phoneme_list))
    params = list(backbone.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    state_path = args.out / "state.safetensors"
    step, extra = 0, {"best_dev": -1.0, "history": []}
    if state_path.exists():
        step, extra = load_training_state(state_path, {"backbone": backbone, "heads": heads}, opt)
        print(f"resuming from step {step}")
    print(f"backbone {args.size}: {count_parameters(backbone)} parameters")
    first_step = step

    def lr_at(s: int) -> float:
        return warmup_cosine(s, args.steps, args.lr, 200)

    bar = tqdm(total=args.steps, initial=step, desc="pretrain", unit="step", mininterval=5)
    backbone.train()
    heads.train()
    loss_ema = None
    while step < args.steps:
        rng = np.random.default_rng([args.seed, step])
        torch.manual_seed(args.seed * 1_000_003 + step)
        x, y = make_batch(bank, groups, noise, rng, args.batch, n_samples, rirs)
        feats = logmel_torch(torch.from_numpy(x))
        emb = backbone(feats)
        word_logits, ph_logits = heads(emb)
        loss = F.cross_entropy(word_logits, torch.from_numpy(y), label_smoothing=0.05)
        tg = [ph_targets[int(c)] for c in y]
        keep = [i for i, t in enumerate(tg) if t]
        if keep and args.ctc_weight > 0:
            logp = ph_logits[keep].log_softmax(-1).transpose(0, 1)
            targets = torch.tensor([p for i in keep for p in tg[i]])
            ctc = F.ctc_loss(logp, targets, torch.full((len(keep),), logp.shape[0]),
                             torch.tensor([len(tg[i]) for i in keep]), zero_infinity=True)
            loss = loss + args.ctc_weight * ctc
        loss_v = optimizer_step(opt, loss, params, lr_at(step))
        step += 1
        loss_ema = loss_v if loss_ema is None else 0.98 * loss_ema + 0.02 * loss_v
        bar.update(1)
        bar.set_postfix(loss=f"{loss_ema:.3f}", lr=f"{lr_at(step):.2e}")
        out_of_time = bool(args.max_minutes and (time.time() - t_start) / 60 > args.max_minutes)
        out_of_time |= bool(args.stop_after and step - first_step >= args.stop_after)
        if step % args.eval_every == 0 or step == args.steps:
            m = evaluate_accuracy(backbone, heads, dev_bank, dev_noise, n_samples)
            m["step"] = step
            extra["history"].append(m)
            score = np.nanmean([m["acc_synth"], m["acc_real"]])
            tqdm.write(f"step {step}: dev acc synth {m['acc_synth']:.3f} real "
                       f"{m['acc_real']:.3f} (loss {loss_ema:.3f})")
            if score > extra["best_dev"]:
                extra["best_dev"] = float(score)
                extra["best_step"] = step
                save_checkpoint(args.out / "backbone.safetensors", backbone=backbone.eval(),
                                card={"kind": "backbone", "pretrain_step": step,
                                      "dev_accuracy": m, "classes": len(words),
                                      "phonemes": phoneme_list})
                backbone.train()
        if step % args.save_every == 0 or step == args.steps or out_of_time:
            save_training_state(state_path, {"backbone": backbone, "heads": heads}, opt, step,
                                extra)
        if out_of_time:
            tqdm.write(f"stopping at step {step} (time or --stop-after); "
                       "re-run the same command to continue")
            break
    bar.close()
    (args.out / "words.json").write_text(json.dumps(words))
    print(json.dumps(extra.get("history", [])[-1:], indent=1))
    return 0
