"""Where the shared real data lives and how it is split. One place, so no script can train,
tune or pick checkpoints on what another script evaluates on.

Rules:
* ``train``: anything may be fitted on it.
* ``dev``: thresholds, calibration, early stopping, model choice.
* ``eval``: only read by ``bench/`` scripts and ``polywake eval``; never fitted on.

Splits are by speaker (LibriSpeech, Speech Commands, Arabic Speech Commands) or by file (music),
never by clip of the same speaker.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# The shared data sits beside the project checkout; POLYWAKE_SHARED_DATA overrides it.
_DEFAULT = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def shared_data_dir() -> Path:
    return Path(os.environ.get("POLYWAKE_SHARED_DATA", str(_DEFAULT)))


def have_shared_data() -> bool:
    return (shared_data_dir() / "README.md").exists()


# LibriSpeech (mini, 19 speakers, 3.36 h): speakers chosen so eval holds ~1.6 h, dev ~0.5 h.
LIBRISPEECH_EVAL = {"19", "163", "226", "1867", "3947", "6272", "7367"}
LIBRISPEECH_DEV = {"460", "3526"}
# The remaining 10 speakers (~1.3 h) are train.

# Real keyword phrases that are never product words: evaluation of synthetic-only training.
REAL_EVAL_PHRASES = {
    "jarvis": "jarvis",
    "smart mirror": "smart_mirror",
    "snowboy": "snowboy",
    "view glass": "view_glass",
}
# Real recordings of other phrases (few speakers): extra real positives/negatives for eval.
REAL_OTHER_PHRASES = {
    "computer": "computer_precise",
    "hey computer": "hey_computer",
    "athena": "athena",
    "amelia": "amelia",
    "hey savant": "hey_savant",
}
# Words that must never be pretraining classes (product words + real-keyword phrases' words).
PRODUCT_WORDS = ["alexa", "echo", "amazon", "computer", "hey samuel"]
EXCLUDED_FROM_PRETRAINING = {
    "alexa", "echo", "amazon", "computer", "samuel", "jarvis", "smart", "mirror", "snowboy",
    "view", "glass", "athena", "amelia", "savant",
}


# Real isolated words held out of the embedding-distillation material (recipes/
# effw_distill_pilot.py, from its pilot 3 on) so that a matcher can be chosen on words it never
# heard: Speech Commands words from the train+dev speakers, Arabic keywords from the train+val
# speakers (the eval speakers of both stay eval). The shipped backbone (pretrained before this
# list existed) did hear the train speakers' clips of these words as pretraining classes.
MATCHER_DEV_WORDS = {
    "sc": ("left", "stop", "down"),
    "ar": ("cancel", "record", "rotate", "receive", "options", "previous"),
}


def is_matcher_dev_word(word: str) -> bool:
    """``word`` as real_word_items / synthetic manifests name it ("left", "ar:cancel")."""
    if word.startswith("ar:"):
        return word[3:] in MATCHER_DEV_WORDS["ar"]
    return word in MATCHER_DEV_WORDS["sc"]


def _hash_fraction(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split_of_key(key: str, dev: float = 0.1, test: float = 0.1) -> str:
    """Deterministic split of an identity (speaker, voice) by hash: stable as sets grow."""
    f = _hash_fraction(key)
    return "test" if f < test else "dev" if f < test + dev else "train"


def librispeech_split(speaker: str) -> str:
    if speaker in LIBRISPEECH_EVAL:
        return "eval"
    return "dev" if speaker in LIBRISPEECH_DEV else "train"


def background_files(split: str) -> list[Path]:
    """Real background audio (no product wake words) for a split: LibriSpeech speakers and music.

    Music: wesnoth is eval; hedgewars alternates dev/train by sorted file index.
    """
    root = shared_data_dir() / "background"
    out: list[Path] = []
    libri = root / "speech" / "librispeech"
    if libri.exists():
        for spk in sorted(os.listdir(libri)):
            if librispeech_split(spk) == split:
                out += sorted((libri / spk).glob("*.opus"))
    if split == "eval":
        out += sorted((root / "music" / "wesnoth").glob("*.opus"))
    else:
        hw = sorted((root / "music" / "hedgewars").glob("*.opus"))
        out += [f for i, f in enumerate(hw) if (i % 2 == 0) == (split == "train")]
    return out


def librispeech_transcripts() -> dict[str, str]:
    """Utterance id -> verbatim transcript, for every LibriSpeech file in the shared data."""
    libri = shared_data_dir() / "background" / "speech" / "librispeech"
    out: dict[str, str] = {}
    for t in sorted(libri.glob("*/transcripts.txt")):
        for line in t.read_text().splitlines():
            if line.strip():
                uid, _, text = line.partition(" ")
                out[uid] = text.strip()
    return out


def files_containing(word: str) -> set[str]:
    """Stems of background files whose transcript contains ``word`` (excluded from FA counts)."""
    pat = re.compile(rf"\b{re.escape(word.upper())}\b")
    return {uid for uid, text in librispeech_transcripts().items() if pat.search(text)}


def real_keyword_files(folder: str) -> list[Path]:
    return sorted((shared_data_dir() / "real_keywords" / folder).glob("*.flac"))


def speech_commands_speaker(path: Path) -> str:
    return path.name.split("_nohash_")[0].rsplit("_", 1)[-1] if "_nohash_" in path.name else ""


def speech_commands_split(path: Path) -> str:
    """Speech Commands (official *test* set here) split by speaker hash; eval ~30%."""
    f = _hash_fraction("sc:" + speech_commands_speaker(path))
    return "eval" if f < 0.3 else "dev" if f < 0.4 else "train"
