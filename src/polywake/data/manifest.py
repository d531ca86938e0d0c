"""JSONL clip manifests (lhotse-like): one JSON object per line, one line per audio clip.

A record (:class:`ClipRecord`)::

    {"id": "pos-3fa2c1d09e1b", "path": "clips/ab/pos-3fa2c1d09e1b.flac", "duration": 0.93,
     "text": "Hey Samuel!", "word": "hey samuel", "kind": "positive",
     "engine": "espeak-ng", "voice": "espeak-ng:en-us+f3", "speaker": "espeak-ng+f3",
     "split": "train", "rate": 1.1, "pitch": 0.9, "augment": null, "nbytes": 20311,
     "negative_for": null, "extra": {}}

* ``kind``: ``positive`` | ``confusable`` | ``sentence`` | ``pretrain-word`` | ``background``.
* ``word``: the target the clip is a positive of (wake phrase, or the word for
  ``pretrain-word``); ``None`` for negatives, whose ``negative_for`` names the phrase they were
  made to resemble.
* ``path`` is relative to the manifest's folder, so a set can be moved as a whole.
* ``augment``: the list of transform parameters (:attr:`augment.Compose.recipe`) or ``None``.

API::

    write_manifest(path, records)                 # atomic full rewrite
    append_records(path, records)                 # crash-tolerant incremental append
    load_manifest(path) -> list[ClipRecord]       # skips a torn last line from a killed run
    filter_records(records, kind=, split=, word=, engine=, negative_for=) -> list[ClipRecord]
    ManifestCache(path).done(record_id) -> bool   # for incremental (resumable) builds
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..audio import atomic_write_bytes
from ..errors import PolywakeError

log = logging.getLogger(__name__)

KINDS = ("positive", "confusable", "sentence", "pretrain-word", "background")
SPLITS = ("train", "dev", "test", "eval")


class ManifestError(PolywakeError, ValueError):
    """A manifest file or record that cannot be used."""


@dataclass
class ClipRecord:
    id: str
    path: str
    duration: float
    text: str
    kind: str
    split: str
    word: str | None = None
    engine: str | None = None
    voice: str | None = None
    speaker: str | None = None
    rate: float | None = None
    pitch: float | None = None
    augment: list[dict[str, Any]] | None = None
    nbytes: int | None = None
    negative_for: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id or not isinstance(self.id, str):
            raise ManifestError("clip record without an id")
        if self.kind not in KINDS:
            raise ManifestError(f"clip {self.id}: kind {self.kind!r} not one of {KINDS}")
        if self.split not in SPLITS:
            raise ManifestError(f"clip {self.id}: split {self.split!r} not one of {SPLITS}")
        if self.kind in ("positive", "pretrain-word") and not self.word:
            raise ManifestError(f"clip {self.id}: a {self.kind} clip needs its word")

    @property
    def is_positive(self) -> bool:
        return self.kind == "positive"

    def abspath(self, root: str | os.PathLike) -> Path:
        """The audio file, given the manifest's folder (or the manifest path itself)."""
        r = Path(root)
        return (r.parent if r.suffix == ".jsonl" else r) / self.path

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipRecord:
        known = {f.name for f in fields(cls)}
        missing = {"id", "path", "duration", "text", "kind", "split"} - set(d)
        if missing:
            raise ManifestError(f"record {d.get('id', '?')}: missing {sorted(missing)}")
        rec = cls(**{k: v for k, v in d.items() if k in known})
        # Unknown keys from newer writers are kept, not dropped.
        rec.extra.update({k: v for k, v in d.items() if k not in known})
        return rec


def write_manifest(path: str | os.PathLike, records: Iterable[ClipRecord]) -> Path:
    """Write all records atomically (readers see the old or the new file, never a mix)."""
    text = "".join(r.to_json() + "\n" for r in records)
    return atomic_write_bytes(path, text.encode("utf-8"))


def append_records(path: str | os.PathLike, records: Iterable[ClipRecord]) -> None:
    """Append records and fsync. A kill mid-write can leave at most one torn last line, which
    :func:`load_manifest` skips; the clip it described is re-made on the next run."""
    lines = "".join(r.to_json() + "\n" for r in records)
    if not lines:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as fh:
        # A torn line from a killed run must not swallow the first new record.
        if fh.tell() > 0 and not _ends_with_newline(p):
            fh.write("\n")
        fh.write(lines)
        fh.flush()
        os.fsync(fh.fileno())


def _ends_with_newline(p: Path) -> bool:
    with open(p, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def load_manifest(path: str | os.PathLike, *, strict: bool = False) -> list[ClipRecord]:
    """Read a JSONL manifest. Later records with the same id replace earlier ones (appends
    after a resume). Unreadable lines are skipped with a warning unless ``strict``."""
    p = Path(path)
    if not p.exists():
        raise ManifestError(f"{p}: no such manifest")
    out: dict[str, ClipRecord] = {}
    with open(p, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = ClipRecord.from_dict(json.loads(line))
            except (json.JSONDecodeError, ManifestError, TypeError) as e:
                if strict:
                    raise ManifestError(f"{p}:{n}: bad record ({e})") from e
                log.warning("%s:%d: skipping unreadable record (%s)", p, n, e)
                continue
            out[rec.id] = rec
    return list(out.values())


def filter_records(records: Iterable[ClipRecord], *, kind: str | Iterable[str] | None = None,
                   split: str | Iterable[str] | None = None, word: str | None = None,
                   engine: str | Iterable[str] | None = None,
                   negative_for: str | None = None) -> list[ClipRecord]:
    """Records matching every given criterion (a string or a collection of accepted values)."""
    def accept(value: Any, want: str | Iterable[str] | None) -> bool:
        if want is None:
            return True
        return value == want if isinstance(want, str) else value in set(want)

    return [r for r in records
            if accept(r.kind, kind) and accept(r.split, split) and accept(r.engine, engine)
            and (word is None or r.word == word)
            and (negative_for is None or r.negative_for == negative_for)]


class ManifestCache:
    """What an earlier (possibly killed) run already made: a record counts as done only if its
    file exists with the recorded size, so a half-finished set resumes where it stopped."""

    def __init__(self, manifest_path: str | os.PathLike) -> None:
        self.path = Path(manifest_path)
        self.records: dict[str, ClipRecord] = {}
        if self.path.exists():
            for r in load_manifest(self.path):
                self.records[r.id] = r

    def done(self, record_id: str) -> bool:
        r = self.records.get(record_id)
        if r is None:
            return False
        f = r.abspath(self.path)
        try:
            return f.stat().st_size == r.nbytes if r.nbytes is not None else f.exists()
        except OSError:
            return False

    def add(self, records: Iterable[ClipRecord]) -> None:
        recs = list(records)
        append_records(self.path, recs)
        self.records.update({r.id: r for r in recs})

    def finalize(self, keep: Iterable[str] | None = None) -> Path:
        """Rewrite the manifest atomically, sorted by id, dropping records whose files are gone
        (and, with ``keep``, records not in it)."""
        ids = sorted(self.records if keep is None else set(keep) & set(self.records))
        recs = [self.records[i] for i in ids if self.done(i)]
        return write_manifest(self.path, recs)
