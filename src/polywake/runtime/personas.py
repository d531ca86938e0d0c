"""Runtime config: which wake word wakes which persona, and where its requests go.

The file is TOML (read with :mod:`tomllib`); see docs/RUNTIME.md for the format. Every mistake
becomes a :class:`~polywake.errors.ConfigError` that names the file and the line, also for
semantic errors (a sensitivity of 2, a word the model does not know) that tomllib cannot see:
:func:`toml_key_lines` maps each key of the (already valid) text to the line that set it.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib  # type: ignore[no-redef]

KeyPath = tuple[str | int, ...]

# Keys of a persona table that polywake interprets; every other key is a free setting that
# is handed to the persona's handler unchanged (explicit_language, voice, ...).
PERSONA_KEYS = ("name", "words", "handler", "sensitivity", "timeout_s")
HANDLER_KINDS = ("python", "command", "url")
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass(frozen=True)
class ListenSettings:
    """The ``[listen]`` table: how a request is cut out of the stream and delivered."""

    max_request_s: float = 8.0        # whole request, pre-roll included
    preroll_s: float = 0.25           # audio kept before the wake word's start
    silence_s: float = 0.8            # trailing silence that ends a request
    speech_timeout_s: float = 3.0     # no speech this long after the wake word: end (no_speech)
    handler_timeout_s: float = 10.0
    max_in_flight: int = 8            # handlers running (or hung) at once before new ones drop
    refractory_s: float | None = None  # None: the Detector's default
    wake_during_request: str = "split"  # or "ignore"


@dataclass(frozen=True)
class HandlerSpec:
    """Where a persona's requests go. ``where`` is "file:line" for later error messages."""

    kind: str                       # "python" | "command" | "url"
    target: str | tuple[str, ...]   # "module:function" | argv | URL
    headers: Mapping[str, str] = field(default_factory=dict)
    where: str = "<config>"

    def describe(self) -> str:
        t = shlex.join(self.target) if isinstance(self.target, tuple) else self.target
        return f"{self.kind}:{t}" if self.kind != "url" else t


@dataclass(frozen=True)
class Persona:
    id: str
    name: str
    words: tuple[str, ...]
    handler: HandlerSpec | None = None
    sensitivity: float | None = None  # 0..1; None: the model card's threshold
    timeout_s: float | None = None    # None: [listen] handler_timeout_s
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeConfig:
    path: Path | None
    personas: tuple[Persona, ...]
    listen: ListenSettings = field(default_factory=ListenSettings)
    _lines: Mapping[KeyPath, int] = field(default_factory=dict, repr=False, compare=False)

    def where(self, key: KeyPath) -> str:
        return _where(self.path, self._lines, key)

    def persona_for(self, word: str) -> Persona | None:
        w = normalize_word(word)
        for p in self.personas:
            if w in (normalize_word(x) for x in p.words):
                return p
        return None

    @property
    def words(self) -> list[str]:
        return [w for p in self.personas for w in p.words]

    def resolve_words(self, model_words: Iterable[str]) -> dict[str, str]:
        """Map each configured word to the model's spelling of it; a word the model does not
        know is a ConfigError at the line that names it."""
        by_norm = {normalize_word(w): w for w in model_words}
        out: dict[str, str] = {}
        for p in self.personas:
            for i, w in enumerate(p.words):
                m = by_norm.get(normalize_word(w))
                if m is None:
                    key: KeyPath = ("personas", p.id, "words", i)
                    if (key not in self._lines) and ("personas", p.id, "words") in self._lines:
                        key = ("personas", p.id, "words")
                    raise ConfigError(
                        f"{self.where(key)}: persona {p.id!r}: the model has no wake word {w!r}"
                        f" (it knows {sorted(by_norm.values())})")
                out[w] = m
        return out

    def sensitivities(self, model_words: Iterable[str]) -> dict[str, float]:
        """{model word: sensitivity} for the words whose persona sets one; the Detector maps
        each through the model card's calibration (see polywake.decisions)."""
        mapping = self.resolve_words(model_words)
        return {mapping[w]: p.sensitivity for p in self.personas if p.sensitivity is not None
                for w in p.words}


def normalize_word(word: str) -> str:
    """"Hey_Samuel", "hey  samuel" and "hey-samuel" name the same wake word."""
    return " ".join(re.split(r"[\s_\-]+", word.strip().lower())).strip()


def load_config(path: str | os.PathLike) -> RuntimeConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config ({e})") from e
    return parse_config(text, p)


