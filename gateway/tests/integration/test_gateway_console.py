"""The operator console in a real headless Chromium (Selenium + chromium-driver) against the real suite.

Loads the demo data, logs in with a pasted key, opens every page, checks the numbers shown against the
API, and saves screenshots under var/screenshots/ for review. Skips when Chromium, its driver or the
selenium library is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from gateway_harness import Harness
from retain.audit.v1 import audit_pb2
from retain.common.v1 import common_pb2
from retain_kit.protoconv import to_struct, to_timestamp
from retain_kit.testing import free_port

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[3] / "var" / "screenshots"
WS = "ws_demo"

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


def _shown(driver: Any, testid: str) -> tuple[float, str]:
    el = driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')
    return float(el.get_attribute("data-value")), el.text


def _money(x: float) -> str:
    return ("-฿" if round(x) < 0 else "฿") + f"{abs(round(x)):,}"


async def test_console_pages_show_the_api_numbers(gw: Harness, tmp_path: Path) -> None:
    gw.need("profile", "scoring", "audit")
    from retain_cli import demo

    ingest = await gw.key(WS, "ingest")
    operator = await gw.key(WS, "operator")
    api = gw.client
    api.headers["Authorization"] = f"Bearer {operator}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with serving(gw.app) as url:
        await asyncio.to_thread(demo.load, url, ingest)
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
                open_page("plays", "plays")
                seen["sends"] = _shown(driver, "play-winback15-sends")
                seen["note"] = driver.find_element(By.CLASS_NAME, "note").text
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
    assert "Plays per offer" in seen["note"]
    monetary = customer["features"]["monetary_total"]
    assert seen["monetary"] == (pytest.approx(monetary), _money(monetary))
    assert seen["timeline_rows"] >= customer["events_count"] > 0
    assert 0.0 <= seen["churn_risk"][0] <= 1.0
    assert seen["audit"][0] == len(audit["records"]) > 0
    for name in ("login", "overview", "leakage", "cohorts", "plays", "customer", "audit"):
        assert (SCREENSHOTS / f"console-{name}.png").stat().st_size > 10_000, name
