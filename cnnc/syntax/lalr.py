"""Run lark's LALR(1) tables for cnnc's grammar without importing lark.

lark builds the tables from grammar/cnn.lark (cnnc/syntax/generate.py writes them to tables.py);
this module is the small part of lark a parse needs, written out so that `cnnc check` pays
neither for importing lark nor for loading its pickled parser. It follows lark's own
algorithms step for step, so a program parses, and fails to parse, exactly as lark would parse it:

- the contextual lexer: in each parser state only the terminals that state can take are
  tried, in lark's order of precedence, the first match winning; a keyword (`block`) is a NAME
  whose exact text names a keyword terminal; where nothing matches, the lexer of every terminal
  decides between "unexpected character" and "unexpected token";
- the LALR driver: shift, or reduce and hand the rule's children to the builder method named
  after the rule (or its alias), with lark's shaping of children (`_rule` spliced in, `?rule`
  with one child replaced by it, None for an absent `[optional]`).

A parse keeps its state in local variables and in the builder and postlexer it is given, so
any number of threads may parse at once.
"""

from __future__ import annotations

import re

from . import tables


class Token:
    """A terminal as the lexer saw it: its type, its text and where it lies (1-based lines and
    columns; the end column is one past the last character, as lark counts)."""

    __slots__ = ("type", "value", "start_pos", "line", "column", "end_line", "end_column",
                 "end_pos")

    def __init__(self, type_: str, value: str, start_pos=None, line=None, column=None,
                 end_line=None, end_column=None, end_pos=None):
        self.type = type_
        self.value = value
        self.start_pos = start_pos
        self.line = line
        self.column = column
        self.end_line = end_line
        self.end_column = end_column
        self.end_pos = end_pos

    @classmethod
    def new_borrow_pos(cls, type_: str, value: str, borrow: "Token") -> "Token":
        return cls(type_, value, borrow.start_pos, borrow.line, borrow.column, borrow.end_line,
                   borrow.end_column, borrow.end_pos)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Token({self.type!r}, {self.value!r})"


class UnexpectedInput(Exception):
    """The text does not parse. line and column are 1-based; pos_in_stream is an offset."""

    line: int | None
    column: int | None
    pos_in_stream: int | None


class UnexpectedCharacters(UnexpectedInput):
    """No terminal of the grammar starts here."""

    def __init__(self, text: str, pos: int, line: int, column: int, allowed):
        super().__init__(f"no terminal matches {text[pos:pos + 1]!r} at line {line}, "
                         f"column {column}")
        self.pos_in_stream = pos
        self.line = line
        self.column = column
        self.allowed = set(allowed)


class UnexpectedToken(UnexpectedInput):
    """A terminal the grammar does not take here; `expected` names those it would take."""

    def __init__(self, token: Token, expected):
        super().__init__(f"unexpected {token!r}; expected one of {sorted(expected)}")
        self.token = token
        self.expected = set(expected)
        self.line = token.line
        self.column = token.column
        self.pos_in_stream = token.start_pos


# ---------------------------------------------------------------------------------------------
# The lexer

class _Lexer:
    """The lexer of some parser states: its terminals tried in order, as one regular expression
    compiled on first use (most parses need only the root lexer's; see generate.py)."""

    __slots__ = ("names", "keywords", "allowed", "produces", "root_stands", "_match")

    def __init__(self, description: tuple):
        self.names, self.keywords, allowed, produces, self.root_stands = description
        self.allowed = frozenset(allowed)  # what an error says the state expected
        self.produces = frozenset(produces)  # the token types it can give, keywords included
        self._match = None

    def matcher(self):
        """The compiled regular expression's match(text, pos)."""
        if self._match is None:  # (two threads may both compile it; either result serves)
            self._match = re.compile("|".join(f"(?P<{name}>{tables.TERMINALS[name]})"
                                              for name in self.names)).match
        return self._match

    def match(self, text: str, pos: int):
        return self.matcher()(text, pos)

    def type_of(self, m) -> str:
        """The token type of a match: its terminal, or the keyword its exact text is."""
        keywords = self.keywords.get(m.lastgroup)
        return m.lastgroup if keywords is None else keywords.get(m.group(), m.lastgroup)


_LEXERS = tuple(_Lexer(d) for d in tables.LEXERS)
_ROOT = _Lexer(tables.ROOT_LEXER)


def lex(text: str, state_stack: list[int]):
    """The tokens of `text`, each lexed as the lexer of the parser's state at that moment
    (state_stack[-1]) lexes it, as lark's contextual lexer does."""
    lexers, lexer_of_state, root = _LEXERS, tables.LEXER_OF_STATE, _ROOT
    root_match, root_keywords = root.matcher(), root.keywords
    ignore, newline_types = tables.IGNORE, tables.NEWLINE_TYPES
    pos, line, line_start, end = 0, 1, 0, len(text)
    while pos < end:
        lexer = lexers[lexer_of_state[state_stack[-1]]]
        m = root_match(text, pos)
        if m is not None:
            type_ = m.lastgroup
            if type_ in root_keywords:
                type_ = root_keywords[type_].get(m.group(), type_)
            if not (lexer.root_stands and type_ in lexer.produces):
                own = lexer.match(text, pos)
                if own is None:  # a terminal of the grammar, only not one this state takes
                    raise UnexpectedToken(_token(m, type_, pos, line, line_start),
                                          lexer.allowed)
                m, type_ = own, lexer.type_of(own)
        else:
            m = None if lexer.root_stands else lexer.match(text, pos)
            if m is None:
                raise UnexpectedCharacters(text, pos, line, pos - line_start + 1, lexer.allowed)
            type_ = lexer.type_of(m)
        if type_ in ignore:
            if type_ in newline_types:
                value = m.group()
                if "\n" in value:
                    line += value.count("\n")
                    line_start = pos + value.rindex("\n") + 1
            pos = m.end()
            continue
        token = _token(m, type_, pos, line, line_start)
        if token.end_line != line:
            line = token.end_line
            line_start = token.end_pos - token.end_column + 1
        pos = token.end_pos
        yield token


