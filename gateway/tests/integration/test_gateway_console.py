"""The operator console in a real headless Chromium (Selenium + chromium-driver) against the real suite.

Loads the demo data with a journey worker running (so the demo journeys enter customers and send),
logs in with a pasted key, opens every page, checks the numbers shown against the API, and saves
screenshots under var/screenshots/ for review. Skips when Chromium, its driver or the selenium
library is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from gateway_harness import Harness
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2
from retain_decision.worker import WorkerSettings, build_worker
from retain_kit import redis_client
from retain_kit.protoconv import to_struct, to_timestamp
from retain_kit.testing import DbTarget, free_port

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[3] / "var" / "screenshots"
# A workspace of its own: its event stream is then this test's alone on a shared Redis.
WS = f"ws_demo_{uuid.uuid4().hex[:8]}"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="headless Chromium needs the Debian packages chromium and chromium-driver",
)


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """The harness's app (lifespan already entered) on a real port, so a browser can reach it."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class RememberingTarget(DbTarget):
    """The parametrised database target, remembering the database each service got: the journey worker
    must share the decision service's."""

    made: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def fresh(self, service: str) -> tuple[str, str | None]:
        self.made[service] = super().fresh(service)
        return self.made[service]


@pytest.fixture
async def db_target(db_target: DbTarget) -> AsyncIterator[RememberingTarget]:
    target = RememberingTarget(db_target.kind, db_target.base_url, db_target.tmp)
    yield target
    await target.close()


@contextlib.asynccontextmanager
async def journey_worker(gw: Harness, target: RememberingTarget, redis_url: str) -> AsyncIterator[None]:
    """The decision service's journey worker (as `make run` runs it) on the harness's suite, reading
    this test's stream in a consumer group of its own."""
    url, schema = target.made["decision"]
    group = f"console-{uuid.uuid4().hex[:8]}"
    # From the stream's end: the other database's run of this test published to the same stream (one Redis),
    # for customers this run's profile does not hold.
    redis = redis_client.connect(redis_url)
    await redis.xgroup_create(f"retain:{WS}:events", group, id="$", mkstream=True)
    await redis.aclose()
    settings = WorkerSettings(
        database_url=url, database_schema=schema or "", redis_url=redis_url,
        journey_stream_pattern=f"retain:{WS}:events", journey_group=group,
        journey_consumer="console-test", journey_poll_seconds=0.2, journey_discover_seconds=0.3,
        journey_block_ms=200, config_cache_seconds=0.0, rpc_timeout_seconds=2.0,
    )
    worker, close = await build_worker(settings, gw.endpoints)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task
        await close()


def settled(reports: list[dict[str, Any]]) -> bool:
    """Every customer who reached a send step has its outcome (sent, suppressed, withheld, failed)."""
    return all(
        s["entered"] == s["sent"] + sum(s["suppressed"].values()) + s["withheld"] + s["failed"]
        for r in reports for s in r["steps"] if s["kind"] == "send"
    )


def browser(profile_dir: Path) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,2000", f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)


async def _plays(gw: Harness, client: httpx.AsyncClient) -> None:
    """Decision and message records for two offers, shaped as decision and channels write them."""
    now = datetime.now(UTC)
    customers = []
    for n in range(1, 21):
        reply = await client.get(f"/v1/customers/demo-{n:03d}")
        customers.append(reply.json()["customer_id"])
    records = [
        audit_pb2.RecordInput(kind=audit_pb2.RECORD_KIND_CONFIG, offer_id=o, outcome="updated", actor="console-test",
                              payload=to_struct({"offer": {"offer_id": o, "cost": c}}))
        for o, c in (("winback15", 150.0), ("care_call", 0.0))
    ]
    for n, cid in enumerate(customers):
        offer = "winback15" if n % 2 else "care_call"
        at = to_timestamp(now - timedelta(days=20 - n % 7))
        if n % 4 == 3:
            records.append(audit_pb2.RecordInput(
                kind=audit_pb2.RECORD_KIND_MESSAGE, customer_id=cid, decision_id=f"dec_c{n:03x}", offer_id=offer,
                channel=common_pb2.CHANNEL_LINE, outcome="suppressed", occurred_at=at,
                payload=to_struct({"rule": "holdout", "detail": "in the control group"}),
            ))
            continue
        records.append(audit_pb2.RecordInput(
            kind=audit_pb2.RECORD_KIND_DECISION, customer_id=cid, decision_id=f"dec_c{n:03x}", offer_id=offer,
            outcome="decided", occurred_at=at,
            payload=to_struct({"models": [{"name": "churn-baseline", "version": "demo"}],
                               "actions": [{"offer_id": offer, "channel": "line"}]}),
        ))
        records.append(audit_pb2.RecordInput(
            kind=audit_pb2.RECORD_KIND_MESSAGE, customer_id=cid, decision_id=f"dec_c{n:03x}",
            message_id=f"msg_c{n:03x}", offer_id=offer, outcome="sent", occurred_at=at,
            channel=common_pb2.CHANNEL_LINE if n % 3 else common_pb2.CHANNEL_EMAIL,
        ))
    await gw.audit.AppendBatch(audit_pb2.AppendBatchRequest(workspace_id=WS, records=records))


