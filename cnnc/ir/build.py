"""AST to layer graph: blocks expanded, names resolved, every layer's arguments validated.

The builder walks the program top to bottom keeping a *current tensor* (what the next layer
reads). `x = ...` names a tensor, `from x` makes a named tensor current again, an op that reads
several tensors (its schema's n_inputs; `add`, `concat`) merges the current tensor with named
ones, and a block call expands the block's body in a scope of its own, with its parameters
bound to the call's arguments.

Errors do not stop the walk: a statement that fails is skipped and the next one carries on, so
one run reports every independent problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .. import ops
from ..diagnostics import ERROR, WARNING, Diagnostic, Span, did_you_mean
from ..ops.args import bind
from ..syntax import ast
from .expr import FUNCTIONS, Evaluator, ExprError
from .graph import Layer, LayerGraph

MAX_BLOCK_DEPTH = 64
MAX_REPEAT = 10_000
# Statements run plus layers made, blocks and repeats expanded: past this the model is not a
# real one (ResNet-152 is some 500 layers), and building on would only take minutes.
MAX_STEPS = 50_000
MAX_ERRORS = 100  # then stop, as compilers do: the rest are likely consequences
_REPEAT = re.compile(r"x([0-9]+)")
KEYWORDS = ("from", "here", "block", "train", "input", "param")


def _merges(name: str) -> bool:
    """Whether `name` is an op that reads several named tensors (add, concat, a plugin's).
    Asks only the ops loaded so far: a tensor name must not make `check` load plugins."""
    found = ops.lookup(name, plugins=False)
    return found is not None and found[0].merges


class _Skip(Exception):
    """A statement failed; its diagnostic is recorded. Carry on with the next one."""


class _Abort(Exception):
    """The model expands past MAX_STEPS, or MAX_ERRORS were reported (the diagnostic says
    which). Stop building."""


@dataclass
class Scope:
    prefix: str  # layer-name prefix: "" at top level, "basic_1." inside a block instance
    names: dict = field(default_factory=dict)  # tensor name -> (layer name, span where defined)
    params: dict = field(default_factory=dict)  # block parameter -> bound Value (evaluated)
    current: str | None = None
    counters: dict = field(default_factory=dict)
    context: tuple[str, ...] = ()
    call_line: int | None = None  # inside a block: the line of the top-level call
    blocks_active: tuple[str, ...] = ()
    previous: ast.Call | None = None  # the statement before the one being built, as written


@dataclass
class BuildResult:
    graph: LayerGraph
    diagnostics: list[Diagnostic]
    sections: list[ast.Section]
    # The model's parameters (`param width=1.0`) and the values the build used, in the order
    # declared; `unknown_overrides` are the names given to override that the model lacks.
    params: dict = field(default_factory=dict)
    unknown_overrides: list = field(default_factory=list)


class Builder:
    def __init__(self, program: ast.Program, overrides: dict | None = None):
        self.program = program
        # Values given from outside (`--set width=0.5`) for the model's parameters.
        self.overrides: dict[str, ast.Value] = dict(overrides or {})
        self.model_params: dict[str, ast.Value] = {}  # declared, with the value in use
        self.param_spans: dict[str, Span] = {}
        self.file = program.file
        self.lines = program.source.splitlines()
        self.graph = LayerGraph()
        self.diagnostics: list[Diagnostic] = []
        self.blocks: dict[str, ast.BlockDef] = {}
        self.sections: list[ast.Section] = []
        self.input_layer: Layer | None = None
        # True once an `input` statement was written (even a faulty one) or its absence was
        # reported: later layers then skip quietly instead of each saying "no input".
        self.quiet_about_input = False
        self.steps = 0
        self.errors = 0
        self.reported: set = set()  # (code, span, message) of every diagnostic given

    # -- diagnostics ---------------------------------------------------------------------------
    def error(self, span: Span, code: str, message: str, *, notes=(), hint=None,
              scope: Scope | None = None, severity=ERROR):
        key = (code, span, message)
        if key in self.reported:
            return  # one diagnostic per place: a faulty block called ten times says it once
        self.reported.add(key)
        notes = list(notes) + (list(scope.context) if scope else [])
        self.diagnostics.append(Diagnostic(severity, code, message, span, notes, hint))
        if severity == ERROR and code != "too-many-errors":
            self.errors += 1
            if self.errors >= MAX_ERRORS:
                self.diagnostics.append(Diagnostic(
                    ERROR, "too-many-errors", f"{MAX_ERRORS} errors: stopping here", span, [],
                    "fix these first; later ones are often their consequences"))
                raise _Abort

    def text_of(self, span: Span) -> str:
        """The source text a span covers (first line only), for notes like "`pool 2` at line 5"."""
        if not 1 <= span.line <= len(self.lines):
            return ""
        line = self.lines[span.line - 1]
        end = span.end_column - 1 if span.end_line == span.line else len(line)
        return line[span.column - 1:end].strip()

    # -- the walk ------------------------------------------------------------------------------
    def build(self) -> BuildResult:
        top = Scope(prefix="")
        try:
            for item in self.program.items:
                if isinstance(item, ast.BlockDef):
                    self.define_block(item)
            for item in self.program.items:
                if isinstance(item, (ast.Call, ast.Assign)):
                    self.statement(item, top)
            for item in self.program.items:
                if isinstance(item, ast.Section):
                    self.sections.append(self.section(item, top))
            if self.input_layer is None and not self.quiet_about_input:
                span = Span(self.file, 1, 1, 1, 1)
                self.error(span, "input-missing", "the program has no `input` statement",
                           hint="start the model with its input size, like `input 28x28x1`")
        except _Abort:
            pass
        self.graph.input = self.input_layer.name if self.input_layer else None
        self.graph.output = top.current
        if not any(d.severity == ERROR for d in self.diagnostics):
            for layer in self.graph.remove_unreachable():
                self.error(layer.span, "unused", f"`{layer.text}` does not reach the model's "
                           "output and is left out", severity=WARNING,
                           hint="merge it with `add` or `concat`, or remove it")
        unknown = [name for name in self.overrides if name not in self.model_params]
        return BuildResult(self.graph, self.diagnostics, self.sections,
                           {k: v.value for k, v in self.model_params.items()}, unknown)

    def section(self, item: ast.Section, scope: Scope) -> ast.Section:
        """A `train:` section with its expressions evaluated (they may use the model's
        parameters). Settings holding a malformed number (reported by the parser) or a faulty
        expression (reported here) are dropped."""
        body = []
        for b in item.body:
            if isinstance(b, ast.Call):
                if b.has_error_value:
                    continue
                try:
                    b = self.substitute(b, scope)
                except _Skip:
                    continue
            body.append(b)
        return ast.Section(item.name, item.name_span, tuple(body), item.span)

    # -- model parameters and expressions ------------------------------------------------------
    def declare_params(self, call: ast.Call, scope: Scope) -> None:
        """`param width=1.0 depth=1.0`: the model's parameters, with their defaults."""
        if scope.prefix:
            self.error(call.span, "param", "parameters are declared at the top level of the "
                       "file, not inside a block", scope=scope,
                       hint="give the block a parameter instead: `block b(width=1.0):`")
            raise _Skip
        for v in call.args:
            self.error(v.span, "param", f"`param` declares parameters with their defaults, "
                       f"like `param {v.text}=1`; {v.describe()} has no name", scope=scope)
        for o in call.options:
            name = o.key
            if name in self.model_params:
                first = self.param_spans[name]
                self.error(o.key_span, "param", f"parameter `{name}` is declared twice",
                           notes=[f"first declared at line {first.line}"],
                           hint="declare each parameter once")
                continue
            if name in KEYWORDS or name in FUNCTIONS or ops.lookup(name) is not None \
                    or name in self.blocks:
                what = "a function" if name in FUNCTIONS else "a block" if name in self.blocks \
                    else "a layer or keyword"
                self.error(o.key_span, "param", f"a parameter cannot be called `{name}`: that "
                           f"is {what}", hint=f"choose another name, like `{name}_n`")
                continue
            value = self.overrides.get(name)
            if value is None:
                value = o.value
            try:
                value = self.evaluator(scope).value(value)
            except ExprError as e:
                self.expr_error(e, scope)
                continue
            if value.kind == "error":
                continue
            self.model_params[name] = value
            self.param_spans[name] = o.key_span

    def evaluator(self, scope: Scope) -> Evaluator:
        env = {**self.model_params, **scope.params}

        def names():
            return [*scope.params, *(n for n in self.model_params if n not in scope.params)]

        return Evaluator(env, names, self.source_of)

    def source_of(self, span: Span) -> str:
        if span.line != span.end_line or not 1 <= span.line <= len(self.lines):
            return ""
        return self.lines[span.line - 1][span.column - 1:span.end_column - 1]

    def expr_error(self, e: ExprError, scope: Scope) -> None:
        self.error(e.span, e.code, e.message, notes=e.notes, hint=e.hint, scope=scope)

    def evaluate(self, v: ast.Value, scope: Scope) -> ast.Value:
        try:
            return self.evaluator(scope).value(v)
        except ExprError as e:
            self.expr_error(e, scope)
            raise _Skip from None

    def define_block(self, block: ast.BlockDef) -> None:
        if block.name in self.blocks:
            first = self.blocks[block.name]
            self.error(block.name_span, "duplicate-name", f"block `{block.name}` is defined twice",
                       notes=[f"first defined at line {first.span.line}"])
            return
        if ops.lookup(block.name) is not None or block.name in KEYWORDS:
            self.error(block.name_span, "duplicate-name",
                       f"a block cannot be called `{block.name}`: that is a built-in name",
                       hint=f"rename it, for example `{block.name}_block`")
            return
        seen = set()
        for p in block.params:
            if p.name in seen:
                self.error(p.span, "duplicate-name", f"parameter `{p.name}` appears twice")
            seen.add(p.name)
        for item in block.body:
            if isinstance(item, ast.BlockDef):
                self.error(item.span, "syntax", "blocks are defined at the top level, not "
                           f"inside another block (`{item.name}` is inside `{block.name}`)")
            elif isinstance(item, ast.Section):
                self.error(item.name_span, "syntax", f"a `{item.name}:` section belongs at the "
                           f"top level, not inside block `{block.name}`")
        self.blocks[block.name] = block

    def step(self, span: Span, scope: Scope) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            self.error(span, "too-large", f"the model expands to more than {MAX_STEPS:,} "
                       "layers and statements", scope=scope,
                       hint="check the repeat counts (`xN`) of blocks that call blocks")
            raise _Abort

    def statement(self, stmt, scope: Scope) -> None:
        self.step(stmt.span, scope)
        try:
            if isinstance(stmt, ast.Assign):
                self.assign(stmt, scope)
            elif isinstance(stmt, ast.Call):
                self.call(stmt, scope)
            # a block or section nested in a block body was reported by define_block
        except _Skip:
            pass
        scope.previous = stmt.call if isinstance(stmt, ast.Assign) else stmt

    def assign(self, stmt: ast.Assign, scope: Scope) -> None:
        call = stmt.call
        if stmt.more_targets:
            return self.assign_parts(stmt, scope)
        name_ok = self.check_name(stmt.target, stmt.target_span, scope)
        if call.head == "here" and not call.args and not call.options:
            if scope.current is None:
                self.error(call.span, "unknown-name", "`here` has no tensor yet: nothing has "
                           "been computed before this line", scope=scope)
                raise _Skip
            if name_ok:
                scope.names[stmt.target] = (scope.current, stmt.target_span)
            return
        # A bad name is reported, and the layer still built (unnamed), so later lines check.
        result = self.call(call, scope, name=stmt.target if name_ok else None)
        if result is not None and name_ok:
            scope.names[stmt.target] = (result, stmt.target_span)

    def assign_parts(self, stmt: ast.Assign, scope: Scope) -> None:
        """`a, b = split 2`: one name for each output of an op that makes several."""
        call = self.substitute(stmt.call, scope)
        found = ops.lookup(call.head) if call.head not in self.blocks else None
        if found is None or found[0].outputs is None:
            what = f"`{call.head}`" if call.head not in ("here", "from") else \
                f"`{self.text_of(call.span)}`"
            self.error(stmt.more_targets[0][1], "bad-value",
                       f"{what} makes one tensor, but {len(stmt.targets)} names are given",
                       hint=f"name it once, like `{stmt.target} = {self.text_of(call.span)}`; "
                            "only `split` makes several tensors", scope=scope)
            raise _Skip
        call, repeat = self.split_repeat(call, scope)
        if repeat != 1:
            self.error(call.span, "bad-value", f"`{call.head}` cannot be repeated: each part "
                       "needs a name of its own", scope=scope, hint="remove the repeat count")
            raise _Skip
        ok = [self.check_name(name, span, scope) for name, span in stmt.targets]
        seen: set = set()
        for name, span in stmt.targets:
            if name in seen:
                self.error(span, "duplicate-name", f"the name `{name}` is given twice",
                           scope=scope, hint="give each part its own name")
                raise _Skip
            seen.add(name)
        names = [name if good else None for (name, _), good in zip(stmt.targets, ok)]
        results = self.make_parts(call, scope, found[0], found[1], names)
        for (name, span), good, result in zip(stmt.targets, ok, results):
            if good:
                scope.names[name] = (result, span)

    def make_parts(self, call: ast.Call, scope: Scope, schema, alias_attrs,
                   names: list) -> list[str]:
        """The layers of an op with several outputs, one per part, each with attrs["part"]."""
        src = self.need_current(call, scope)
        spans: dict = {}
        attrs = self.bind_args(schema, call, scope, spans)
        attrs.update(schema.fixed)
        attrs.update(alias_attrs)
        try:
            count = schema.outputs(attrs)
        except ops.ShapeError as e:
            self.error(spans.get(e.arg, call.span), e.code, e.message, hint=e.hint, scope=scope)
            raise _Skip from None
        text = self.text_of(call.span)
        if len(names) != count:
            # every name for a few parts; past that the first ones and the last (a hint of
            # millions of names would take minutes to write and nobody would read it)
            shown = [("abcdefgh"[i] if i < 8 else f"p{i + 1}") for i in range(min(count, 10))]
            many = ", ".join(shown if count <= 10 else [*shown[:3], "...", f"p{count}"])
            given = "no names are" if not names else \
                f"{len(names)} name{' is' if len(names) == 1 else 's are'}"
            self.error(call.span, "bad-value", f"`{text}` makes {count} tensors, but {given} "
                       "given", hint=f"name each part, like `{many} = {text}`", scope=scope)
            raise _Skip
        made = []
        for i, name in enumerate(names):
            layer = Layer(name=self.layer_name(schema.name, name, scope), op=schema.name,
                          attrs={**attrs, "part": i}, inputs=[src], span=call.span, text=text,
                          context=scope.context, arg_spans=spans,
                          top_line=scope.call_line or call.span.line)
            made.append(self.add_layer(layer, scope))
        scope.current = made[-1]
        return made

    def check_name(self, name: str, span: Span, scope: Scope) -> bool:
        """Whether `name` may name a new tensor here; if not, say why."""
        if name in KEYWORDS or name in scope.params or _merges(name):
            what = "a block parameter" if name in scope.params else "a keyword"
            self.error(span, "duplicate-name", f"`{name}` is {what} and cannot name a tensor",
                       scope=scope, hint=f"choose another name, like `{name}_1`")
            return False
        if name in scope.names:
            first = scope.names[name][1]
            self.error(span, "duplicate-name", f"the name `{name}` is already defined",
                       notes=[f"first defined at line {first.line}"], scope=scope,
                       hint="give this tensor another name")
            return False
        if scope.prefix + name in self.graph:
            taken = self.graph[scope.prefix + name]
            self.error(span, "duplicate-name", f"the name `{name}` is already taken by the "
                       f"layer `{taken.text}` at line {taken.span.line}", scope=scope,
                       hint="give this tensor another name")
            return False
        return True

    def resolve(self, value: ast.Value, scope: Scope) -> str:
        """The layer a tensor name refers to."""
        if value.kind != "name":
            self.error(value.span, "bad-value", f"expected a tensor name, but got "
                       f"{value.describe()}", scope=scope)
            raise _Skip
        if value.value == "here":
            if scope.current is None:
                self.error(value.span, "unknown-name", "`here` has no tensor yet", scope=scope)
                raise _Skip
            return scope.current
        if value.value == "input" and self.input_layer is not None and "input" not in scope.names \
                and not scope.prefix:
            return self.input_layer.name
        if value.value in scope.names:
            return scope.names[value.value][0]
        hint = did_you_mean(value.value, list(scope.names))
        notes = []
        if scope.prefix and value.value not in scope.names:
            notes.append("a block sees only its parameters and the names it defines itself")
        if scope.names and hint is None:
            notes.append("the tensors named so far: "
                         + ", ".join(f"`{n}`" for n in list(scope.names)[:10])
                         + (", ..." if len(scope.names) > 10 else ""))
        self.error(value.span, "unknown-name", f"no tensor is named `{value.value}`",
                   hint=hint or "name a tensor first, like `skip = here` or `c1 = conv 32 3x3`",
                   notes=notes, scope=scope)
        raise _Skip

    def substitute(self, call: ast.Call, scope: Scope) -> ast.Call:
        """The call with its expressions evaluated and its parameters (the block's, then the
        model's) replaced by their values. Every faulty expression is reported."""
        if not (scope.params or self.model_params) and \
                not any(v.kind == "expr" for v in call.args) and \
                not any(o.value.kind == "expr" for o in call.options):
            return call  # nothing to evaluate (most statements of most models)
        evaluator = self.evaluator(scope)
        failed = False

        def sub(v: ast.Value) -> ast.Value:
            nonlocal failed
            try:
                return evaluator.value(v)
            except ExprError as e:
                self.expr_error(e, scope)
                failed = True
                return v

        args = tuple(sub(v) for v in call.args)
        options = tuple(ast.Option(o.key, sub(o.value), o.span, o.key_span) for o in call.options)
        if failed:
            raise _Skip
        return ast.Call(call.head, call.head_span, args, options, call.span)

    def call(self, call: ast.Call, scope: Scope, name: str | None = None) -> str | None:
        head = call.head
        if head == "input":
            self.quiet_about_input = True
        if call.has_error_value:
            raise _Skip  # the parser has reported the malformed number
        if head == "param" and "param" not in self.blocks:
            self.declare_params(call, scope)
            return scope.current
        repeat = 1
        if head not in ("from", "here") and (head in self.blocks or not _merges(head)):
            call, repeat = self.split_repeat(call, scope)
            if repeat == 0:  # `x(n - 1)` with n = 1: the statement is left out
                if name is not None:
                    self.error(call.span, "bad-value", "a statement repeated 0 times makes no "
                               "tensor to name", scope=scope,
                               hint="name the tensor before it (`y = here`) instead")
                    raise _Skip
                return scope.current
        call = self.substitute(call, scope)
        if head == "from":
            if len(call.args) != 1 or call.options:
                self.error(call.span, "bad-value", "`from` takes one tensor name, like "
                           "`from skip`", scope=scope)
                raise _Skip
            scope.current = self.resolve(call.args[0], scope)
            return scope.current
        if head == "here":
            self.error(call.span, "syntax", "`here` names the current tensor: write "
                       "`NAME = here`", scope=scope)
            raise _Skip
        if head not in self.blocks:
            found = ops.lookup(head)
            if found is not None and found[0].merges:
                return self.merge(call, scope, found[0], found[1], name)
        if head in self.blocks:
            result = None
            for _ in range(repeat):
                result = self.expand(self.blocks[head], call, scope,
                                     name if repeat == 1 else None)
            return result
        found = ops.lookup(head)
        if found is None:
            self.unknown_op(call, scope)
        schema, alias_attrs = found
        if schema.name == "input":
            return self.make_input(call, scope, schema, name)
        if schema.outputs is not None:  # `split 2` without names for its parts
            if repeat != 1:
                self.error(call.span, "bad-value", f"`{head}` cannot be repeated: each part "
                           "needs a name of its own", scope=scope, hint="remove the repeat count")
                raise _Skip
            return self.make_parts(call, scope, schema, alias_attrs,
                                   [] if name is None else [name])[-1]
        result = None
        for _ in range(repeat):
            result = self.make_layer(call, scope, schema, alias_attrs,
                                     name if repeat == 1 else None)
        return result

    def split_repeat(self, call: ast.Call, scope: Scope) -> tuple[ast.Call, int]:
        """`conv 64 3x3 relu x2` repeats the statement: strip the trailing repeat count (`xN`, or
        `x(EXPR)` as in `x(depth * 2)`) and evaluate it."""
        args = call.args
        count = None
        lowest = 1
        if args and args[-1].kind == "name" and _REPEAT.fullmatch(args[-1].value):
            count, used = ast.Value("int", int(args[-1].value[1:]), args[-1].value[1:],
                                    args[-1].span), 1
        elif args and args[-1].kind == "expr" and args[-1].value.kind == "function" \
                and args[-1].value.op == "x" and len(args[-1].value.operands) == 1:
            operand = args[-1].value.operands[0]  # `x(depth * 2)`
            count = operand if isinstance(operand, ast.Value) else \
                ast.Value("expr", operand, self.source_of(operand.span), operand.span)
            used = 1
            lowest = 0  # a family's stage of one block: `first; rest x(n - 1)`
        if count is None:
            return call, 1
        count = self.evaluate(count, scope)
        if count.kind != "int":
            hint = "round it explicitly: round(...), floor(...) or ceil(...)" \
                if count.kind == "float" else None
            self.error(count.span, "bad-value", f"a repeat count must be a whole number, but "
                       f"got {count.describe()}", hint=hint, scope=scope)
            raise _Skip
        n = count.value
        if not lowest <= n <= MAX_REPEAT:
            shown = f"`{count.source}` = {n}" if count.source else str(n)
            self.error(count.span, "bad-value", f"a repeat count must be from {lowest} "
                       f"to {MAX_REPEAT:,}, but got {shown}", scope=scope)
            raise _Skip
        return ast.Call(call.head, call.head_span, args[:len(args) - used], call.options,
                        call.span), n

    def unknown_op(self, call: ast.Call, scope: Scope):
        head = call.head
        if head in scope.params:
            self.parameter_as_layer(call, scope)
        candidates = ops.names() + list(self.blocks) + ["from"]
        hint = self.keras_layer_hint(call) or did_you_mean(head, candidates)
        if head in scope.names:
            hint = f"to continue from the tensor `{head}`, write `from {head}`"
        elif head == "block":
            hint = "a block definition ends its header with `:`, like `block basic(c):`"
        self.error(call.head_span, "unknown-op", f"unknown layer `{head}`", hint=hint,
                   notes=ops.plugin_errors(), scope=scope)
        raise _Skip

    def keras_layer_hint(self, call: ast.Call) -> str | None:
        """`MaxPooling2D 2` -> did you mean `maxpool 2`? (Keras' class names, any case)."""
        from ..syntax.keras_habits import layer_for, rewrite

        text = self.text_of(call.span)
        rest = text[len(call.head):] if text.startswith(call.head) else ""
        statement = layer_for(call.head, rest)
        if statement is None:
            return None
        what = ("the activation itself" if call.head.lower() == "activation"
                else f"`{statement.split()[0]}`")
        return (f"did you mean `{rewrite(statement)}`? (Keras' `{call.head}` is {what} in "
                "cnnc)")

    def parameter_as_layer(self, call: ast.Call, scope: Scope):
        """`block b(act): conv 8 3x3; act`: a parameter written where a layer goes."""
        head = call.head
        bound = scope.params[head]
        hint = None
        if bound.kind == "name" and bound.value in ops.ACTIVATIONS:
            before = scope.previous
            found = ops.lookup(before.head) if before is not None else None

            def is_activation(v: ast.Value) -> bool:
                v = scope.params.get(v.value, v) if v.kind == "name" else v
                return v.kind == "name" and v.value in ops.ACTIVATIONS

            if found is not None and any(a.name == "activation" for a in found[0].options) \
                    and before.span.line == before.span.end_line \
                    and not any(is_activation(v) or _REPEAT.fullmatch(str(v.value))
                                for v in before.args) \
                    and not any(o.key == "activation" for o in before.options):
                hint = (f"to apply the activation it stands for (here `{bound.value}`), fuse it "
                        f"into the layer before: `{self.text_of(before.span)} {head}`")
            else:
                hint = (f"to apply the activation it stands for (here `{bound.value}`), fuse it "
                        f"into a conv, dwconv or dense layer, like `conv 32 3x3 {head}`")
        elif bound.kind == "int":
            hint = f"use it as a layer's argument, like `dense {head}` or `conv {head} 3x3`"
        self.error(call.head_span, "unknown-op",
                   f"`{head}` is a parameter of block `{scope.blocks_active[-1]}`; a parameter "
                   "stands for a value (a number, size or option), not a layer",
                   hint=hint, scope=scope)
        raise _Skip

    def need_current(self, call: ast.Call, scope: Scope) -> str:
        if scope.current is not None:
            return scope.current
        if self.input_layer is None:
            if not self.quiet_about_input:
                self.quiet_about_input = True
                self.error(call.span, "input-missing", "this layer comes before any `input` "
                           "statement", hint="start the model with its input size, like "
                           "`input 28x28x1`", scope=scope)
            raise _Skip
        self.error(call.span, "unknown-name", "this layer has no input", scope=scope)
        raise _Skip

    def layer_name(self, op: str, name: str | None, scope: Scope) -> str:
        if name is not None:
            return scope.prefix + name  # check_name made sure it is free
        n = scope.counters.get(op, 0)
        while True:
            n += 1
            full = f"{scope.prefix}{op}_{n}"
            if full not in self.graph:
                scope.counters[op] = n
                return full

    def add_layer(self, layer: Layer, scope: Scope) -> str:
        self.step(layer.span, scope)
        self.graph.add(layer)
        return layer.name

    def bind_args(self, schema, call: ast.Call, scope: Scope, spans: dict | None = None) -> dict:
        attrs, problems = bind(call.head, schema.positional, schema.options, call.args,
                               call.options, spans)
        if problems:
            self.keras_tuple(call, scope)
        for span, code, message, hint in problems:
            if code == "unknown-option":
                hint = self.option_hint(schema, call, span) or hint
            self.error(span or call.span, code, message, hint=hint, scope=scope)
        if problems:
            raise _Skip
        return attrs

    def keras_tuple(self, call: ast.Call, scope: Scope) -> None:
        """`input (28,28,1)`, `maxpool (2,2)`: a Keras tuple read as a parenthesised argument
        list. One error at the tuple, with the statement spelt the cnnc way."""
        from ..syntax.keras_habits import paren_tuple, rewrite

        if call.span.line != call.span.end_line or call.head in self.blocks:
            return
        line = self.lines[call.span.line - 1]
        statement = line[call.span.column - 1:call.span.end_column - 1]
        found = paren_tuple(statement, call.head)
        if found is None:
            return
        start, end, size = found
        col = call.span.column + start
        span = Span(call.span.file, call.span.line, col, call.span.line, col + end - start)
        self.error(span, "bad-value", f"`{call.head}` takes a size written like `{size}`, not "
                   "a Keras tuple", hint=f"write `{rewrite(statement).strip()}`", scope=scope)
        raise _Skip

    def option_hint(self, schema, call: ast.Call, span: Span) -> str | None:
        """For an unknown option that belongs to an activation (`relu alpha=2`, or `conv 8 3 elu
        alpha=2`, whose fused activation takes no parameters), say whose it is."""
        from ..ops.activation import option_hint

        option = next((o for o in call.options if o.key_span == span), None)
        if option is None:
            return None
        known = [name for a in schema.options for name in (a.name, *a.aliases)]
        if did_you_mean(option.key, known):
            return None  # a misspelling of one of its own options
        fuses = any(a.name == "activation" for a in schema.options)
        return option_hint(call.head, option.key, option.value.text, fuses)

    def make_input(self, call, scope, schema, name) -> str:
        if scope.prefix:
            self.error(call.span, "input-repeated", "`input` belongs at the top of the model, "
                       "not inside a block", scope=scope)
            raise _Skip
        if self.input_layer is not None:
            self.error(call.span, "input-repeated", "the model already has an `input`",
                       notes=[f"the first `input` is at line {self.input_layer.span.line}"],
                       hint="a model has one input; name tensors to branch instead")
            raise _Skip
        spans: dict = {}
        attrs = self.bind_args(schema, call, scope, spans)
        self.check_channels_first(call, attrs, spans, scope)
        layer = Layer(name=name or "input", op="input", attrs=attrs, inputs=[], span=call.span,
                      text=self.text_of(call.span), arg_spans=spans)
        self.input_layer = layer
        scope.current = self.add_layer(layer, scope)
        if name is None:
            scope.names["input"] = (layer.name, call.span)
        return scope.current

    def check_channels_first(self, call, attrs: dict, spans: dict, scope: Scope) -> None:
        """`input 1x28x28`: an image written channels first (PyTorch's N x C x H x W habit)
        is 1 pixel high with 28 channels; say so before the shape errors it leads to."""
        shape = attrs.get("shape")
        if not shape or len(shape) != 3:
            return
        c, h, w = shape
        if c <= 4 and h >= 8 and w >= 8:
            self.error(spans.get("shape", call.span), "input-order",
                       f"`input {c}x{h}x{w}` is an image {c} pixel{'s' * (c != 1)} high and "
                       f"{h} wide, with {w} channels: cnnc, as Keras, writes images height x "
                       "width x channels", hint=f"for {h}x{w} images with {c} "
                       f"channel{'s' * (c != 1)}, write `input {h}x{w}x{c}`",
                       scope=scope, severity=WARNING)

    def make_layer(self, call, scope, schema, alias_attrs, name) -> str:
        src = self.need_current(call, scope)
        spans: dict = {}
        attrs = self.bind_args(schema, call, scope, spans)
        if alias_attrs:
            self.check_alias(call, scope, schema, alias_attrs, attrs, spans)
        attrs.update(schema.fixed)
        attrs.update(alias_attrs)
        layer = Layer(name=self.layer_name(schema.name, name, scope), op=schema.name,
                      attrs=attrs, inputs=[src], span=call.span, text=self.text_of(call.span),
                      context=scope.context, arg_spans=spans,
                      top_line=scope.call_line or call.span.line)
        scope.current = self.add_layer(layer, scope)
        return scope.current

    def check_alias(self, call, scope, schema, alias_attrs, attrs, spans) -> None:
        """An alias fixes some arguments (`avgpool` is `pool` with kind=avg): one the statement
        wrote with another value (`avgpool max 2`) is an error at that value, not overridden."""
        text = self.text_of(call.span)
        rest = text[len(call.head):].strip() if text.startswith(call.head) else ""
        if schema.alias_conflict is not None:
            conflict = schema.alias_conflict(call.head, attrs, set(spans), rest)
        else:
            conflict = next(((key, f"`{call.head}` is `{schema.name}` with {key}={value}; "
                              f"{key}={attrs[key]} contradicts it",
                              f"write `{schema.name} {rest}`" if rest else None)
                             for key, value in alias_attrs.items()
                             if key in spans and attrs.get(key) != value), None)
        if conflict is not None:
            key, message, hint = conflict
            self.error(spans.get(key, call.span), "bad-value", message, hint=hint, scope=scope)
            raise _Skip

    def merge(self, call: ast.Call, scope: Scope, schema, alias_attrs: dict,
              name: str | None) -> str:
        """An op that reads several tensors (n_inputs None or >= 2): its positional arguments
        name them, its options are bound as any op's."""
        if call.options and not schema.options:
            self.error(call.options[0].span, "unknown-option", f"`{call.head}` takes no options",
                       scope=scope)
            raise _Skip
        if not call.args:
            self.error(call.span, "missing-argument", f"`{call.head}` needs the names of the "
                       f"tensors to merge, like `{call.head} skip`", scope=scope)
            raise _Skip
        spans: dict = {}
        attrs, problems = bind(call.head, (), schema.options, (), call.options, spans)
        for span, code, message, hint in problems:
            self.error(span or call.span, code, message, hint=hint, scope=scope)
        if problems:
            raise _Skip
        operands = [self.resolve(v, scope) for v in call.args]
        current = self.need_current(call, scope)
        if current not in operands:
            operands.insert(0, current)
        want = schema.n_inputs
        if len(operands) < 2:
            self.error(call.span, "merge-shape", f"`{call.head}` needs at least two tensors, "
                       "but only the current one was named", scope=scope)
            raise _Skip
        if want is not None and len(operands) != want:
            self.error(call.span, "merge-shape", f"`{call.head}` reads {want} tensors, but "
                       f"{len(operands)} were given (the current one comes first unless "
                       "named)", scope=scope,
                       hint=f"name {want - 1} tensor{'s' * (want > 2)}, like "
                            f"`{call.head} skip`" if want == 2 else None)
            raise _Skip
        attrs.update(schema.fixed)
        attrs.update(alias_attrs)
        labels = {src: f"`{v.value}`" for src, v in zip(operands[-len(call.args):], call.args)}
        layer = Layer(name=self.layer_name(schema.name, name, scope), op=schema.name,
                      attrs=attrs, inputs=operands, span=call.span, text=self.text_of(call.span),
                      context=scope.context, top_line=scope.call_line or call.span.line,
                      input_labels=[labels.get(src, "the current tensor") for src in operands],
                      arg_spans=spans)
        scope.current = self.add_layer(layer, scope)
        return scope.current

    def expand(self, block: ast.BlockDef, call: ast.Call, scope: Scope,
               name: str | None) -> str | None:
        if block.name in scope.blocks_active:
            chain = " -> ".join((*scope.blocks_active, block.name))
            self.error(call.span, "block-recursion", f"block `{block.name}` calls itself "
                       f"({chain})", hint="blocks cannot be recursive; use a repeat count, "
                       "like `basic 64 x3`", scope=scope)
            raise _Skip
        if len(scope.blocks_active) >= MAX_BLOCK_DEPTH:
            self.error(call.span, "block-recursion", f"blocks nest more than "
                       f"{MAX_BLOCK_DEPTH} deep", scope=scope)
            raise _Skip
        params = self.bind_block_args(block, call, scope)
        src = self.need_current(call, scope)
        instance = name or self.layer_name(block.name, None, scope).rsplit(".", 1)[-1]
        inner = Scope(prefix=f"{scope.prefix}{instance}.", params=params, current=src,
                      context=(f"in block `{block.name}` called at line {call.span.line}",
                               *scope.context),
                      blocks_active=(*scope.blocks_active, block.name),
                      call_line=scope.call_line or call.span.line)
        # The instance name is taken by its layers' prefix; keep a counter so the next is _2.
        for item in block.body:
            self.statement(item, inner)
        scope.current = inner.current
        return inner.current

    def bind_block_args(self, block: ast.BlockDef, call: ast.Call, scope: Scope) -> dict:
        names = [p.name for p in block.params]
        sig = f"{block.name}({', '.join(p.name + ('=' + p.default.text if p.default else '') for p in block.params)})"
        bound: dict = {}
        ok = True
        if len(call.args) > len(block.params):
            extra = call.args[len(block.params)]
            self.error(extra.span, "block-args", f"block `{block.name}` takes "
                       f"{len(block.params)} argument{'s' * (len(block.params) != 1)}, but "
                       f"{len(call.args)} were given", notes=[f"it is defined as `{sig}` at "
                                                              f"line {block.span.line}"],
                       scope=scope)
            ok = False
        for p, v in zip(block.params, call.args):
            bound[p.name] = v
        given = {**bound, **{o.key: o.value for o in call.options if o.key in names}}
        for o in call.options:
            if o.key not in names:
                self.error(o.key_span, "block-args", f"block `{block.name}` has no parameter "
                           f"`{o.key}`", hint=did_you_mean(o.key, names),
                           notes=[f"it is defined as `{sig}` at line {block.span.line}"],
                           scope=scope)
                ok = False
            elif o.key in bound:
                self.error(o.span, "block-args", f"parameter `{o.key}` of block "
                           f"`{block.name}` is given twice", scope=scope)
                ok = False
            else:
                bound[o.key] = o.value
        for p in block.params:
            if p.name not in bound:
                if p.default is None:
                    self.error(call.span, "block-args", f"block `{block.name}` needs a value "
                               f"for its parameter `{p.name}`",
                               notes=[f"it is defined as `{sig}` at line {block.span.line}"],
                               scope=scope)
                    ok = False
                else:
                    bound[p.name] = p.default
        if not ok:
            raise _Skip
        # Arguments are evaluated where the call is; a default, in the block's own terms: the
        # model's parameters and the block parameters before it (`block b(c, hidden=c*6)`).
        values: dict = {}
        for p in block.params:
            v = bound[p.name]
            if p.name in given:
                values[p.name] = self.evaluate(v, scope)
            else:
                inner = Scope(prefix=scope.prefix, params=values, context=scope.context)
                values[p.name] = self.evaluate(v, inner)
        return values


def build(program: ast.Program, overrides: dict | None = None) -> BuildResult:
    """The layer graph of a parsed program; `overrides` maps model parameter names to Values
    that replace their declared defaults (`--set`)."""
    return Builder(program, overrides).build()
