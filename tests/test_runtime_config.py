"""Personas config: valid files parse; every bad one is a ConfigError naming file and line."""

from __future__ import annotations

import pytest

from polywake.errors import ConfigError
from polywake.runtime.handlers import build_handlers
from polywake.runtime.personas import load_config, normalize_word, toml_key_lines

pytestmark = pytest.mark.timeout(30)

GOOD = """\
[listen]
max_request_s = 6
wake_during_request = "ignore"

[personas.samuel]
name = "Samuel"
words = ["hey samuel", "samuel"]
handler = { python = "polywake.runtime.handlers:print_request" }
sensitivity = 0.7
timeout_s = 2.5
explicit_language = false
voice = "samuel"
nested = { a = [1, 2], b = "x" }

[personas.alexa]
words = "alexa"
handler = "polywake.runtime.handlers:print_request"

[personas.web]
words = ["computer"]
handler = { url = "http://127.0.0.1:9/hook", headers = { Authorization = "Bearer x" } }

[personas.cmd]
words = ["echo"]
handler = "cat -n"

[personas.quiet]
words = ["amazon"]
"""


def test_good_config_parses_with_settings_passed_through(tmp_path):
    path = tmp_path / "personas.toml"
    path.write_text(GOOD)
    c = load_config(path)
    assert c.listen.max_request_s == 6.0 and c.listen.wake_during_request == "ignore"
    assert c.listen.silence_s == 0.8  # default
    sam = c.personas[0]
    assert (sam.id, sam.name, sam.words, sam.sensitivity, sam.timeout_s) == (
        "samuel", "Samuel", ("hey samuel", "samuel"), 0.7, 2.5)
    assert dict(sam.settings) == {"explicit_language": False, "voice": "samuel",
                                  "nested": {"a": [1, 2], "b": "x"}}
    assert sam.handler.kind == "python" and sam.handler.where == f"{path}:8"
    assert c.personas[1].name == "alexa" and c.personas[1].words == ("alexa",)
    web = c.personas[2].handler
    assert (web.kind, web.target, dict(web.headers)) == ("url", "http://127.0.0.1:9/hook",
                                                        {"Authorization": "Bearer x"})
    assert c.personas[3].handler.target == ("cat", "-n")
    assert c.personas[4].handler is None
    assert c.persona_for("Hey_Samuel").id == "samuel"
    assert c.persona_for("nobody") is None
    model = ["alexa", "hey samuel", "samuel", "computer", "echo", "amazon", "other"]
    assert c.sensitivities(model) == {"hey samuel": 0.7, "samuel": 0.7}
    handlers = build_handlers(c.personas)
    assert sorted(handlers) == ["alexa", "cmd", "samuel", "web"]


def test_example_config_ships_and_loads():
    from pathlib import Path

    c = load_config(Path(__file__).resolve().parents[1] / "examples" / "personas.toml")
    ids = {p.id: p for p in c.personas}
    assert {w for p in c.personas for w in p.words} == {"alexa", "echo", "amazon", "computer",
                                                        "hey samuel"}
    assert dict(ids["samuel"].settings) == {"explicit_language": False, "voice": "samuel"}
    assert all(p.handler.target == "polywake.runtime.handlers:print_request"
               for p in c.personas)
    build_handlers(c.personas)


