"""`retain report leakage`: the Value Leak Radar, a self-contained HTML report for a brand's leadership.

Everything shown comes from the gateway's analytics API (value-leakage, cohorts, priority-segments, plays)
and, when the key may read it, the consent records of the audit log. `render` is a pure function of that
JSON, so the report can be rebuilt from saved responses; charts are inline SVG drawn here (no scripts,
no external requests), so the file opens anywhere, offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

report_app = typer.Typer(help="Reports for a brand's leadership.", no_args_is_help=True)
console = Console(stderr=True)

Json = Mapping[str, Any]
LEAK_LABELS = {
    "churned": "Churned customers' value",
    "value_at_risk": "Value at risk (churn risk × expected value)",
    "inactivity": "Inactive (lapsed) customers' value",
    "discount_dependence": "Revenue bought with discounts",
    "discount_only": "Customers who only buy on discount",
    "service_failures": "Customers with service failures",
}
# Below these, the gap is worth a line in the report.
MIN_MONTHS = 13
MIN_CONSENT_COVERAGE = 0.8
MAX_UNKNOWN_SHARE = 0.2
MAX_PLAYS = 5


# --- formatting ----------------------------------------------------------------------------------------


def baht(value: float) -> str:
    """฿1,234,567 (whole baht), as the console shows money."""
    rounded = round(value)
    return ("-฿" if rounded < 0 else "฿") + f"{abs(rounded):,}"


def baht_short(value: float) -> str:
    """฿1.2M, ฿350K: axis labels."""
    size = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if size >= limit:
            return f"฿{value / limit:.1f}{suffix}"
    return baht(value)


def pct(value: float, *, digits: int = 0) -> str:
    return f"{value * 100:.{digits}f}%"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _n(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


# --- the plays to run first ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Play:
    """A retention play aimed at one segment; `lift` is the planning save rate when nothing is measured."""

    key: str
    name: str
    segment: str
    action: str
    lift: float
    incentive: float
    offer_id: str = ""


PLAYBOOK: tuple[Play, ...] = (
    Play("valuable_at_risk", "Personal save for valuable customers at risk", "valuable_at_risk",
         "LINE or call from a named adviser with a tailored offer", 0.15, 200.0, "save_15_percent"),
    Play("service_recovery", "Service recovery", "open_ticket",
         "close the open ticket within 48 h, apologise and credit", 0.25, 100.0, "service_recovery_apology"),
    Play("unhappy", "Fix the experience of unhappy customers", "unhappy",
         "call back after two negative feedbacks in a row", 0.20, 100.0, "service_recovery_apology"),
    Play("vip", "VIP recognition", "vip", "early access and a thank-you gift, no discount", 0.10, 150.0),
    Play("declining", "Re-engage declining customers", "declining",
         "content and reminders on their preferred channel", 0.08, 50.0, "save_free_delivery"),
    Play("winback", "Win back lapsed customers", "winback", "time-limited comeback voucher", 0.05, 150.0,
         "winback_200_baht"),
    Play("second_order", "Second-order nudge", "one_time_buyer",
         "free delivery on the second order within 30 days", 0.08, 50.0),
    Play("repeat", "Loyalty for repeat buyers", "repeat_buyer", "points and replenishment reminders", 0.05, 50.0,
         "replenish_reminder"),
    Play("high_value", "Protect high-value customers", "high_value", "service upgrade and proactive care", 0.08,
         100.0),
)
# Share of discount spend a move from blanket discounts to non-price benefits is planned to recover.
DISCOUNT_RECOVERY = 0.25


@dataclass(frozen=True)
class PlannedPlay:
    name: str
    target: str
    action: str
    customers: int
    base: float
    base_label: str
    lift: float
    lift_source: str
    cost: float
    expected_value: float


def _measured(plays: Json) -> dict[str, Json]:
    """Offers whose lift over a holdout is positive at 95% (the interval's low end above zero)."""
    return {
        str(p.get("offer_id")): p for p in plays.get("plays") or []
        if p.get("has_holdout") and _n(p.get("lift_ci_low")) > 0
    }


def plan_plays(
    value_leakage: Json, segments: Json, plays: Json, offers: Json | None = None
) -> list[PlannedPlay]:
    """Candidate plays ranked by expected value = value at risk × lift − customers × lift × incentive.

    The lift is the offer's measured lift over holdout when one is significant, else the configured offer's
    prior propensity, else the playbook's planning rate; the incentive is the configured offer's cost when
    there is one. Segments overlap, so expected values of different plays must not be added up.
    """
    by_segment = {str(s.get("segment")): s for s in segments.get("segments") or []}
    measured = _measured(plays)
    configured = {str(o.get("offer_id")): o for o in (offers or {}).get("offers") or [] if o.get("active", True)}
    out: list[PlannedPlay] = []
    for play in PLAYBOOK:
        seg = by_segment.get(play.segment)
        if seg is None or _n(seg.get("value_at_risk")) <= 0:
            continue
        lift, source, incentive = play.lift, "planning assumption", play.incentive
        offer = configured.get(play.offer_id) if play.offer_id else None
        if offer is not None:
            incentive = _n(offer.get("cost"))
            if _n(offer.get("prior_propensity")) > 0:
                lift, source = _n(offer.get("prior_propensity")), f"offer {play.offer_id} prior propensity"
        if play.offer_id in measured:
            lift = _n(measured[play.offer_id].get("lift"))
            source = f"measured: offer {play.offer_id} vs holdout"
        customers = int(_n(seg.get("customers")))
        risk = _n(seg.get("value_at_risk"))
        cost = customers * lift * incentive
        out.append(PlannedPlay(
            name=play.name, target=f"segment {play.segment}", action=play.action, customers=customers,
            base=risk, base_label="value at risk", lift=lift, lift_source=source, cost=cost,
            expected_value=risk * lift - cost,
        ))
    leaks = {str(x.get("kind")): x for x in value_leakage.get("leakage") or []}
    discount = _n(value_leakage.get("discount"))
    if discount > 0:
        dependent = leaks.get("discount_only", {})
        out.append(PlannedPlay(
            name="Wean deal-seekers off blanket discounts", target="customers buying on discount",
            action="replace across-the-board codes with perks and targeted offers",
            customers=int(_n(dependent.get("customers") or leaks.get("discount_dependence", {}).get("customers"))),
            base=discount, base_label="discounts given in the window", lift=DISCOUNT_RECOVERY,
            lift_source="planning assumption", cost=0.0, expected_value=discount * DISCOUNT_RECOVERY,
        ))
    # Measured plays that already pay for themselves: keep running them.
    for offer, p in measured.items():
        saved = _n(p.get("value_saved"))
        if saved > 0:
            out.append(PlannedPlay(
                name=f"Keep running offer {offer}", target=f"{int(_n(p.get('treated_customers')))} treated customers",
                action="proven against its holdout: extend to similar customers",
                customers=int(_n(p.get("treated_customers"))), base=_n(p.get("attributed_revenue")),
                base_label="attributed revenue", lift=_n(p.get("lift")), lift_source="measured vs holdout",
                cost=_n(p.get("incentive_cost")), expected_value=saved,
            ))
    return sorted(out, key=lambda p: (-p.expected_value, p.name))[:MAX_PLAYS]


# --- data gaps --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    key: str
    title: str
    detail: str


def consent_coverage(records: Sequence[Json], *, customers: int) -> dict[str, Any]:
    """Customers whose latest marketing consent on a channel is granted, per channel and on any channel."""
    latest: dict[tuple[str, str], str] = {}
    for r in records:
        payload = r.get("payload") or {}
        if str(payload.get("purpose") or "marketing") != "marketing":
            continue
        channel = str(r.get("channel") or "").lower().removeprefix("channel_")
        latest[(str(r.get("customer_id")), channel)] = str(r.get("outcome") or payload.get("status") or "")
    per_channel: dict[str, set[str]] = {}
    anywhere: set[str] = set()
    for (customer, channel), status in latest.items():
        if status == "granted":
            per_channel.setdefault(channel, set()).add(customer)
            anywhere.add(customer)
    return {
        "customers": customers,
        "consented": len(anywhere),
        "coverage": len(anywhere) / customers if customers else 0.0,
        "channels": {ch: len(ids) for ch, ids in sorted(per_channel.items())},
    }


def data_gaps(data: Json) -> list[Gap]:
    vl, plays = data.get("value_leakage") or {}, data.get("plays") or {}
    gaps: list[Gap] = []
    customers = int(_n(vl.get("customers")))
    if _n(vl.get("discount")) <= 0:
        gaps.append(Gap("no_discounts", "No discounts recorded",
                        "No order carries a discount, so discount dependence cannot be measured: send "
                        "`discount` (and `coupon`) on Order Completed events."))
    if "margin" not in vl:
        gaps.append(Gap("no_margin", "No margin data",
                        "Figures are revenue, not profit: without product costs the value of a save and the "
                        "cost of an incentive cannot be compared on margin."))
    measured = [p for p in plays.get("plays") or [] if p.get("has_holdout")]
    if not plays.get("plays"):
        gaps.append(Gap("no_plays", "No plays run yet",
                        "No decisions or messages in the plays window: nothing has been tried, so every play "
                        "value below is a planning estimate."))
    if not measured:
        gaps.append(Gap("no_holdout", "No holdout yet",
                        "No offer has a holdout group, so no lift has been measured: expected values use "
                        "planning save rates. Run the first plays with a 10% holdout."))
    months = len(vl.get("monthly") or [])
    if months < MIN_MONTHS:
        gaps.append(Gap("short_history", f"Only {months} months of history",
                        "Less than a year of orders: seasonality is invisible and churn thresholds rest on "
                        "few repeat cycles."))
    consent = data.get("consents")
    if consent is None:
        gaps.append(Gap("consents_unknown", "Consent coverage unknown",
                        "This key cannot read the consent records, so the reach of each play is unknown."))
    elif _n(consent.get("coverage")) < MIN_CONSENT_COVERAGE:
        gaps.append(Gap("missing_consents", "Missing consents",
                        f"Only {consent.get('consented', 0):,} of {customers:,} customers "
                        f"({pct(_n(consent.get('coverage')))}) have a marketing consent on any channel: plays can "
                        "reach no one else (PDPA)."))
    breakdowns = {str(b.get("dimension")): b.get("buckets") or [] for b in vl.get("breakdowns") or []}
    revenue = _n(vl.get("revenue"))
    for dimension, noun in (("category", "a product category"), ("channel", "a sales channel")):
        unknown = sum(_n(b.get("revenue")) for b in breakdowns.get(dimension, []) if b.get("key") == "unknown")
        if revenue > 0 and unknown / revenue > MAX_UNKNOWN_SHARE:
            gaps.append(Gap(f"unknown_{dimension}", f"Orders without {noun}",
                            f"{pct(unknown / revenue)} of revenue has no {dimension}: the breakdown by "
                            f"{dimension} is partial."))
    names = " ".join(str(m.get("name")) for m in vl.get("models") or [])
    if "churn" not in names:
        gaps.append(Gap("no_churn_model", "No trained churn model",
                        "Churn risk comes from the built-in prior, not a model fitted to this brand: run "
                        "`retain train`."))
    scored = int(_n(vl.get("scored_customers")))
    if customers and scored < customers:
        gaps.append(Gap("unscored", "Customers without scores",
                        f"{customers - scored:,} of {customers:,} customers could not be scored; their value at "
                        "risk counts as zero."))
    leaks = {str(x.get("kind")): x for x in vl.get("leakage") or []}
    if int(_n(leaks.get("service_failures", {}).get("customers"))) == 0:
        gaps.append(Gap("no_service_signals", "No service signals",
                        "No open tickets or negative-feedback streaks: either service is perfect or tickets "
                        "and feedback are not being sent (Ticket Opened, Feedback Submitted)."))
    return gaps


# --- charts (inline SVG) ----------------------------------------------------------------------------------

PALETTE = ("#c0392b", "#e67e22", "#8e44ad", "#2c7fb8", "#16a085", "#7f8c8d", "#d35400", "#27ae60")


def hbar_chart(items: Sequence[tuple[str, float]], *, fmt: Callable[[float], str] = baht, width: int = 720) -> str:
    """Horizontal bars with their values; labels on the left."""
    if not items:
        return ""
    row, label_w, value_w = 30, 290, 110
    top = max((v for _, v in items), default=0.0) or 1.0
    bars = []
    for i, (label, value) in enumerate(items):
        y = i * row
        w = max(0.0, value) / top * (width - label_w - value_w)
        bars.append(
            f'<text x="{label_w - 8}" y="{y + 19}" text-anchor="end">{_e(label)}</text>'
            f'<rect x="{label_w}" y="{y + 6}" width="{w:.1f}" height="18" rx="3" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 19}">{_e(fmt(value))}</text>'
        )
    return (f'<svg class="chart" viewBox="0 0 {width} {row * len(items)}" role="img" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(bars)}</svg>')


def column_chart(
    points: Sequence[tuple[str, float]], *, fmt: Callable[[float], str] = baht_short, width: int = 720,
    height: int = 220, colour: str = "#2c7fb8", line: Sequence[float] | None = None, line_label: str = "",
) -> str:
    """Monthly columns with a few axis ticks; an optional second series drawn as a line on its own scale."""
    if not points:
        return ""
    left, bottom, top_pad = 70, 40, 14
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    top = max((v for _, v in points), default=0.0) or 1.0
    step = plot_w / len(points)
    parts = []
    for k in range(5):
        value = top * k / 4
        y = top_pad + plot_h - plot_h * k / 4
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_e(fmt(value))}</text>')
    every = max(1, math.ceil(len(points) / 12))
    for i, (label, value) in enumerate(points):
        h = max(0.0, value) / top * plot_h
        x = left + i * step
        parts.append(f'<rect x="{x + step * 0.15:.1f}" y="{top_pad + plot_h - h:.1f}" width="{step * 0.7:.1f}" '
                     f'height="{h:.1f}" fill="{colour}"><title>{_e(label)}: {_e(baht(value))}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                         f'class="tick">{_e(label)}</text>')
    if line:
        peak = max(line) or 1.0
        coords = " ".join(
            f"{left + i * step + step / 2:.1f},{top_pad + plot_h - v / peak * plot_h:.1f}" for i, v in enumerate(line)
        )
        parts.append(f'<polyline points="{coords}" fill="none" stroke="#c0392b" stroke-width="2"/>'
                     f'<text x="{width - 12}" y="{top_pad + 10}" text-anchor="end" fill="#c0392b" class="tick">'
                     f'{_e(line_label)} (peak {max(line):,.0f})</text>')
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')


def _heat(value: float) -> str:
    # White to deep blue; retention above 40% is already strong, so the scale saturates there.
    strength = min(max(value / 0.4, 0.0), 1.0)
    r, g, b = (int(255 - (255 - c) * strength) for c in (44, 127, 184))
    ink = "#fff" if strength > 0.6 else "#222"
    return f"background:rgb({r},{g},{b});color:{ink}"


# --- the document -------------------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Noto Sans Thai",sans-serif;color:#222;margin:0;background:#f6f6f4}
main{max-width:960px;margin:0 auto;padding:32px 28px 60px;background:#fff}
h1{font-size:28px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 8px;border-bottom:2px solid #222;padding-bottom:4px}
h3{font-size:16px;margin:22px 0 6px}p{line-height:1.5}.muted{color:#666;font-size:13px}
.kpis{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin:20px 0}
.kpi{border:1px solid #ddd;border-radius:6px;padding:12px}.kpi b{display:block;font-size:22px;margin-top:4px}
.kpi.bad b{color:#c0392b}table{border-collapse:collapse;width:100%;font-size:14px;margin:8px 0}
th,td{padding:6px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#fafafa;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.chart{width:100%;height:auto;font-size:12px;margin:8px 0}.chart .tick{font-size:11px;fill:#555}
.heat td{text-align:center;font-size:12px;padding:4px}.gap{border-left:4px solid #e67e22;padding:6px 12px;margin:8px 0;
background:#fdf6ec}.gap b{display:block}.play-rank{font-size:20px;font-weight:700;color:#2c7fb8}
footer{margin-top:40px;font-size:12px;color:#777}
@media print{body{background:#fff}main{padding:0}}
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[int] = (),
           cls: str = "", testid: str = "") -> str:
    head = "".join(f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    attrs = (f' class="{cls}"' if cls else "") + (f' data-testid="{testid}"' if testid else "")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _day(value: Any) -> str:
    return str(value or "")[:10]


def render(data: Json, *, workspace: str, generated_at: datetime | None = None) -> str:
    """The report as one HTML document from the analytics JSON:
    {"value_leakage", "cohorts", "priority_segments", "plays", "offers" and "consents" (each may be None)}."""
    generated_at = generated_at or datetime.now(UTC)
    vl, cohorts = data.get("value_leakage") or {}, data.get("cohorts") or {}
    segments, plays = data.get("priority_segments") or {}, data.get("plays") or {}
    window = vl.get("window") or {}
    revenue = _n(vl.get("revenue"))
    leaks = [x for x in vl.get("leakage") or []]
    churned = next((_n(x.get("value")) for x in leaks if x.get("kind") == "churned"), 0.0)
    models = sorted({f"{m.get('name')} {m.get('version')}" for src in (vl, cohorts, segments)
                     for m in src.get("models") or []})
    s: list[str] = []
    s.append(f"<header><h1>Value Leak Radar</h1><div class=\"muted\">Workspace <b>{_e(workspace)}</b> · orders "
             f"from {_e(_day(window.get('since')))} to {_e(_day(window.get('until')))} · scores as of "
             f"{_e(_day(window.get('as_of')))} · {int(_n(vl.get('horizon_days')))}-day horizon · generated "
             f"{_e(generated_at.strftime('%Y-%m-%d %H:%M UTC'))}</div></header>")
    top_leak = max(leaks, key=lambda x: _n(x.get("value")), default=None)
    planned = plan_plays(vl, segments, plays, data.get("offers"))
    gaps = data_gaps(data)
    summary = [f"{int(_n(vl.get('buyers'))):,} buyers spent <b>{baht(revenue)}</b> in the window."]
    if top_leak is not None:
        summary.append(f"The largest leak is <b>{_e(LEAK_LABELS.get(str(top_leak.get('kind')), top_leak.get('kind')))}"
                       f"</b>: {baht(_n(top_leak.get('value')))} across {int(_n(top_leak.get('customers'))):,} "
                       "customers.")
    summary.append(f"Over the next {int(_n(vl.get('horizon_days')))} days <b>{baht(_n(vl.get('value_at_risk')))}</b> "
                   "is at risk.")
    if planned:
        summary.append(f"The first play to run is <b>{_e(planned[0].name)}</b>, worth about "
                       f"{baht(planned[0].expected_value)}.")
    if gaps:
        summary.append(f"{len(gaps)} data gaps limit this analysis (last section).")
    s.append(f'<p data-testid="summary">{" ".join(summary)}</p>')
    kpis = [("Customers", f"{int(_n(vl.get('customers'))):,}", False),
            ("Revenue in window", baht(revenue), False),
            ("Value at risk", baht(_n(vl.get("value_at_risk"))), True),
            ("Churned value", baht(churned), True)]
    s.append('<div class="kpis">' + "".join(
        f'<div class="kpi{" bad" if bad else ""}">{_e(label)}<b>{_e(value)}</b></div>' for label, value, bad in kpis
    ) + "</div>")

    # Where value leaks.
    s.append('<section id="leakage"><h2>1. Where value leaks</h2>')
    s.append("<p>Each line is one way value leaves or may leave the brand. The kinds overlap (a churned customer "
             "may also have bought on discount), so the amounts do not add up; shares are of revenue in the "
             "window.</p>")
    s.append(hbar_chart([(LEAK_LABELS.get(str(x.get("kind")), str(x.get("kind"))), _n(x.get("value")))
                         for x in leaks]))
    s.append(_table(
        ["Leak", "Customers", "Value", "Share of revenue", "How it is computed"],
        [[_e(LEAK_LABELS.get(str(x.get("kind")), x.get("kind"))), f"{int(_n(x.get('customers'))):,}",
          baht(_n(x.get("value"))), pct(_n(x.get("value")) / revenue, digits=1) if revenue else "–",
          f'<span class="muted">{_e(x.get("definition", ""))}</span>'] for x in leaks],
        numeric=(1, 2, 3), testid="leakage",
    ))
    breakdowns = {str(b.get("dimension")): b.get("buckets") or [] for b in vl.get("breakdowns") or []}
    stages = breakdowns.get("lifecycle_stage", [])
    if stages:
        s.append("<h3>Value and value at risk by lifecycle stage</h3>")
        s.append(_table(["Stage", "Customers", "Revenue in window", "Value at risk"],
                        [[_e(b.get("key")), f"{int(_n(b.get('customers'))):,}", baht(_n(b.get("revenue"))),
                          baht(_n(b.get("value_at_risk")))] for b in stages], numeric=(1, 2, 3)))
    monthly = vl.get("monthly") or []
    if monthly:
        s.append("<h3>Revenue by month, and customers leaving</h3>")
        s.append('<p class="muted">Columns: revenue per month. Line: customers whose last order was that month and '
                 "who are now lapsed or churned.</p>")
        s.append(column_chart([(str(m.get("month")), _n(m.get("revenue"))) for m in monthly],
                              line=[_n(m.get("leavers")) for m in monthly], line_label="leavers"))
    s.append("</section>")

    # Who matters most.
    ranked = segments.get("segments") or []
    s.append('<section id="segments"><h2>2. Where the value at risk sits</h2>')
    if ranked:
        s.append("<p>Segments ranked by value at risk. The last column is the behaviour that most separates "
                 "customers who stay from those who left (standardised difference of means).</p>")
        rows = []
        for seg in ranked:
            comparison = seg.get("comparison") or []
            lead = comparison[0] if comparison else None
            lead_text = "–"
            if not seg.get("stayers") or not seg.get("leavers"):
                # With one group empty there is nothing to compare (e.g. winback holds only leavers).
                lead_text = '<span class="muted">only leavers</span>' if seg.get("leavers") else (
                    '<span class="muted">only stayers</span>')
            elif lead:
                feature = str(lead.get("feature")).replace("_", " ")
                lead_text = (f"{_e(feature)}: stayers {_n(lead.get('stayers_mean')):,.1f} vs leavers "
                             f"{_n(lead.get('leavers_mean')):,.1f}")
            rows.append([_e(seg.get("segment")), f"{int(_n(seg.get('customers'))):,}", baht(_n(seg.get("value"))),
                         baht(_n(seg.get("value_at_risk"))), pct(_n(seg.get("share_of_value_at_risk"))),
                         f"{int(_n(seg.get('stayers'))):,} / {int(_n(seg.get('leavers'))):,}", lead_text])
        s.append(_table(["Segment", "Customers", "Lifetime value", "Value at risk", "Share of risk",
                         "Stayers / leavers", "What separates leavers"], rows, numeric=(1, 2, 3, 4),
                        testid="segments"))
    else:
        s.append("<p>No segments yet.</p>")
    s.append("</section>")

    # Plays.
    s.append('<section id="plays"><h2>3. Five plays to run first</h2>')
    s.append(f"<p><b>How the expected value is computed.</b> For a play aimed at a segment: expected value = the "
             "segment's value at risk (churn risk × expected value over the horizon, from the scoring models) × "
             "the play's lift (the share of that value it saves) − incentive cost, where incentive cost = customers "
             "× lift × incentive per saved customer. The lift is the offer's measured lift over its holdout when it "
             "is significant at 95%, else the configured offer's prior propensity; otherwise it is a planning "
             "assumption stated in the table, to be replaced by "
             "measurement once the play runs with a holdout. For discounts: the discounts given in the window × "
             f"{pct(DISCOUNT_RECOVERY)} planned recovery. Segments overlap, so the values must not be added.</p>")
    if planned:
        s.append(_table(
            ["#", "Play", "Target", "Customers", "Base", "Lift", "Incentive cost", "Expected value"],
            [[f'<span class="play-rank">{i}</span>', f"<b>{_e(p.name)}</b><br><span class=\"muted\">"
              f"{_e(p.action)}</span>", _e(p.target), f"{p.customers:,}",
              f"{baht(p.base)}<br><span class=\"muted\">{_e(p.base_label)}</span>",
              f"{pct(p.lift, digits=1)}<br><span class=\"muted\">{_e(p.lift_source)}</span>", baht(p.cost),
              f"<b>{baht(p.expected_value)}</b>"] for i, p in enumerate(planned, start=1)],
            numeric=(3, 4, 5, 6, 7), testid="plays",
        ))
        s.append(hbar_chart([(p.name, p.expected_value) for p in planned]))
    else:
        s.append("<p>No segment holds value at risk yet: there is nothing to plan.</p>")
    ran = plays.get("plays") or []
    if ran:
        s.append(f"<h3>Plays already running (last {_e(_day((plays.get('window') or {}).get('since')))} to "
                 f"{_e(_day((plays.get('window') or {}).get('until')))})</h3>")
        s.append(_table(
            ["Offer", "Sends", "Conversion", "Holdout", "Lift (95% CI)", "Incentive cost", "Value saved"],
            [[_e(p.get("offer_id")), f"{int(_n(p.get('sends'))):,}", pct(_n(p.get("conversion_rate")), digits=1),
              pct(_n(p.get("holdout_rate")), digits=1) if p.get("has_holdout") else "none",
              (f"{pct(_n(p.get('lift')), digits=1)} ({pct(_n(p.get('lift_ci_low')), digits=1)} to "
               f"{pct(_n(p.get('lift_ci_high')), digits=1)})") if p.get("has_holdout") else "–",
              baht(_n(p.get("incentive_cost"))), baht(_n(p.get("value_saved")))] for p in ran],
            numeric=(1, 2, 3, 4, 5, 6),
        ))
    s.append("</section>")

    # Cohorts.
    rows_c = cohorts.get("cohorts") or []
    if rows_c:
        months = max(len(c.get("retention") or []) for c in rows_c)
        s.append('<section id="cohorts"><h2>4. Do new customers come back?</h2>')
        s.append("<p>Share of each acquisition month's customers who ordered again k months later, with lifetime "
                 "value to date and predicted (to date plus expected value over the horizon).</p>")
        head = ["Cohort", "Customers", *[f"M{k}" for k in range(months)], "Repeat", "LTV to date", "Predicted"]
        body = []
        for c in rows_c:
            ret = c.get("retention") or []
            cells = [f'<td style="{_heat(_n(v))}">{pct(_n(v))}</td>' for v in ret]
            cells += ["<td></td>"] * (months - len(ret))
            body.append(f"<tr><td>{_e(c.get('month'))}</td><td>{int(_n(c.get('customers'))):,}</td>{''.join(cells)}"
                        f"<td>{pct(_n(c.get('repeat_rate')))}</td><td>{baht(_n(c.get('ltv_to_date')))}</td>"
                        f"<td>{baht(_n(c.get('predicted_ltv')))}</td></tr>")
        s.append(f'<table class="heat" data-testid="cohorts"><thead><tr>{"".join(f"<th>{_e(h)}</th>" for h in head)}'
                 f"</tr></thead><tbody>{''.join(body)}</tbody></table></section>")

    # Gaps.
    s.append('<section id="gaps"><h2>5. Data gaps that limit this analysis</h2>')
    if gaps:
        s.append("".join(f'<div class="gap" data-gap="{_e(g.key)}"><b>{_e(g.title)}</b>{_e(g.detail)}</div>'
                         for g in gaps))
    else:
        s.append("<p>None detected.</p>")
    consent = data.get("consents")
    if consent:
        per = ", ".join(f"{_e(ch)} {n:,}" for ch, n in (consent.get("channels") or {}).items()) or "none"
        s.append(f'<p class="muted">Marketing consent: {int(_n(consent.get("consented"))):,} of '
                 f"{int(_n(consent.get('customers'))):,} customers ({pct(_n(consent.get('coverage')))}); by channel: "
                 f"{per}.</p>")
    s.append("</section>")
    s.append(f"<footer>Figures from the Retain analytics API (value-leakage, cohorts, priority-segments, plays). "
             f"Models: {_e(', '.join(models) or 'none')}. Money in Thai baht, rounded to the baht.</footer>")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><title>Value Leak Radar – {_e(workspace)}</title>'
            f"<style>{CSS}</style></head><body><main>{''.join(s)}</main></body></html>")


# --- fetching -----------------------------------------------------------------------------------------------


def fetch(client: httpx.Client) -> dict[str, Any]:
    """The analytics JSON the report needs, plus consent coverage when the key may read the audit log."""
    data: dict[str, Any] = {}
    for key, path, params in (
        ("value_leakage", "/v1/analytics/value-leakage", {}),
        ("cohorts", "/v1/analytics/cohorts", {"months": 12}),
        ("priority_segments", "/v1/analytics/priority-segments", {}),
        ("plays", "/v1/analytics/plays", {}),
    ):
        reply = client.get(path, params=params)
        reply.raise_for_status()
        data[key] = reply.json()
    offers = client.get("/v1/offers")
    data["offers"] = offers.json() if offers.status_code == 200 else None
    data["consents"] = _consents(client, customers=int(_n(data["value_leakage"].get("customers"))))
    return data


def _consents(client: httpx.Client, *, customers: int, max_pages: int = 200) -> dict[str, Any] | None:
    records: list[Json] = []
    cursor = ""
    for _ in range(max_pages):
        reply = client.get("/v1/audit/records", params={"kind": "consent", "limit": 500, "cursor": cursor})
        if reply.status_code in (401, 403):
            return None
        reply.raise_for_status()
        body = reply.json()
        records.extend(body.get("records") or [])
        cursor = body.get("next_cursor") or ""
        if not cursor:
            break
    return consent_coverage(records, customers=customers)


def _default_key() -> str:
    path = Path("var") / "demo-api-key"
    return path.read_text().strip() if path.is_file() else ""


@report_app.callback()
def report() -> None:
    """Reports for a brand's leadership."""


@report_app.command("leakage")
def leakage(
    workspace: Annotated[str, typer.Option(help="Workspace the report is about (the key's workspace).")],
    out: Annotated[Path, typer.Option(help="Where to write the HTML report.")] = Path("report.html"),
    url: Annotated[str, typer.Option(envvar="RETAIN_URL", help="Gateway URL.")] = "http://127.0.0.1:8080",
    key: Annotated[str, typer.Option(envvar="RETAIN_API_KEY", help="API key (default: var/demo-api-key).")] = "",
) -> None:
    """The Value Leak Radar: where value leaks, the five plays to run first and the data gaps, as one HTML file."""
    key = key or _default_key()
    if not key:
        raise typer.BadParameter("no key given and var/demo-api-key does not exist", param_hint="--key")
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=180) as client:
            data = fetch(client)
    except httpx.HTTPStatusError as exc:
        console.print(f"[red]{exc.request.url.path}: HTTP {exc.response.status_code}[/red] {exc.response.text[:300]}")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        console.print(f"[red]gateway unreachable at {url}[/red]: {exc}")
        raise typer.Exit(1) from None
    out.write_text(render(data, workspace=workspace), encoding="utf-8")
    console.print(f"wrote {out} ({out.stat().st_size:,} bytes)")
