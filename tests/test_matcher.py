"""Matched words (models/matcher.py): the folded metric, the model file, the three backends,
and add-word / remove-word with ``method="matcher"``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import requires_shared_data
from polywake.detect import Detector
from polywake.models.backbone import TINY, Backbone
from polywake.models.heads import WakeWordHeads
from polywake.models.matcher import TemplateMatcher, template_steps
from polywake.models.wakeword import (
    MATCHER_BASE,
    WakeWordModel,
    load_checkpoint,
    load_matcher,
    load_matcher_base,
    load_model,
    save_checkpoint,
    save_matcher_base,
)


def _matcher(seed: int = 0, out: int = 64, cohort: bool = False, pool: int | None = None
             ) -> tuple[TemplateMatcher, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    bb = Backbone(TINY).eval()
    w, b = torch.randn(out, bb.embed_dim), torch.randn(out)
    m = TemplateMatcher.from_projection(bb, w, b)
    if cohort:
        m = m.with_cohort(torch.randn(500, bb.embed_dim))
        if pool is not None:  # as a file written before pooling (pool 1)
            m = TemplateMatcher(bb, m.gram, m.lin, m.const, m.cohort_mean, m.cohort_cov,
                                pool=pool)
    return m, w, b


def test_folded_metric_equals_cosine_in_the_projected_space() -> None:
    m, w, b = _matcher()
    ex = torch.randn(5, m.embed_dim)
    m.add_word("a", ex[:3])
    m.add_word("b", ex[3:])
    e = torch.randn(2, 7, m.embed_dim)
    proj = e @ w.T + b
    t = ex @ w.T + b
    cos = torch.nn.functional.cosine_similarity(proj[..., None, :], t, dim=-1)  # (2, 7, 5)
    want = torch.stack([cos[..., :3].amax(-1), cos[..., 3:].amax(-1)], -1).clamp(0, 1)
    torch.testing.assert_close(m.score(e), want, atol=2e-5, rtol=0)
    # a template matches itself exactly
    assert float(m.score(ex[None, :1])[0, 0, 0]) == pytest.approx(1.0, abs=1e-5)


def test_padding_words_to_one_template_count_keeps_each_maximum() -> None:
    m, _, _ = _matcher()
    m.add_word("one", torch.randn(1, m.embed_dim))
    m.add_word("four", torch.randn(4, m.embed_dim))
    u, c = m.fused()
    assert u.shape == (2, 4, 1, m.embed_dim + 1) and c.shape == (2, 4)
    e = torch.randn(1, 5, m.embed_dim)
    alone = TemplateMatcher(m.backbone, m.gram, m.lin, m.const)
    alone.add_templates("one", m.u[0].data, m.c[0].data, m.b[0].data)
    torch.testing.assert_close(m.score(e)[..., 0], alone.score(e)[..., 0])
    m.remove_word("one")
    assert m.words == ["four"] and m.fused()[0].shape == (1, 4, 1, m.embed_dim + 1)
    with pytest.raises(ValueError, match="already"):
        m.add_word("four", torch.randn(2, m.embed_dim))
    with pytest.raises(ValueError, match="expected"):
        m.add_word("bad", torch.randn(2, m.embed_dim + 1))


SCORINGS = {"max-cosine": (False, None), "seq-tnorm": (True, 1),
            "seq-tnorm-top3": (True, None)}


def _model(tmp_path: Path, scoring: str = "max-cosine") -> Path:
    torch.manual_seed(1)
    bb = Backbone(TINY).eval()
    heads = WakeWordHeads(bb.embed_dim, ["alexa", "echo"], hidden=8)
    cohort, pool = SCORINGS[scoring]
    m, _, _ = _matcher(2, cohort=cohort, pool=pool)
    m.add_word("hey jarvis", torch.randn(6 * m.seq_len, m.embed_dim))
    m.add_word("snowboy", torch.randn(2 * m.seq_len, m.embed_dim))  # fewer than pool 3
    return save_checkpoint(tmp_path / "m.safetensors", backbone=bb, heads=heads,
                           card={"words": ["alexa", "echo", "hey jarvis", "snowboy"],
                                 "per_word": {}}, matcher=m)


@pytest.mark.parametrize("scoring", list(SCORINGS))
def test_checkpoint_round_trip_and_streaming_equals_batch(tmp_path: Path, scoring: str) -> None:
    path = _model(tmp_path, scoring)
    model = load_model(path)
    assert model.matcher.scoring == scoring
    assert model.words == ["alexa", "echo", "hey jarvis", "snowboy"]
    assert load_checkpoint(path)[1].words == ["alexa", "echo"]  # the heads alone, as before
    assert load_matcher(path).words == ["hey jarvis", "snowboy"]
    feats = torch.randn(1, 8 * 12, 40)
    with torch.no_grad():
        batch = model.scores(feats)
        state, parts = model.init_state(1), []
        for i in range(0, feats.shape[1], 8 * 3):
            p, state = model.stream(feats[:, i:i + 24], state)
            parts.append(p)
    assert batch.shape == (1, 12, 4)
    torch.testing.assert_close(torch.cat(parts, 1), batch, atol=1e-5, rtol=0)
    assert float(batch[..., 2:].min()) >= 0 and float(batch[..., 2:].max()) <= 1


@pytest.mark.parametrize("scoring", list(SCORINGS))
def test_matched_words_run_the_same_in_torch_numpy_and_onnx(tmp_path: Path, scoring: str) -> None:
    pytest.importorskip("onnxruntime")
    from polywake.export import compare_scores, export_checkpoint
    from polywake.model_io import load_scorer

    path = _model(tmp_path, scoring)
    pwk = export_checkpoint(path, tmp_path / "m.pwk")
    audio = (np.random.default_rng(0).standard_normal(16000 * 3) * 0.1).astype(np.float32)
    for backend in ("numpy", "onnx"):
        scorer = load_scorer(pwk, backend=backend)
        assert scorer.words == ["alexa", "echo", "hey jarvis", "snowboy"]
        assert compare_scores(path, pwk, audio, backend=backend) < 1e-4
    # the matched columns really move (a test of equal zeros would prove nothing)
    s = Detector(load_scorer(pwk, backend="numpy")).scores(audio)
    assert s[:, 2:].std() > 1e-3


def test_a_model_without_matched_words_exports_the_old_program(tmp_path: Path) -> None:
    from polywake.numpy_export import numpy_section

    torch.manual_seed(0)
    bb = Backbone(TINY).eval()
    model = WakeWordModel(bb, WakeWordHeads(bb.embed_dim, ["alexa"], hidden=8)).eval()
    program, _ = numpy_section(model)
    assert all(op["op"] != "parallel" for op in program)


def test_numpy_section_refuses_a_bad_cosine_op(tmp_path: Path) -> None:
    from polywake.errors import ModelFileError
    from polywake.export import export_checkpoint
    from polywake.model_io import read_pwk_file
    from polywake.numpy_step import NumpyScorer

    pwk = read_pwk_file(export_checkpoint(_model(tmp_path), tmp_path / "m.pwk"))
    program = pwk.numpy["program"]
    cos = program[0]["branches"][1][-1]
    assert cos["op"] == "cosine_max"
    cos["words"] = 5  # 2 words x 6 padded templates do not split into 5 words
    bad = type(pwk)(pwk.path, pwk.version, pwk.card, pwk.onnx, pwk.numpy, pwk.numpy_blob)
    with pytest.raises(ModelFileError, match="cosine_max"):
        NumpyScorer(pwk.path, pwk=bad)
    # pooling weights that are not (words, m <= examples) are refused too
    pwk = read_pwk_file(export_checkpoint(_model(tmp_path, "seq-tnorm-top3"),
                                          tmp_path / "p.pwk"))
    seq = pwk.numpy["program"][0]["branches"][1][-2]
    assert seq["op"] == "cosine_seq" and "pool" in seq
    NumpyScorer(pwk.path, pwk=pwk)
    seq["pool"] = seq["bias"]  # a 1-d tensor
    with pytest.raises(ModelFileError, match="cosine_seq: pool"):
        NumpyScorer(pwk.path, pwk=pwk)


def test_template_steps_trail_the_end() -> None:
    assert template_steps(20, 0.5) == [6, 7, 8, 9]  # steps ending 0.56 .. 0.80 s
    assert template_steps(3, 5.0) == []


def _base(tmp_path: Path) -> Path:
    m, _, _ = _matcher(3)
    return save_matcher_base(tmp_path / "base.safetensors", m, {"default_threshold": 0.9})


def _speechlike(seed: int) -> np.ndarray:
    """0.3 s quiet, 0.6 s of a chirp, 0.3 s quiet: something with an end to endpoint."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.6 * 16000)) / 16000
    chirp = 0.3 * np.sin(2 * np.pi * (300 + 400 * t + 20 * seed) * t)
    q = rng.standard_normal(4800) * 1e-3
    return np.concatenate([q, chirp, q]).astype(np.float32)


