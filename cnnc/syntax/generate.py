"""Write cnnc/syntax/tables.py, the parser tables, from grammar/cnn.lark with lark.

    python -m cnnc.syntax.generate           # rewrite tables.py after changing the grammar
    python -m cnnc.syntax.generate --check   # exit 1 if tables.py is not what the grammar gives

The grammar stays the one source of truth, and lark builds everything from it: the LALR(1)
parse table, the terminals each parser state's contextual lexer tries (in lark's order of
precedence), the keywords lark tells apart from names, and how each rule's children are shaped
into the tree (`_rule` inlined, `?rule` expanded when it has one child, `[x]` giving None when
absent). This module only writes lark's result down as plain Python literals, so that `cnnc check`
runs the parser (cnnc/syntax/lalr.py) without importing lark, which costs more than checking a
model does. tests/test_grammar_tables.py fails when tables.py and the grammar disagree.

lark numbers parser states in an order that can change from one run to the next; the states are
renumbered here in a fixed order (breadth first from the start state, symbols in name order), so
the same grammar always gives the same file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The repository's grammar; an installed package carries a copy at cnnc/grammar/.
GRAMMAR = next((p for p in (ROOT / "grammar" / "cnn.lark",
                            ROOT / "cnnc" / "grammar" / "cnn.lark") if p.is_file()),
               ROOT / "grammar" / "cnn.lark")
TABLES = Path(__file__).resolve().parent / "tables.py"
START = "start"
# The postlexer (cnnc.syntax.parser's indenter) must see every newline, even where the grammar
# takes none (inside parentheses), as lark's `always_accept` arranges.
ALWAYS_ACCEPT = ("_NL",)


class _PostlexStub:
    """What lark asks of a postlexer when it builds the tables: only the names."""

    always_accept = ALWAYS_ACCEPT

    def process(self, stream):  # pragma: no cover - never parses
        return stream


def _lark(grammar: str):
    """lark's parser for the grammar, and the shift/reduce conflicts it settled by shifting
    (terminal -> how many states), which it reports only in its debug log."""
    import logging

    from lark import Lark, logger

    conflicts: dict[str, int] = {}

    class Record(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Shift/Reduce conflict for terminal"):
                terminal = message.split("terminal ", 1)[1].split(":", 1)[0]
                conflicts[terminal] = conflicts.get(terminal, 0) + 1

    handler, level, others = Record(), logger.level, list(logger.handlers)
    for h in others:  # lark's own handler would print the log
        logger.removeHandler(h)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        parser = Lark(grammar, parser="lalr", lexer="contextual", postlex=_PostlexStub(),
                      keep_all_tokens=True, maybe_placeholders=True, start=START, debug=True)
    finally:
        logger.removeHandler(handler)
        for h in others:
            logger.addHandler(h)
        logger.setLevel(level)
    return parser, dict(sorted(conflicts.items()))


def _child_plan(rule) -> tuple:
    """How the rule's children become the list its builder method gets, as lark's
    maybe_create_child_filter computes it (keep_all_tokens: no token is dropped):
    ((index, inline, nones_before), ...), nones_after. `inline` splices the children of a
    `_rule` in place; `nones_*` are the None placeholders of absent `[optional]` parts."""
    expansion = rule.expansion
    empty = rule.options.empty_indices
    if empty:
        counts = [len(ones) for ones in "".join(str(int(b)) for b in empty).split("0")]
    else:
        counts = [0] * (len(expansion) + 1)
    plan = []
    nones = 0
    for i, sym in enumerate(expansion):
        nones += counts[i]
        if rule.options.keep_all_tokens or not (sym.is_term and sym.filter_out):
            plan.append((i, not sym.is_term and sym.name.startswith("_"), nones))
            nones = 0
    nones += counts[len(expansion)]
    return tuple(plan), nones


def build(grammar: str) -> dict:
    """The tables, as plain data."""
    from lark.parsers.lalr_analysis import Shift

    parser, conflicts = _lark(grammar)
    frontend = parser.parser
    table = frontend.parser.parser.parse_table
    contextual = frontend.lexer.lexer

    # Renumber the states: breadth first from the start state, symbols in name order.
    order = [table.start_states[START]]
    number = {order[0]: 0}
    for state in order:
        for sym in sorted(table.states[state]):
            action, arg = table.states[state][sym]
            if action is Shift and arg not in number:
                number[arg] = len(order)
                order.append(arg)
    assert len(order) == len(table.states), "unreachable parser states"

    rules = list(parser.rules)
    rule_index = {id(r): i for i, r in enumerate(rules)}
    states = []
    for state in order:
        row = {}
        for sym in sorted(table.states[state]):
            action, arg = table.states[state][sym]
            row[str(sym)] = number[arg] if action is Shift else -1 - rule_index[id(arg)]
        states.append(row)

    rule_rows = []
    for r in rules:
        plan, nones_after = _child_plan(r)
        identity = nones_after == 0 and plan == tuple((i, False, 0)
                                                      for i in range(len(r.expansion)))
        name = str(r.alias or r.options.template_source or r.origin.name)
        inline = r.origin.name.startswith("_")
        rule_rows.append((str(r.origin.name), len(r.expansion), None if inline else name,
                          bool(r.options.expand1 and not r.alias),
                          None if identity else (plan, nones_after)))

    # One lexer per distinct set of terminals; each state names the one it lexes with.
    def describe(basic) -> tuple:
        scanner = basic.scanner
        for t in scanner.terminals:
            regexps.setdefault(t.name, t.pattern.to_regexp())
            assert regexps[t.name] == t.pattern.to_regexp()
        terminals = tuple(t.name for t in scanner.terminals)
        keywords = {}
        for type_, callback in sorted(basic.callback.items()):
            keywords[type_] = {t.pattern.value: t.name
                               for t in sorted(callback.scanner.terminals, key=lambda t: t.name)}
        allowed = tuple(sorted(scanner.allowed_types - basic.ignore_types))
        return terminals, keywords, allowed

    regexps: dict[str, str] = {}
    lexers: list[tuple] = []
    lexer_of_state = []
    for state in order:
        described = describe(contextual.lexers[state])
        if described not in lexers:
            lexers.append(described)
        lexer_of_state.append(lexers.index(described))
    root = describe(contextual.root_lexer)
    # A state's lexer tries a subset of the root lexer's terminals, in the root's order. Where
    # that is all it tries, the root's first match is the state's whenever the state can
    # produce it: a terminal the state lacks can only come first where the state would not
    # match at all. So a parse compiles one regular expression, the root's, and a state's own
    # only to tell its match from an unexpected token. (Not so for a lexer that tries a keyword
    # on its own, without the name it is embedded in at the root: it always lexes itself.)
    def produces(lexer: tuple) -> tuple:
        return tuple(sorted({*lexer[0], *(k for kw in lexer[1].values() for k in kw.values())}))

    lexers = [(*lexer, produces(lexer), set(lexer[0]) <= set(root[0])) for lexer in lexers]
    root = (*root, produces(root), True)
    conf = contextual.root_lexer
    flags = conf.g_regex_flags
    assert flags == 0, "the tables assume no global regex flags"
    return {
        "states": states, "rules": rule_rows, "lexers": lexers, "lexer_of_state": lexer_of_state,
        "root_lexer": root, "terminals": dict(sorted(regexps.items())), "ignore": tuple(sorted(conf.ignore_types)),
        "newline_types": tuple(sorted(conf.newline_types)),
        "end_state": number[table.end_states[START]], "conflicts": conflicts,
    }


HEADER = '''"""Parser tables for cnnc's grammar. GENERATED from grammar/cnn.lark by lark: do not edit.

