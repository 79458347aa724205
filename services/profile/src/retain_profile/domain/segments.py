"""Rule-defined segments: built-in named predicates, plus workspace segments defined through the API as
safe expressions over features (`monetary_total > 5000 and lifecycle_stage == 'at_risk'`).

Workspace expressions are parsed with `ast`, checked against a whitelist of node types and feature names
when they are defined, and interpreted by walking the tree; nothing is ever handed to eval/exec/compile.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retain_profile.domain.features import Features

HIGH_VALUE_SPEND = 5000.0
VIP_SPEND = 20000.0
VIP_ORDERS = 10


@dataclass(frozen=True)
class SegmentRule:
    name: str
    description: str
    applies: Callable[[Features], bool]


RULES: tuple[SegmentRule, ...] = (
    SegmentRule("high_value", "lifetime spend of at least 5,000", lambda f: f.monetary_total >= HIGH_VALUE_SPEND),
    SegmentRule(
        "vip",
        "lifetime spend of at least 20,000 or at least 10 orders",
        lambda f: f.monetary_total >= VIP_SPEND or f.frequency >= VIP_ORDERS,
    ),
    SegmentRule("prospect", "never ordered", lambda f: f.frequency == 0),
    SegmentRule("one_time_buyer", "exactly one order", lambda f: f.frequency == 1),
    SegmentRule("repeat_buyer", "two or more orders", lambda f: f.frequency >= 2),
    SegmentRule(
        "valuable_at_risk",
        "high-value customer who is at risk or lapsed",
        lambda f: f.monetary_total >= HIGH_VALUE_SPEND and f.lifecycle_stage in ("at_risk", "lapsed"),
    ),
    SegmentRule("winback", "lapsed or churned", lambda f: f.lifecycle_stage in ("lapsed", "churned")),
    SegmentRule("unhappy", "two or more negative feedbacks in a row", lambda f: f.negative_feedback_streak >= 2),
    SegmentRule("open_ticket", "has an unresolved service ticket", lambda f: f.open_tickets > 0),
    SegmentRule("engaged", "three or more events a week lately", lambda f: f.activity_level >= 3.0),
    SegmentRule("declining", "activity down by half or more", lambda f: f.activity_change <= -0.5),
)


def evaluate_segments(features: Features, rules: tuple[SegmentRule, ...] = RULES) -> Iterator[str]:
    for rule in rules:
        if rule.applies(features):
            yield rule.name


MAX_EXPRESSION = 1000
MAX_DEPTH = 24
SEGMENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
BUILTIN_NAMES = frozenset(rule.name for rule in RULES)

Scalar = float | int | str | bool


class ExpressionError(ValueError):
    """The expression is not allowed."""


_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


def feature_namespace(features: Features) -> dict[str, Scalar]:
    """The names an expression may use: every scalar feature; times as days before `as_of` (-1 if never)."""
    out: dict[str, Scalar] = {}
    as_of = features.as_of
    for f in fields(features):
        value = getattr(features, f.name)
        if isinstance(value, bool | int | float | str):
            out[f.name] = value
        elif f.name.endswith("_at") or f.name in ("first_seen", "last_seen"):
            name = f"days_since_{f.name.removesuffix('_at')}"
            if isinstance(value, datetime) and as_of is not None:
                out[name] = (as_of - value).total_seconds() / 86400
            else:
                out[name] = -1.0
    return out


@functools.cache
def namespace_names() -> frozenset[str]:
    from retain_profile.domain.features import Features

    return frozenset(feature_namespace(Features()))


@dataclass(frozen=True)
class SegmentDefinition:
    """A workspace segment: a checked expression, evaluated against features on every read."""

    name: str
    expression: str
    tree: ast.expr
    description: str = ""

    def contains(self, namespace: Mapping[str, Scalar]) -> bool:
        try:
            return bool(_eval(self.tree, namespace))
        except (TypeError, ValueError, KeyError, ZeroDivisionError):
            # A value that cannot be compared (e.g. a string against a number) is not a member.
            return False


def define(name: str, expression: str, *, description: str = "") -> SegmentDefinition:
    """Raises ExpressionError (with `.args[0]` the message) for anything outside the whitelist."""
    if not SEGMENT_NAME.match(name):
        raise ExpressionError("name must be lower-case letters, digits and _ (at most 64), starting with a letter")
    return SegmentDefinition(name, expression, parse(expression), description)


def parse(expression: str) -> ast.expr:
    text = expression.strip()
    if not text:
        raise ExpressionError("expression is empty")
    if len(text) > MAX_EXPRESSION:
        raise ExpressionError(f"expression is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"expression is not valid: {exc.msg}") from None
    _check(tree, namespace_names(), depth=0)
    return tree


def _check(node: ast.AST, names: frozenset[str], *, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ExpressionError("expression is nested too deeply")
    match node:
        case ast.BoolOp(values=values):
            for value in values:
                _check(value, names, depth=depth + 1)
        case ast.UnaryOp(op=ast.Not() | ast.USub() | ast.UAdd(), operand=operand):
            _check(operand, names, depth=depth + 1)
        case ast.BinOp(op=op, left=left, right=right) if type(op) in _BINOPS:
            _check(left, names, depth=depth + 1)
            _check(right, names, depth=depth + 1)
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            if not all(type(op) in _CMPOPS for op in ops):
                raise ExpressionError("only == != < <= > >= in and not in compare")
            for part in (left, *comparators):
                _check(part, names, depth=depth + 1)
        case ast.Name(id=name, ctx=ast.Load()):
            if name in ("True", "False"):
                return
            if name not in names:
                raise ExpressionError(f"unknown feature {name!r}")
        case ast.Constant(value=value) if isinstance(value, bool | int | float | str):
            return
        case ast.Tuple(elts=elts) | ast.List(elts=elts):
            for elt in elts:
                if not isinstance(elt, ast.Constant) or not isinstance(elt.value, bool | int | float | str):
                    raise ExpressionError("lists may only hold constants")
        case _:
            raise ExpressionError(f"{type(node).__name__} is not allowed in a segment expression")


def _eval(node: ast.AST, ns: Mapping[str, Scalar]) -> Any:
    match node:
        case ast.BoolOp(op=ast.And(), values=values):
            return all(_eval(v, ns) for v in values)
        case ast.BoolOp(op=ast.Or(), values=values):
            return any(_eval(v, ns) for v in values)
        case ast.UnaryOp(op=ast.Not(), operand=operand):
            return not _eval(operand, ns)
        case ast.UnaryOp(op=ast.USub(), operand=operand):
            return -_number(_eval(operand, ns))
        case ast.UnaryOp(op=ast.UAdd(), operand=operand):
            return _number(_eval(operand, ns))
        case ast.BinOp(op=op, left=left, right=right):
            return _BINOPS[type(op)](_number(_eval(left, ns)), _number(_eval(right, ns)))
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            current = _eval(left, ns)
            for cmp, comparator in zip(ops, comparators, strict=True):
                other = _eval(comparator, ns)
                if not _CMPOPS[type(cmp)](current, other):
                    return False
                current = other
            return True
        case ast.Name(id="True"):
            return True
        case ast.Name(id="False"):
            return False
        case ast.Name(id=name):
            return ns[name]
        case ast.Constant(value=value):
            return value
        case ast.Tuple(elts=elts) | ast.List(elts=elts):
            return tuple(_eval(e, ns) for e in elts)
    raise ValueError(f"{type(node).__name__} cannot be evaluated")


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("arithmetic needs numbers")
    return float(value)


def evaluate_custom(features: Features, segments: Sequence[SegmentDefinition]) -> Iterable[str]:
    if not segments:
        return ()
    namespace = feature_namespace(features)
    return [s.name for s in segments if s.contains(namespace)]