BAD = [
    # (config text, line in the message, words in the message)
    ('[personas.a]\nwords = ["alexa"\n', 2, "invalid TOML"),
    ('[personas.a]\nwords = ["alexa"]\nvoice = = 2\n\n', 3, "invalid TOML"),
    ('[listen]\nmax_request_s = 6\nsilense_s = 1\n', 3, "did you mean 'silence_s'"),
    ('[listen]\nmax_request_s = "long"\n', 2, "must be a number"),
    ('[listen]\nmax_request_s = 1000\n', 2, "between"),
    ('[listen]\nwake_during_request = "queue"\n', 2, "split"),
    ('[listen]\nmax_in_flight = 2.5\n', 2, "integer"),
    ("[listen]\nsilence_s = 1\n", 1, "no [personas"),
    ('[personas.a]\nname = "A"\n\n[personas.b]\nwords = ["x"]\n', 1, "has no 'words'"),
    ('[personas.a]\nwords = ["alexa"]\nsensitivity = 1.5\n', 3, "between 0 and 1"),
    ('[personas.a]\nwords = ["alexa"]\nsensitivity = true\n', 3, "must be a number"),
    ('[personas.a]\nwords = ["alexa"]\nsensitivty = 0.5\n', 3, "did you mean 'sensitivity'"),
    ('[personas.a]\nwords = []\n', 2, "non-empty"),
    ('[personas.a]\nwords = [\n  "alexa",\n  3,\n]\n', 4, "non-empty string"),
    ('[personas.a]\nwords = ["alexa"]\n[personas.b]\nwords = ["echo", "Alexa"]\n', 4,
     "already used by persona 'a'"),
    ('[personas.a]\nwords = ["alexa"]\nhandler = { python = "not a path" }\n', 3,
     "module:function"),
    ('[personas.a]\nwords = ["alexa"]\nhandler = { url = "ftp://x" }\n', 3, "http://"),
    ('[personas.a]\nwords = ["alexa"]\nhandler = { python = "m:f", url = "http://x" }\n', 3,
     "exactly one"),
    ('[personas.a]\nwords = ["alexa"]\nhandler = { comand = ["x"] }\n', 3,
     "did you mean 'command'"),
    ('[personas.a]\nwords = ["alexa"]\nhandler = 42\n', 3, "string or a table"),
    ('[personas.a]\nwords = ["alexa"]\nhandler = "echo \'unclosed"\n', 3, "cannot split"),
    ('[personas.a]\nwords = ["alexa"]\n\n[personas.a.handler]\ncommand = ["x", ""]\n', 5,
     "non-empty list"),
    ('[personas.a]\nwords = ["alexa"]\nborn = 1979-05-27\n', 3, "cannot be passed"),
    ('personas = 3\n', 1, "table of"),
    ('[persona.a]\nwords = ["alexa"]\n', 1, "did you mean 'personas'"),
]


@pytest.mark.parametrize(("text", "line", "words"), BAD)
def test_bad_config_names_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert words in msg, msg


def test_handler_that_cannot_be_resolved_is_a_config_error_at_its_line(tmp_path):
    path = tmp_path / "h.toml"
    path.write_text('[personas.a]\nwords = ["alexa"]\n\n'
                    'handler = "polywake.no_such_module:f"\n'
                    '[personas.b]\nwords = ["echo"]\nhandler = "polywake.runtime.handlers:nope"\n'
                    '[personas.c]\nwords = ["amazon"]\n'
                    'handler = { command = ["/no/such/program-polywake"] }\n')
    c = load_config(path)
    for persona, line, words in [(c.personas[0], 4, "cannot import"),
                                 (c.personas[1], 7, "has no 'nope'"),
                                 (c.personas[2], 10, "not found")]:
        with pytest.raises(ConfigError) as e:
            build_handlers((persona,))
        assert str(e.value).startswith(f"{path}:{line}: ") and words in str(e.value)


def test_word_the_model_lacks_points_at_its_line(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text('[personas.a]\nwords = [\n  "alexa",\n  "hey jarvis",\n]\n')
    c = load_config(path)
    assert c.resolve_words(["Alexa", "hey_jarvis"]) == {"alexa": "Alexa",
                                                        "hey jarvis": "hey_jarvis"}
    with pytest.raises(ConfigError) as e:
        c.resolve_words(["alexa", "echo"])
    assert str(e.value).startswith(f"{path}:4: ") and "'hey jarvis'" in str(e.value)


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="bin.toml"):
        load_config(tmp_path / "bin.toml")


def test_key_lines_cover_toml_forms():
    text = ('# c\n[a]\nx = """multi\nline \\""" end"""\ny = [\n 1, # one\n {k = 2},\n]\n'
            '"q.k".z = 1\n[[t]]\nv = 1\n[[t]]\nv = 2\n[t.sub]\nw = 3\n')
    lines = toml_key_lines(text)
    assert lines[("a",)] == 2 and lines[("a", "x")] == 3 and lines[("a", "y")] == 5
    assert lines[("a", "y", 0)] == 6 and lines[("a", "y", 1, "k")] == 7
    assert lines[("a", "q.k")] == 9 and lines[("a", "q.k", "z")] == 9
    assert lines[("t", 0, "v")] == 11 and lines[("t", 1, "v")] == 13
    assert lines[("t", 1, "sub", "w")] == 15


def test_normalize_word():
    assert normalize_word(" Hey_Samuel ") == normalize_word("hey-samuel") == "hey samuel"
