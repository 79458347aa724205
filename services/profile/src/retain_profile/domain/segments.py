"""Rule-defined segments: built-in named predicates, plus workspace segments defined through the API as
safe expressions over features (`monetary_total > 5000 and lifecycle_stage == 'at_risk'`).

Workspace expressions use the suite's one safe evaluator (`retain_kit.expressions`): checked against a
whitelist of node types and the feature names when defined, interpreted by walking the tree, never eval'd.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING

from retain_kit.expressions import Expression, ExpressionError, compile_expression

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
SEGMENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
BUILTIN_NAMES = frozenset(rule.name for rule in RULES)

Scalar = float | int | str | bool


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
    compiled: Expression
    description: str = ""

    def contains(self, namespace: Mapping[str, Scalar]) -> bool:
        try:
            return self.compiled.evaluate(namespace)
        except ExpressionError:
            # A value that cannot be compared (e.g. a string against a number) is not a member.
            return False


def define(name: str, expression: str, *, description: str = "") -> SegmentDefinition:
    """Raises ExpressionError (with `.args[0]` the message) for anything outside the whitelist."""
    if not SEGMENT_NAME.match(name):
        raise ExpressionError("name must be lower-case letters, digits and _ (at most 64), starting with a letter")
    return SegmentDefinition(name, expression, parse(expression), description)


def parse(expression: str) -> Expression:
    if not expression.strip():
        raise ExpressionError("expression is empty")
    if len(expression.strip()) > MAX_EXPRESSION:
        raise ExpressionError(f"expression is longer than {MAX_EXPRESSION} characters")
    return compile_expression(expression, known_names=namespace_names())


def evaluate_custom(features: Features, segments: Sequence[SegmentDefinition]) -> Iterable[str]:
    if not segments:
        return ()
    namespace = feature_namespace(features)
    return [s.name for s in segments if s.contains(namespace)]
