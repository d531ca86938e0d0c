"""The matcher dev words: held out of distillation material, and never eval speakers."""

from __future__ import annotations

from conftest import requires_shared_data
from polywake.data import splits


def test_matcher_dev_word_names() -> None:
    assert splits.is_matcher_dev_word("left")
    assert splits.is_matcher_dev_word("ar:cancel")
    # the same word in the other set is material: "cancel" is not a Speech Commands dev word
    assert not splits.is_matcher_dev_word("cancel")
    assert not splits.is_matcher_dev_word("yes")


@requires_shared_data
def test_matcher_dev_files_avoid_eval_speakers_and_material() -> None:
    from polywake.train.pretrain import matcher_dev_files, real_word_items

    dev = matcher_dev_files()
    assert set(dev) == set(splits.MATCHER_DEV_WORDS["sc"]) | {
        "ar:" + w for w in splits.MATCHER_DEV_WORDS["ar"]}
    eval_speakers = {s for _, _, s in real_word_items("eval")}
    for word, clips in dev.items():
        assert len(clips) >= 100, word
        assert not {s for _, s in clips} & eval_speakers, word
    # every dev clip is one the held-out material filter recognises
    train_words = {w for _, w, _ in real_word_items("train")}
    assert {w for w in train_words if splits.is_matcher_dev_word(w)} == set(dev)
