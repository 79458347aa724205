"""CDNOW transaction files -> per-customer BTYD summaries (x, t_x, T, mean repeat spend).

Two layouts, both whitespace-separated:
- the 1/10 sample, no header: `master_id sample_id yyyymmdd cds dollars`;
- the full cohort, one header line: `customer_id yyyymmdd cds dollars`.
Same-day purchases are merged into one transaction (as Fader, Hardie & Lee do); time is in weeks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

DAYS_PER_WEEK = 7.0


@dataclass(frozen=True)
class Transaction:
    customer_id: str
    day: date
    amount: float


@dataclass(frozen=True)
class Summary:
    """Calibration summaries per customer, plus holdout repeat counts when a holdout end was given."""

    customer_ids: list[str]
    x: npt.NDArray[np.float64]
    t_x: npt.NDArray[np.float64]
    T: npt.NDArray[np.float64]
    # Mean value of the repeat transactions in calibration (0 for customers without repeats).
    monetary: npt.NDArray[np.float64]
    calibration_end: date
    holdout_end: date | None = None
    holdout_x: npt.NDArray[np.float64] | None = None

    @property
    def holdout_weeks(self) -> float:
        if self.holdout_end is None:
            return 0.0
        return (self.holdout_end - self.calibration_end).days / DAYS_PER_WEEK

    def __len__(self) -> int:
        return len(self.customer_ids)


def _day(text: str, *, line: int) -> date:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError as exc:
        raise ValueError(f"line {line}: date {text!r} is not yyyymmdd") from exc


def parse_lines(lines: Iterable[str]) -> list[Transaction]:
    """Parses either layout; the layout is told apart by the number of columns."""
    result: list[Transaction] = []
    for number, raw in enumerate(lines, start=1):
        fields = raw.split()
        if not fields:
            continue
        if len(fields) == 5:
            customer, day_text, amount_text = fields[0], fields[2], fields[4]
        elif len(fields) == 4:
            customer, day_text, amount_text = fields[0], fields[1], fields[3]
        else:
            raise ValueError(f"line {number}: expected 4 or 5 columns, got {len(fields)}")
        if number == 1 and not day_text.isdigit():
            continue
        try:
            amount = float(amount_text)
        except ValueError as exc:
            raise ValueError(f"line {number}: amount {amount_text!r} is not a number") from exc
        # Leading zeros differ between files ("00004" vs "4"): ids compare as numbers when they are numbers.
        key = str(int(customer)) if customer.isdigit() else customer
        result.append(Transaction(key, _day(day_text, line=number), amount))
    return result


def read_transactions(path: Path) -> list[Transaction]:
    with path.open(encoding="utf-8") as handle:
        return parse_lines(handle)


def summarise(
    transactions: Iterable[Transaction],
    *,
    calibration_end: date,
    holdout_end: date | None = None,
    cohort_weeks: float | None = None,
) -> Summary:
    """BTYD summaries of customers whose first purchase falls on or before `calibration_end`.

    `cohort_weeks` keeps only customers whose first purchase lies within that many weeks of the earliest
    purchase in the data (CDNOW's cohort is the first 12 weeks of 1997).
    """
    if holdout_end is not None and holdout_end <= calibration_end:
        raise ValueError("holdout_end must be after calibration_end")
    daily: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for tx in transactions:
        daily[tx.customer_id][tx.day] += tx.amount
    if not daily:
        raise ValueError("no transactions")
    earliest = min(min(days) for days in daily.values())
    ids: list[str] = []
    rows: list[tuple[float, float, float, float, float]] = []
    for customer in sorted(daily, key=lambda c: (len(c), c)):
        days = sorted(daily[customer].items())
        first = days[0][0]
        if first > calibration_end:
            continue
        if cohort_weeks is not None and (first - earliest).days / DAYS_PER_WEEK >= cohort_weeks:
            continue
        repeats = [(d, v) for d, v in days[1:] if d <= calibration_end]
        later = [d for d, _ in days[1:] if d > calibration_end and (holdout_end is None or d <= holdout_end)]
        x = float(len(repeats))
        t_x = (repeats[-1][0] - first).days / DAYS_PER_WEEK if repeats else 0.0
        big_t = (calibration_end - first).days / DAYS_PER_WEEK
        monetary = float(np.mean([v for _, v in repeats])) if repeats else 0.0
        ids.append(customer)
        rows.append((x, t_x, big_t, monetary, float(len(later))))
    if not rows:
        raise ValueError("no customers made a first purchase in the calibration period")
    table = np.asarray(rows, dtype=np.float64)
    return Summary(
        customer_ids=ids,
        x=table[:, 0],
        t_x=table[:, 1],
        T=table[:, 2],
        monetary=table[:, 3],
        calibration_end=calibration_end,
        holdout_end=holdout_end,
        holdout_x=table[:, 4] if holdout_end is not None else None,
    )
