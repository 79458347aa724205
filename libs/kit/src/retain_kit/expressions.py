"""Safe expressions (offer eligibility, journey conditions, profile segments): parsed with `ast`,
checked against a whitelist, interpreted here.

Nothing is ever passed to `eval`/`exec`/`compile` to run: the parsed tree is walked by `_eval`, which
only knows the node types below. Anything else (calls, attribute or subscript access, lambdas,
comprehensions, f-strings, `**`, ...) is refused when the expression is defined.

Allowed: `and`/`or`/`not`, comparisons (`== != < <= > >= in not in`, chained), `+ - * /`, unary `-`/`+`,
names looked up in the evaluation namespace, number/string/bool constants, list/tuple literals on the
right of `in`, e.g. `churn_risk > 0.5 and lifecycle_stage in ("at_risk", "lapsed")`.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 2000
MAX_DEPTH = 32

Value = float | int | str | bool | list[str] | tuple[str, ...]


class ExpressionError(ValueError):
    """The expression is not allowed (definition time) or could not be evaluated (run time)."""


_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


@dataclass(frozen=True)
class Expression:
    """A checked expression, ready to evaluate any number of times."""

    source: str
    tree: ast.expr | None
    names: frozenset[str]

    def evaluate(self, namespace: Mapping[str, Value]) -> bool:
        """True/False; raises ExpressionError for unknown names or type errors (callers fail closed)."""
        if self.tree is None:
            return True
        return bool(_eval(self.tree, namespace))


def compile_expression(
    source: str,
    *,
    known_names: Collection[str] | None = None,
    known_prefixes: tuple[str, ...] = (),
) -> Expression:
    """Parse and check `source`; an empty expression is always true.

    When `known_names` is given, names outside it (and outside `known_prefixes`) are refused, so a
    typo is caught when the offer is saved instead of silently making the offer ineligible.
    """
    text = source.strip()
    if not text:
        return Expression(source, None, frozenset())
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.msg}") from exc
    names: set[str] = set()
    _check(tree.body, names, depth=0)
    if known_names is not None:
        unknown = sorted(n for n in names if n not in known_names and not n.startswith(known_prefixes))
        if unknown:
            raise ExpressionError(f"unknown name(s): {', '.join(unknown)}")
    return Expression(source, tree.body, frozenset(names))


@functools.lru_cache(maxsize=1024)
def cached(source: str) -> Expression:
    """Checked once per distinct text: offers are re-evaluated for every request."""
    return compile_expression(source)


def _check(node: ast.AST, names: set[str], *, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ExpressionError("expression nested too deeply")
    match node:
        case ast.BoolOp(values=values):
            for value in values:
                _check(value, names, depth=depth + 1)
        case ast.BinOp(left=left, op=op, right=right):
            if type(op) not in _BINOPS:
                raise ExpressionError(f"operator {type(op).__name__} is not allowed")
            _check(left, names, depth=depth + 1)
            _check(right, names, depth=depth + 1)
        case ast.UnaryOp(op=op, operand=operand):
            if not isinstance(op, ast.Not | ast.USub | ast.UAdd):
                raise ExpressionError(f"operator {type(op).__name__} is not allowed")
            _check(operand, names, depth=depth + 1)
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            _check(left, names, depth=depth + 1)
            for cmp, right in zip(ops, comparators, strict=True):
                if type(cmp) not in _CMPOPS:
                    raise ExpressionError(f"comparison {type(cmp).__name__} is not allowed")
                if isinstance(right, ast.List | ast.Tuple):
                    if not isinstance(cmp, ast.In | ast.NotIn):
                        raise ExpressionError("list literals are only allowed on the right of 'in'")
                    for element in right.elts:
                        _check_constant(element)
                else:
                    _check(right, names, depth=depth + 1)
        case ast.Name(id=name, ctx=ast.Load()):
            if name.startswith("_"):
                raise ExpressionError(f"name {name!r} is not allowed")
            names.add(name)
        case ast.Constant():
            _check_constant(node)
        case _:
            raise ExpressionError(f"{type(node).__name__} is not allowed in an expression")


def _check_constant(node: ast.AST) -> None:
    # bool is a subclass of int, so one isinstance covers True/False too.
    if not isinstance(node, ast.Constant) or not isinstance(node.value, int | float | str):
        raise ExpressionError("only number, string and boolean constants are allowed")


def _eval(node: ast.expr, ns: Mapping[str, Value]) -> Any:
    match node:
        case ast.BoolOp(op=ast.And(), values=values):
            return all(_eval(v, ns) for v in values)
        case ast.BoolOp(values=values):
            return any(_eval(v, ns) for v in values)
        case ast.BinOp(left=left, op=op, right=right):
            a, b = _number(_eval(left, ns)), _number(_eval(right, ns))
            if isinstance(op, ast.Div) and b == 0:
                raise ExpressionError("division by zero")
            return _BINOPS[type(op)](a, b)
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            return not _eval(operand, ns)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return -_number(_eval(operand, ns))
        case ast.UnaryOp(operand=operand):
            return _number(_eval(operand, ns))
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            current = _eval(left, ns)
            for cmp, right_node in zip(ops, comparators, strict=True):
                right = _eval(right_node, ns)
                try:
                    ok = _CMPOPS[type(cmp)](current, right)
                except TypeError as exc:
                    raise ExpressionError(f"cannot compare {current!r} with {right!r}") from exc
                if not ok:
                    return False
                current = right
            return True
        case ast.Name(id=name):
            if name not in ns:
                raise ExpressionError(f"unknown name {name!r}")
            return ns[name]
        case ast.List(elts=elts) | ast.Tuple(elts=elts):
            return tuple(_eval(e, ns) for e in elts)
        case ast.Constant(value=value):
            return value
    raise ExpressionError(f"{type(node).__name__} is not allowed in an expression")


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExpressionError(f"{value!r} is not a number")
    return value
