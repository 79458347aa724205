"""Transaction files in the formats `retain clv/churn/train` accept."""

from __future__ import annotations

import csv
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path

from retain_scoring.data.cdnow import Transaction, read_transactions

CSV_COLUMNS = ("customer_id", "date", "amount")


class Format(StrEnum):
    cdnow = "cdnow"
    csv = "csv"


def _csv_day(text: str, *, line: int) -> date:
    text = text.strip()
    for pattern in (None, "%Y%m%d"):
        try:
            parsed = datetime.fromisoformat(text) if pattern is None else datetime.strptime(text, pattern)
            return parsed.date()
        except ValueError:
            continue
    raise ValueError(f"line {line}: date {text!r} is neither ISO 8601 nor yyyymmdd")


def read_csv(path: Path) -> list[Transaction]:
    """A header row naming customer_id, date (ISO 8601 or yyyymmdd) and amount; other columns are ignored."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"missing column(s) {', '.join(missing)}; expected {', '.join(CSV_COLUMNS)}")
        result = []
        for number, row in enumerate(reader, start=2):
            customer = (row["customer_id"] or "").strip()
            if not customer:
                raise ValueError(f"line {number}: customer_id is empty")
            try:
                amount = float(row["amount"])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"line {number}: amount {row['amount']!r} is not a number") from exc
            result.append(Transaction(customer, _csv_day(row["date"] or "", line=number), amount))
    if not result:
        raise ValueError("no transactions")
    return result


def load(path: Path, fmt: Format) -> list[Transaction]:
    return read_transactions(path) if fmt is Format.cdnow else read_csv(path)