def parse_config(text: str, path: str | os.PathLike | None = None) -> RuntimeConfig:
    p = None if path is None else Path(path)
    name = str(p) if p is not None else "<config>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib says "... (at line 3, column 7)"; lead with the line like every other error.
        msg = str(e)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))  # "at end of document"
        raise ConfigError(f"{name}:{line}: invalid TOML: {msg}") from None
    try:
        lines = toml_key_lines(text)
    except Exception:  # noqa: BLE001 - line lookup is a nicety; never hide the real error
        lines = {}
    return _Validator(p, lines).config(data)


class _Validator:
    def __init__(self, path: Path | None, lines: Mapping[KeyPath, int]) -> None:
        self.path = path
        self.lines = lines

    def fail(self, key: KeyPath, msg: str) -> ConfigError:
        return ConfigError(f"{_where(self.path, self.lines, key)}: {msg}")

    def unknown(self, key: KeyPath, allowed: Iterable[str], what: str) -> ConfigError:
        hint = difflib.get_close_matches(str(key[-1]), list(allowed), n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else f" (known: {', '.join(allowed)})"
        return self.fail(key, f"unknown key {key[-1]!r} in {what}{extra}")

    def config(self, data: dict[str, Any]) -> RuntimeConfig:
        for k in data:
            if k not in ("listen", "personas"):
                raise self.unknown((k,), ("listen", "personas"), "the top level")
        listen = self.listen(data.get("listen", {}))
        raw = data.get("personas")
        if raw is None:
            raise self.fail((), "no [personas.<id>] tables: nothing to route wake words to")
        if not isinstance(raw, dict):
            raise self.fail(("personas",), "'personas' must be a table of [personas.<id>] tables")
        if not raw:
            raise self.fail(("personas",), "[personas] is empty")
        personas: list[Persona] = []
        seen: dict[str, str] = {}
        for pid, body in raw.items():
            persona = self.persona(pid, body)
            for i, w in enumerate(persona.words):
                n = normalize_word(w)
                if n in seen:
                    raise self.fail(("personas", pid, "words", i),
                                    f"wake word {w!r} is already used by persona {seen[n]!r}; "
                                    f"a word wakes one persona")
                seen[n] = pid
            personas.append(persona)
        return RuntimeConfig(self.path, tuple(personas), listen, MappingProxyType(dict(self.lines)))

    def number(self, key: KeyPath, v: Any, lo: float, hi: float, *, integer: bool = False
               ) -> float:
        ok_types = (int,) if integer else (int, float)
        if isinstance(v, bool) or not isinstance(v, ok_types):
            kind = "an integer" if integer else "a number"
            raise self.fail(key, f"{'.'.join(map(str, key))} must be {kind}, got {v!r}")
        if not lo <= v <= hi:
            raise self.fail(key, f"{'.'.join(map(str, key))} must be between {lo:g} and {hi:g}, "
                                 f"got {v!r}")
        return v

    def plain(self, key: KeyPath, v: Any) -> None:
        # Settings travel to handlers as JSON: TOML dates and times have no JSON form.
        if isinstance(v, dict):
            for k, x in v.items():
                self.plain(key + (k,), x)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                self.plain(key + (i,), x)
        elif not isinstance(v, (str, int, float, bool)):
            raise self.fail(key, f"{'.'.join(map(str, key))}: {type(v).__name__} values cannot "
                                 f"be passed to handlers (use a string)")

    def listen(self, raw: Any) -> ListenSettings:
        if not isinstance(raw, dict):
            raise self.fail(("listen",), "'listen' must be a table")
        d = ListenSettings()
        allowed = list(d.__dataclass_fields__)
        limits = {"max_request_s": (0.5, 120.0), "preroll_s": (0.0, 5.0),
                  "silence_s": (0.1, 10.0), "speech_timeout_s": (0.2, 60.0),
                  "handler_timeout_s": (0.05, 3600.0), "refractory_s": (0.0, 60.0)}
        out: dict[str, Any] = {}
        for k, v in raw.items():
            key = ("listen", k)
            if k not in allowed:
                raise self.unknown(key, allowed, "[listen]")
            if k in limits:
                out[k] = float(self.number(key, v, *limits[k]))
            elif k == "max_in_flight":
                out[k] = int(self.number(key, v, 1, 256, integer=True))
            elif k == "wake_during_request":
                if v not in ("split", "ignore"):
                    raise self.fail(key, f"listen.wake_during_request must be \"split\" or "
                                         f"\"ignore\", got {v!r}")
                out[k] = v
        return ListenSettings(**out)

    def persona(self, pid: str, body: Any) -> Persona:
        base: KeyPath = ("personas", pid)
        if not isinstance(body, dict):
            raise self.fail(base, f"personas.{pid} must be a table ([personas.{pid}])")
        settings: dict[str, Any] = {}
        for k in body:
            if k in PERSONA_KEYS:
                continue
            # A typo of a reserved key must not silently become a "free setting".
            if difflib.get_close_matches(k, PERSONA_KEYS, n=1, cutoff=0.8):
                raise self.unknown(base + (k,), PERSONA_KEYS, f"persona {pid!r}")
            self.plain(base + (k,), body[k])
            settings[k] = body[k]
        name = body.get("name", pid)
        if not isinstance(name, str) or not name.strip():
            raise self.fail(base + ("name",), f"persona {pid!r}: name must be a non-empty string")
        if "words" not in body:
            raise self.fail(base, f"persona {pid!r} has no 'words' (the wake words that wake it)")
        words = body["words"]
        if isinstance(words, str):
            words = [words]
        if not isinstance(words, list) or not words:
            raise self.fail(base + ("words",),
                            f"persona {pid!r}: words must be a string or a non-empty list")
        for i, w in enumerate(words):
            if not isinstance(w, str) or not normalize_word(w):
                raise self.fail(base + ("words", i),
                                f"persona {pid!r}: wake word must be a non-empty string, got {w!r}")
        sens = body.get("sensitivity")
        if sens is not None:
            sens = float(self.number(base + ("sensitivity",), sens, 0.0, 1.0))
        timeout = body.get("timeout_s")
        if timeout is not None:
            timeout = float(self.number(base + ("timeout_s",), timeout, 0.05, 3600.0))
        handler = None
        if "handler" in body:
            handler = self.handler(base + ("handler",), body["handler"])
        return Persona(pid, name, tuple(words), handler, sens, timeout,
                       MappingProxyType(settings))

    def handler(self, key: KeyPath, raw: Any) -> HandlerSpec:
        where = _where(self.path, self.lines, key)
        if isinstance(raw, str):
            s = raw.strip()
            if not s:
                raise self.fail(key, "handler must not be empty")
            if re.match(r"^https?://", s):
                return HandlerSpec("url", s, where=where)
            if _ENTRY_POINT.match(s):
                return HandlerSpec("python", s, where=where)
            return HandlerSpec("command", self.argv(key, s), where=where)
        if not isinstance(raw, dict):
            raise self.fail(key, "handler must be a string or a table such as "
                                 "{ python = \"module:function\" }")
        kinds = [k for k in HANDLER_KINDS if k in raw]
        for k in raw:
            if k not in (*HANDLER_KINDS, "headers"):
                raise self.unknown(key + (k,), (*HANDLER_KINDS, "headers"), "handler")
        if len(kinds) != 1:
            raise self.fail(key, "handler needs exactly one of python = \"module:function\", "
                                 "command = [...], url = \"http://...\"")
        kind = kinds[0]
        v = raw[kind]
        if "headers" in raw and kind != "url":
            raise self.fail(key + ("headers",), "headers only apply to url handlers")
        if kind == "python":
            if not isinstance(v, str) or not _ENTRY_POINT.match(v.strip()):
                raise self.fail(key + (kind,), f"python handler must look like "
                                               f"\"package.module:function\", got {v!r}")
            return HandlerSpec("python", v.strip(), where=where)
        if kind == "command":
            if isinstance(v, str):
                return HandlerSpec("command", self.argv(key + (kind,), v), where=where)
            if (not isinstance(v, list) or not v
                    or not all(isinstance(a, str) and a for a in v)):
                raise self.fail(key + (kind,), "command must be a non-empty list of strings "
                                               "(or one string, split like a shell would)")
            return HandlerSpec("command", tuple(v), where=where)
        if not isinstance(v, str) or not re.match(r"^https?://[^\s/]+", v):
            raise self.fail(key + (kind,), f"url must be an http:// or https:// URL, got {v!r}")
        headers = raw.get("headers", {})
        if not isinstance(headers, dict) or not all(
                isinstance(h, str) and isinstance(x, str) for h, x in headers.items()):
            raise self.fail(key + ("headers",), "headers must be a table of strings")
        return HandlerSpec("url", v, MappingProxyType(dict(headers)), where=where)

    def argv(self, key: KeyPath, s: str) -> tuple[str, ...]:
        try:
            argv = tuple(shlex.split(s))
        except ValueError as e:
            raise self.fail(key, f"cannot split command {s!r}: {e}") from None
        if not argv:
            raise self.fail(key, "command is empty")
        return argv


def _where(path: Path | None, lines: Mapping[KeyPath, int], key: KeyPath) -> str:
    # The line of the key itself, else of the closest enclosing table that has one.
    k = tuple(key)
    while k and k not in lines:
        k = k[:-1]
    line = lines.get(k, 1) if k else 1
    return f"{path if path is not None else '<config>'}:{line}"


# --- key -> line map -------------------------------------------------------------------------

def toml_key_lines(text: str) -> dict[KeyPath, int]:
    """Map every key path of a *valid* TOML document to the line (1-based) that defines it.

    Covers tables, arrays of tables (indices in the path), dotted keys, inline tables and
    array elements (their index in the path), so a semantic error can point at its line.
    """
    return _KeyLines(text).scan()


class _KeyLines:
    _BARE = re.compile(r"[A-Za-z0-9_-]+")

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.out: dict[KeyPath, int] = {}
        self.aot: dict[KeyPath, int] = {}

    def scan(self) -> dict[KeyPath, int]:
        table: KeyPath = ()
        while True:
            self.skip(newlines=True)
            if self.i >= len(self.s):
                return self.out
            if self.s.startswith("[[", self.i):
                self.i += 2
                header = self.resolve(self.key())
                self.skip()
                self.i += 2
                n = self.aot.get(header, -1) + 1
                self.aot[header] = n
                self.mark(header)
                table = header + (n,)
                self.mark(table)
            elif self.s[self.i] == "[":
                self.i += 1
                table = self.resolve(self.key())
                self.skip()
                self.i += 1
                self.mark(table)
            else:
                k = self.dotted(table, self.key())
                self.skip()
                self.i += 1  # '='
                self.value(k)

    def resolve(self, header: KeyPath) -> KeyPath:
        # [[a]] then [a.b]: b lives in the last element of a.
        out: KeyPath = ()
        for part in header:
            out = out + (part,)
            if out in self.aot and out != header:
                out = out + (self.aot[out],)
        return out

    def mark(self, key: KeyPath) -> None:
        self.out.setdefault(key, self.line)

    def dotted(self, base: KeyPath, rel: KeyPath) -> KeyPath:
        # `handler.url = ...` also defines the table `handler` on this line.
        for n in range(1, len(rel) + 1):
            self.mark(base + rel[:n])
        return base + rel

    def skip(self, newlines: bool = False) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r":
                self.i += 1
            elif c == "\n" and newlines:
                self.i += 1
                self.line += 1
            elif c == "#":
                j = s.find("\n", self.i)
                self.i = len(s) if j < 0 else j
            else:
                return

    def key(self) -> KeyPath:
        parts: list[str | int] = []
        while True:
            self.skip()
            c = self.s[self.i]
            if c in "\"'":
                start = self.i
                self.string()
                parts.append(tomllib.loads(f"k = {self.s[start:self.i]}")["k"])
            else:
                m = self._BARE.match(self.s, self.i)
                if not m:
                    raise ValueError(f"bad key at line {self.line}")
                parts.append(m.group(0))
                self.i = m.end()
            self.skip()
            if self.i < len(self.s) and self.s[self.i] == ".":
                self.i += 1
                continue
            return tuple(parts)

    def string(self) -> None:
        s = self.s
        q = s[self.i]
        if s.startswith(q * 3, self.i):
            j = self.i + 3
            while True:
                j = s.find(q * 3, j)
                if j < 0:
                    raise ValueError("unterminated string")
                if q == '"' and _escaped(s, j):
                    j += 1
                    continue
                break
            end = j + 3
            while end < len(s) and s[end] == q and end - j < 5:
                end += 1
            self.line += s.count("\n", self.i, end)
            self.i = end
            return
        j = self.i + 1
        while True:
            j = s.find(q, j)
            if j < 0:
                raise ValueError("unterminated string")
            if q == '"' and _escaped(s, j):
                j += 1
                continue
            break
        self.i = j + 1

    def value(self, key: KeyPath) -> None:
        self.skip()
        s = self.s
        c = s[self.i]
        if c in "\"'":
            self.string()
        elif c == "[":
            self.i += 1
            n = 0
            while True:
                self.skip(newlines=True)
                if s[self.i] == "]":
                    self.i += 1
                    return
                self.mark(key + (n,))
                self.value(key + (n,))
                self.skip(newlines=True)
                if s[self.i] == ",":
                    self.i += 1
                n += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip()
                if s[self.i] == "}":
                    self.i += 1
                    return
                k = self.dotted(key, self.key())
                self.skip()
                self.i += 1  # '='
                self.value(k)
                self.skip()
                if s[self.i] == ",":
                    self.i += 1
        else:
            m = re.compile(r"[^,\]}\n#]*").match(s, self.i)
            self.i = m.end() if m else self.i + 1


def _escaped(s: str, j: int) -> bool:
    n = 0
    while j - 1 - n >= 0 and s[j - 1 - n] == "\\":
        n += 1
    return n % 2 == 1
