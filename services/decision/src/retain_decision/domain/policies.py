"""Governance policy of a workspace (pure): caps, quiet hours, holdouts, contact costs, offer rules.

Caps are counted in the customer's own calendar (their time zone, default Asia/Bangkok): a day is the
local calendar day, a week the local ISO week (Monday to Sunday). Every counter key carries the
window it counts, so a counter simply expires after its window instead of being reset by a job.

Holdout membership is a stable hash of customer id and salt: the same customer is in or out on every
replica and every request, and changing the salt reshuffles the groups on purpose.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from retain_decision.domain.offers import CHANNELS

DEFAULT_TIME_ZONE = "Asia/Bangkok"
QUIET_MODES = ("hold", "drop")
# Consent purposes that are not marketing: holdouts never withhold a service message.
NON_MARKETING_PURPOSES = frozenset({"service", "transactional"})
DEFAULT_CONTACT_COSTS: Mapping[str, float] = {"in_app": 0.0, "email": 0.5, "push": 1.0, "line": 1.5, "sms": 3.0}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.:]{0,127}$")


class PolicyError(ValueError):
    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CapLimit:
    """At most `per_day` / `per_week` messages; None means no cap on that window."""

    per_day: int | None = None
    per_week: int | None = None


@dataclass(frozen=True)
class QuietHours:
    """Local times [start, end); a window may wrap midnight (21:00-08:00)."""

    start: str
    end: str
    mode: str = "hold"


@dataclass(frozen=True)
class OfferRule:
    offer_id: str
    per_day: int | None = None
    per_week: int | None = None
    # Suppress the offer after `decline_limit` declines within `decline_window_days` (0 = never).
    decline_limit: int = 0
    decline_window_days: int = 30


@dataclass(frozen=True)
class GovernancePolicy:
    version: int = 0
    channel_caps: Mapping[str, CapLimit] = field(default_factory=dict)
    global_cap: CapLimit = CapLimit()
    quiet_hours: QuietHours | None = None
    control_group_share: float = 0.0
    journey_holdouts: Mapping[str, float] = field(default_factory=dict)
    contact_costs: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_CONTACT_COSTS))
    offer_rules: Mapping[str, OfferRule] = field(default_factory=dict)
    default_time_zone: str = DEFAULT_TIME_ZONE
    # One contact slot per customer per window across journeys and triggers (0 = no slot rule).
    contact_slot_minutes: int = 60
    # How long competing requests for one customer's slot are collected before it is awarded.
    arbitration_ms: int = 80
    holdout_salt: str = "retain"
    # Contact cost multiplier per message the customer received this local week.
    load_weight: float = 0.2
    updated_by: str = ""
    updated_at: datetime | None = None


def _check_limit(limit: CapLimit, name: str) -> None:
    for window, value in (("per_day", limit.per_day), ("per_week", limit.per_week)):
        if value is not None and value < 0:
            raise PolicyError(f"{window} must not be negative", field=f"{name}.{window}")


def validate(policy: GovernancePolicy) -> GovernancePolicy:
    for channel, limit in policy.channel_caps.items():
        if channel not in CHANNELS:
            raise PolicyError(f"unknown channel {channel!r}", field="policy.channel_caps")
        _check_limit(limit, "policy.channel_caps")
    _check_limit(policy.global_cap, "policy.global_cap")
    if policy.quiet_hours is not None:
        qh = policy.quiet_hours
        for name, value in (("start", qh.start), ("end", qh.end)):
            if not _HHMM.match(value):
                raise PolicyError(f"{name} must be HH:MM (24h)", field=f"policy.quiet_hours.{name}")
        if qh.mode not in QUIET_MODES:
            raise PolicyError("mode must be hold or drop", field="policy.quiet_hours.mode")
        if qh.start == qh.end:
            raise PolicyError("start and end must differ", field="policy.quiet_hours.end")
    if not 0.0 <= policy.control_group_share < 1.0:
        raise PolicyError("control_group_share must be within [0, 1)", field="policy.control_group_share")
    for journey_id, share in policy.journey_holdouts.items():
        if not _ID.match(journey_id):
            raise PolicyError("journey_id is not a valid id", field="policy.journey_holdouts")
        if not 0.0 <= share < 1.0:
            raise PolicyError("holdout share must be within [0, 1)", field="policy.journey_holdouts")
    for channel, cost in policy.contact_costs.items():
        if channel not in CHANNELS:
            raise PolicyError(f"unknown channel {channel!r}", field="policy.contact_costs")
        if cost < 0:
            raise PolicyError("contact cost must not be negative", field="policy.contact_costs")
    for offer_id, rule in policy.offer_rules.items():
        if not _ID.match(offer_id) or rule.offer_id != offer_id:
            raise PolicyError("offer_id is not a valid id", field="policy.offer_rules")
        _check_limit(CapLimit(rule.per_day, rule.per_week), "policy.offer_rules")
        if rule.decline_limit < 0 or rule.decline_window_days < 1:
            raise PolicyError("decline_limit >= 0 and decline_window_days >= 1", field="policy.offer_rules")
    try:
        ZoneInfo(policy.default_time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise PolicyError("unknown time zone", field="policy.default_time_zone") from exc
    if policy.contact_slot_minutes < 0 or policy.contact_slot_minutes > 7 * 24 * 60:
        raise PolicyError("contact_slot_minutes must be within [0, 10080]", field="policy.contact_slot_minutes")
    if not 0 <= policy.arbitration_ms <= 5000:
        raise PolicyError("arbitration_ms must be within [0, 5000]", field="policy.arbitration_ms")
    if not policy.holdout_salt:
        raise PolicyError("holdout_salt is required", field="policy.holdout_salt")
    if policy.load_weight < 0:
        raise PolicyError("load_weight must not be negative", field="policy.load_weight")
    costs = {**DEFAULT_CONTACT_COSTS, **policy.contact_costs}
    return replace(policy, contact_costs=costs)


# --- time ---------------------------------------------------------------------------------------


def zone(name: str, default: str = DEFAULT_TIME_ZONE) -> ZoneInfo:
    """The customer's zone; an unknown or empty name falls back to the workspace default."""
    for candidate in (name, default, DEFAULT_TIME_ZONE):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo(DEFAULT_TIME_ZONE)


