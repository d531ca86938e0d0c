"""Negatives for a wake phrase: what sounds close to it but is NOT it.

Four sources, each returned as :class:`Negative` (text + kind + source):

* ``cmu``: CMU-dictionary words 1-2 phoneme edits from a phrase word ("samuel" -> "manuel"),
  put back into the phrase ("hey manuel");
* ``partial``: parts of a multi-word phrase ("hey", "samuel", "hey sam");
* ``hand``: hand-written near-misses for the product words ("alexis", "a lexus", "computed");
* ``sentence``: ordinary sentences from templates and the pretraining vocabulary.

API::

    text_variants(phrase) -> list[str]            # "hey samuel" -> "Hey Samuel!", "hey, samuel"...
    neighbours(word, max_distance=2, limit=40) -> list[str]
    partial_phrases(phrase) -> list[str]
    sentences(n=300, seed=0) -> list[str]
    negatives_for(phrase, *, protect=PRODUCT_WORDS, n_sentences=300, n_neighbours=40, seed=0)
        -> list[Negative]

Nothing returned is the phrase itself, a text variant of it, or pronounced exactly like it
(or like any phrase in ``protect``): those would be positives mislabelled as negatives.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import PolywakeError
from . import vocab
from .splits import PRODUCT_WORDS


class ConfusableError(PolywakeError, ValueError):
    """A phrase that cannot be used to build negatives."""


@dataclass(frozen=True)
class Negative:
    text: str
    kind: str  # "confusable" or "sentence" (the manifest's kinds)
    source: str  # "cmu", "partial", "hand", "sentence"


# Near-misses that a dictionary search misses: splits across word boundaries, brand names,
# and common words that share the stressed syllable.
HAND_WRITTEN: dict[str, tuple[str, ...]] = {
    "alexa": ("alexis", "alexia", "a lexus", "lexus", "election", "alex", "alexander", "alaska",
              "electra", "elixir", "alexei", "relax a", "select a", "a letter", "lexa",
              "alexa's friend", "unless a", "electric", "the lexicon", "alex ate"),
    "echo": ("echoes", "eco", "gecko", "ego", "deco", "echoing", "etch", "techno", "chico",
             "echelon", "decko", "eggo", "x o", "ekg", "hecko", "economy", "neck oh", "check on"),
    "amazon": ("amazing", "amazed", "amazement", "a mason", "mason", "amaze on", "a maze",
               "amass on", "a season", "a blazin'", "amazingly", "am I on", "amazonas",
               "a raisin", "emblazon", "a mazda", "amazon's"),
    "computer": ("computed", "compute", "commuter", "computing", "competitor", "cucumber",
                 "comp you there", "comport", "compost her", "compuserve", "come to her",
                 "commuter train", "compete her", "compiler", "composer", "computation",
                 "computers", "commute her"),
    "hey samuel": ("hey sam", "samuel", "hey", "hey manuel", "hey sammy", "hey samson",
                   "hey samantha", "hey camel", "say samuel", "hey sam you will", "hey sample",
                   "hey samurai", "hey emmanuel", "hey daniel", "hey salmon", "hey simon",
                   "hey mule", "a samuel", "hey sam you'll see"),
}
# "amazon's" and "computers" contain the word itself; kept on purpose: the end of the
# word matters, and detectors that fire on "computers" annoy users.

# Sentence templates: {S} subject, {V} verb phrase, {O} object, {A} adverbial, {W} vocab word.
_TEMPLATES = (
    "{S} {V} {O} {A}", "{S} {V} {O}", "did {S} {V} {O} {A}?", "please {V} {O}",
    "{A}, {S} {V} {O}", "hey, can you {V} {O}?", "{S} said the {W} was {W}",
    "I think the {W} is {W}", "what about the {W}?", "the {W} and the {W} {A}",
    "{S} never {V} {O} because of the {W}", "tell me about the {W}", "{W} {W} {W} {W}",
    "okay, {V} {O} and then {V} {O}", "where is the {W}?", "{S} {V} {O}, right?",
)
_SUBJECTS = ("I", "you", "we", "they", "she", "he", "my brother", "the kids", "our neighbour",
             "the teacher", "my friend", "somebody", "the doctor", "everyone")
_VERBS = ("turned on", "turned off", "found", "bought", "lost", "played", "opened", "closed",
          "moved", "cleaned", "fixed", "painted", "borrowed", "wanted", "called", "watched",
          "cooked", "carried", "forgot", "checked")
_OBJECTS = ("the lights", "the kitchen door", "a new table", "the music", "the garden", "dinner",
            "the window", "my phone", "the weather report", "a cup of tea", "the radio",
            "the heating", "some bread", "the car", "the news", "the blue box")
_ADVERBIALS = ("this morning", "yesterday", "after lunch", "at night", "last week", "again",
               "right now", "before the meeting", "on the weekend", "in the afternoon",
               "every day", "a minute ago")


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def text_variants(phrase: str) -> list[str]:
    """Ways to write ``phrase`` that TTS reads differently (case, commas, ? and !)."""
    p = _norm(phrase)
    if not p:
        raise ConfusableError(f"phrase {phrase!r} has no words")
    words = p.split()
    title = " ".join(w.capitalize() for w in words)
    out = [p, title, f"{title}!", f"{title}?", f"{p}.", f"{title}..."]
    if len(words) > 1:
        out += [f"{words[0]}, {' '.join(words[1:])}", f"{words[0].capitalize()}, "
                f"{' '.join(w.capitalize() for w in words[1:])}!"]
    return list(dict.fromkeys(out))


def _pron_set(text: str) -> set[tuple[str, ...]]:
    """Every pronunciation of a phrase (all combinations), empty if a word is unknown."""
    combos: list[tuple[str, ...]] = [()]
    for w in _norm(text).split():
        try:
            alts = vocab.pronunciations(w)
        except vocab.VocabError:
            return set()
        combos = [c + p for c in combos for p in alts][:64]
    return set(combos)


@functools.cache
def _by_length() -> dict[int, list[tuple[str, tuple[str, ...]]]]:
    """CMU words grouped by phoneme count, plain alphabetic words only (no acronyms)."""
    out: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
    for word, prons in vocab._cmu().items():
        if not re.fullmatch(r"[a-z]{2,}", word):
            continue
        for pron in {vocab._strip(p) for p in prons}:
            if len(pron) <= len(word) + 1:  # more phonemes than letters: an acronym
                out.setdefault(len(pron), []).append((word, pron))
    return out


@functools.cache
def _frequent_rank() -> dict[str, int]:
    return {w: i for i, w in enumerate(dict.fromkeys(vocab._FREQUENT + vocab._DIVERSE))}


@functools.cache
def neighbours(word: str, max_distance: int = 2, limit: int = 40) -> list[str]:
    """CMU words 1..max_distance phoneme edits from ``word``; closest and most frequent first."""
    targets = _pron_set(word)
    if not targets:
        return []
    rank = _frequent_rank()
    found: dict[str, int] = {}
    for t in targets:
        for n in range(len(t) - max_distance, len(t) + max_distance + 1):
            for w, pron in _by_length().get(n, ()):
                if w == word:
                    continue
                d = vocab.edit_distance(pron, t)
                if d <= max_distance:
                    found[w] = min(d, found.get(w, d))
    # Distance 0 = homophone of the word: a positive, never a negative.
    homophones = {w for w, d in found.items() if d == 0}
    cands = [w for w in found if w not in homophones]
    cands.sort(key=lambda w: (found[w], rank.get(w, len(rank)), len(w), w))
    return cands[:limit]


def partial_phrases(phrase: str) -> list[str]:
    """Each word of a multi-word phrase alone, and the phrase cut inside its last word."""
    words = _norm(phrase).split()
    if len(words) < 2:
        return []
    out = list(dict.fromkeys(words))
    last = words[-1]
    if len(last) >= 5:
        out.append(" ".join(words[:-1] + [last[: max(3, len(last) // 2)]]))
    out.append(" ".join(words[:-1]))
    return list(dict.fromkeys(out))


def sentences(n: int = 300, seed: int = 0, avoid: Iterable[str] = PRODUCT_WORDS) -> list[str]:
    """``n`` distinct ordinary sentences (templates + pretraining vocabulary), seeded."""
    rng = random.Random(seed)
    words = vocab.pretrain_vocabulary()
    avoid_words = {w for a in avoid for w in _norm(a).split()} - {"hey"}
    pools = {"S": _SUBJECTS, "V": _VERBS, "O": _OBJECTS, "A": _ADVERBIALS, "W": words}
    out: dict[str, None] = {}
    tries = 0
    while len(out) < n and tries < n * 50:
        tries += 1
        tpl = rng.choice(_TEMPLATES)
        s = re.sub(r"\{(\w)\}", lambda m: rng.choice(pools[m.group(1)]), tpl)
        s = s[0].upper() + s[1:]
        if avoid_words & set(_norm(s).split()):
            continue
        out[s] = None
    return list(out)


def negatives_for(phrase: str, *, protect: Iterable[str] = PRODUCT_WORDS,
                  n_sentences: int = 300, n_neighbours: int = 40, seed: int = 0
                  ) -> list[Negative]:
    """All negatives for ``phrase`` (deterministic for a seed). ``protect`` lists the other
    targets trained at the same time: a negative that is one of them would teach the model to
    reject a positive, so those are dropped too."""
    p = _norm(phrase)
    if not p:
        raise ConfusableError(f"phrase {phrase!r} has no words")
    protected = {p} | {_norm(x) for x in protect}
    banned_text = {_norm(v) for x in protected for v in text_variants(x)}
    banned_pron = set().union(*(_pron_set(x) for x in protected))

    cands: list[Negative] = []
    words = p.split()
    for i, w in enumerate(words):
        if w == "hey" and len(words) > 1:
            continue  # "hey" + anything is everywhere; its partial form is enough
        for nb in neighbours(w, 2, n_neighbours):
            text = " ".join(words[:i] + [nb] + words[i + 1:])
            cands.append(Negative(text, "confusable", "cmu"))
            if len(words) > 1:
                cands.append(Negative(nb, "confusable", "cmu"))
    cands += [Negative(t, "confusable", "partial") for t in partial_phrases(p)]
    cands += [Negative(t, "confusable", "hand") for t in HAND_WRITTEN.get(p, ())]
    cands += [Negative(t, "sentence", "sentence")
              for t in sentences(n_sentences, seed, avoid=protected)]

    out: list[Negative] = []
    seen: set[str] = set()
    for c in cands:
        key = _norm(c.text)
        if not key or key in seen or key in banned_text:
            continue
        if _pron_set(c.text) & banned_pron:
            continue
        seen.add(key)
        out.append(c)
    return out
