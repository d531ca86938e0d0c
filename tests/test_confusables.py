"""Confusable negatives and the pretraining vocabulary (both phonetic, both CMU-based)."""

from __future__ import annotations

import pytest

from polywake.data import confusables as C
from polywake.data import vocab
from polywake.data.splits import EXCLUDED_FROM_PRETRAINING, PRODUCT_WORDS


@pytest.mark.parametrize("phrase", ["alexa", "hey samuel"])
def test_negatives_never_the_phrase_or_its_variants(phrase):
    negs = C.negatives_for(phrase, n_sentences=50)
    norm = {C._norm(n.text) for n in negs}
    for v in C.text_variants(phrase):
        assert C._norm(v) not in norm
    target = C._pron_set(phrase)
    assert not any(C._pron_set(n.text) & target for n in negs)  # no homophones either
    for p in PRODUCT_WORDS:  # nor any other product word
        assert C._norm(p) not in norm
    assert {n.kind for n in negs} == {"confusable", "sentence"}


def test_hey_samuel_partials_and_hand_written():
    texts = {n.text for n in C.negatives_for("hey samuel", n_sentences=0)}
    assert {"hey", "samuel", "hey sam", "hey manuel"} <= texts
    texts = {n.text for n in C.negatives_for("alexa", n_sentences=0)}
    assert {"alexis", "election", "a lexus"} <= texts


def test_neighbours_are_close_but_not_homophones():
    nb = C.neighbours("computer")
    assert "commuter" in nb and "computer" not in nb
    for w in nb:
        d = min(vocab.edit_distance(p, q) for p in vocab.pronunciations(w)
                for q in vocab.pronunciations("computer"))
        assert 1 <= d <= 2


def test_sentences_seeded_and_avoid_wake_words():
    a, b = C.sentences(40, seed=3), C.sentences(40, seed=3)
    assert a == b and len(set(a)) == 40
    words = {w for s in a for w in C._norm(s).split()}
    assert not words & {"alexa", "echo", "amazon", "computer", "samuel"}


def test_text_variants():
    v = C.text_variants("hey samuel")
    assert "Hey Samuel!" in v and "hey, samuel" in v and "Hey Samuel?" in v


def test_vocabulary_size_exclusions_and_determinism():
    words = vocab.pretrain_vocabulary()
    assert len(words) >= 600 and words == sorted(words) == vocab.pretrain_vocabulary()
    assert not set(words) & EXCLUDED_FROM_PRETRAINING
    for bad in ("you", "view", "few", "glasses", "review", "hey", "computers"):
        assert bad not in words and vocab.is_excluded(bad)
    assert "say" in words  # neighbours of "hey" are allowed
    # No word within one phoneme edit of a protected word.
    prot = [p for w in ("alexa", "echo", "amazon", "jarvis", "mirror", "athena")
            for p in vocab.pronunciations(w)]
    for w in words:
        assert all(vocab.edit_distance(vocab.pronunciations(w)[0], p) > 1 for p in prot), w
    # No homophone classes.
    assert len({tuple(vocab.phonemes(w)) for w in words}) == len(words)
    assert len(vocab.pretrain_vocabulary(100)) == 100


def test_phonemes():
    assert vocab.phonemes("Hey Samuel") == ["HH", "EY", "S", "AE", "M", "Y", "UW", "L"]
    assert len(vocab.PHONEMES) == 39 and "ZH" in vocab.PHONEMES
    assert all(1 <= i <= 39 for i in vocab.phoneme_index("computer"))
    with pytest.raises(vocab.VocabError):
        vocab.phonemes("qwxzv")
