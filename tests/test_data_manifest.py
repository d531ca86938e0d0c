"""JSONL manifests: round trip, crash tolerance, incremental cache, filters."""

from __future__ import annotations

import pytest

from polywake.data.manifest import (
    ClipRecord,
    ManifestCache,
    ManifestError,
    append_records,
    filter_records,
    load_manifest,
    write_manifest,
)


def _rec(i: int, kind: str = "positive", split: str = "train", **kw) -> ClipRecord:
    word = kw.pop("word", "alexa" if kind == "positive" else None)
    return ClipRecord(id=f"c{i}", path=f"clips/c{i}.flac", duration=1.0, text="alexa",
                      kind=kind, split=split, word=word, engine="espeak-ng", **kw)


def test_round_trip_and_unknown_keys_kept(tmp_path):
    recs = [_rec(1), _rec(2, "confusable", negative_for="alexa", augment=[{"name": "Gain"}])]
    p = write_manifest(tmp_path / "m.jsonl", recs)
    back = load_manifest(p)
    assert back == recs
    p.write_text(p.read_text().replace('"extra":{}', '"extra":{},"future":1', 1))
    assert load_manifest(p)[0].extra == {"future": 1}


def test_torn_last_line_is_skipped_and_append_recovers(tmp_path):
    p = tmp_path / "m.jsonl"
    write_manifest(p, [_rec(1)])
    with open(p, "a") as fh:
        fh.write('{"id": "c2", "path": "clips/')  # a run killed mid-write
    assert [r.id for r in load_manifest(p)] == ["c1"]
    with pytest.raises(ManifestError):
        load_manifest(p, strict=True)
    append_records(p, [_rec(3)])
    assert [r.id for r in load_manifest(p)] == ["c1", "c3"]


def test_invalid_records_rejected():
    with pytest.raises(ManifestError, match="kind"):
        _rec(1, kind="maybe")
    with pytest.raises(ManifestError, match="split"):
        _rec(1, split="holdout")
    with pytest.raises(ManifestError, match="needs its word"):
        _rec(1, word=None)


def test_cache_counts_a_clip_done_only_if_file_matches(tmp_path):
    m = tmp_path / "m.jsonl"
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "c1.flac").write_bytes(b"x" * 10)
    (tmp_path / "clips" / "c2.flac").write_bytes(b"x" * 5)  # truncated
    cache = ManifestCache(m)
    cache.add([_rec(1, nbytes=10), _rec(2, nbytes=10), _rec(3, nbytes=10)])
    cache = ManifestCache(m)
    assert [cache.done(f"c{i}") for i in (1, 2, 3, 4)] == [True, False, False, False]
    cache.finalize()
    assert [r.id for r in load_manifest(m)] == ["c1"]


def test_filter():
    recs = [_rec(1), _rec(2, "sentence", "dev"), _rec(3, "confusable", negative_for="echo")]
    assert [r.id for r in filter_records(recs, kind="positive")] == ["c1"]
    assert [r.id for r in filter_records(recs, kind=("sentence", "confusable"))] == ["c2", "c3"]
    assert [r.id for r in filter_records(recs, split="dev")] == ["c2"]
    assert [r.id for r in filter_records(recs, negative_for="echo")] == ["c3"]
    assert [r.id for r in filter_records(recs, word="alexa")] == ["c1"]
