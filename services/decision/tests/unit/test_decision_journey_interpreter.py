"""The pure journey interpreter: definitions, entry rules, every step kind, goals, lift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from retain_decision.domain import journeys as jd
from retain_decision.journeys_service import templates

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def journey(steps: list[dict[str, Any]], **extra: Any) -> jd.Journey:
    data = {"journey_id": "j1", "name": "J", "trigger": {"kind": "event", "event": "Checkout Started"},
            "goal": {"event": "Order Completed"}, "steps": steps, "version": 1, **extra}
    return jd.validate(jd.from_dict(data))


def ev(name: str, at: datetime = T0, **props: Any) -> jd.Event:
    return jd.Event(name, props, f"m-{name}-{at.isoformat()}", at)


def kinds(effects: list[jd.Effect]) -> list[str]:
    return [type(e).__name__ for e in effects]


def start(j: jd.Journey, *, holdout: bool = False, **context: Any) -> tuple[jd.State, list[jd.Effect]]:
    return jd.enter(j, instance_id="jin_1", customer_id="cus_1", now=T0, holdout=holdout, context=context)


def test_wait_then_send_sets_a_timer_and_sends_once_on_it() -> None:
    j = journey([{"step_id": "w", "kind": "wait", "hours": 2},
                 {"step_id": "s", "kind": "send", "offer_id": "o1", "channels": ["email", "line"]}])
    state, effects = start(j)
    assert effects == [jd.StepReached("w"), jd.SetTimer("w", T0 + timedelta(hours=2))]
    assert state.waiting == "timer" and state.status == "active"

    later = T0 + timedelta(hours=2)
    moved, effects = jd.advance(j, state, jd.Timer("w", later), later)
    assert kinds(effects) == ["StepReached", "Send", "Exit"]
    send = effects[1]
    assert isinstance(send, jd.Send)
    assert send.idempotency_key == "journey:jin_1:s" and send.channels == ("email", "line")
    assert moved.status == "completed"
    # The same timer delivered again, or a timer for another step: nothing happens.
    assert jd.advance(j, moved, jd.Timer("w", later), later) == (moved, [])
    assert jd.advance(j, state, jd.Timer("other", later), later) == (state, [])


def test_wait_for_event_takes_the_event_path_or_the_timeout_path() -> None:
    j = journey([
        {"step_id": "wait_order", "kind": "wait_event", "event": "Order Completed", "timeout_hours": 4,
         "condition": "event_total > 100", "on_event": "thanks", "on_timeout": "remind"},
        {"step_id": "remind", "kind": "send", "offer_id": "o1", "channels": ["push"], "next": "exit"},
        {"step_id": "thanks", "kind": "update_trait", "traits": {"bought": True}},
    ], goal={})
    state, effects = start(j)
    assert effects[-1] == jd.SetTimer("wait_order", T0 + timedelta(hours=4)) and state.waiting == "event"
    # An event that does not meet the condition does not count.
    assert jd.advance(j, state, ev("Order Completed", total=50), T0) == (state, [])
    done, effects = jd.advance(j, state, ev("Order Completed", total=500), T0)
    assert kinds(effects) == ["StepReached", "UpdateTrait", "Exit"] and done.status == "completed"

    late = T0 + timedelta(hours=4)
    timed_out, effects = jd.advance(j, state, jd.Timer("wait_order", late), late)
    assert kinds(effects) == ["StepReached", "Send", "Exit"] and timed_out.status == "completed"
    assert isinstance(effects[1], jd.Send) and effects[1].step_id == "remind"


def test_branch_asks_for_facts_then_follows_the_condition() -> None:
    j = journey([
        {"step_id": "b", "kind": "branch", "condition": "churn_risk > 0.5 and event_value >= 10",
         "then": "save", "otherwise": "exit"},
        {"step_id": "save", "kind": "send", "offer_id": "save", "channels": ["sms"]},
    ])
    state, effects = start(j, value=20)
    assert effects == [jd.StepReached("b"), jd.NeedFacts("b")] and state.waiting == "facts"
    high, effects = jd.advance(j, state, jd.Facts({"churn_risk": 0.8}), T0)
    # The branch was counted when it asked; only the send step is new.
    assert kinds(effects) == ["StepReached", "Send", "Exit"]
    low, effects = jd.advance(j, state, jd.Facts({"churn_risk": 0.1}), T0)
    assert kinds(effects) == ["Exit"] and low.status == "completed"
    # A missing fact fails closed: the condition does not hold.
    _, effects = jd.advance(j, state, jd.Facts({}), T0)
    assert kinds(effects) == ["Exit"]
    # Facts nobody asked for change nothing.
    assert jd.advance(j, high, jd.Facts({"churn_risk": 0.8}), T0) == (high, [])


def test_split_is_stable_per_customer_and_follows_the_weights() -> None:
    j = journey([
        {"step_id": "ab", "kind": "split", "variants": [{"name": "a", "weight": 3, "next": "a"},
                                                         {"name": "b", "weight": 1, "next": "b"}]},
        {"step_id": "a", "kind": "send", "offer_id": "o1", "channels": ["email"], "next": "exit"},
        {"step_id": "b", "kind": "send", "offer_id": "o2", "channels": ["email"]},
    ])
    chosen = []
    for i in range(2000):
        _, effects = jd.enter(j, instance_id=f"i{i}", customer_id=f"cus_{i}", now=T0, holdout=False)
        sends = [e for e in effects if isinstance(e, jd.Send)]
        assert len(sends) == 1
        chosen.append(sends[0].offer_id)
        _, again = jd.enter(j, instance_id=f"x{i}", customer_id=f"cus_{i}", now=T0, holdout=False)
        assert [e.offer_id for e in again if isinstance(e, jd.Send)] == [sends[0].offer_id]
    share = chosen.count("o1") / len(chosen)
    assert 0.70 < share < 0.80


def test_holdout_members_are_withheld_every_send_but_still_convert() -> None:
    j = journey([{"step_id": "s", "kind": "send", "offer_id": "o1", "channels": ["email"]},
                 {"step_id": "w", "kind": "wait", "days": 1}])
    state, effects = start(j, holdout=True)
    assert kinds(effects) == ["StepReached", "Withheld", "StepReached", "SetTimer"]
    converted, effects = jd.advance(j, state, ev("Order Completed", T0 + timedelta(hours=1)), T0 + timedelta(hours=1))
    assert kinds(effects) == ["Converted", "Exit"]
    assert converted.exit_reason == "goal" and converted.converted_at is not None


def test_goal_counts_once_and_only_inside_its_window() -> None:
    j = journey([{"step_id": "s", "kind": "send", "offer_id": "o1", "channels": ["email"]}],
                goal={"event": "Order Completed", "within_hours": 24})
    done, _ = start(j)
    assert done.status == "completed"
    late = T0 + timedelta(hours=30)
    assert jd.advance(j, done, ev("Order Completed", late), late) == (done, [])
    before = T0 - timedelta(hours=1)
    assert jd.advance(j, done, ev("Order Completed", before), T0) == (done, [])
    soon = T0 + timedelta(hours=3)
    converted, effects = jd.advance(j, done, ev("Order Completed", soon), soon)
    assert kinds(effects) == ["Converted"] and converted.status == "completed"
    assert jd.advance(j, converted, ev("Order Completed", soon + timedelta(minutes=1)), soon)[1] == []


def test_exit_step_and_update_trait() -> None:
    j = journey([{"step_id": "t", "kind": "update_trait", "traits": {"vip": True}},
                 {"step_id": "x", "kind": "exit"},
                 {"step_id": "never", "kind": "send", "offer_id": "o1", "channels": ["email"]}])
    state, effects = start(j)
    assert effects[1] == jd.UpdateTrait("t", {"vip": True}, "journey:jin_1:t")
    assert effects[-1] == jd.Exit("exit_step") and state.status == "exited"
    assert not any(isinstance(e, jd.Send) for e in effects)


def test_entry_rules_and_triggers() -> None:
    j = journey([{"step_id": "s", "kind": "send", "offer_id": "o1", "channels": ["email"]}],
                trigger={"kind": "event", "event": "Checkout Started", "condition": "event_total >= 500"},
                entry={"reentry": "after_exit", "cooldown_hours": 24, "max_event_age_hours": 2})
    assert jd.event_triggers(j, ev("Checkout Started", total=600), {}, now=T0)
    assert not jd.event_triggers(j, ev("Checkout Started", total=100), {}, now=T0)
    assert not jd.event_triggers(j, ev("Product Added", total=600), {}, now=T0)
    stale = ev("Checkout Started", T0 - timedelta(hours=3), total=600)
    assert not jd.event_triggers(j, stale, {}, now=T0)

    assert jd.may_enter(j, jd.Prior(), now=T0)
    assert not jd.may_enter(j, jd.Prior(active=True, last_entered_at=T0), now=T0)
    assert not jd.may_enter(j, jd.Prior(last_entered_at=T0 - timedelta(hours=5)), now=T0)
    assert jd.may_enter(j, jd.Prior(last_entered_at=T0 - timedelta(hours=25)), now=T0)
    never = journey([{"step_id": "s", "kind": "send", "offer_id": "o1", "channels": ["email"]}])
    assert not jd.may_enter(never, jd.Prior(last_entered_at=T0 - timedelta(days=400)), now=T0)

    score = journey([{"step_id": "s", "kind": "send", "offer_id": "o1", "channels": ["email"]}],
                    trigger={"kind": "score", "score": "churn_risk", "threshold": 0.6})
    assert jd.crossed(score, 0.4, 0.7) and jd.crossed(score, None, 0.7)
    assert not jd.crossed(score, 0.65, 0.7) and not jd.crossed(score, 0.7, 0.5) and not jd.crossed(score, 0.1, None)
    segment = journey([{"step_id": "s", "kind": "send", "offer_id": "o1", "channels": ["email"]}],
                      trigger={"kind": "segment", "condition": 'lifecycle_stage == "at_risk"'})
    assert jd.entered_segment(segment, False, {"lifecycle_stage": "at_risk"}) == (True, True)
    assert jd.entered_segment(segment, True, {"lifecycle_stage": "at_risk"}) == (True, False)
    assert jd.entered_segment(segment, True, {"lifecycle_stage": "active"}) == (False, False)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"journey_id": "Bad Id"}, "journey.journey_id"),
        ({"trigger": {"kind": "webhook"}}, "journey.trigger.kind"),
        ({"trigger": {"kind": "event", "event": "X", "condition": "__import__('os')"}}, "journey.trigger.condition"),
        ({"trigger": {"kind": "event", "event": "X", "condition": "no_such_feature > 1"}},
         "journey.trigger.condition"),
        ({"steps": []}, "journey.steps"),
        ({"steps": [{"step_id": "w", "kind": "wait"}]}, "journey.steps[0].seconds"),
        ({"steps": [{"step_id": "s", "kind": "send", "offer_id": "o", "channels": ["fax"]}]},
         "journey.steps[0].channels"),
        ({"steps": [{"step_id": "a", "kind": "wait", "seconds": 1},
                    {"step_id": "b", "kind": "branch", "condition": "frequency > 1", "then": "a"}]},
         "journey.steps[1].then"),
        ({"steps": [{"step_id": "a", "kind": "teleport"}]}, "journey.steps[0].kind"),
        ({"holdout_share": 1.5}, "journey.holdout_share"),
        ({"entry": {"reentry": "sometimes"}}, "journey.entry.reentry"),
    ],
)
def test_bad_definitions_name_the_field(change: dict[str, Any], field: str) -> None:
    data: dict[str, Any] = {"journey_id": "j1", "name": "J", "trigger": {"kind": "event", "event": "X"},
                            "steps": [{"step_id": "s", "kind": "send", "offer_id": "o", "channels": ["email"]}]}
    data.update(change)
    with pytest.raises(jd.JourneyError) as err:
        jd.validate(jd.from_dict(data))
    assert err.value.field == field


def test_round_trip_and_every_template_is_valid() -> None:
    shipped = templates()
    assert len(shipped) == 10
    for template in shipped:
        j = jd.validate(jd.from_dict(template.definition))
        assert jd.validate(jd.from_dict(jd.to_dict(j))) == j
    names = {t.name for t in shipped}
    assert {"welcome_series", "cart_abandonment", "service_recovery", "winback_lapsed"} <= names


def test_lift_with_a_normal_approximation_interval() -> None:
    result = jd.lift(300, 1000, 20, 100)
    assert result.lift == pytest.approx(0.10)
    se = (0.3 * 0.7 / 1000 + 0.2 * 0.8 / 100) ** 0.5
    assert result.low == pytest.approx(0.10 - 1.96 * se) and result.high == pytest.approx(0.10 + 1.96 * se)
    assert result.low < 0.10 < result.high
    empty = jd.lift(5, 10, 0, 0)
    assert empty.rate_treated == 0.5 and (empty.lift, empty.low, empty.high) == (0.0, 0.0, 0.0)


def test_transitions_follow_each_instance_path_and_conserve_instances() -> None:
    """Instances run through the interpreter; their StepReached sequences and final states are
    folded into Sankey flows as the step log would be (consecutive steps, last step -> state)."""
    j = journey([
        {"step_id": "w", "kind": "wait", "hours": 1},
        {"step_id": "b", "kind": "branch", "condition": "frequency >= 1", "then": "exit", "otherwise": "s"},
        {"step_id": "s", "kind": "send", "offer_id": "o1", "channels": ["email"]},
    ])
    later = T0 + timedelta(hours=1)
    runs: list[tuple[list[str], jd.State]] = []
    # 2 buyers leave at the branch, 3 get the send, 1 converts while waiting, 1 still waits.
    for n, plan in enumerate(["buyer", "buyer", "new", "new", "new", "goal", "waiting"]):
        state, effects = jd.enter(j, instance_id=f"jin_{n}", customer_id=f"cus_{n}", now=T0, holdout=False)
        reached = [e.step_id for e in effects if isinstance(e, jd.StepReached)]
        if plan == "goal":
            state, effects = jd.advance(j, state, ev("Order Completed", T0 + timedelta(minutes=5)), T0)
        elif plan != "waiting":
            state, effects = jd.advance(j, state, jd.Timer("w", later), later)
            reached += [e.step_id for e in effects if isinstance(e, jd.StepReached)]
            state, effects = jd.advance(j, state, jd.Facts({"frequency": 1 if plan == "buyer" else 0}), later)
            reached += [e.step_id for e in effects if isinstance(e, jd.StepReached)]
        runs.append((reached, state))
    moves: dict[tuple[str, str], int] = {}
    ends: dict[tuple[str, str, str], int] = {}
    for reached, state in runs:
        for before, step in zip(["", *reached], reached, strict=False):
            moves[(before, step)] = moves.get((before, step), 0) + 1
        key = (reached[-1], state.status, state.exit_reason)
        ends[key] = ends.get(key, 0) + 1

    flows = jd.transitions(j, [(*k, n) for k, n in moves.items()], [(*k, n) for k, n in ends.items()])
    assert [(t.source, t.target, t.count) for t in flows] == [
        ("(start)", "w", 7), ("w", "b", 5), ("w", "(active)", 1), ("w", "(exited: goal)", 1),
        ("b", "s", 3), ("b", "(completed)", 2), ("s", "(completed)", 3),
    ]
    # Every instance leaves the start once and ends once; each step passes on what it received.
    into = {t.target: 0 for t in flows}
    out = {t.source: 0 for t in flows}
    for t in flows:
        into[t.target] += t.count
        out[t.source] += t.count
    assert out[jd.START] == len(runs) == sum(n for node, n in into.items() if node.startswith("("))
    assert all(into[step] == out[step] for step in ("w", "b", "s"))
