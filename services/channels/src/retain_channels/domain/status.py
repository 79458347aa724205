"""Delivery status transitions: provider events arrive late, twice and out of order."""

from __future__ import annotations

EVENT_STATUSES = frozenset({"sent", "delivered", "opened", "clicked", "failed", "bounced"})
_PROGRESS = {"queued": 0, "sent": 1, "delivered": 2, "opened": 3, "clicked": 4}
_FAILURES = frozenset({"failed", "bounced"})
_ENGAGEMENT = frozenset({"opened", "clicked"})


def apply_event(current: str, event: str) -> str | None:
    """The status after `event`, or None when the event changes nothing (stale or repeated)."""
    if event not in EVENT_STATUSES:
        raise ValueError(f"{event!r} is not a delivery event status")
    if current == "suppressed":
        return None
    if current in _FAILURES:
        # An open or click proves the message arrived despite an earlier failure report.
        return event if event in _ENGAGEMENT else None
    if event in _FAILURES:
        # Once the customer engaged, a late bounce report cannot be about this delivery.
        return None if current in _ENGAGEMENT else event
    return event if _PROGRESS[event] > _PROGRESS[current] else None