# What the Sankey chart holds, and how much of its canvas is painted.
SANKEY_PROBE = """
    const canvas = document.querySelector('[data-testid="sankey"]');
    const chart = canvas && Chart.getChart(canvas);
    if (!chart) return null;
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
    return {type: chart.config.type, flows: chart.data.datasets[0].data.map((d) => [d.from, d.to, d.flow]),
            painted, width: canvas.width, height: canvas.height};
"""


def _shown(driver: Any, testid: str) -> tuple[float, str]:
    el = driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')
    return float(el.get_attribute("data-value")), el.text


def _money(x: float) -> str:
    return ("-฿" if round(x) < 0 else "฿") + f"{abs(round(x)):,}"


async def test_console_pages_show_the_api_numbers(
    gw: Harness, db_target: RememberingTarget, redis_url: str, tmp_path: Path
) -> None:
    gw.need("profile", "scoring", "audit", "decision", "channels")
    from retain_cli import demo

    loader = await gw.key(WS, "ingest", "operator")
    operator = await gw.key(WS, "operator")
    api = gw.client
    api.headers["Authorization"] = f"Bearer {operator}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with serving(gw.app) as url, journey_worker(gw, db_target, redis_url):
        loaded = await asyncio.to_thread(demo.load, url, loader)
        assert loaded["settled"] == 1 and loaded["journeys"] == len(demo.DEMO_JOURNEYS), loaded
        # A restart later the same day sends today's activity again: every event a duplicate.
        assert await asyncio.to_thread(demo.load_today, url, loader) == 0
        ids = [j["journey_id"] for j in (await api.get("/v1/journeys")).json()]
        assert sorted(ids) == sorted(demo.DEMO_JOURNEYS)
        deadline = time.monotonic() + 60
        while True:
            reports = [(await api.get(f"/v1/journeys/{j}/report")).json() for j in ids]
            if settled(reports) and all(r["entered"] for r in reports) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        journeys = {r["journey_id"]: r for r in reports}
        # Today's demo activity entered every demo journey (the scheduled winback on its first run),
        # and the steps went through the pipeline: sends, and a consent suppression at service recovery.
        assert all(r["entered"] > 0 for r in reports), {j: r["entered"] for j, r in journeys.items()}
        recovery = journeys["service_recovery"]
        apology = recovery["steps"][0]
        assert apology["sent"] > 0 and apology["suppressed"].get("no_consent", 0) > 0, apology
        assert settled(reports)
        await _plays(gw, api)
        leakage = (await api.get("/v1/analytics/value-leakage")).json()
        cohorts = (await api.get("/v1/analytics/cohorts", params={"months": 12})).json()
        plays = (await api.get("/v1/analytics/plays", params={"conversion_days": 7})).json()
        customer = (await api.get("/v1/customers/demo-001")).json()
        audit = (await api.get("/v1/audit/records", params={"kind": "message", "limit": 100})).json()

        def drive() -> dict[str, Any]:
            driver = browser(tmp_path / "chromium")
            seen: dict[str, Any] = {}
            try:
                wait = WebDriverWait(driver, 60)

                def open_page(fragment: str, name: str) -> None:
                    driver.get(f"{url}/console/#{fragment}")
                    wait.until(
                        lambda d: d.find_element(By.ID, "page").get_attribute("data-state") in ("ready", "error")
                    )
                    state = driver.find_element(By.ID, "page").get_attribute("data-state")
                    driver.save_screenshot(str(SCREENSHOTS / f"console-{name}.png"))
                    assert state == "ready", driver.find_element(By.ID, "page").text

                driver.get(f"{url}/console/")
                wait.until(lambda d: d.find_element(By.ID, "login-key").is_displayed())
                driver.save_screenshot(str(SCREENSHOTS / "console-login.png"))
                driver.find_element(By.ID, "login-key").send_keys(operator)
                driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
                wait.until(lambda d: d.find_element(By.ID, "page").get_attribute("data-state") == "ready")

                open_page("overview", "overview")
                seen["revenue"] = _shown(driver, "kpi-revenue")
                seen["value_at_risk"] = _shown(driver, "kpi-value-at-risk")
                seen["customers"] = _shown(driver, "kpi-customers")
                seen["charts"] = driver.execute_script("return Object.keys(Chart.instances).length")
                open_page("leakage", "leakage")
                seen["churned"] = _shown(driver, "leak-churned-value")
                seen["service"] = _shown(driver, "leak-service_failures-customers")
                open_page("cohorts", "cohorts")
                first = cohorts["cohorts"][0]["month"]
                seen["cohort"] = _shown(driver, f"cohort-{first}-customers")
                seen["ltv"] = _shown(driver, f"cohort-{first}-ltv")
                open_page("plays?journey=service_recovery", "journeys")
                seen["sends"] = _shown(driver, "play-winback15-sends")
                seen["note"] = " ".join(n.text for n in driver.find_elements(By.CLASS_NAME, "note"))
                seen["journey"] = driver.find_element(By.CSS_SELECTOR, '[data-testid="journey"]').get_attribute(
                    "data-journey"
                )
                seen["shown"] = {
                    el.get_attribute("data-testid"): float(el.get_attribute("data-value"))
                    for el in driver.find_elements(By.CSS_SELECTOR, '[data-testid="journey"] [data-value]')
                }
                seen["entered"] = {j: _shown(driver, f"journeys-{j}-entered")[0] for j in journeys}
                seen["sankey"] = driver.execute_script(SANKEY_PROBE)
                driver.execute_script("document.getElementById('plays-per-offer').scrollIntoView()")
                driver.save_screenshot(str(SCREENSHOTS / "console-plays.png"))
                open_page("customer?id=demo-001", "customer")
                seen["monetary"] = _shown(driver, "customer-monetary")
                seen["timeline_rows"] = len(driver.find_elements(By.CSS_SELECTOR, '[data-testid="timeline"] tbody tr'))
                seen["churn_risk"] = _shown(driver, "score-churn_risk")
                open_page("audit?kind=message", "audit")
                seen["audit"] = _shown(driver, "audit-count")
            finally:
                driver.quit()
            return seen

        seen = await asyncio.to_thread(drive)

    assert seen["revenue"] == (pytest.approx(leakage["revenue"]), _money(leakage["revenue"]))
    assert seen["value_at_risk"][0] == pytest.approx(leakage["value_at_risk"], rel=1e-4)
    assert seen["customers"] == (leakage["customers"], f"{leakage['customers']:,}")
    assert seen["charts"] >= 2
    leaks = {x["kind"]: x for x in leakage["leakage"]}
    assert seen["churned"] == (pytest.approx(leaks["churned"]["value"]), _money(leaks["churned"]["value"]))
    assert seen["service"][0] == leaks["service_failures"]["customers"] > 0
    assert seen["cohort"][0] == cohorts["cohorts"][0]["customers"]
    assert seen["ltv"][1] == _money(cohorts["cohorts"][0]["ltv_to_date"])
    winback = next(p for p in plays["plays"] if p["offer_id"] == "winback15")
    assert seen["sends"][0] == winback["sends"] > 0
    assert "Plays per offer" in seen["note"] and "not built yet" not in seen["note"]
    # The journey view: every step's funnel numbers as the report has them, and the Sankey drawn from
    # the report's paths.
    assert seen["journey"] == "service_recovery"
    expected = {"journey-entered": recovery["entered"], "journey-treated": recovery["treated"],
                "journey-holdout": recovery["holdout"], "journey-lift": recovery["lift"],
                "journey-conversion-treated": recovery["conversion_treated"],
                "journey-conversion-holdout": recovery["conversion_holdout"]}
    for step in recovery["steps"]:
        sid = step["step_id"]
        expected.update({f"step-{sid}-{k}": step[k] for k in ("entered", "sent", "withheld", "failed", "converted")})
        expected.update({f"step-{sid}-suppressed-{reason}": n for reason, n in step["suppressed"].items()})
    assert set(expected) <= set(seen["shown"])
    assert {k: v for k, v in seen["shown"].items() if k in expected} == pytest.approx(expected)
    assert seen["entered"] == {j: r["entered"] for j, r in journeys.items()}
    sankey = seen["sankey"]
    assert sankey is not None and sankey["type"] == "sankey"
    assert sankey["flows"] == [[t["source"], t["target"], t["count"]] for t in recovery["transitions"]]
    assert sankey["flows"][0] == ["(start)", "apology", recovery["entered"]]
    assert sankey["painted"] > 0.05 * sankey["width"] * sankey["height"], sankey
    monetary = customer["features"]["monetary_total"]
    assert seen["monetary"] == (pytest.approx(monetary), _money(monetary))
    assert seen["timeline_rows"] >= customer["events_count"] > 0
    assert 0.0 <= seen["churn_risk"][0] <= 1.0
    assert seen["audit"][0] == len(audit["records"]) > 0
    for name in ("login", "overview", "leakage", "cohorts", "plays", "journeys", "customer", "audit"):
        assert (SCREENSHOTS / f"console-{name}.png").stat().st_size > 10_000, name