def test_add_matched_word_then_remove_keeps_everything_else(tmp_path: Path, monkeypatch) -> None:
    from polywake.data import splits
    from polywake.train import add_word as aw

    monkeypatch.setattr(splits, "have_shared_data", lambda: False)
    torch.manual_seed(0)
    bb = Backbone(TINY).eval()
    start = save_checkpoint(tmp_path / "start.safetensors", backbone=bb,
                            heads=WakeWordHeads(bb.embed_dim, ["alexa"], hidden=8),
                            card={"words": ["alexa"], "per_word": {}})
    out, t = aw.add_matched_word(start, "Hey  Jarvis", tmp_path / "one.safetensors",
                                 [_speechlike(i) for i in range(3)], base=_base(tmp_path))
    model = load_model(out)
    assert model.words == ["alexa", "hey jarvis"] and t["total_s"] >= 0
    entry = model.card["per_word"]["hey jarvis"]
    assert entry["method"] == "matcher" and entry["real_examples"] == 3
    assert entry["threshold"] == 0.9  # no dev background: the base's default
    assert entry["templates"] == len(model.matcher.u[0])
    two, _ = aw.add_matched_word(out, "snowboy", tmp_path / "two.safetensors",
                                 [_speechlike(9)], base=_base(tmp_path))
    m2 = load_model(two)
    torch.testing.assert_close(m2.matcher.u[0], model.matcher.u[0], rtol=0, atol=0)
    torch.testing.assert_close(m2.heads.w1[0], model.heads.w1[0], rtol=0, atol=0)
    with pytest.raises(SystemExit, match="already"):
        aw.add_matched_word(two, "snowboy", tmp_path / "x.safetensors", [_speechlike(1)],
                            base=_base(tmp_path))
    with pytest.raises(SystemExit, match="at least one"):
        aw.add_matched_word(two, "marvin", tmp_path / "x.safetensors", [], base=_base(tmp_path))
    gone = load_model(aw.remove_word(two, "hey jarvis", tmp_path / "r.safetensors"))
    assert gone.words == ["alexa", "snowboy"] and "hey jarvis" not in gone.card["per_word"]
    torch.testing.assert_close(gone.matcher.u[0], m2.matcher.u[1], rtol=0, atol=0)
    # a trained-heads add keeps the matched words
    with pytest.raises(SystemExit, match="only trained word"):
        aw.remove_word(two, "alexa", tmp_path / "r2.safetensors")