Regenerate after changing the grammar with `python -m cnnc.syntax.generate`; the test
tests/test_grammar_tables.py fails while this file and the grammar disagree. Read by
cnnc/syntax/lalr.py; what each table holds is described in cnnc/syntax/generate.py.
"""

# fmt: off
# ruff: noqa: E501
'''


def _lines(name: str, items, per_line=1) -> list[str]:
    out = [f"{name} = ("]
    for i in range(0, len(items), per_line):
        out.append("    " + " ".join(f"{item!r}," for item in items[i:i + per_line]))
    out.append(")")
    return out


def render(tables: dict, grammar: str) -> str:
    import hashlib

    import lark

    digest = hashlib.sha256(grammar.encode("utf-8")).hexdigest()
    out = [HEADER.rstrip("\n"), ""]
    out.append(f"GRAMMAR_SHA256 = {digest!r}")
    out.append(f"LARK_VERSION = {lark.__version__!r}")
    out.append("# Shift/reduce conflicts lark settles by shifting (terminal: states), as the")
    out.append("# grammar's comments intend (docs/language.md, Grammar):")
    out.append(f"SHIFTED_CONFLICTS = {tables['conflicts']!r}")
    out.append(f"END_STATE = {tables['end_state']!r}")
    out.append(f"IGNORE = frozenset({tables['ignore']!r})")
    out.append(f"NEWLINE_TYPES = frozenset({tables['newline_types']!r})")
    out.append("")
    out.append("")
    out.append("# Each terminal's regular expression.")
    out.append("TERMINALS = {")
    out += [f"    {name!r}: {regexp!r}," for name, regexp in tables["terminals"].items()]
    out.append("}")
    out.append("")
    out.append("# Each lexer: (terminals tried in this order, the first that matches wins,")
    out.append("#   {terminal: {exact text: keyword terminal}}, the terminals it expects,")
    out.append("#   the terminals it produces, whether the root lexer's match may stand for its own).")
    out += _lines("LEXERS", tables["lexers"])
    out.append(f"ROOT_LEXER = {tables['root_lexer']!r}")
    out += _lines("LEXER_OF_STATE", tables["lexer_of_state"], per_line=20)
    out.append("")
    out.append("# Each rule: (nonterminal, length, builder method or None for an inlined `_rule`,")
    out.append("#   expand a lone child (`?rule`), None or the child plan ((index, inline,")
    out.append("#   placeholders before), ...), placeholders after).")
    out += _lines("RULES", tables["rules"])
    out.append("")
    out.append("# Each state: {symbol: next state (shift or goto) >= 0, or -1 - rule (reduce)}.")
    out += _lines("STATES", tables["states"])
    return "\n".join(out) + "\n"


def generate() -> str:
    grammar = GRAMMAR.read_text(encoding="utf-8")
    return render(build(grammar), grammar)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cnnc.syntax.generate",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if tables.py differs from what the grammar gives")
    args = ap.parse_args(argv)
    text = generate()
    if args.check:
        current = TABLES.read_text(encoding="utf-8") if TABLES.exists() else ""
        if current != text:
            print(f"{TABLES.name} is out of date: run python -m cnnc.syntax.generate",
                  file=sys.stderr)
            return 1
        return 0
    TABLES.write_text(text, encoding="utf-8")
    print(f"wrote {TABLES} from {GRAMMAR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
