"""`polywake listen`: stdin PCM, files, JSON lines, handlers from a config."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from polywake.audio import SAMPLE_RATE, write_audio
from polywake.detect import Detector
from polywake.errors import ConfigError, PolywakeError
from polywake.runtime import listen, router
from polywake.runtime.endpoint import EnergyEndPointer
from polywake.runtime.personas import parse_config
from polywake.scoring import ConstantScorer

pytestmark = pytest.mark.timeout(60)

WORDS = ["alexa", "hey samuel"]


def scripted(peaks: dict[int, str], total_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores peaking at the given steps (three 0.95 rows ending there) and quiet audio with a
    noise burst 0.3..1.3 s after each peak (the request)."""
    steps = int(total_s / 0.08) + 2
    script = np.zeros((steps, len(WORDS)), np.float32)
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(int(total_s * SAMPLE_RATE)) * 0.0005).astype(np.float32)
    for k, w in peaks.items():
        script[k - 2:k + 1, WORDS.index(w)] = 0.95
        t = 0.08 + 0.08 * k  # step k ends at 1280 (k + 1) samples (Detector.step_end_sample)
        a, b = int((t + 0.3) * SAMPLE_RATE), int((t + 1.3) * SAMPLE_RATE)
        audio[a:b] += (rng.standard_normal(b - a) * 0.1).astype(np.float32)
    return audio, script


def pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def test_pcm_chunks_handles_odd_reads():
    raw = pcm(np.linspace(-0.5, 0.5, 3001, dtype=np.float32)) + b"\x01"  # a dangling byte

    class Trickle(io.RawIOBase):
        """A pipe that returns at most 777 bytes per read (odd, so samples straddle reads)."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            out, self.data = self.data[:min(n, 777)], self.data[min(n, 777):]
            return out

    chunks = list(listen.pcm_chunks(Trickle(raw), chunk_samples=500))
    got = np.concatenate(chunks)
    assert got.size == 3001 and all(c.dtype == np.float32 for c in chunks)
    assert np.allclose(got, np.linspace(-0.5, 0.5, 3001), atol=1e-4)


@pytest.fixture
def fake_model(monkeypatch):
    """listen's model loader -> a ConstantScorer detector; end-pointing on energy."""
    holder: dict = {}

    def factory(model_path=None, config=None, backend="auto"):
        scorer = ConstantScorer(WORDS, holder["script"])
        listen.make_detector(scorer, config)
        return lambda: listen.make_detector(scorer, config)

    monkeypatch.setattr(listen, "detector_factory", factory)
    monkeypatch.setattr(router, "default_endpointer", EnergyEndPointer)
    return holder


def args_for(source, config=None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    listen.add_arguments(p)
    argv = [source] if source else []
    if config:
        argv += ["--config", str(config)]
    return p.parse_args(argv)


def test_listen_stdin_prints_json_lines_and_runs_command_handler(tmp_path, monkeypatch, capsys,
                                                                  fake_model):
    audio, fake_model["script"] = scripted({24: "alexa", 80: "hey samuel"}, 10.0)
    log = tmp_path / "got.jsonl"
    handler = tmp_path / "h.py"
    handler.write_text(textwrap.dedent(f"""
        import json, sys, soundfile as sf
        ev = json.loads(sys.stdin.read())
        ev["wav_frames"] = sf.info(sys.argv[-1]).frames
        open({str(log)!r}, "a").write(json.dumps(ev) + "\\n")
    """))
    cfg = tmp_path / "p.toml"
    cfg.write_text(textwrap.dedent(f"""
        [personas.alexa]
        words = ["alexa"]
        handler = {{ command = [{sys.executable!r}, {str(handler)!r}] }}
        [personas.samuel]
        words = ["hey samuel"]
        handler = {{ command = [{sys.executable!r}, {str(handler)!r}] }}
        voice = "samuel"
    """))
    stdin = io.TextIOWrapper(io.BytesIO(pcm(audio)))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert listen.run(args_for("-", cfg)) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    wakes = [x for x in lines if x["event"] == "wake"]
    assert [(w["word"], w["persona"]) for w in wakes] == [("alexa", "alexa"),
                                                          ("hey samuel", "samuel")]
    assert all({"time", "score", "start_s"} <= set(w) for w in wakes)
    assert [x["persona"] for x in lines if x["event"] == "request"] == ["alexa", "samuel"]
    got = sorted((json.loads(x) for x in log.read_text().splitlines()),
                 key=lambda e: e["time"])
    assert [g["persona"] for g in got] == ["alexa", "samuel"]
    assert got[1]["settings"] == {"voice": "samuel"}
    assert all(g["wav_frames"] == round(g["duration_s"] * SAMPLE_RATE) for g in got)


def test_listen_file_without_config_prints_wake_words_only(tmp_path, capsys, fake_model):
    audio, fake_model["script"] = scripted({30: "hey samuel"}, 5.0)
    wav = write_audio(tmp_path / "a.flac", audio)
    assert listen.run(args_for(str(wav))) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["event"], x["word"], x["persona"]) for x in lines] == [
        ("wake", "hey samuel", None)]