def test_calibration_counts_false_accepts_on_the_background() -> None:
    from polywake.train.add_word import calibrate_matched

    m, _, _ = _matcher(4)
    per = [torch.randn(3, m.embed_dim).numpy() for _ in range(3)]
    m.add_word("w", torch.from_numpy(np.concatenate(per)))
    rng = np.random.default_rng(0)
    bg = [("bg", rng.standard_normal((45_000, m.embed_dim)).astype(np.float32))]  # 1 h
    entry = calibrate_matched(m, "w", per, bg, 0.5, 0.99)
    with torch.no_grad():
        s = m.score(torch.from_numpy(bg[0][1])[None])[0, :, 0].numpy()
    # at most 0.5 false accepts per hour: no background step may reach the threshold
    assert (s >= entry["threshold"]).sum() == 0
    assert entry["threshold"] <= 1.0 and entry["threshold"] > np.quantile(s, 0.99)
    # one example: no held-out positive, so the threshold sits right above the background's
    # highest peak instead of halfway to a self-match's 1.0
    one = TemplateMatcher(m.backbone, m.gram, m.lin, m.const)
    one.add_word("w", torch.from_numpy(per[0]))
    with torch.no_grad():
        s1 = one.score(torch.from_numpy(bg[0][1])[None])[0, :, 0].numpy()
    thr1 = calibrate_matched(one, "w", per[:1], bg, 0.5, 0.99)["threshold"]
    assert s1.max() < thr1 <= s1.max() + 1e-3


