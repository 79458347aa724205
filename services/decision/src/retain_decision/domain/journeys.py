"""Journeys as data, and the pure interpreter that runs them.

A definition (JSON) names a trigger, entry rules, a goal and a list of steps. `enter` starts an
instance, `advance(definition, state, input, now)` moves it on an event, a timer or the facts it
asked for, and both return the new state with the effects to carry out (send, set a timer, update a
trait, ...). Nothing here does I/O: the worker executes the effects and stores the state.

Steps may only jump forward (a branch or split names a later step), so an instance visits each step
at most once: `journey:<instance>:<step>` is then a safe idempotency key for the step's send.

Expressions (trigger conditions, branches, goals) are the offer expressions of `expressions.py`,
over the customer's features and scores and the trigger event's properties as `event_<name>`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, assert_never

from retain_kit.expressions import Expression, ExpressionError, Value, cached, compile_expression

from retain_decision.domain.offers import AFFINITY_PREFIX, CHANNELS, KNOWN_NAMES

EVENT_PREFIX = "event_"
NEXT_BEST = "next_best"
TRIGGER_KINDS = ("event", "score", "segment", "schedule")
REENTRY = ("never", "after_exit")
MAX_STEPS = 50
_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_PROP = re.compile(r"[^a-z0-9_]")


class JourneyError(ValueError):
    """A definition is not acceptable; `field` names the offending input."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