@dataclass(frozen=True)
class Window:
    label: str  # e.g. "d2025-03-01" or "w2025-W09"
    ends_at: datetime  # UTC


def day_window(now: datetime, tz: ZoneInfo) -> Window:
    local = now.astimezone(tz)
    start = datetime.combine(local.date(), time(0), tzinfo=tz)
    end = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)
    del start
    return Window(f"d{local.date().isoformat()}", end.astimezone(UTC))


def week_window(now: datetime, tz: ZoneInfo) -> Window:
    local = now.astimezone(tz)
    monday = local.date() - timedelta(days=local.weekday())
    end = datetime.combine(monday + timedelta(days=7), time(0), tzinfo=tz)
    year, week, _ = local.isocalendar()
    return Window(f"w{year}-W{week:02d}", end.astimezone(UTC))


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def quiet_until(now: datetime, quiet: QuietHours | None, tz: ZoneInfo) -> datetime | None:
    """The UTC end of the quiet window `now` falls in, or None when it is not quiet now."""
    if quiet is None:
        return None
    local = now.astimezone(tz)
    start, end = _hhmm(quiet.start), _hhmm(quiet.end)
    t = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= t < end
        end_date = local.date()
    else:  # wraps midnight
        inside = t >= start or t < end
        end_date = local.date() + timedelta(days=1) if t >= start else local.date()
    if not inside:
        return None
    return datetime.combine(end_date, end, tzinfo=tz).astimezone(UTC)


# --- holdouts -----------------------------------------------------------------------------------