def test_the_shipped_matcher_base_loads_and_matches_a_repeat() -> None:
    if not MATCHER_BASE.exists():
        pytest.skip("matcher base not built")
    from polywake.audio import load_audio
    from polywake.train.add_word import example_templates

    m, card = load_matcher_base()
    assert 0.5 < card["default_threshold"] < 1.0 and m.backbone.config.name == "standard"
    clip = load_audio(Path(__file__).parents[1] / "src/polywake/assets/examples/"
                      "alexa_hey_samuel.flac")
    assert m.scoring == "seq-tnorm-top3"
    per = example_templates(m.backbone, [clip], seq_len=m.seq_len)
    assert per[0].shape == (m.seq_len, m.embed_dim)
    m.add_word("x", torch.from_numpy(per[0]))
    with torch.no_grad():
        # seq-tnorm: the example's own steps score at least as high in their own order; a perfect
        # match reads (1 - cohort mean) / cohort spread, not 1.0
        fwd = float(m.score(torch.from_numpy(per[0][None]))[0, -1, 0])
        rev = float(m.score(torch.from_numpy(per[0][None, ::-1].copy()))[0, -1, 0])
        noise = float(m.score(torch.randn(1, 20, m.embed_dim)).max())
    assert fwd > 0.2 and fwd >= rev - 0.01 and fwd > noise + 0.1, (fwd, rev, noise)
    with pytest.raises(Exception, match="not a matcher base"):
        load_matcher_base(Path(__file__).parents[1] / "src/polywake/assets/backbone.safetensors")


@requires_shared_data
def test_the_shipped_matcher_tells_a_real_word_from_noise() -> None:
    """Ten real jarvis takes as examples: noise of any level scores below each of six other
    takes, and well below their median."""
    if not MATCHER_BASE.exists():
        pytest.skip("matcher base not built")
    from polywake.audio import load_audio
    from polywake.data import splits
    from polywake.train.add_word import _example_vad, example_templates
    from polywake.train.windows import embed_stream

    torch.set_num_threads(1)
    m, card = load_matcher_base()
    files = splits.real_keyword_files(dict(splits.REAL_EVAL_PHRASES)["jarvis"])
    per = example_templates(m.backbone, [load_audio(f) for f in files[:10]], _example_vad(),
                            m.seq_len)
    m.add_word("jarvis", torch.from_numpy(np.concatenate(per)))

    def score(x: np.ndarray) -> float:
        e = embed_stream(m.backbone, x.astype(np.float32)).astype(np.float32)
        with torch.no_grad():
            return float(m.score(torch.from_numpy(e)[None]).max())

    takes = [score(load_audio(f)) for f in files[10:16]]
    rng = np.random.default_rng(0)
    noise = [score(rng.standard_normal(32000) * lvl) for lvl in (0.0, 0.001, 0.01, 0.1)]
    assert max(noise) < min(takes) and np.median(takes) > max(noise) + 0.15, (noise, takes)


@requires_shared_data
def test_a_wrong_phrase_among_real_takes_is_the_one_warned_about() -> None:
    """Nine real jarvis takes and one take of another phrase: with the shipped matcher, only
    the intruder is named (OUTLIER_MARGIN from recipes/example_warnings.py)."""
    if not MATCHER_BASE.exists():
        pytest.skip("matcher base not built")
    from polywake.audio import load_audio
    from polywake.data import splits
    from polywake.train.add_word import (
        _example_vad,
        example_templates,
        example_warnings,
        leave_one_out_scores,
    )

    torch.set_num_threads(1)
    m, _ = load_matcher_base()
    vad = _example_vad()
    jarvis = splits.real_keyword_files(splits.REAL_EVAL_PHRASES["jarvis"])
    other = splits.real_keyword_files(splits.REAL_EVAL_PHRASES["snowboy"])
    clips = [load_audio(f) for f in jarvis[:9]] + [load_audio(other[0])]
    scores = leave_one_out_scores(m, example_templates(m.backbone, clips, vad, m.seq_len))
    w = example_warnings({"example_scores": scores}, clips, vad)
    assert len(w) == 1 and w[0].startswith("example 10:"), (scores, w)