def test_listen_config_word_missing_from_model_is_config_error(tmp_path, fake_model):
    fake_model["script"] = np.zeros((2, 2), np.float32)
    cfg = tmp_path / "p.toml"
    cfg.write_text('[personas.j]\nwords = ["hey jarvis"]\n')
    with pytest.raises(ConfigError, match=r"p\.toml:2: .*hey jarvis"):
        listen.run(args_for("-", cfg))


def test_load_detector_applies_sensitivity_and_reports_missing_model_io(monkeypatch):
    import polywake.model_io as model_io

    monkeypatch.setattr(model_io, "load_scorer",
                        lambda path=None, **_: ConstantScorer(WORDS, np.zeros((1, 2), np.float32)))
    config = parse_config('[listen]\nrefractory_s = 2.5\n[personas.s]\nwords = ["hey samuel"]\n'
                          'sensitivity = 0.9\n', "p.toml")
    det = listen.load_detector("model.pwk", config)
    assert isinstance(det, Detector) and det.refractory_s == 2.5
    assert det.thresholds["hey samuel"] < det.thresholds["alexa"] == 0.5
    monkeypatch.setitem(sys.modules, "polywake.model_io", None)
    with pytest.raises(PolywakeError, match="model_io is not available"):
        listen.load_detector("model.pwk")


def test_listen_stdin_through_the_cli_in_a_subprocess(tmp_path):
    audio, script = scripted({24: "alexa", 60: "alexa"}, 7.0)
    np.save(tmp_path / "script.npy", script)
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from polywake import cli
        from polywake.runtime import listen, router
        from polywake.runtime.endpoint import EnergyEndPointer
        from polywake.scoring import ConstantScorer
        script = np.load({str(tmp_path / "script.npy")!r})
        listen.detector_factory = lambda path=None, config=None, backend="auto": (
            lambda: listen.make_detector(ConstantScorer({WORDS!r}, script), config))
        router.default_endpointer = EnergyEndPointer
        sys.exit(cli.main(["listen", "-"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], input=pcm(audio), capture_output=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    assert [x["word"] for x in lines] == ["alexa", "alexa"]
    assert lines[0]["time"] == pytest.approx(0.08 + 0.08 * 24 - 0.38, abs=1e-3)


def test_listen_microphone_source(monkeypatch, capsys, fake_model):
    from polywake.runtime import microphone

    audio, fake_model["script"] = scripted({24: "hey samuel"}, 4.0)

    class Stream:
        samplerate = 16000
        pos = 0
        closed = False

        def start(self):
            pass

        def stop(self):
            pass

        def close(self):
            Stream.closed = True

        def read(self, frames):
            if self.pos >= audio.size:
                raise microphone.MicrophoneError("device unplugged")
            out = audio[self.pos:self.pos + frames]
            self.pos += frames
            return out[:, None], False

    monkeypatch.setattr(microphone, "sounddevice_stream", lambda device, block: Stream())
    with pytest.raises(microphone.MicrophoneError, match="unplugged"):
        listen.run(args_for(None))
    assert Stream.closed
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["word"] for x in lines] == ["hey samuel"]