# --- the definition -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """event: `event` happened and `condition` holds; score: `score` crossed `threshold` in
    `direction`; segment: `condition` over features became true; schedule: every `every_hours`,
    every customer seen in the workspace for whom `condition` holds."""

    kind: str
    event: str = ""
    condition: str = ""
    score: str = ""
    threshold: float = 0.0
    direction: str = "above"
    every_hours: float = 0.0


@dataclass(frozen=True)
class Entry:
    reentry: str = "never"
    cooldown_hours: float = 0.0
    # Replayed or backfilled history does not start journeys.
    max_event_age_hours: float = 24.0


@dataclass(frozen=True)
class Goal:
    event: str = ""
    condition: str = ""
    # A goal event counts as a conversion this long after entry, even once the steps are done.
    within_hours: float = 168.0


@dataclass(frozen=True)
class Variant:
    name: str
    weight: float
    next: str


@dataclass(frozen=True)
class Step:
    """One step; which fields matter depends on `kind`:
    wait (seconds), wait_event (event, condition, timeout_seconds, on_event, on_timeout),
    branch (condition, then, otherwise), send (offer_id or "next_best", channels, variables),
    split (variants), update_trait (traits), exit. `next` overrides the following step."""

    step_id: str
    kind: Literal["wait", "wait_event", "branch", "send", "split", "update_trait", "exit"]
    next: str = ""
    seconds: float = 0.0
    event: str = ""
    condition: str = ""
    timeout_seconds: float = 0.0
    on_event: str = ""
    on_timeout: str = ""
    then: str = ""
    otherwise: str = ""
    offer_id: str = ""
    channels: tuple[str, ...] = ()
    variables: Mapping[str, Any] = field(default_factory=dict)
    variants: tuple[Variant, ...] = ()
    traits: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Journey:
    journey_id: str
    name: str
    trigger: Trigger
    steps: tuple[Step, ...]
    entry: Entry = Entry()
    goal: Goal = Goal()
    holdout_share: float = 0.0
    active: bool = True
    description: str = ""
    version: int = 0

    def index(self, step_id: str) -> int:
        for i, step in enumerate(self.steps):
            if step.step_id == step_id:
                return i
        raise KeyError(step_id)


# --- instance state, inputs and effects -----------------------------------------------------------


@dataclass(frozen=True)
class State:
    """One customer's run through one journey version. `waiting` is "" (running), "timer",
    "event" (with a timeout timer) or "facts" (a branch waits for the customer's features)."""

    instance_id: str
    journey_id: str
    version: int
    customer_id: str
    entered_at: datetime
    holdout: bool = False
    status: str = "active"  # active | completed | exited
    step: int = 0
    waiting: str = ""
    wake_at: datetime | None = None
    exit_reason: str = ""
    converted_at: datetime | None = None
    # The trigger event's properties: branch conditions and message variables read them.
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    name: str
    properties: Mapping[str, Any]
    message_id: str
    timestamp: datetime


@dataclass(frozen=True)
class Timer:
    step_id: str
    due_at: datetime


@dataclass(frozen=True)
class Facts:
    """The customer's features and scores, answering a NeedFacts effect."""

    values: Mapping[str, Value]


Input = Event | Timer | Facts


@dataclass(frozen=True)
class StepReached:
    step_id: str


@dataclass(frozen=True)
class Send:
    step_id: str
    offer_id: str
    channels: tuple[str, ...]
    idempotency_key: str
    variables: Mapping[str, Any]


@dataclass(frozen=True)
class Withheld:
    """A send the holdout group does not get (counted, never sent)."""

    step_id: str
    reason: str


@dataclass(frozen=True)
class SetTimer:
    step_id: str
    at: datetime


@dataclass(frozen=True)
class UpdateTrait:
    step_id: str
    traits: Mapping[str, Any]
    idempotency_key: str


@dataclass(frozen=True)
class NeedFacts:
    step_id: str


@dataclass(frozen=True)
class Converted:
    at: datetime


@dataclass(frozen=True)
class Exit:
    reason: str


Effect = StepReached | Send | Withheld | SetTimer | UpdateTrait | NeedFacts | Converted | Exit


# --- expressions --------------------------------------------------------------------------------


def prop_name(key: str) -> str:
    return EVENT_PREFIX + _PROP.sub("_", key.lower())


def event_namespace(properties: Mapping[str, Any]) -> dict[str, Value]:
    """Scalar event properties as `event_<name>`; nested values are not addressable."""
    out: dict[str, Value] = {}
    for key, value in properties.items():
        if isinstance(value, bool | int | float | str):
            out[prop_name(key)] = value
    return out


def _compile(source: str, *, field: str) -> Expression:
    try:
        return compile_expression(source, known_names=KNOWN_NAMES, known_prefixes=(AFFINITY_PREFIX, EVENT_PREFIX))
    except ExpressionError as exc:
        raise JourneyError(str(exc), field=field) from exc


def holds(source: str, namespace: Mapping[str, Value]) -> bool:
    """Fail closed: a condition that cannot be evaluated (a missing feature) does not hold."""
    try:
        return cached(source).evaluate(namespace)
    except ExpressionError:
        return False


def needs_facts(source: str) -> bool:
    """Whether the expression reads anything beyond the event's own properties."""
    return any(not n.startswith(EVENT_PREFIX) for n in cached(source).names)


# --- validation ---------------------------------------------------------------------------------


def _seconds(data: Mapping[str, Any], prefix: str = "") -> float:
    units = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
    return float(sum(float(data.get(prefix + unit) or 0) * factor for unit, factor in units.items()))


def validate(journey: Journey) -> Journey:
    """Check everything a worker would otherwise trip over at run time."""
    if not _ID.match(journey.journey_id):
        raise JourneyError("journey_id must be lower-case letters, digits, _ or -", field="journey.journey_id")
    if not journey.name.strip():
        raise JourneyError("name is required", field="journey.name")
    t = journey.trigger
    if t.kind not in TRIGGER_KINDS:
        raise JourneyError(f"trigger.kind must be one of {', '.join(TRIGGER_KINDS)}", field="journey.trigger.kind")
    _compile(t.condition, field="journey.trigger.condition")
    if t.kind == "event" and not t.event.strip():
        raise JourneyError("an event trigger names its event", field="journey.trigger.event")
    if t.kind == "score":
        if t.score not in KNOWN_NAMES:
            raise JourneyError("trigger.score must be a known score or feature", field="journey.trigger.score")
        if t.direction not in ("above", "below"):
            raise JourneyError("direction must be above or below", field="journey.trigger.direction")
    if t.kind == "segment" and not t.condition.strip():
        raise JourneyError("a segment trigger needs a condition", field="journey.trigger.condition")
    if t.kind == "schedule" and t.every_hours <= 0:
        raise JourneyError("a schedule trigger needs every_hours > 0", field="journey.trigger.every_hours")
    if journey.entry.reentry not in REENTRY:
        raise JourneyError("reentry must be never or after_exit", field="journey.entry.reentry")
    if journey.entry.cooldown_hours < 0 or journey.entry.max_event_age_hours <= 0:
        raise JourneyError("cooldown_hours >= 0 and max_event_age_hours > 0", field="journey.entry")
    _compile(journey.goal.condition, field="journey.goal.condition")
    if journey.goal.within_hours <= 0:
        raise JourneyError("within_hours must be positive", field="journey.goal.within_hours")
    if not 0.0 <= journey.holdout_share < 1.0:
        raise JourneyError("holdout_share must be within [0, 1)", field="journey.holdout_share")
    if not journey.steps:
        raise JourneyError("a journey needs at least one step", field="journey.steps")
    if len(journey.steps) > MAX_STEPS:
        raise JourneyError(f"at most {MAX_STEPS} steps", field="journey.steps")
    ids = [s.step_id for s in journey.steps]
    if len(set(ids)) != len(ids):
        raise JourneyError("step ids must be unique", field="journey.steps")
    for i, step in enumerate(journey.steps):
        _validate_step(journey, step, i)
    return journey


def _validate_step(journey: Journey, step: Step, i: int) -> None:
    where = f"journey.steps[{i}]"
    if not _ID.match(step.step_id):
        raise JourneyError("step_id must be lower-case letters, digits, _ or -", field=f"{where}.step_id")

    def forward(target: str, name: str) -> None:
        # Only later steps (or "exit"): instances cannot loop, so each step runs at most once.
        if not target or target == "exit":
            return
        try:
            j = journey.index(target)
        except KeyError:
            raise JourneyError(f"unknown step {target!r}", field=f"{where}.{name}") from None
        if j <= i:
            raise JourneyError("steps may only jump forward", field=f"{where}.{name}")

    forward(step.next, "next")
    match step.kind:
        case "wait":
            if step.seconds <= 0:
                raise JourneyError("a wait needs a positive duration", field=f"{where}.seconds")
        case "wait_event":
            if not step.event.strip():
                raise JourneyError("wait_event names its event", field=f"{where}.event")
            if step.timeout_seconds <= 0:
                raise JourneyError("wait_event needs a positive timeout", field=f"{where}.timeout_seconds")
            _compile(step.condition, field=f"{where}.condition")
            forward(step.on_event, "on_event")
            forward(step.on_timeout, "on_timeout")
        case "branch":
            if not step.condition.strip():
                raise JourneyError("a branch needs a condition", field=f"{where}.condition")
            _compile(step.condition, field=f"{where}.condition")
            forward(step.then, "then")
            forward(step.otherwise, "otherwise")
        case "send":
            if not step.offer_id:
                raise JourneyError("a send names its offer (or next_best)", field=f"{where}.offer_id")
            if not step.channels or any(c not in CHANNELS for c in step.channels):
                raise JourneyError("channels must list known channels", field=f"{where}.channels")
        case "split":
            if len(step.variants) < 2 or any(v.weight <= 0 for v in step.variants):
                raise JourneyError("a split needs two or more variants with positive weights",
                                   field=f"{where}.variants")
            for v in step.variants:
                forward(v.next, "variants")
        case "update_trait":
            if not step.traits:
                raise JourneyError("update_trait needs traits", field=f"{where}.traits")
        case "exit":
            pass
        case _:
            raise JourneyError(f"unknown step kind {step.kind!r}", field=f"{where}.kind")


# --- serialisation ------------------------------------------------------------------------------


def from_dict(data: Mapping[str, Any]) -> Journey:
    """Lenient on shape (missing keys take defaults); `validate` judges the content."""
    if not isinstance(data, Mapping):
        raise JourneyError("a journey is a JSON object", field="journey")
    try:
        t = data.get("trigger") or {}
        e = data.get("entry") or {}
        g = data.get("goal") or {}
        steps = tuple(_step_from(s, i) for i, s in enumerate(data.get("steps") or ()))
        return Journey(
            journey_id=str(data.get("journey_id", "")),
            name=str(data.get("name", "")),
            description=str(data.get("description", "")),
            active=bool(data.get("active", True)),
            version=int(data.get("version", 0)),
            holdout_share=float(data.get("holdout_share", 0.0)),
            trigger=Trigger(
                kind=str(t.get("kind", "")), event=str(t.get("event", "")), condition=str(t.get("condition", "")),
                score=str(t.get("score", "")), threshold=float(t.get("threshold", 0.0)),
                direction=str(t.get("direction", "above")), every_hours=float(t.get("every_hours", 0.0)),
            ),
            entry=Entry(
                reentry=str(e.get("reentry", "never")), cooldown_hours=float(e.get("cooldown_hours", 0.0)),
                max_event_age_hours=float(e.get("max_event_age_hours", 24.0)),
            ),
            goal=Goal(event=str(g.get("event", "")), condition=str(g.get("condition", "")),
                      within_hours=float(g.get("within_hours", 168.0))),
            steps=steps,
        )
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, JourneyError):
            raise
        raise JourneyError(f"malformed journey: {exc}", field="journey") from exc