def test_example_warnings_name_the_odd_example_out() -> None:
    from polywake.train.add_word import OUTLIER_MARGIN, example_warnings

    silent = [np.zeros(16000, np.float32)] * 4
    entry = {"example_scores": [0.8, 0.82, 0.79, 0.8 - OUTLIER_MARGIN - 0.05]}
    w = example_warnings(entry, silent)  # no VAD given: the scores alone
    assert len(w) == 1 and w[0].startswith("example 4:")
    assert example_warnings({"example_scores": [0.8, 0.81, 0.79, 0.7]}, silent) == []
    # two scores are no majority to judge by; unscored examples (too short) are skipped
    assert example_warnings({"example_scores": [0.9, 0.1]}, silent[:2]) == []
    assert example_warnings({"example_scores": [0.8, None, 0.8, 0.2]}, silent)[0] \
        .startswith("example 4:")
    from polywake.train.add_word import _example_vad

    vad = _example_vad()
    if vad is not None:  # silence is reported by number, real speech is not
        from polywake.audio import load_audio

        speech = load_audio(Path(__file__).parents[1] / "src/polywake/assets/examples/"
                            "alexa_hey_samuel.flac")
        w = example_warnings({"example_scores": [0.8] * 4}, silent[:1] + [speech] * 3, vad)
        assert w == ["example 1: no speech found by the VAD (silence or noise?)"]


@pytest.mark.parametrize("pool", [1, 3])
def test_seq_tnorm_equals_its_definition_in_the_projected_space(pool: int) -> None:
    """Each template step's cosine standardised over the cohort, averaged over an example's
    SEQ_STEPS steps matched in order, the mean of the best ``pool`` examples (the best one
    for pool 1, as files from before pooling), sigmoid(z - Z_CENTER); a word with fewer
    examples than ``pool`` averages all of them, whatever its neighbour's count."""
    from polywake.models.matcher import POOL_TOP, SEQ_STEPS, Z_CENTER

    torch.manual_seed(3)
    bb = Backbone(TINY).eval()
    w, b = torch.randn(64, bb.embed_dim), torch.randn(64)
    cohort = torch.randn(400, bb.embed_dim)
    m = TemplateMatcher.from_projection(bb, w, b).with_cohort(cohort)
    assert m.pool == POOL_TOP == 3 and m.scoring == "seq-tnorm-top3"
    m = m.empty() if pool == POOL_TOP else TemplateMatcher(
        bb, m.gram, m.lin, m.const, m.cohort_mean, m.cohort_cov, pool=pool)
    L = m.seq_len
    assert L == SEQ_STEPS > 1
    n_ex = 5
    ex = torch.randn(n_ex * L, bb.embed_dim)
    m.add_word("w", ex)
    m.add_word("two", torch.randn(2 * L, bb.embed_dim))  # padded to 5 in the fused tensor

    def cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        px, py = x.double() @ w.T.double() + b.double(), y.double() @ w.T.double() + b.double()
        return torch.nn.functional.cosine_similarity(px[:, None], py[None], dim=-1)

    cc = cos(cohort, ex)  # (400, 2L)
    mu, sd = cc.mean(0), cc.std(0)
    e = torch.randn(9, bb.embed_dim)
    z = (cos(e, ex) - mu) / sd  # (9, 2L)
    want = []
    for t in range(L - 1, 9):
        per_ex = sorted((float(sum(z[t - L + 1 + j, i * L + j] for j in range(L))) / L
                         for i in range(n_ex)), reverse=True)
        want.append(torch.sigmoid(torch.tensor(np.mean(per_ex[:pool]) - Z_CENTER)))
    got = m.score(e[None])[0, L - 1:]
    torch.testing.assert_close(got[:, 0].double(), torch.stack(want).double(), atol=1e-4,
                               rtol=1e-3)
    # the two-example word alone scores the same as beside the five-example one
    alone = m.empty()
    alone.add_templates("two", m.u[1].data, m.c[1].data, m.b[1].data)
    torch.testing.assert_close(alone.score(e[None])[0, L - 1:, 0], got[:, 1])
    with pytest.raises(ValueError, match="expected"):
        m.add_word("x", torch.randn(L + 1, bb.embed_dim))  # not whole examples
