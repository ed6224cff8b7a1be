"""The pipeline: text -> AST -> layer graph -> shapes -> summary -> backend.

`check` runs the first three stages, `summary` adds the fourth, `train` and `eval` lower to a
backend. Each stage is one module; this file only strings them together.
"""

from __future__ import annotations

import gc
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from .diagnostics import ERROR, CompileError, Diagnostic, Span

MAX_SOURCE_BYTES = 16 << 20  # a model file larger than this is not a model
FIFO_WAIT_SECONDS = 2.0  # how long a named pipe with no writer is waited on


STDIN = "-"  # the path that names standard input


def read_source(path: str | os.PathLike) -> tuple[str, list[Diagnostic]]:
    """A model file's text, or a diagnostic saying why it cannot be read (missing, binary...).

    `-` reads standard input. At most MAX_SOURCE_BYTES are read whatever the file claims to be:
    a device (/dev/zero) or a pipe reports a size of 0, so the limit counts the bytes as they
    come. A named pipe that nothing writes to reads as empty instead of blocking."""
    file = "<stdin>" if str(path) == STDIN else str(path)
    span = Span(file, 1, 1, 1, 1)

    def fail(message, hint=None):
        return "", [Diagnostic(ERROR, "io", message, span, [], hint)]

    try:
        data, regular = _read_limited(path)
    except _StdinClosed:
        return fail("standard input is closed", "pass a model file, or pipe one into `-`")
    except FileNotFoundError:
        return fail("no such file")
    except IsADirectoryError:
        return fail("this is a directory, not a model file")
    except OSError as e:
        return fail(f"cannot read the file: {e.strerror or e}")
    if len(data) > MAX_SOURCE_BYTES:
        return fail(f"the input is over {MAX_SOURCE_BYTES:,} bytes; a model file is at most "
                    f"{MAX_SOURCE_BYTES:,}", None if regular else
                    "it is not a regular file: a device or a pipe that does not end")
    if not data and not regular and file != "<stdin>":
        return fail("nothing to read: this is a pipe or device that gave no data",
                    "pass a model file")
    return decode_source(data, file)


class _StdinClosed(Exception):
    pass