def _token(m, type_: str, pos: int, line: int, line_start: int) -> Token:
    value = m.group()
    end_pos = m.end()
    end_line, end_line_start = line, line_start
    if type_ in tables.NEWLINE_TYPES and "\n" in value:  # lark counts lines only in these
        end_line += value.count("\n")
        end_line_start = pos + value.rindex("\n") + 1
    return Token(type_, value, pos, line, pos - line_start + 1, end_line,
                 end_pos - end_line_start + 1, end_pos)


# ---------------------------------------------------------------------------------------------
# The parser


def _shape(children: list, plan: tuple) -> list:
    """A rule's children as lark hands them to the builder (see generate._child_plan)."""
    steps, nones_after = plan
    shaped: list = []
    for i, inline, nones in steps:
        if nones:
            shaped += [None] * nones
        if inline:
            if shaped:
                shaped += children[i]
            else:  # reuse the list: a left-recursive `_rule` grows one list, not n copies
                shaped = children[i]
        else:
            shaped.append(children[i])
    if nones_after:
        shaped += [None] * nones_after
    return shaped


def _callbacks(builder) -> list:
    """Per rule, the builder's method for it; None for an inlined `_rule`, whose children
    pass up to the rule that uses it as a plain list."""
    out = []
    for _origin, _size, name, _expand1, _plan in tables.RULES:
        if name is None:
            out.append(None)
        else:
            method = getattr(builder, name, None)
            if method is None:
                def method(children, name=name):  # a rule the builder does not shape
                    return (name, children)
            out.append(method)
    return out


# Rules that only rename their one child (`?sum: product`): reducing one replaces the state on
# top of the stack and leaves the value as it is. An argument passes through several of them
# (number -> atom -> unary -> product -> sum -> expr), so they skip the general reduce.
_UNIT = tuple(size == 1 and expand1 and plan is None
              for _origin, size, _name, expand1, plan in tables.RULES)
_ORIGIN = tuple(rule[0] for rule in tables.RULES)


def _expected(state: int) -> set[str]:
    # Terminals are the upper-case symbols (lark's convention), `$END` among them.
    return {s for s in tables.STATES[state] if s.isupper()}


def _reduce(rule: int, state_stack: list, value_stack: list, callbacks: list) -> None:
    """Replace the rule's children on the stacks by the value built from them."""
    origin, size, _name, expand1, plan = tables.RULES[rule]
    if size:
        children = value_stack[-size:]
        del state_stack[-size:]
        del value_stack[-size:]
    else:
        children = []
    if plan is not None:
        children = _shape(children, plan)
    if expand1 and len(children) == 1:
        value = children[0]
    elif callbacks[rule] is None:
        value = children
    else:
        value = callbacks[rule](children)
    state_stack.append(tables.STATES[state_stack[-1]][origin])
    value_stack.append(value)


def parse(text: str, builder, postlex=None):
    """Parse `text`; return what the builder's method for the start rule returns.

    `builder` has a method per rule (named after the rule or its alias) taking the list of the
    rule's children. `postlex`, if given, is called with the token stream and returns the
    stream the parser reads (cnnc's indenter). Raises UnexpectedCharacters or UnexpectedToken.
    """
    states = tables.STATES
    end_state = tables.END_STATE
    unit, origin = _UNIT, _ORIGIN
    callbacks = _callbacks(builder)
    state_stack = [0]
    value_stack: list = []
    stream = lex(text, state_stack)
    if postlex is not None:
        stream = postlex(stream)

    token = None
    for token in stream:
        ttype = token.type
        while True:
            action = states[state_stack[-1]].get(ttype)
            if action is None:
                raise UnexpectedToken(token, _expected(state_stack[-1]))
            if action >= 0:  # shift
                state_stack.append(action)
                value_stack.append(token)
                break
            rule = ~action
            if unit[rule]:
                state_stack[-1] = states[state_stack[-2]][origin[rule]]
            else:
                _reduce(rule, state_stack, value_stack, callbacks)

    end = Token.new_borrow_pos("$END", "", token) if token is not None else \
        Token("$END", "", 0, 1, 1)
    while True:
        action = states[state_stack[-1]].get("$END")
        if action is None:
            raise UnexpectedToken(end, _expected(state_stack[-1]))
        assert action < 0, "the end of the input is never shifted"
        _reduce(~action, state_stack, value_stack, callbacks)
        if state_stack[-1] == end_state:
            return value_stack[-1]
