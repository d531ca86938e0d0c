"""Persona handlers: where a request (the audio after a wake word) is delivered.

Three kinds, all called as ``handler(request, timeout_s)`` on a worker thread (see
:class:`polywake.runtime.router.HandlerRunner`), never on the audio thread:

* ``python``: ``"package.module:function"``, called with the :class:`Request`;
* ``command``: argv + the path of a temporary WAV file of the request; the JSON event is on
  its stdin; exit status 0 means success; the WAV is deleted when the command exits;
* ``url``: HTTP POST of ``{"event": {...}, "audio": {"format": "wav", "base64": "..."}}`` as
  JSON (one document, easy to read in any language; multipart would need a parser);
  any 2xx is success.

:func:`print_request` is a tiny example handler (examples/personas.toml uses it).
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from ..audio import SAMPLE_RATE
from ..errors import ConfigError, PolywakeError
from .personas import HandlerSpec, Persona

OUTPUT_TAIL = 2000        # characters of a command's output / HTTP body kept for the log
MAX_HTTP_BODY = 1 << 20   # a handler's reply is read up to 1 MiB


class HandlerError(PolywakeError):
    """A handler failed (bad exit status, HTTP error, exception)."""


class HandlerTimeout(HandlerError):
    """A handler did not finish within its timeout."""


@dataclass(frozen=True)
class Request:
    """What a persona's handler gets: who was woken, by what, and the audio of the request.

    ``audio`` starts ``preroll_s`` before the wake word's start and runs until the end-point
    (float32, 16 kHz mono); times are seconds since the start of the stream.
    """

    persona: Persona
    word: str
    score: float
    wake_start_s: float
    wake_end_s: float
    audio_start_s: float
    audio: np.ndarray
    end_reason: str   # "silence" | "no_speech" | "max_length" | "next_wake" | "end_of_stream"
    sample_rate: int = SAMPLE_RATE
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.audio.size / self.sample_rate

    @property
    def audio_end_s(self) -> float:
        return self.audio_start_s + self.duration_s

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.persona.settings

    def event(self) -> dict[str, Any]:
        """The JSON-able description every handler kind receives."""
        return {
            "event": "request",
            "word": self.word,
            "persona": self.persona.id,
            "persona_name": self.persona.name,
            "score": round(float(self.score), 4),
            "time": round(self.wake_end_s, 3),
            "wake_start_s": round(self.wake_start_s, 3),
            "audio_start_s": round(self.audio_start_s, 3),
            "audio_end_s": round(self.audio_end_s, 3),
            "duration_s": round(self.duration_s, 3),
            "end_reason": self.end_reason,
            "sample_rate": self.sample_rate,
            "settings": dict(self.settings),
            **dict(self.extra),
        }

    def wav_bytes(self) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, np.clip(self.audio, -1.0, 1.0), self.sample_rate, format="WAV",
                 subtype="PCM_16")
        return buf.getvalue()


class Handler(Protocol):
    spec: HandlerSpec

    def __call__(self, request: Request, timeout_s: float) -> Any: ...


def build_handler(spec: HandlerSpec) -> Handler:
    """Resolve a spec now, so a missing module or program is a ConfigError at startup."""
    if spec.kind == "python":
        return PythonHandler(spec)
    if spec.kind == "command":
        return CommandHandler(spec)
    if spec.kind == "url":
        return HttpHandler(spec)
    raise ConfigError(f"{spec.where}: unknown handler kind {spec.kind!r}")


def build_handlers(personas: tuple[Persona, ...]) -> dict[str, Handler]:
    return {p.id: build_handler(p.handler) for p in personas if p.handler is not None}


class PythonHandler:
    """Calls ``function(request)``; its return value is logged. Python cannot stop a thread,
    so a hung function is abandoned by the runner (and counted against max_in_flight)."""

    def __init__(self, spec: HandlerSpec) -> None:
        self.spec = spec
        mod_name, _, attr = str(spec.target).partition(":")
        try:
            obj: Any = importlib.import_module(mod_name)
        except ImportError as e:
            raise ConfigError(f"{spec.where}: cannot import handler module {mod_name!r} ({e})"
                              ) from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ConfigError(f"{spec.where}: module {mod_name!r} has no {attr!r}")
            obj = getattr(obj, part)
        if not callable(obj):
            raise ConfigError(f"{spec.where}: {spec.target} is not callable")
        self.func: Callable[[Request], Any] = obj

    def __call__(self, request: Request, timeout_s: float) -> Any:
        return self.func(request)


class CommandHandler:
    enforces_timeout = True  # kills the process group at the timeout

    def __init__(self, spec: HandlerSpec) -> None:
        self.spec = spec
        self.argv = tuple(spec.target)
        prog = self.argv[0]
        found = shutil.which(prog)
        if found is None:
            raise ConfigError(f"{spec.where}: handler command {prog!r} not found "
                              f"(not on PATH or not executable)")

    def __call__(self, request: Request, timeout_s: float) -> dict[str, Any]:
        fd, wav = tempfile.mkstemp(prefix=f"polywake-{request.persona.id}-", suffix=".wav")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(request.wav_bytes())
            # Own session, so a timeout kills the whole process group (a shell script's
            # children too) and no grandchild keeps our pipes open.
            proc = subprocess.Popen([*self.argv, wav], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
            payload = (json.dumps(request.event()) + "\n").encode()
            try:
                out, err = proc.communicate(payload, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.communicate(timeout=2.0)
                raise HandlerTimeout(f"command {self.argv[0]} still running after "
                                     f"{timeout_s:g} s; killed") from None
            if proc.returncode != 0:
                raise HandlerError(f"command {self.argv[0]} exited with status "
                                   f"{proc.returncode}: {_tail(err)}")
            return {"returncode": 0, "stdout": _tail(out)}
        finally:
            Path(wav).unlink(missing_ok=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


class HttpHandler:
    enforces_timeout = True  # socket timeout

    def __init__(self, spec: HandlerSpec) -> None:
        self.spec = spec
        self.url = str(spec.target)
        self.headers = dict(spec.headers)

    def body(self, request: Request) -> bytes:
        return json.dumps({
            "event": request.event(),
            "audio": {"format": "wav", "sample_rate": request.sample_rate,
                      "base64": base64.b64encode(request.wav_bytes()).decode("ascii")},
        }).encode()

    def __call__(self, request: Request, timeout_s: float) -> dict[str, Any]:
        req = urllib.request.Request(
            self.url, data=self.body(request), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "polywake",
                     **self.headers})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
                raw = resp.read(MAX_HTTP_BODY)
                status = resp.status
        except urllib.error.HTTPError as e:
            raise HandlerError(f"POST {self.url}: HTTP {e.code} {e.reason}") from None
        except TimeoutError:
            raise HandlerTimeout(f"POST {self.url}: no answer within {timeout_s:g} s") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise HandlerTimeout(f"POST {self.url}: no answer within {timeout_s:g} s"
                                     ) from None
            raise HandlerError(f"POST {self.url}: {e.reason}") from None
        except OSError as e:
            raise HandlerError(f"POST {self.url}: {e}") from None
        text = raw.decode("utf-8", "replace")
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = _tail(raw)
        return {"status": status, "body": body}


def _tail(data: bytes | str) -> str:
    s = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    s = s.strip()
    return s if len(s) <= OUTPUT_TAIL else "..." + s[-OUTPUT_TAIL:]


def print_request(request: Request) -> dict[str, Any]:
    """Example handler: print what the persona received (and return it, for the demo)."""
    ev = request.event()
    settings = json.dumps(ev["settings"], sort_keys=True)
    peak = float(np.max(np.abs(request.audio))) if request.audio.size else 0.0
    print(f"[{request.persona.name}] woken by {request.word!r} (score {request.score:.2f}) at "
          f"{request.wake_end_s:.2f} s; got {request.duration_s:.2f} s of audio "
          f"({ev['audio_start_s']:.2f}-{ev['audio_end_s']:.2f} s, peak {peak:.2f}, "
          f"ended by {request.end_reason}); settings {settings}", flush=True)
    return {k: ev[k] for k in ("persona", "word", "duration_s", "end_reason", "settings")}