def bucket(customer_id: str, salt: str) -> float:
    """A stable number in [0, 1) for the customer under this salt."""
    digest = hashlib.sha256(f"{salt}|{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_marketing(purpose: str) -> bool:
    return purpose not in NON_MARKETING_PURPOSES


def holdout(policy: GovernancePolicy, customer_id: str, *, journey_id: str = "") -> str:
    """Which holdout withholds marketing from this customer: "" when none does."""
    if policy.control_group_share > 0 and bucket(customer_id, policy.holdout_salt) < policy.control_group_share:
        return "global control group"
    share = policy.journey_holdouts.get(journey_id, 0.0) if journey_id else 0.0
    # Salted with the journey too, so each journey's holdout is drawn independently.
    if share > 0 and bucket(customer_id, f"{policy.holdout_salt}|{journey_id}") < share:
        return f"holdout of journey {journey_id}"
    return ""


# --- counters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counter:
    """One cap counter: its key, the most it may reach (None = uncapped, counted only), its lifetime."""

    key: str
    limit: int | None
    ttl_seconds: int
    rule: str
    detail: str


def counters_for(
    policy: GovernancePolicy,
    *,
    workspace_id: str,
    customer_id: str,
    channel: str,
    offer_id: str,
    now: datetime,
    tz: ZoneInfo,
) -> list[Counter]:
    """Every counter one message on `channel` for `offer_id` moves. Keys share a hash tag so a
    Redis cluster keeps one customer's counters in one slot (a script may touch them all)."""
    day, week = day_window(now, tz), week_window(now, tz)
    base = f"cap:{{{workspace_id}:{customer_id}}}"
    ch = policy.channel_caps.get(channel, CapLimit())
    rule = policy.offer_rules.get(offer_id, OfferRule(offer_id))

    def ttl(window: Window) -> int:
        # A little past the window's end, so a counter never vanishes while its window is open.
        return max(int((window.ends_at - now).total_seconds()) + 3600, 60)

    return [
        Counter(f"{base}:ch:{channel}:{day.label}", ch.per_day, ttl(day), "frequency_cap",
                f"{channel} cap {ch.per_day}/day reached"),
        Counter(f"{base}:ch:{channel}:{week.label}", ch.per_week, ttl(week), "frequency_cap",
                f"{channel} cap {ch.per_week}/week reached"),
        Counter(f"{base}:all:{day.label}", policy.global_cap.per_day, ttl(day), "frequency_cap",
                f"cross-channel cap {policy.global_cap.per_day}/day reached"),
        Counter(f"{base}:all:{week.label}", policy.global_cap.per_week, ttl(week), "frequency_cap",
                f"cross-channel cap {policy.global_cap.per_week}/week reached"),
        Counter(f"{base}:offer:{offer_id}:{day.label}", rule.per_day, ttl(day), "offer_cap",
                f"offer cap {rule.per_day}/day reached"),
        Counter(f"{base}:offer:{offer_id}:{week.label}", rule.per_week, ttl(week), "offer_cap",
                f"offer cap {rule.per_week}/week reached"),
    ]


def load_key(*, workspace_id: str, customer_id: str, now: datetime, tz: ZoneInfo) -> str:
    """The counter of all messages this local week: the customer's recent message load."""
    return f"cap:{{{workspace_id}:{customer_id}}}:all:{week_window(now, tz).label}"


def first_exceeded(counters: Sequence[Counter], counts: Mapping[str, int]) -> Counter | None:
    for counter in counters:
        if counter.limit is not None and counts.get(counter.key, 0) + 1 > counter.limit:
            return counter
    return None


def declined_out(rule: OfferRule | None, declines: Sequence[datetime], *, now: datetime) -> str:
    """Why the offer is suppressed for repeated declines, or "" when it is not."""
    if rule is None or rule.decline_limit <= 0:
        return ""
    since = now - timedelta(days=rule.decline_window_days)
    recent = sum(1 for at in declines if since <= at <= now)
    if recent >= rule.decline_limit:
        return f"declined {recent} times in {rule.decline_window_days} days (limit {rule.decline_limit})"
    return ""


# --- serialisation ------------------------------------------------------------------------------


def _limit_dict(limit: CapLimit) -> dict[str, Any]:
    return {"per_day": limit.per_day, "per_week": limit.per_week}


def _limit(data: Mapping[str, Any] | None) -> CapLimit:
    data = data or {}
    return CapLimit(data.get("per_day"), data.get("per_week"))


def to_dict(policy: GovernancePolicy) -> dict[str, Any]:
    qh = policy.quiet_hours
    return {
        "version": policy.version,
        "channel_caps": {c: _limit_dict(v) for c, v in sorted(policy.channel_caps.items())},
        "global_cap": _limit_dict(policy.global_cap),
        "quiet_hours": {"start": qh.start, "end": qh.end, "mode": qh.mode} if qh else None,
        "control_group_share": policy.control_group_share,
        "journey_holdouts": dict(sorted(policy.journey_holdouts.items())),
        "contact_costs": dict(sorted(policy.contact_costs.items())),
        "offer_rules": {
            o: {"per_day": r.per_day, "per_week": r.per_week, "decline_limit": r.decline_limit,
                "decline_window_days": r.decline_window_days}
            for o, r in sorted(policy.offer_rules.items())
        },
        "default_time_zone": policy.default_time_zone,
        "contact_slot_minutes": policy.contact_slot_minutes,
        "arbitration_ms": policy.arbitration_ms,
        "holdout_salt": policy.holdout_salt,
        "load_weight": policy.load_weight,
        "updated_by": policy.updated_by,
        "updated_at": policy.updated_at.isoformat() if policy.updated_at else None,
    }


def from_dict(data: Mapping[str, Any]) -> GovernancePolicy:
    qh = data.get("quiet_hours")
    return GovernancePolicy(
        version=int(data.get("version", 0)),
        channel_caps={c: _limit(v) for c, v in (data.get("channel_caps") or {}).items()},
        global_cap=_limit(data.get("global_cap")),
        quiet_hours=QuietHours(qh["start"], qh["end"], qh.get("mode", "hold")) if qh else None,
        control_group_share=float(data.get("control_group_share", 0.0)),
        journey_holdouts={j: float(s) for j, s in (data.get("journey_holdouts") or {}).items()},
        contact_costs={c: float(v) for c, v in (data.get("contact_costs") or DEFAULT_CONTACT_COSTS).items()},
        offer_rules={
            o: OfferRule(o, r.get("per_day"), r.get("per_week"), int(r.get("decline_limit", 0)),
                         int(r.get("decline_window_days", 30)))
            for o, r in (data.get("offer_rules") or {}).items()
        },
        default_time_zone=data.get("default_time_zone") or DEFAULT_TIME_ZONE,
        contact_slot_minutes=int(data.get("contact_slot_minutes", 60)),
        arbitration_ms=int(data.get("arbitration_ms", 80)),
        holdout_salt=data.get("holdout_salt") or "retain",
        load_weight=float(data.get("load_weight", 0.2)),
        updated_by=data.get("updated_by", ""),
        updated_at=datetime.fromisoformat(data["updated_at"]) if data.get("updated_at") else None,
    )