def _step_from(s: Mapping[str, Any], i: int) -> Step:
    if not isinstance(s, Mapping):
        raise JourneyError("a step is a JSON object", field=f"journey.steps[{i}]")
    kind = str(s.get("kind", ""))
    channels = s.get("channels") or ()
    if isinstance(channels, str):
        channels = (channels,)
    return Step(
        step_id=str(s.get("step_id") or s.get("id") or ""),
        kind=kind,  # type: ignore[arg-type]  # checked by validate
        next=str(s.get("next", "")),
        seconds=_seconds(s),
        event=str(s.get("event", "")),
        condition=str(s.get("condition", "")),
        timeout_seconds=_seconds(s, "timeout_"),
        on_event=str(s.get("on_event", "")),
        on_timeout=str(s.get("on_timeout", "")),
        then=str(s.get("then", "")),
        otherwise=str(s.get("otherwise", "")),
        offer_id=str(s.get("offer_id", "")),
        channels=tuple(str(c) for c in channels),
        variables=dict(s.get("variables") or {}),
        variants=tuple(
            Variant(str(v.get("name", "")), float(v.get("weight", 0)), str(v.get("next", "")))
            for v in (s.get("variants") or ())
        ),
        traits=dict(s.get("traits") or {}),
    )


def _step_dict(s: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"step_id": s.step_id, "kind": s.kind}
    if s.next:
        out["next"] = s.next
    match s.kind:
        case "wait":
            out["seconds"] = s.seconds
        case "wait_event":
            out.update(event=s.event, condition=s.condition, timeout_seconds=s.timeout_seconds,
                       on_event=s.on_event, on_timeout=s.on_timeout)
        case "branch":
            out.update(condition=s.condition, then=s.then, otherwise=s.otherwise)
        case "send":
            out.update(offer_id=s.offer_id, channels=list(s.channels), variables=dict(s.variables))
        case "split":
            out["variants"] = [{"name": v.name, "weight": v.weight, "next": v.next} for v in s.variants]
        case "update_trait":
            out["traits"] = dict(s.traits)
        case "exit":
            pass
        case _:
            assert_never(s.kind)
    return out


