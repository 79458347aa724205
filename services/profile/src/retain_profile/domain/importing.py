"""Bulk-import parsing: CDNOW, transaction and event files -> events with deterministic message ids.

Message ids derive from the file's content (customer, date, occurrence), never from the run, so importing
the same file twice stores nothing new.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from retain_profile.domain.events import IncomingEvent
from retain_profile.domain.features import ORDER_EVENT


class ImportError_(ValueError):
    """A line that cannot be imported; `line` is 1-based."""

    def __init__(self, message: str, *, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class ParsedLine:
    line: int
    event: IncomingEvent


def cdnow(lines: Iterable[str], *, prefix: str = "cdnow") -> Iterator[ParsedLine]:
    """Both CDNOW layouts: the 1/10 sample `master_id sample_id yyyymmdd cds dollars` (no header) and the
    full cohort `customer_id yyyymmdd cds dollars` (with a header). The customer is the master id."""
    seen: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(lines, start=1):
        parts = raw.split()
        if not parts:
            continue
        if not parts[0].isdigit():
            if number == 1:
                continue  # header of the full-cohort layout
            raise ImportError_(f"expected a customer id, got {parts[0]!r}", line=number)
        if len(parts) == 5:
            customer, day, cds, dollars = parts[0], parts[2], parts[3], parts[4]
        elif len(parts) == 4:
            customer, day, cds, dollars = parts
        else:
            raise ImportError_(f"expected 4 or 5 columns, got {len(parts)}", line=number)
        try:
            when = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
            revenue, quantity = float(dollars), int(float(cds))
        except ValueError as exc:
            raise ImportError_(str(exc), line=number) from None
        user = f"{prefix}-{int(customer)}"
        occurrence = seen[(user, day)] = seen.get((user, day), 0) + 1
        yield ParsedLine(
            number,
            IncomingEvent(
                message_id=f"{prefix}-{int(customer)}-{day}-{occurrence}",
                type="track",
                event=ORDER_EVENT,
                user_id=user,
                properties={"revenue": revenue, "quantity": quantity, "currency": "USD"},
                timestamp=when,
            ),
        )


_CUSTOMER = ("customer_id", "user_id", "userId", "customer")
_WHEN = ("timestamp", "date", "order_date", "purchased_at", "time")
_AMOUNT = ("revenue", "amount", "total", "value", "dollars")


def records(text: str, *, suffix: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record) from a CSV (header row) or JSONL file."""
    if suffix in (".jsonl", ".ndjson", ".json"):
        for number, raw in enumerate(io.StringIO(text), start=1):
            if raw.strip():
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ImportError_(f"not JSON: {exc.msg}", line=number) from None
                if not isinstance(value, dict):
                    raise ImportError_("each line must be a JSON object", line=number)
                yield number, value
        return
    reader = csv.DictReader(io.StringIO(text))
    for number, row in enumerate(reader, start=2):
        yield number, {k.strip(): v for k, v in row.items() if k is not None and v not in (None, "")}


def transactions(rows: Iterable[tuple[int, Mapping[str, Any]]], *, prefix: str = "txn") -> Iterator[ParsedLine]:
    """One `Order Completed` per row: customer, time and amount columns (several spellings accepted),
    optional order_id, discount, category and currency."""
    seen: dict[str, int] = {}
    for number, row in rows:
        customer = _first(row, _CUSTOMER, number, "customer_id")
        when = _when(_first(row, _WHEN, number, "timestamp"), number)
        amount = _float(_first(row, _AMOUNT, number, "revenue"), number, "revenue")
        properties: dict[str, Any] = {"revenue": amount}
        for key in ("discount", "quantity"):
            if key in row:
                properties[key] = _float(row[key], number, key)
        for key in ("category", "currency", "order_id"):
            if key in row:
                properties[key] = str(row[key])
        if "order_id" in row:
            key = f"{prefix}-{row['order_id']}"
        else:
            base = f"{prefix}-{_digest(customer, when.isoformat(), repr(amount))}"
            seen[base] = seen.get(base, 0) + 1
            key = f"{base}-{seen[base]}"
        yield ParsedLine(
            number,
            IncomingEvent(message_id=key, type="track", event=ORDER_EVENT, user_id=str(customer),
                          properties=properties, timestamp=when),
        )


def events(rows: Iterable[tuple[int, Mapping[str, Any]]], *, prefix: str = "evt") -> Iterator[ParsedLine]:
    """Segment-shaped events (JSONL objects, or CSV with type/event/user_id/anonymous_id/timestamp columns;
    other CSV columns become properties). A missing messageId is derived from the event's content."""
    seen: dict[str, int] = {}
    for number, row in rows:
        data = dict(row)
        message_id = str(data.pop("messageId", "") or data.pop("message_id", "") or "")
        user_id = str(data.pop("userId", "") or data.pop("user_id", "") or "")
        anonymous_id = str(data.pop("anonymousId", "") or data.pop("anonymous_id", "") or "")
        previous_id = str(data.pop("previousId", "") or data.pop("previous_id", "") or "")
        kind = str(data.pop("type", "") or "track")
        name = str(data.pop("event", "") or "")
        stamp = data.pop("timestamp", None)
        properties = data.pop("properties", None)
        traits = data.pop("traits", None)
        context = data.pop("context", None)
        if properties is None:
            # CSV: the remaining columns are the properties.
            properties = {k: _scalar(v) for k, v in data.items() if not isinstance(v, dict | list)}
        if not message_id:
            canonical = json.dumps([kind, name, user_id, anonymous_id, str(stamp), properties], sort_keys=True,
                                   default=str)
            base = f"{prefix}-{_digest(canonical)}"
            seen[base] = seen.get(base, 0) + 1
            message_id = f"{base}-{seen[base]}"
        yield ParsedLine(
            number,
            IncomingEvent(
                message_id=message_id, type=kind, event=name, user_id=user_id, anonymous_id=anonymous_id,
                previous_id=previous_id, properties=_mapping(properties), traits=_mapping(traits),
                context=_mapping(context), timestamp=_when(stamp, number) if stamp else None,
            ),
        )


def _first(row: Mapping[str, Any], names: tuple[str, ...], line: int, label: str) -> Any:
    for name in names:
        if row.get(name) not in (None, ""):
            return row[name]
    raise ImportError_(f"missing {label} (one of {', '.join(names)})", line=line)


def _when(value: Any, line: int) -> datetime:
    text = str(value).strip()
    try:
        if len(text) == 8 and text.isdigit():
            parsed = datetime.strptime(text, "%Y%m%d")
        elif len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ImportError_(f"{text!r} is not a date or ISO timestamp", line=line) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _float(value: Any, line: int, label: str) -> float:
    try:
        return float(str(value).replace(",", ""))
    except ValueError:
        raise ImportError_(f"{label} {value!r} is not a number", line=line) from None


def _scalar(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _digest(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:20]
