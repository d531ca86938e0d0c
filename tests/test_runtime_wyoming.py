"""The Wyoming wake service end to end over loopback, with a real Wyoming client."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.wake import Detect, Detection, NotDetected

from polywake.detect import Detector
from polywake.runtime.personas import parse_config
from polywake.runtime.wyoming_server import exposed_words, start_server
from polywake.scoring import ConstantScorer

pytestmark = pytest.mark.timeout(60)

WORDS = ["alexa", "hey samuel", "computer"]
CONFIG = parse_config("""
[personas.alexa]
name = "Alexa"
words = ["alexa"]
[personas.samuel]
name = "Samuel"
words = ["Hey Samuel"]
voice = "samuel"
""", "p.toml")


def script() -> np.ndarray:
    s = np.zeros((200, len(WORDS)), np.float32)
    s[22:25, 0] = 0.95      # alexa peaks at step 24
    s[58:61, 1] = 0.95      # hey samuel at step 60
    s[90:93, 2] = 0.95      # computer: in the model, not in the config -> never reported
    return s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def stream(client: AsyncTcpClient, seconds: float, rate: int = 16000,
                 names: list[str] | None = None, context: dict | None = None) -> None:
    await client.write_event(Detect(names=names, context=context).event())
    await client.write_event(AudioStart(rate=rate, width=2, channels=1, timestamp=1000).event())
    pcm = np.zeros(int(seconds * rate), "<i2").tobytes()
    step = 2048
    for i in range(0, len(pcm), step):
        await client.write_event(AudioChunk(rate=rate, width=2, channels=1,
                                            audio=pcm[i:i + step]).event())
    await client.write_event(AudioStop().event())


async def read_until(client: AsyncTcpClient, n: int) -> list:
    out = []
    while len(out) < n:
        ev = await client.read_event()
        assert ev is not None, "server closed the connection"
        out.append(ev)
    return out


async def session(port: int) -> dict:
    words = exposed_words(WORDS, CONFIG)
    server = await start_server(f"tcp://127.0.0.1:{port}", words,
                                lambda: Detector(ConstantScorer(WORDS, script())))
    res: dict = {}
    try:
        async with AsyncTcpClient("127.0.0.1", port, connect_timeout=5, read_timeout=10) as c:
            await c.write_event(Describe().event())
            res["info"] = Info.from_event((await read_until(c, 1))[0])

            # 1: every exposed word, 16 kHz; computer is not exposed.
            await stream(c, 8.0, context={"satellite": "kitchen"})
            res["all"] = [Detection.from_event(e) for e in await read_until(c, 2)]

            # 2: only hey samuel, audio at 48 kHz (converted by the server).
            await stream(c, 8.0, rate=48000, names=["hey_samuel"])
            res["one"] = [Detection.from_event(e) for e in await read_until(c, 1)]

            # 3: a stream too short for any wake word -> not-detected.
            await stream(c, 1.0)
            ev = (await read_until(c, 1))[0]
            res["none"] = ev
        # A second client at the same time as nothing else: fresh detector state.
        async with AsyncTcpClient("127.0.0.1", port, connect_timeout=5, read_timeout=10) as c:
            await stream(c, 3.0, names=["alexa"])
            res["again"] = [Detection.from_event(e) for e in await read_until(c, 1)]
    finally:
        await server.stop()
    return res


def test_wyoming_describe_detect_and_not_detected():
    res = asyncio.run(asyncio.wait_for(session(free_port()), 40))
    info: Info = res["info"]
    (program,) = info.wake
    assert program.name == "polywake" and program.installed
    assert [(m.name, m.phrase) for m in program.models] == [("alexa", "alexa"),
                                                           ("hey_samuel", "hey samuel")]
    assert "persona Samuel" in program.models[1].description

    assert [d.name for d in res["all"]] == ["alexa", "hey_samuel"]
    # Timestamps: the AudioStart timestamp (1000 ms) + the word's end in the stream.
    assert res["all"][0].timestamp == 1000 + round((0.08 + 0.08 * 24 - 0.38) * 1000)
    ctx = res["all"][1].context
    assert ctx["satellite"] == "kitchen"
    assert ctx["polywake"]["persona"] == "samuel"
    assert ctx["polywake"]["settings"] == {"voice": "samuel"}

    assert [d.name for d in res["one"]] == ["hey_samuel"]
    assert NotDetected.is_type(res["none"].type)
    assert [d.name for d in res["again"]] == ["alexa"]


def test_exposed_words_without_config_are_all_model_words():
    words = exposed_words(["alexa", "hey samuel"], None)
    assert [(w.name, w.word, w.persona) for w in words] == [("alexa", "alexa", None),
                                                            ("hey_samuel", "hey samuel", None)]


def test_serve_wyoming_cli_over_stdio():
    code = textwrap.dedent("""
        import sys, numpy as np
        from polywake import cli
        from polywake.runtime import listen
        from polywake.scoring import ConstantScorer
        listen.detector_factory = lambda path=None, config=None, backend="auto": (lambda: listen.make_detector(
            ConstantScorer(["alexa", "hey samuel"], np.zeros((1, 2), np.float32)), config))
        sys.exit(cli.main(["serve-wyoming", "--uri", "stdio://", "--language", "de"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], input=b'{"type": "describe"}\n',
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    header, data = proc.stdout.decode().splitlines()[:2]
    assert json.loads(header)["type"] == "info"
    models = json.loads(data)["wake"][0]["models"]
    assert [(m["name"], m["languages"]) for m in models] == [("alexa", ["de"]),
                                                             ("hey_samuel", ["de"])]