def to_dict(j: Journey) -> dict[str, Any]:
    t = j.trigger
    trigger: dict[str, Any] = {"kind": t.kind, "condition": t.condition}
    if t.kind == "event":
        trigger["event"] = t.event
    elif t.kind == "score":
        trigger.update(score=t.score, threshold=t.threshold, direction=t.direction)
    elif t.kind == "schedule":
        trigger["every_hours"] = t.every_hours
    return {
        "journey_id": j.journey_id,
        "name": j.name,
        "description": j.description,
        "version": j.version,
        "active": j.active,
        "trigger": trigger,
        "entry": {"reentry": j.entry.reentry, "cooldown_hours": j.entry.cooldown_hours,
                  "max_event_age_hours": j.entry.max_event_age_hours},
        "goal": {"event": j.goal.event, "condition": j.goal.condition, "within_hours": j.goal.within_hours},
        "holdout_share": j.holdout_share,
        "steps": [_step_dict(s) for s in j.steps],
    }


# --- entry --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prior:
    """What the store knows about this customer in this journey."""

    active: bool = False
    last_entered_at: datetime | None = None


def may_enter(journey: Journey, prior: Prior, *, now: datetime) -> bool:
    """Entry and re-entry rules: never twice, or again once the last run is over (and cooled down)."""
    if not journey.active or prior.active:
        return False
    if prior.last_entered_at is None:
        return True
    if journey.entry.reentry == "never":
        return False
    return now - prior.last_entered_at >= timedelta(hours=journey.entry.cooldown_hours)


def may_start(journey: Journey, event_name: str, timestamp: datetime, *, now: datetime) -> bool:
    """A cheap first look, before any facts or conditions: could this event start the journey at all?
    (Scheduled journeys start from timers; score and segment triggers look at every fresh event.)"""
    t = journey.trigger
    if t.kind not in ("event", "score", "segment"):
        return False
    if now - timestamp > timedelta(hours=journey.entry.max_event_age_hours):
        return False
    return t.kind != "event" or event_name == t.event


