"""The Value Leak Radar rendered from analytics JSON captured from a real `make run` (CDNOW demo workspace)."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import pytest
from retain_cli import report
from retain_cli.main import app
from typer.testing import CliRunner

FIXTURE = Path(__file__).parent / "fixtures" / "report_demo.json"
AT = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


@pytest.fixture
def data() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(FIXTURE.read_text())
    return loaded


def _render(data: dict[str, Any]) -> str:
    return report.render(data, workspace="ws_demo", generated_at=AT)


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_baht_formatting() -> None:
    assert report.baht(1234567.49) == "฿1,234,567"
    assert report.baht(-1500.5) == "-฿1,500"
    assert report.baht(0.4) == "฿0"
    assert report.baht_short(1_250_000) == "฿1.2M"
    assert report.baht_short(350_000) == "฿350.0K"


def test_sections_and_headline_numbers(data: dict[str, Any]) -> None:
    html = _render(data)
    vl = data["value_leakage"]
    for section in ("leakage", "segments", "plays", "cohorts", "gaps"):
        assert f'<section id="{section}">' in html
    assert "Value Leak Radar" in html and "ws_demo" in html
    assert report.baht(vl["revenue"]) in html
    assert report.baht(vl["value_at_risk"]) in html
    assert f"{vl['customers']:,}" in html
    assert vl["window"]["since"][:10] in html


def test_leakage_split_shows_amounts_and_shares(data: dict[str, Any]) -> None:
    html = _render(data)
    table = html.split('data-testid="leakage"')[1].split("</table>")[0]
    revenue = data["value_leakage"]["revenue"]
    for leak in data["value_leakage"]["leakage"]:
        row = table.split(escape(report.LEAK_LABELS[leak["kind"]]))[1].split("</tr>")[0]
        assert report.baht(leak["value"]) in row
        assert f"{leak['customers']:,}" in row
        assert f"{leak['value'] / revenue * 100:.1f}%" in row


def test_top_five_plays_ranked_by_value_at_risk_times_lift(data: dict[str, Any]) -> None:
    planned = report.plan_plays(data["value_leakage"], data["priority_segments"], data["plays"], data["offers"])
    assert len(planned) == report.MAX_PLAYS
    values = [p.expected_value for p in planned]
    assert values == sorted(values, reverse=True)
    segments = {s["segment"]: s for s in data["priority_segments"]["segments"]}
    # Recompute every playbook candidate directly and check the five chosen are the best ones.
    offers = {o["offer_id"]: o for o in data["offers"]["offers"]}
    candidates = []
    for play in report.PLAYBOOK:
        seg = segments.get(play.segment)
        if seg and seg["value_at_risk"] > 0:
            # The configured offer's prior propensity and cost stand in for the planning figures.
            offer = offers.get(play.offer_id)
            lift = offer["prior_propensity"] if offer and offer["prior_propensity"] > 0 else play.lift
            incentive = offer["cost"] if offer else play.incentive
            candidates.append(seg["value_at_risk"] * lift - seg["customers"] * lift * incentive)
    candidates.append(data["value_leakage"]["discount"] * report.DISCOUNT_RECOVERY)
    assert values == pytest.approx(sorted(candidates, reverse=True)[: report.MAX_PLAYS])
    html = _render(data)
    table = html.split('data-testid="plays"')[1].split("</table>")[0]
    for p in planned:
        assert p.name in table and report.baht(p.expected_value) in table
    assert "How the expected value is computed" in html
    assert any(p.lift_source.endswith("prior propensity") for p in planned)
    # Without the offers (a key that cannot read them) the planning figures are used.
    bare = report.plan_plays(data["value_leakage"], data["priority_segments"], data["plays"])
    assert all(p.lift_source != "" and "prior propensity" not in p.lift_source for p in bare)


def test_a_measured_lift_replaces_the_planning_assumption(data: dict[str, Any]) -> None:
    measured = copy.deepcopy(data)
    measured["plays"]["plays"] = [{
        "offer_id": "winback_200_baht", "has_holdout": True, "lift": 0.3, "lift_ci_low": 0.1, "lift_ci_high": 0.5,
        "value_saved": 0.0, "treated_customers": 40, "sends": 40, "conversion_rate": 0.4, "holdout_rate": 0.1,
        "incentive_cost": 600.0, "attributed_revenue": 5000.0,
    }]
    planned = report.plan_plays(measured["value_leakage"], measured["priority_segments"], measured["plays"])
    winback = [p for p in planned if p.lift_source.startswith("measured")]
    assert winback and all(p.lift == 0.3 for p in winback)
    gaps = {g.key for g in report.data_gaps(measured)}
    assert "no_holdout" not in gaps and "no_plays" not in gaps


def test_data_gaps_detected_from_the_data(data: dict[str, Any]) -> None:
    gaps = {g.key: g for g in report.data_gaps(data)}
    # The demo has discounts, 19 months, a trained churn model and no plays yet.
    assert "no_discounts" not in gaps and "short_history" not in gaps and "no_churn_model" not in gaps
    assert {"no_margin", "no_plays", "no_holdout"} <= set(gaps)
    consent = data["consents"]
    assert consent["coverage"] < report.MIN_CONSENT_COVERAGE
    assert f"{consent['consented']:,} of {data['value_leakage']['customers']:,}" in gaps["missing_consents"].detail
    html = _render(data)
    for key in gaps:
        assert f'data-gap="{key}"' in html

    thin = copy.deepcopy(data)
    thin["value_leakage"]["discount"] = 0.0
    thin["value_leakage"]["monthly"] = thin["value_leakage"]["monthly"][-5:]
    thin["value_leakage"]["models"] = [m for m in thin["value_leakage"]["models"] if "churn" not in m["name"]]
    thin["consents"] = None
    keys = {g.key for g in report.data_gaps(thin)}
    assert {"no_discounts", "short_history", "no_churn_model", "consents_unknown"} <= keys
    assert "Only 5 months of history" in _text(_render(thin))


def test_consent_coverage_takes_the_latest_status() -> None:
    records = [
        {"customer_id": "a", "channel": "email", "outcome": "granted", "payload": {"purpose": "marketing"}},
        {"customer_id": "a", "channel": "email", "outcome": "withdrawn", "payload": {"purpose": "marketing"}},
        {"customer_id": "b", "channel": "line", "outcome": "granted", "payload": {"purpose": "marketing"}},
        {"customer_id": "b", "channel": "sms", "outcome": "granted", "payload": {"purpose": "marketing"}},
        {"customer_id": "c", "channel": "email", "outcome": "granted", "payload": {"purpose": "service"}},
    ]
    coverage = report.consent_coverage(records, customers=4)
    assert coverage["consented"] == 1
    assert coverage["coverage"] == 0.25
    assert coverage["channels"] == {"line": 1, "sms": 1}


def test_the_report_is_self_contained(data: dict[str, Any]) -> None:
    html = _render(data)
    assert "<script" not in html and "<link" not in html and "src=" not in html
    # The only URL is the SVG namespace, which is a name, not a request.
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    assert html.count("<svg") >= 3


def test_the_command_needs_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETAIN_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["report", "leakage", "--workspace", "ws_demo", "--out", "r.html"])
    assert result.exit_code == 2
    assert "--key" in result.output
    assert not (tmp_path / "r.html").exists()
