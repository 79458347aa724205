"""Rule-defined segments: a plain list of named predicates over computed features."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