def event_triggers(journey: Journey, event: Event, facts: Mapping[str, Value], *, now: datetime) -> bool:
    t = journey.trigger
    if t.kind != "event" or event.name != t.event:
        return False
    if now - event.timestamp > timedelta(hours=journey.entry.max_event_age_hours):
        return False
    return holds(t.condition, {**facts, **event_namespace(event.properties)})


def crossed(journey: Journey, previous: float | None, current: float | None) -> bool:
    """A score trigger fires when the value moves across the threshold (a first sighting on the far
    side counts: it entered the region since the journey started watching)."""
    t = journey.trigger
    if current is None:
        return False
    beyond = current >= t.threshold if t.direction == "above" else current <= t.threshold
    if previous is None:
        return beyond
    was = previous >= t.threshold if t.direction == "above" else previous <= t.threshold
    return beyond and not was


def entered_segment(journey: Journey, previous: bool | None, facts: Mapping[str, Value]) -> tuple[bool, bool]:
    """(in the segment now, just entered it)."""
    now_in = holds(journey.trigger.condition, facts)
    return now_in, now_in and not previous


def split_bucket(journey_id: str, customer_id: str, step_id: str) -> float:
    digest = hashlib.sha256(f"{journey_id}|{step_id}|{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_variant(variants: Sequence[Variant], point: float) -> Variant:
    total = sum(v.weight for v in variants)
    edge = 0.0
    for v in variants:
        edge += v.weight / total
        if point < edge:
            return v
    return variants[-1]


# --- the interpreter ----------------------------------------------------------------------------


def enter(
    journey: Journey,
    *,
    instance_id: str,
    customer_id: str,
    now: datetime,
    holdout: bool,
    context: Mapping[str, Any] | None = None,
) -> tuple[State, list[Effect]]:
    state = State(
        instance_id=instance_id, journey_id=journey.journey_id, version=journey.version, customer_id=customer_id,
        entered_at=now, holdout=holdout, context=dict(context or {}),
    )
    return _run(journey, state, now, None)


def advance(journey: Journey, state: State, given: Input, now: datetime) -> tuple[State, list[Effect]]:
    """Move `state` on an event, a timer or facts. An input the instance is not waiting for (a
    duplicate timer, an unrelated event) leaves it unchanged with no effects."""
    effects: list[Effect] = []
    if isinstance(given, Event) and _is_goal(journey, state, given):
        if state.converted_at is None:
            state = replace(state, converted_at=now)
            effects.append(Converted(now))
        if state.status == "active":
            state = replace(state, status="exited", exit_reason="goal", waiting="", wake_at=None)
            effects.append(Exit("goal"))
        return state, effects
    if state.status != "active":
        return state, []
    step = journey.steps[state.step]
    match given:
        case Timer(step_id=step_id):
            if step_id != step.step_id or state.waiting not in ("timer", "event"):
                return state, []
            target = step.on_timeout if state.waiting == "event" else step.next
            state = replace(state, waiting="", wake_at=None)
            return _run(journey, _goto(journey, state, target), now, None)
        case Event():
            if state.waiting != "event" or given.name != step.event:
                return state, []
            if not holds(step.condition, {**event_namespace(state.context), **event_namespace(given.properties)}):
                return state, []
            state = replace(state, waiting="", wake_at=None)
            return _run(journey, _goto(journey, state, step.on_event or step.next), now, None)
        case Facts(values=values):
            if state.waiting != "facts":
                return state, []
            return _run(journey, replace(state, waiting=""), now, values)
        case _:
            assert_never(given)


def _is_goal(journey: Journey, state: State, event: Event) -> bool:
    goal = journey.goal
    if not goal.event or event.name != goal.event or event.timestamp < state.entered_at:
        return False
    if event.timestamp - state.entered_at > timedelta(hours=goal.within_hours):
        return False
    return holds(goal.condition, event_namespace(event.properties))


def _goto(journey: Journey, state: State, target: str) -> State:
    """`target` "" means the following step; "exit" or past the end finishes the run."""
    if target == "exit":
        return replace(state, step=len(journey.steps))
    if target:
        return replace(state, step=journey.index(target))
    return replace(state, step=state.step + 1)


def _run(
    journey: Journey, state: State, now: datetime, facts: Mapping[str, Value] | None
) -> tuple[State, list[Effect]]:
    """Execute steps until the instance waits or finishes."""
    effects: list[Effect] = []
    # Facts answer a branch that already counted as reached when it asked for them.
    resumed = facts is not None
    for _ in range(len(journey.steps) + 1):
        if state.step >= len(journey.steps):
            effects.append(Exit("completed"))
            return replace(state, status="completed", exit_reason="completed", waiting="", wake_at=None), effects
        step = journey.steps[state.step]
        if not resumed:
            effects.append(StepReached(step.step_id))
        resumed = False
        key = f"journey:{state.instance_id}:{step.step_id}"
        match step.kind:
            case "wait":
                at = now + timedelta(seconds=step.seconds)
                effects.append(SetTimer(step.step_id, at))
                return replace(state, waiting="timer", wake_at=at), effects
            case "wait_event":
                at = now + timedelta(seconds=step.timeout_seconds)
                effects.append(SetTimer(step.step_id, at))
                return replace(state, waiting="event", wake_at=at), effects
            case "branch":
                if facts is None:
                    effects.append(NeedFacts(step.step_id))
                    return replace(state, waiting="facts"), effects
                namespace = {**facts, **event_namespace(state.context)}
                target = step.then if holds(step.condition, namespace) else step.otherwise
                state = _goto(journey, state, target)
            case "send":
                if state.holdout:
                    effects.append(Withheld(step.step_id, "holdout"))
                else:
                    variables = {**dict(step.variables), "event": dict(state.context)}
                    effects.append(Send(step.step_id, step.offer_id, step.channels, key, variables))
                state = _goto(journey, state, step.next)
            case "split":
                point = split_bucket(journey.journey_id, state.customer_id, step.step_id)
                state = _goto(journey, state, choose_variant(step.variants, point).next or step.next)
            case "update_trait":
                effects.append(UpdateTrait(step.step_id, dict(step.traits), key))
                state = _goto(journey, state, step.next)
            case "exit":
                effects.append(Exit("exit_step"))
                return replace(state, status="exited", exit_reason="exit_step", waiting="", wake_at=None), effects
            case _:
                assert_never(step.kind)
    raise AssertionError("a journey without loops cannot run more steps than it has")


# --- reporting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lift:
    rate_treated: float
    rate_holdout: float
    lift: float
    low: float
    high: float


def lift(converted_treated: int, treated: int, converted_holdout: int, holdout: int, *, z: float = 1.96) -> Lift:
    """Absolute lift of the treated over the holdout conversion rate, with a two-proportion
    normal-approximation interval (zeros when either group is empty)."""
    if treated <= 0 or holdout <= 0:
        rate = converted_treated / treated if treated > 0 else 0.0
        return Lift(rate, converted_holdout / holdout if holdout > 0 else 0.0, 0.0, 0.0, 0.0)
    p1, p0 = converted_treated / treated, converted_holdout / holdout
    se = (p1 * (1 - p1) / treated + p0 * (1 - p0) / holdout) ** 0.5
    diff = p1 - p0
    return Lift(p1, p0, diff, diff - z * se, diff + z * se)


# Sankey nodes besides the step ids (which cannot contain parentheses): where instances come from
# and the state they are in after the last step they reached.
START = "(start)"


def end_node(status: str, exit_reason: str) -> str:
    return f"(exited: {exit_reason or 'unknown'})" if status == "exited" else f"({status})"


@dataclass(frozen=True)
class Transition:
    source: str
    target: str
    count: int


def transitions(
    journey: Journey, moves: Sequence[tuple[str, str, int]], ends: Sequence[tuple[str, str, str, int]]
) -> tuple[Transition, ...]:
    """Customer paths for a Sankey. `moves`: (the step reached before, "" at entry; the step; how
    many instances), from consecutive steps in the step log. `ends`: (the last step an instance
    reached; its status; its exit reason; how many). Ordered as the journey runs: start, steps, ends."""
    counts: dict[tuple[str, str], int] = {}
    for before, step, n in moves:
        key = (before or START, step)
        counts[key] = counts.get(key, 0) + n
    for last, status, reason, n in ends:
        key = (last, end_node(status, reason))
        counts[key] = counts.get(key, 0) + n
    order = {s.step_id: i for i, s in enumerate(journey.steps)}

    def rank(node: str) -> tuple[int, str]:
        if node == START:
            return (-1, node)
        return (order.get(node, len(order)), node)

    return tuple(
        Transition(source, target, n)
        for (source, target), n in sorted(counts.items(), key=lambda kv: (rank(kv[0][0]), rank(kv[0][1])))
        if n > 0
    )
