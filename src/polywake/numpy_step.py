"""The streaming step of a ``.pwk`` model in numpy alone: no onnxruntime, no torch.

A version-2 ``.pwk`` (:mod:`polywake.model_io`) carries a numpy section: a layer program in its
JSON header and float32 tensors in its payload. The program is a list of ops applied in order
to a (time, channels) activation, which starts as the (k * frames_per_step, n_mels) log-mel
frames and ends as (k, words) probabilities:

* ``{"op": "scale_shift", "scale": T, "shift": T}``: ``x * scale + shift`` per channel (the
  input BatchNorm).
* ``{"op": "conv", "weight": T, "bias": T, "stride": s, "dilation": d, "groups": g,
  "relu": bool}``: a causal 1-D convolution with torch's Conv1d weight layout (cout, cin / g,
  k), every BatchNorm already folded into weight and bias. It is left-padded by
  ``p = (k - 1) d + 1 - s`` inputs from its state, as
  :class:`polywake.models.layers.CausalConv1d`, and ``relu`` applies ReLU to its output.
* ``{"op": "residual", "body": [ops]}``: ``relu(x + body(x))``.
* ``{"op": "sigmoid"}``.
* ``{"op": "parallel", "branches": [[ops], ...]}``: every branch runs on the same input; their
  outputs are concatenated along channels (a model's trained heads beside its matched words).
* ``{"op": "cosine_max", "gram": T, "lin": T, "const": T, "templates": T, "offsets": T,
  "words": w}``: the matched words' scores (:class:`polywake.models.matcher.TemplateMatcher`):
  for each of the ``w`` words the largest ``(x·u + c) / sqrt(xᵀGx + 2 g·x + β)`` over its
  templates (``templates`` (w * n, dim) rows u, ``offsets`` (w * n,) c, n per word), floored at
  0 and capped at 1.
* ``{"op": "cosine_seq", "gram": T, "lin": T, "const": T, "weight": T, "bias": T, "words": w}``:
  seq-tnorm matched words: the features ``[x, 1] / sqrt(xᵀGx + 2 g·x + β)``, a causal conv of
  ``seq`` taps over them (``weight`` (w * n, seq, dim + 1), ``bias`` (w * n,); its state, the
  last seq - 1 features, is one more (seq - 1, dim + 1) state array), then the largest of each
  word's n outputs; a ``sigmoid`` op follows it. With ``"pool": T`` ((w, m) weights, best
  first) a word's score is instead the weighted sum of its m largest outputs (the mean of its
  best examples).

``T`` names a tensor of the section. The state is one (p, cin) float32 array per conv with
p > 0, in program order: the ONNX graph's ``state_i`` (there (1, cin, p)), time-major.

Speed: a step is ~20 tiny matrix products, so numpy's per-call overhead costs more than the
arithmetic. Each conv is therefore one BLAS call: at load its weights become a dense
(k * cin, cout) im2col matrix (a grouped conv a block-diagonal one: a few kB more, one code
path), its input columns are a strided view of [state; x] copied once, and bias and ReLU
run in place. Activations stay time-major, so the frames need no transpose and the state
is a contiguous slice of [state; x]. The matrices lie in one contiguous buffer in program
order (a step streams all of them once), and the ops are flat tuples (:func:`_plan`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelFileError
from .model_io import DEFAULT_MODEL, PwkFile, check_card, read_pwk_file

MAX_OPS = 10_000
MAX_DEPTH = 8
MAX_KERNEL = 64
MAX_STRIDE = 64
MAX_DILATION = 4096
# Dense im2col matrices of all convs together (floats): grouped convs grow by their group
# count, so a crafted file could otherwise ask for gigabytes. The standard model needs ~0.4M.
MAX_DENSE_WEIGHTS = 32 * 1024 * 1024
MAX_STATE_FLOATS = 1024 * 1024  # likewise for the carried state (the standard model: 4.3k)

(_SCALE_SHIFT, _CONV, _PUSH, _ADD_RELU, _SIGMOID, _CONV1, _FORK, _NEXT, _JOIN,
 _COSINE_MAX, _COSINE_SEQ) = range(11)
_ONE, _EXP_CLIP = np.float32(1.0), np.float32(88.0)
_ALIGN = 16  # floats: the dense matrices start on 64-byte boundaries


@dataclass(frozen=True, slots=True)
class _Conv:
    weight: np.ndarray  # (k * cin, cout); row j * cin + c holds tap j of input channel c
    bias: np.ndarray  # (cout,)
    cin: int
    kernel: int
    stride: int
    dilation: int
    pad: int
    span: int  # (k - 1) * dilation + 1 inputs per output
    relu: bool
    state: int  # index into the state list; -1 when pad == 0
    strides: tuple[int, int, int]  # byte strides of the (t, tap, c) im2col view


class _Compiler:
    """The header's program + the section's tensors -> a flat list of (opcode, argument),
    with every shape, channel count and stride checked so a bad file fails at load."""

    def __init__(self, path: Path, tensors: dict[str, np.ndarray]) -> None:
        self.path, self.tensors = path, tensors
        self.ops: list[tuple[int, Any]] = []
        self.state_shapes: list[tuple[int, int]] = []
        self.dense = 0
        self.state_floats = 0
        self.n_in: int | None = None  # channels of the program's input (mel bands)
        # All dense matrices in one zeroed block, in program order (see :meth:`arena`).
        self._arena = np.zeros(0, np.float32)
        self._used = 0

    def arena(self, ops: Any) -> None:
        """Reserve one zeroed block for the dense matrices of the whole program, each 64-byte
        aligned: a step streams all of them once (~1.5 MB for the standard model, most of
        its time), and one sequential block caches and prefetches better than ~20 separate
        allocations (about 6 % faster). Sized by a pass over the program that only reads
        shapes; a bad or oversized program gets no block (:meth:`conv` rejects it)."""
        def floats(ops: Any, depth: int) -> int:
            total = 0
            for op in ops if isinstance(ops, list) and depth <= MAX_DEPTH else ():
                kind = op.get("op") if isinstance(op, dict) else None
                if kind == "residual":
                    total += floats(op.get("body"), depth + 1)
                elif kind == "parallel" and isinstance(op.get("branches"), list):
                    total += sum(floats(b, depth + 1) for b in op["branches"])
                elif kind == "conv":
                    name, g = op.get("weight"), op.get("groups", 1)
                    w = self.tensors.get(name) if isinstance(name, str) else None
                    if w is not None and w.ndim == 3 and type(g) is int and 1 <= g <= 1 << 16:
                        total += w.shape[0] * w.shape[1] * g * w.shape[2] + _ALIGN
            return total

        n = floats(ops, 0)
        if 0 < n <= MAX_DENSE_WEIGHTS + MAX_OPS * _ALIGN:
            self._arena = np.zeros(n + _ALIGN, np.float32)
            self._used = (-self._arena.ctypes.data % (4 * _ALIGN)) // 4

    def zeros(self, shape: tuple[int, int, int]) -> np.ndarray:
        """A zeroed (k, cin, cout) matrix: the next piece of the arena, or its own array."""
        size = shape[0] * shape[1] * shape[2]
        if self._used + size > self._arena.size:
            return np.zeros(shape, np.float32)
        out = self._arena[self._used:self._used + size].reshape(shape)
        self._used += size + (-size) % _ALIGN
        return out

    def fail(self, why: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: invalid numpy section ({why}); re-export the model")

    def tensor(self, op: dict, key: str, ndim: int) -> np.ndarray:
        name = op.get(key)
        t = self.tensors.get(name) if isinstance(name, str) else None
        if t is None or t.ndim != ndim:
            raise self.fail(f"{op.get('op')}: {key} {name!r} is not a {ndim}-d tensor")
        return t

    def integer(self, op: dict, key: str, hi: int) -> int:
        v = op.get(key, 1)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
            raise self.fail(f"{op.get('op')}: {key} {v!r} is not in 1..{hi}")
        return v

    def program(self, ops: Any, channels: int | None, depth: int = 0
                ) -> tuple[int | None, int]:
        """Compile ``ops``; -> (channels out, total stride)."""
        if depth > MAX_DEPTH:
            raise self.fail(f"residual blocks nested more than {MAX_DEPTH} deep")
        if not isinstance(ops, list):
            raise self.fail("the program is not a list of ops")
        stride = 1
        for op in ops:
            if len(self.ops) > MAX_OPS:
                raise self.fail("too many ops")
            kind = op.get("op") if isinstance(op, dict) else None
            if kind == "scale_shift":
                scale, shift = self.tensor(op, "scale", 1), self.tensor(op, "shift", 1)
                if scale.shape != shift.shape or channels not in (None, scale.shape[0]):
                    raise self.fail(f"scale_shift of {scale.shape[0]} channels on {channels}")
                if channels is None:
                    self.n_in = channels = scale.shape[0]
                self.ops.append((_SCALE_SHIFT, (scale.copy(), shift.copy())))
            elif kind == "conv":
                conv = self.conv(op, channels)
                channels = conv.weight.shape[1]
                stride *= conv.stride
                self.ops.append((_CONV, conv))
            elif kind == "residual":
                body = op.get("body")
                if not body:
                    raise self.fail("a residual block with an empty body")
                self.ops.append((_PUSH, None))
                out, s = self.program(body, channels, depth + 1)
                if out != channels or s != 1:
                    raise self.fail(f"a residual body maps {channels} channels to {out} "
                                    f"with stride {s}")
                self.ops.append((_ADD_RELU, None))
            elif kind == "sigmoid":
                self.ops.append((_SIGMOID, None))
            elif kind == "parallel":
                branches = op.get("branches")
                if not isinstance(branches, list) or not 1 <= len(branches) <= 16 \
                        or not all(branches):
                    raise self.fail("parallel: branches must be 1-16 non-empty op lists")
                self.ops.append((_FORK, None))
                outs, strides = [], set()
                for i, b in enumerate(branches):
                    if i:
                        self.ops.append((_NEXT, None))
                    out, s = self.program(b, channels, depth + 1)
                    if channels is None:
                        channels = self.n_in
                    outs.append(out)
                    strides.add(s)
                if len(strides) != 1 or None in outs:
                    raise self.fail(f"parallel branches with strides {sorted(strides)}")
                self.ops.append((_JOIN, None))
                channels, stride = sum(outs), stride * strides.pop()
            elif kind == "cosine_max":
                args = self.cosine_max(op, channels)
                channels = args[5]
                self.ops.append((_COSINE_MAX, args))
            elif kind == "cosine_seq":
                args = self.cosine_seq(op, channels)
                channels = args[5]
                self.ops.append((_COSINE_SEQ, args))
            else:
                raise self.fail(f"unknown op {kind!r}")
        return channels, stride

    def cosine_max(self, op: dict, channels: int | None) -> tuple:
        gram, lin = self.tensor(op, "gram", 2), self.tensor(op, "lin", 1)
        const, u = self.tensor(op, "const", 1), self.tensor(op, "templates", 2)
        c, w = self.tensor(op, "offsets", 1), self.integer(op, "words", 1 << 16)
        d = u.shape[1]
        if channels != d or gram.shape != (d, d) or lin.shape != (d,) or const.shape != (1,) \
                or u.shape[0] % w or c.shape != (u.shape[0],) or u.shape[0] == 0:
            raise self.fail(f"cosine_max: templates {u.shape} of {w} words, gram {gram.shape}, "
                            f"on {channels} channels")
        self.dense += u.size + gram.size
        if self.dense > MAX_DENSE_WEIGHTS:
            raise self.fail("the templates are too large")
        return (np.ascontiguousarray(gram), lin.copy(), np.float32(const[0]),
                np.ascontiguousarray(u.T), c.copy(), w, u.shape[0] // w)

    def cosine_seq(self, op: dict, channels: int | None) -> tuple:
        gram, lin = self.tensor(op, "gram", 2), self.tensor(op, "lin", 1)
        const, wt = self.tensor(op, "const", 1), self.tensor(op, "weight", 3)
        bias, w = self.tensor(op, "bias", 1), self.integer(op, "words", 1 << 16)
        rows, seq, k = wt.shape
        d = k - 1
        if channels != d or gram.shape != (d, d) or lin.shape != (d,) or const.shape != (1,) \
                or rows == 0 or rows % w or bias.shape != (rows,) or not 2 <= seq <= MAX_KERNEL:
            raise self.fail(f"cosine_seq: weight {wt.shape} of {w} words, gram {gram.shape}, "
                            f"on {channels} channels")
        pool = self.tensor(op, "pool", 2) if "pool" in op else None
        if pool is not None and (pool.shape[0] != w or not 1 <= pool.shape[1] <= rows // w
                                 or not np.isfinite(pool).all()):
            raise self.fail(f"cosine_seq: pool weights {pool.shape} for {w} words of "
                            f"{rows // w} examples")
        self.dense += wt.size + gram.size
        self.state_floats += (seq - 1) * k
        if self.dense > MAX_DENSE_WEIGHTS or self.state_floats > MAX_STATE_FLOATS:
            raise self.fail("the templates are too large")
        state = len(self.state_shapes)
        self.state_shapes.append((seq - 1, k))
        # (seq, k, rows): tap j's matrix is one contiguous slice
        taps = np.ascontiguousarray(wt.transpose(1, 2, 0))
        return (np.ascontiguousarray(gram), lin.copy(), np.float32(const[0]), taps,
                bias.copy(), w, rows // w, state,
                None if pool is None else np.ascontiguousarray(pool[:, ::-1]))

    def conv(self, op: dict, channels: int | None) -> _Conv:
        w, b = self.tensor(op, "weight", 3), self.tensor(op, "bias", 1)
        stride = self.integer(op, "stride", MAX_STRIDE)
        dilation = self.integer(op, "dilation", MAX_DILATION)
        groups = self.integer(op, "groups", 1 << 16)
        cout, cin_g, k = w.shape
        cin = cin_g * groups
        if channels is None:
            self.n_in = channels = cin
        if channels != cin or cout % groups or b.shape != (cout,) or cin_g == 0 \
                or not 1 <= k <= MAX_KERNEL:
            raise self.fail(f"conv weight {w.shape} x {groups} groups, bias {b.shape}, "
                            f"on {channels} channels")
        span = (k - 1) * dilation + 1
        pad = span - stride
        if pad < 0:
            raise self.fail(f"conv with kernel {k}, dilation {dilation} < stride {stride}")
        self.dense += k * cin * cout
        if self.dense > MAX_DENSE_WEIGHTS:
            raise self.fail("the convs are too large")
        dense = self.zeros((k, cin, cout))
        og = cout // groups
        for g in range(groups):  # block diagonal: group g's outputs see only its inputs
            dense[:, g * cin_g:(g + 1) * cin_g, g * og:(g + 1) * og] = \
                w[g * og:(g + 1) * og].transpose(2, 1, 0)
        state = -1
        self.state_floats += pad * cin
        if self.state_floats > MAX_STATE_FLOATS:
            raise self.fail("the convs' state is too large")
        if pad:
            state = len(self.state_shapes)
            self.state_shapes.append((pad, cin))
        if not isinstance(op.get("relu", False), bool):
            raise self.fail(f"conv relu {op.get('relu')!r} is not a boolean")
        row = 4 * cin
        dense = dense.reshape(k * cin, cout)
        dense.flags.writeable = False
        return _Conv(dense, b.astype(np.float32), cin, k, stride,
                     dilation, pad, span, bool(op.get("relu", False)), state,
                     (stride * row, dilation * row, 4))


def _plan(code: int, a: Any) -> tuple:
    """One compiled op as the flat tuple :meth:`NumpyScorer.step` unpacks (a step is ~20 tiny
    products, so attribute look-ups and branches per op show in its time)."""
    if code == _CONV:
        if a.kernel == 1 and a.stride == 1:
            return (_CONV1, a.weight, a.bias, a.relu)
        return (_CONV, a.weight, a.bias, a.relu, a.pad, a.state, a.span, a.stride, a.kernel,
                a.cin, a.strides, a.dilation)
    if code in (_SCALE_SHIFT, _COSINE_MAX, _COSINE_SEQ):
        return (code, *a)
    return (code,)


class NumpyScorer:
    """Runs a ``.pwk`` model's numpy section; the same interface and probabilities (float32
    rounding apart) as :class:`polywake.model_io.OnnxScorer`. The weights are read-only after
    load and every step allocates its own arrays, so one scorer serves any number of threads,
    each stream with its own state from :meth:`new_state`."""

    def __init__(self, path: str | os.PathLike = DEFAULT_MODEL, *,
                 pwk: PwkFile | None = None) -> None:
        self.path = Path(path)
        pwk = pwk if pwk is not None else read_pwk_file(self.path, want=("numpy",))
        self.card = pwk.card
        self.words, self.frames_per_step = check_card(self.path, self.card)
        c = _Compiler(self.path, pwk.numpy_tensors())
        try:
            program = (pwk.numpy or {}).get("program")
            c.arena(program)
            out, stride = c.program(program, None)
        except ModelFileError:
            raise
        except (ValueError, TypeError, AttributeError, RecursionError) as e:
            raise c.fail(f"{type(e).__name__}: {e}") from e
        n_mels = c.n_in
        if n_mels is None or out != len(self.words) or stride != self.frames_per_step:
            raise c.fail(f"it maps {n_mels} mels to {out} scores every {stride} frames; the "
                         f"card has {len(self.words)} words every {self.frames_per_step}")
        self.n_mels = n_mels
        self._state_shapes = c.state_shapes
        self._plan = [_plan(code, a) for code, a in c.ops]

    def new_state(self) -> list[np.ndarray]:
        return [np.zeros(s, np.float32) for s in self._state_shapes]

    def step(self, frames: np.ndarray, state: list[np.ndarray]
             ) -> tuple[np.ndarray, list[np.ndarray]]:
        """(k * frames_per_step, n_mels) frames -> ((k, words) probabilities, new state).
        The old state is left as it was."""
        x = np.ascontiguousarray(frames, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_mels or x.shape[0] % self.frames_per_step:
            raise ValueError(f"frames {x.shape}: expected (k * {self.frames_per_step}, "
                             f"{self.n_mels})")
        if len(state) != len(self._state_shapes):
            raise ValueError(f"{len(state)} state arrays, the model has "
                             f"{len(self._state_shapes)}")
        new = list(state)
        saved: list[np.ndarray] = []
        outs: list[list[np.ndarray]] = []
        concatenate, strided, maximum, f32 = np.concatenate, np.ndarray, np.maximum, np.float32
        for op in self._plan:
            code = op[0]
            if code == _CONV1:  # kernel 1, stride 1: no state, no im2col
                x = x @ op[1]
                x += op[2]
                if op[3]:
                    maximum(x, 0.0, out=x)
            elif code == _CONV:
                _, weight, bias, relu, pad, si, span, stride, kernel, cin, strides, dil = op
                if pad:
                    xx = concatenate((state[si], x))
                    # A view: xx is this step's own array and nothing writes to it later.
                    new[si] = xx[-pad:]
                else:
                    xx = x
                if dil == 1 and xx.shape[0] == span:
                    # One output that sees every row of xx: its im2col row is xx itself.
                    cols = xx.reshape(1, -1)
                else:
                    # im2col as a strided view: row t, tap j, channel c = xx[t s + j d, c];
                    # the reshape copies it once into the (n, k * cin) matrix.
                    n = (xx.shape[0] - span) // stride + 1
                    cols = strided((n, kernel, cin), f32, xx, 0, strides).reshape(
                        n, kernel * cin)
                x = cols @ weight
                x += bias
                if relu:
                    maximum(x, 0.0, out=x)
            elif code == _PUSH:
                saved.append(x)
            elif code == _ADD_RELU:
                # x is the body's own fresh output (bodies are never empty), so in place is
                # safe; the saved input may be the caller's frames, which stay untouched.
                x += saved.pop()
                maximum(x, 0.0, out=x)
            elif code == _SCALE_SHIFT:
                x = x * op[1]
                x += op[2]
            elif code == _FORK:  # every branch starts from this input; no op writes to it
                saved.append(x)
                outs.append([])
            elif code == _NEXT:
                outs[-1].append(x)
                x = saved[-1]
            elif code == _JOIN:
                saved.pop()
                x = concatenate(outs.pop() + [x], axis=1)
            elif code == _COSINE_MAX:
                _, gram, lin, const, ut, offs, w, n = op
                norm = ((x @ gram) * x).sum(1) + 2 * (x @ lin) + const
                sims = (x @ ut + offs).reshape(x.shape[0], w, n).max(2)
                x = np.clip(sims / np.sqrt(maximum(norm, f32(1e-12)))[:, None], 0.0, 1.0,
                            dtype=f32)
            elif code == _COSINE_SEQ:
                # seq-tnorm matched words (models/matcher.py): features [x, 1] / |P x + b|,
                # a causal conv of seq taps over them (state: the last seq - 1 features),
                # the best example of each word, or the weighted mean of its best few
                _, gram, lin, const, taps, bias, w, n, si, pool = op
                norm = ((x @ gram) * x).sum(1) + 2 * (x @ lin) + const
                a = concatenate((x, np.ones((x.shape[0], 1), f32)), axis=1)
                a /= np.sqrt(maximum(norm, f32(1e-12)))[:, None]
                xx = concatenate((state[si], a))
                seq, steps = taps.shape[0], a.shape[0]
                new[si] = xx[-(seq - 1):]
                z = xx[:steps] @ taps[0]
                for j in range(1, seq):
                    z += xx[j:j + steps] @ taps[j]
                z += bias
                z = z.reshape(steps, w, n)
                if pool is None:
                    x = z.max(2)
                else:  # pool is stored worst-to-best, as the sorted tail is ordered
                    x = (np.sort(z, axis=2)[:, :, n - pool.shape[1]:] * pool).sum(2,
                                                                                  dtype=f32)
            else:  # _SIGMOID. Clipping at -88 keeps exp finite in float32 without an errstate
                # (scores below sigmoid(-88) ~ 6e-39 read as that); 1 / (1 + e) keeps the
                # relative precision of small scores, which calibrated thresholds can reach.
                x = _ONE / (_ONE + np.exp(np.minimum(-x, _EXP_CLIP)))
        return x, new
