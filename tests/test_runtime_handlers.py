"""Handler kinds: command (WAV path + JSON on stdin), HTTP POST (loopback), Python entry point."""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

from polywake.runtime.handlers import (
    CommandHandler,
    HandlerError,
    HandlerTimeout,
    HttpHandler,
    PythonHandler,
    Request,
    print_request,
)
from polywake.runtime.personas import HandlerSpec, Persona
from polywake.runtime.router import HandlerRunner

pytestmark = pytest.mark.timeout(30)

PERSONA = Persona("samuel", "Samuel", ("hey samuel",), None, None, None,
                  {"explicit_language": False, "voice": "samuel"})


def request(seconds: float = 0.5) -> Request:
    t = np.arange(int(seconds * 16000)) / 16000
    audio = (0.25 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return Request(PERSONA, "hey samuel", 0.93, 1.0, 1.6, 0.75, audio, "silence")


def test_request_event_and_wav():
    r = request()
    ev = r.event()
    assert ev["persona"] == "samuel" and ev["persona_name"] == "Samuel"
    assert ev["settings"] == {"explicit_language": False, "voice": "samuel"}
    assert ev["duration_s"] == 0.5 and ev["audio_end_s"] == 1.25 and ev["time"] == 1.6
    json.dumps(ev)
    data, rate = sf.read(io.BytesIO(r.wav_bytes()), dtype="float32")
    assert rate == 16000 and data.shape == (8000,)
    assert np.allclose(data, r.audio, atol=1e-3)


SCRIPT = """
import json, sys, soundfile as sf
event = json.loads(sys.stdin.read())
wav = sys.argv[-1]
data, rate = sf.read(wav)
with open(sys.argv[1], "w") as f:
    json.dump({"event": event, "frames": len(data), "rate": rate, "argv": sys.argv[2:-1]}, f)
print("handled", event["persona"])
"""


def test_command_handler_gets_wav_path_and_json_on_stdin(tmp_path):
    script = tmp_path / "h.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out.json"
    h = CommandHandler(HandlerSpec("command", (sys.executable, str(script), str(out), "--x")))
    result = h(request(), 10.0)
    assert result == {"returncode": 0, "stdout": "handled samuel"}
    got = json.loads(out.read_text())
    assert got["frames"] == 8000 and got["rate"] == 16000 and got["argv"] == ["--x"]
    assert got["event"]["settings"]["voice"] == "samuel"
    assert not list(tmp_path.glob("polywake-*.wav"))


def test_command_handler_failure_and_timeout(tmp_path):
    fail = CommandHandler(HandlerSpec("command", (sys.executable, "-c",
                                                  "import sys; sys.stderr.write('nope'); "
                                                  "sys.exit(3)")))
    with pytest.raises(HandlerError, match="status 3: nope"):
        fail(request(), 10.0)
    # A shell whose child sleeps: the whole process group is killed at the timeout.
    hang = CommandHandler(HandlerSpec("command", ("sh", "-c", "sleep 30; true")))
    t0 = time.monotonic()
    with pytest.raises(HandlerTimeout, match="killed"):
        hang(request(), 0.5)
    assert time.monotonic() - t0 < 5


class _Server:
    def __init__(self, behaviour: str) -> None:
        self.bodies: list[dict] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                n = int(self.headers["Content-Length"])
                outer.bodies.append({"json": json.loads(self.rfile.read(n)),
                                     "auth": self.headers.get("Authorization"),
                                     "type": self.headers.get("Content-Type")})
                if behaviour == "slow":
                    time.sleep(1.5)
                code = 500 if behaviour == "error" else 200
                body = json.dumps({"said": "hello"}).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_http_handler_posts_json_with_base64_wav():
    with _Server("ok") as srv:
        h = HttpHandler(HandlerSpec("url", srv.url, {"Authorization": "Bearer t"}))
        result = h(request(), 5.0)
    assert result == {"status": 200, "body": {"said": "hello"}}
    got = srv.bodies[0]
    assert got["auth"] == "Bearer t" and got["type"] == "application/json"
    assert got["json"]["event"]["persona"] == "samuel"
    audio = got["json"]["audio"]
    assert audio["format"] == "wav" and audio["sample_rate"] == 16000
    data, rate = sf.read(io.BytesIO(base64.b64decode(audio["base64"])))
    assert data.shape == (8000,)


def test_http_handler_error_status_and_timeout():
    with _Server("error") as srv, pytest.raises(HandlerError, match="HTTP 500"):
        HttpHandler(HandlerSpec("url", srv.url))(request(), 5.0)
    with _Server("slow") as srv, pytest.raises(HandlerTimeout):
        HttpHandler(HandlerSpec("url", srv.url))(request(), 0.3)
    with pytest.raises(HandlerError, match="POST"):
        # Nothing listens on port 9 of loopback.
        HttpHandler(HandlerSpec("url", "http://127.0.0.1:9/x"))(request(), 2.0)


def test_http_failures_through_the_runner_are_logged(caplog):
    runner = HandlerRunner()
    with _Server("error") as srv:
        runner.submit(HttpHandler(HandlerSpec("url", srv.url)), request(), 2.0)
        assert runner.wait(5)
    o = runner.outcomes[0]
    assert o.status == "error" and "HTTP 500" in o.error
    assert any("HTTP 500" in r.getMessage() for r in caplog.records)


def test_python_entry_point(capsys):
    h = PythonHandler(HandlerSpec("python", "polywake.runtime.handlers:print_request"))
    assert h.func is print_request
    result = h(request(), 1.0)
    assert result["settings"] == {"explicit_language": False, "voice": "samuel"}
    out = capsys.readouterr().out
    assert "[Samuel] woken by 'hey samuel'" in out and "0.50 s of audio" in out