def _read_limited(path) -> tuple[bytes, bool]:
    """(up to MAX_SOURCE_BYTES + 1 bytes of the file, whether it is a regular file)."""
    import stat
    import sys

    if str(path) == STDIN:
        stream = getattr(sys.stdin, "buffer", None) if sys.stdin is not None else None
        if stream is None:
            raise _StdinClosed
        try:
            fd = stream.fileno()
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except (OSError, ValueError):  # no file descriptor: an in-memory stream
            return stream.read(MAX_SOURCE_BYTES + 1), False
        return _read_fd(fd), regular
    # O_NONBLOCK: opening a named pipe with no writer would wait for one forever.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)
        regular = stat.S_ISREG(mode)
        data = _read_fd(fd)
        if not data and stat.S_ISFIFO(mode):  # no writer yet: give one a moment to come
            deadline = time.monotonic() + FIFO_WAIT_SECONDS
            while not data and time.monotonic() < deadline:
                time.sleep(0.05)
                data = _read_fd(fd)
        return data, regular
    finally:
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    """Read to the end or to MAX_SOURCE_BYTES + 1 bytes; a non-blocking descriptor that has
    nothing yet is waited on (select). A pipe with no writer reads as empty."""
    import select

    chunks, total = [], 0
    while total <= MAX_SOURCE_BYTES:
        try:
            chunk = os.read(fd, min(1 << 20, MAX_SOURCE_BYTES + 1 - total))
        except BlockingIOError:
            select.select([fd], [], [])
            continue
        except InterruptedError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def decode_source(data: bytes, file: str) -> tuple[str, list[Diagnostic]]:
    """Model text from bytes, strictly UTF-8 (a byte-order mark is dropped), with no NUL."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return "", [Diagnostic(ERROR, "io", f"the file is not UTF-8 text (byte 0x{data[e.start]:02x} "
                               f"at offset {e.start:,})", Span(file, line, col, line, col + 1),
                               [], "cnnc reads plain-text model files")]
    if "\x00" in text:
        i = text.index("\x00")
        line = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        return "", [Diagnostic(ERROR, "io", "the file holds a NUL byte: it looks binary, not a "
                               "model", Span(file, line, col, line, col + 1), [],
                               "cnnc reads plain-text model files")]
    return text, []


@dataclass
class Model:
    """A compiled program: its graph and diagnostics, and from them a summary or a backend."""

    file: str
    source: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    graph: object = None  # LayerGraph, or None when the program did not parse
    train_config: object = None  # TrainConfig, or None when the file has no `train:` section
    params: dict = field(default_factory=dict)  # the model's parameters and the values used
    budget: object = None  # analysis.budget.Budget of the `budget:` section (empty without)

    @property
    def ok(self) -> bool:
        return not any(d.severity == ERROR for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == ERROR]

    def raise_for_errors(self) -> "Model":
        if not self.ok:
            raise CompileError(self.diagnostics)
        return self

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.file))[0] if self.file not in ("<input>", "<stdin>") else "model"

    def summary(self):
        """What `cnnc summary` prints, as data: `.rows` (one per layer: name, op, output_shape,
        params, trainable, macs, receptive_field, line), `.total_params` (as Keras' "Total
        params"), `.trainable_params`, `.macs`, `.to_json()`. Raises CompileError if the
        program has errors."""
        from .analysis.summary import summarize

        self.raise_for_errors()
        return summarize(self.graph, self.name, self.params)

    @property
    def input_shape(self) -> tuple:
        return self.graph[self.graph.input].shape

    @property
    def output_shape(self) -> tuple:
        return self.graph[self.graph.output].shape

    def to_backend(self, name: str = "numpy", **options):
        """The model lowered to a backend (`numpy`, `torch` or a plugin's), ready to run: a
        Session with `predict`, `get_weights`, `set_weights` (cnnc.backends.base.Session).

        `seed=0` picks the initial weights (the same arrays on every backend); the torch backend
        also takes `device` ("auto", "cpu", "cuda"), `channels_last` and `compile`."""
        from .backends import get_backend

        self.raise_for_errors()
        return get_backend(name).build(self, **options)

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"{len(self.errors)} errors"
        return f"<cnnc.Model {self.name!r}: {len(self.graph or ())} layers, {state}>"


@contextmanager
def _collector_paused():
    """Pause Python's cyclic garbage collector while compiling.

    Compiling makes tens of objects a layer, nearly all kept until the end and few in reference
    cycles: the collector would walk them again and again and free next to nothing, which costs
    about a tenth of checking a 10,000-layer model. It runs again once the compiler is done."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def compile_text(text: str, file: str = "<input>", params: dict | None = None, *,
                 input_shape: tuple | None = None) -> Model:
    with _collector_paused():
        return _compile_text(text, file, params, input_shape)


def _compile_text(text: str, file: str, params: dict | None,
                  input_shape: tuple | None = None) -> Model:
    from .ir.build import build
    from .ir.infer import infer
    from .syntax.parser import parse
    from .train.config import parse_sections

    text = text.removeprefix("\ufeff")  # a byte-order mark, as some editors write
    model = Model(file=file, source=text)
    overrides, diagnostics = _overrides(params or {})
    model.diagnostics.extend(diagnostics)
    program, diagnostics = parse(text, file)
    model.diagnostics.extend(diagnostics)
    if not program.parsed:
        return model
    built = build(program, overrides)
    model.graph = built.graph
    model.params = built.params
    model.diagnostics.extend(built.diagnostics)
    if built.unknown_overrides:
        declared = ", ".join(f"`{n}`" for n in built.params) or "none"
        for name in built.unknown_overrides:
            model.diagnostics.append(Diagnostic(
                ERROR, "param", f"--set {name}: the model has no parameter `{name}`", None,
                [f"the parameters it declares: {declared}"],
                did_you_mean_hint(name, list(built.params))))
    model.train_config, section_diags = parse_sections(built.sections, file)
    model.diagnostics.extend(section_diags)
    budgets = [s for s in built.sections if s.name == "budget"]
    if budgets:
        from .analysis.budget import parse_budget

        model.budget, budget_diags = parse_budget(budgets[0])
        model.diagnostics.extend(budget_diags)
        for extra in budgets[1:]:
            model.diagnostics.append(Diagnostic(ERROR, "budget", "a second `budget:` section",
                                                extra.name_span, [], "merge the two sections"))
    if built.graph.input is not None:
        model.diagnostics.extend(infer(built.graph, input_shape))
        if model.budget and not any(d.severity == ERROR for d in model.diagnostics):
            from .analysis.budget import check_budget

            model.diagnostics.extend(check_budget(built.graph, model.budget, file))
    model.diagnostics.sort(key=lambda d: (d.span is not None, d.span or ()))
    return model


def did_you_mean_hint(name: str, names: list) -> str | None:
    from .diagnostics import did_you_mean

    return did_you_mean(name, names)


def _overrides(params) -> tuple[dict, list[Diagnostic]]:
    """Parameter values given from outside (`--set NAME=VALUE`, `compile(..., params=)`; a dict
    or (name, value) pairs) as Values: numbers as they are, text parsed as the language's
    expressions."""
    from .syntax import ast
    from .syntax.parser import parse_value

    out, diagnostics = {}, []
    where = Span("--set", 1, 1, 1, 1)
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    given: dict = {}
    for name, value in pairs:
        if name in given:
            diagnostics.append(Diagnostic(ERROR, "param", f"--set {name} is given twice "
                                          f"({given[name]}, then {value})", None, [],
                                          "give each parameter one value"))
            continue
        given[name] = value
        if isinstance(value, bool) or not isinstance(value, (int, float, str, tuple)):
            diagnostics.append(Diagnostic(ERROR, "param", f"--set {name}: {value!r} is not a "
                                          "number, a size or a word", None))
            continue
        if isinstance(value, str):
            parsed, problem = parse_value(value)
            if parsed is None:
                diagnostics.append(Diagnostic(ERROR, "param", f"--set {name}={value}: "
                                              f"{problem}", None))
                continue
            out[name] = parsed._replace(span=where)
        else:
            kind = "dims" if isinstance(value, tuple) else \
                "int" if isinstance(value, int) else "float"
            text = "x".join(map(str, value)) if isinstance(value, tuple) else repr(value)
            out[name] = ast.Value(kind, value, text, where)
    return out, diagnostics


def compile_file(path: str | os.PathLike, params: dict | None = None, *,
                 input_shape: tuple | None = None) -> Model:
    """Compile a model file; `-` reads standard input (and is named `<stdin>`)."""
    file = "<stdin>" if str(path) == STDIN else str(path)
    text, diagnostics = read_source(path)
    if diagnostics:
        return Model(file=file, source="", diagnostics=diagnostics)
    return compile_text(text, file, params, input_shape=input_shape)


def compile(source: str | os.PathLike, *, file: str | None = None,
            params: dict | None = None, input_shape: tuple | None = None) -> Model:
    """Compile a program given as text or as a path to a .cnn file. `params` sets the model's
    parameters (`param width=1.0` in the file): {"width": 0.5}, or text as --set takes it.

    Never raises for a faulty program: look at `model.ok` and `model.diagnostics`, or call
    `model.raise_for_errors()`. `input_shape` (H, W, C) evaluates the model at another input
    than the one its `input` statement declares.

    >>> m = compile("input 28x28x1; conv 32 3x3 relu; pool 2; flatten; dense 10 softmax")
    >>> m.summary().total_params
    54410
    """
    if isinstance(source, os.PathLike):
        return compile_file(source, params, input_shape=input_shape)
    if "\n" not in source and ";" not in source and (source.endswith(".cnn")
                                                     or os.path.isfile(source)):
        return compile_file(source, params, input_shape=input_shape)
    return compile_text(source, file or "<input>", params, input_shape=input_shape)
