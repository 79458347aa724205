"""`retain`: the operator command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from retain_cli.stack import DEFAULT_PORTS, GRPC_SERVICES, Stack, pick_ports

app = typer.Typer(help="Retain: customer-retention operating system.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed; the key is shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()

VarDir = Annotated[Path, typer.Option(envvar="RETAIN_VAR_DIR", help="Where the embedded default keeps its data.")]
DEMO_WORKSPACE = "ws_demo"
DEMO_ROLES = ["admin"]


def _mount(module: str, attr: str, name: str, help_text: str) -> None:
    """Service-owned command groups (e.g. `retain clv` from scoring) mount when their package provides them."""
    try:
        sub = getattr(__import__(module, fromlist=[attr]), attr)
    except (ImportError, AttributeError):
        return
    app.add_typer(sub, name=name, help=help_text)


_mount("retain_profile.cli", "import_app", "import", "Bulk import of transactions and events (CSV, JSONL, CDNOW).")
_mount("retain_scoring.cli", "app", "clv", "Customer lifetime value models (BG/NBD + Gamma-Gamma).")
_mount("retain_scoring.cli", "churn_app", "churn", "Churn-risk model: train and evaluate on a time split.")
_mount("retain_scoring.cli", "train_app", "train", "Train, evaluate and promote every model of a workspace.")
_mount("retain_cli.report", "report_app", "report", "Reports for a brand's leadership (the Value Leak Radar).")


def _gateway_settings(var_dir: Path) -> object:
    """Gateway settings for var_dir: the kit's SQLite default was fixed when it was imported, before
    --var-dir was known, so point it at var_dir unless a database was configured explicitly."""
    from retain_gateway.config import Settings as GatewaySettings

    settings = GatewaySettings()
    if not (os.environ.get("RETAIN_DATABASE_URL") or os.environ.get("RETAIN_GATEWAY_DATABASE_URL")):
        settings.database_url = f"sqlite+aiosqlite:///{var_dir / 'gateway.db'}"
    return settings


def _bentoml_home(var_dir: Path) -> Path:
    """The model store under var_dir, unless BENTOML_HOME was set by the user (scoring's import sets a default
    from the import-time var dir, which is not --var-dir)."""
    from retain_kit.config import VAR_DIR

    given = os.environ.get("BENTOML_HOME", "")
    if given and Path(given).resolve() != (VAR_DIR / "bentoml").resolve():
        return Path(given)
    return var_dir / "bentoml"


async def _ensure_demo_key(var_dir: Path) -> str:
    """Reuse the demo key kept under var/ while it still authenticates; otherwise issue a new one."""
    from retain_gateway.keys import authenticate, create_workspace, issue_key
    from retain_kit.db import create_engine, session_factory

    settings: Any = _gateway_settings(var_dir)
    engine = create_engine(settings.database_url, schema=settings.schema)
    sessions = session_factory(engine)
    key_file = var_dir / "demo-api-key"
    try:
        await create_workspace(sessions, workspace_id=DEMO_WORKSPACE, name="Demo brand")
        if key_file.exists():
            key = key_file.read_text().strip()
            if await authenticate(sessions, key) is not None:
                return key
        key = await issue_key(sessions, workspace_id=DEMO_WORKSPACE, roles=DEMO_ROLES, name="demo")
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        return key
    finally:
        await engine.dispose()


@app.command()
def up(
    var_dir: VarDir = Path("var"),
    demo: Annotated[bool, typer.Option(help="Create the demo workspace, key and data.")] = True,
    fixed_ports: Annotated[bool, typer.Option(help="Use the documented ports when free.")] = True,
    replicas: Annotated[int, typer.Option(min=1, help="Processes per stateless service (and gateways).")] = 1,
) -> None:
    """Start every service and the gateway on the embedded default; Ctrl-C stops them."""
    var_dir = var_dir.resolve()
    os.environ["RETAIN_VAR_DIR"] = str(var_dir)
    bentoml_home = _bentoml_home(var_dir)
    os.environ["BENTOML_HOME"] = str(bentoml_home)
    stack = Stack(var_dir=var_dir, ports=pick_ports(fixed=fixed_ports), log_dir=var_dir / "logs",
                  extra_env={"BENTOML_HOME": str(bentoml_home)}, replicas=replicas)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True) as bar:
        task = bar.add_task("migrating and starting services…", total=None)
        try:
            # A first start imports, migrates and loads models; on a busy 2-core machine that has taken
            # over a minute, which is slow, not broken.
            stack.start(timeout=240)
        except Exception as exc:
            stack.stop()
            console.print(f"[red]start failed:[/red] {exc} (logs in {var_dir / 'logs'})")
            raise typer.Exit(1) from exc
        key = ""
        if demo:
            bar.update(task, description="preparing the demo workspace…")
            key = asyncio.run(_ensure_demo_key(var_dir))
            with httpx.Client(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}) as client:
                fresh = client.get("/v1/customers/demo-001").status_code == 404
            if fresh:
                bar.update(task, description="loading demo data…")
                from retain_cli.demo import load

                load(stack.gateway_url, key)
            else:
                from retain_cli.demo import load_today

                load_today(stack.gateway_url, key)
    console.print(f"[bold green]Retain is up[/bold green]  (data in {var_dir}, logs in {var_dir / 'logs'})")
    console.print(f"Gateway: {stack.gateway_url}")
    if fixed_ports and stack.ports["gateway"] != DEFAULT_PORTS["gateway"]:
        console.print(f"[yellow]port {DEFAULT_PORTS['gateway']} is in use by another program: the gateway took "
                      f"{stack.ports['gateway']} (the README's curl commands need that port instead)[/yellow]")
    for url in stack.gateway_urls[1:]:
        console.print(f"Gateway: {url}  (replica)")
    console.print(f"Docs:    {stack.gateway_url}/docs")
    console.print(f"Console: {stack.gateway_url}/console/  (sign in with the API key below)")
    console.print(f"Health:  {stack.gateway_url}/healthz")
    otlp = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    console.print(f"Traces:  {'OTLP → ' + otlp if otlp else 'set OTEL_EXPORTER_OTLP_ENDPOINT to export spans'}")
    if key:
        console.print(f"Workspace: {DEMO_WORKSPACE}")
        console.print(f"API key: {key}", highlight=False, soft_wrap=True)
        _start_cdnow(stack.gateway_url, key, var_dir=var_dir, bentoml_home=bentoml_home)
    console.print("Press Ctrl-C to stop.")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            dead = stack.dead()
            if dead:
                console.print(f"[red]{', '.join(dead)} exited[/red]; stopping (see {var_dir / 'logs'})")
                break
            time.sleep(0.5)
    finally:
        console.print("stopping…")
        stack.stop()
        console.print("stopped.")


CDNOW_MARKER = "demo-cdnow.json"


def _start_cdnow(url: str, key: str, *, var_dir: Path, bentoml_home: Path) -> threading.Thread | None:
    """Loads the CDNOW sample into the demo workspace in the background, then trains the models on it.

    In the background because it takes tens of seconds (11k events, 1k audited consents, a model fit): the
    console is usable at once and fills in as the data lands. Skipped when a previous start finished it.
    """
    from retain_cli import cdnow

    source = cdnow.find_file()
    if source is None:
        console.print("Demo data: the generated customers demo-001..020 (the CDNOW sample was not found).")
        return None
    today = datetime.now(UTC).date()
    purchases = cdnow.read(source.read_text().splitlines())
    marker = var_dir / CDNOW_MARKER
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        present = client.get(f"/v1/customers/{cdnow.last_customer(purchases)}").status_code == 200
    if present and marker.exists():
        console.print(f"Demo data: CDNOW sample already loaded ({marker.read_text().strip()}).")
        return None
    console.print(f"Demo data: loading the CDNOW sample ({len(purchases):,} orders of "
                  f"{len({p.customer_id for p in purchases}):,} customers, moved to end {cdnow.DAYS_BEFORE_TODAY} "
                  "days ago) [bold]in the background[/bold]; the console fills in as it lands, then the models "
                  "are trained on it.")

    def run() -> None:
        shifted = cdnow.shift(purchases, today=today)
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
                loaded = cdnow.load(client, shifted, today=today)
            console.print(f"Demo data: CDNOW loaded, {loaded.events:,} events ({loaded.accepted:,} new) and "
                          f"{loaded.consents:,} customers' consents in {loaded.seconds:.0f} s; training the models…")
            started = time.monotonic()
            outcomes = cdnow.train(shifted, workspace=DEMO_WORKSPACE, bentoml_home=bentoml_home)
            trained = ", ".join(
                f"{o.kind} {o.metric} {o.candidate:.3f} ({'promoted' if o.promoted else 'kept the serving model'})"
                for o in outcomes
            )
            seconds = time.monotonic() - started
            console.print(f"Demo data: models trained in {seconds:.0f} s: {trained}; scoring picks them up "
                          "within a minute.")
            marker.write_text(json.dumps({"loaded": today.isoformat(), "events": loaded.events,
                                          "load_seconds": round(loaded.seconds, 1),
                                          "train_seconds": round(seconds, 1)}) + "\n")
        except Exception as exc:  # noqa: BLE001 - a background demo load must not take the suite down
            console.print(f"[yellow]Demo data: CDNOW load stopped ({exc}); it resumes on the next start.[/yellow]")

    thread = threading.Thread(target=run, name="cdnow-demo", daemon=True)
    thread.start()
    return thread


@app.command()
def migrate(var_dir: VarDir = Path("var")) -> None:
    """Run every service's database migrations."""
    os.environ["RETAIN_VAR_DIR"] = str(var_dir.resolve())
    Stack(var_dir=var_dir.resolve(), ports=pick_ports(fixed=True)).migrate()
    console.print(f"migrated: {', '.join((*GRPC_SERVICES, 'gateway'))}")


@app.command()
def status(url: Annotated[str, typer.Option(envvar="RETAIN_URL")] = "http://127.0.0.1:8080") -> None:
    """Show the gateway's view of every service's health."""
    try:
        reply = httpx.get(f"{url}/healthz", timeout=5)
    except httpx.HTTPError as exc:
        console.print(f"[red]gateway unreachable at {url}[/red]: {exc}")
        raise typer.Exit(1) from exc
    console.print_json(json.dumps(reply.json()))
    raise typer.Exit(0 if reply.status_code == 200 else 1)


@keys_app.command("create")
def keys_create(
    workspace: Annotated[str, typer.Option(help="Workspace id, e.g. ws_acme (created if missing).")],
    roles: Annotated[str, typer.Option(help="Comma-separated: ingest,app,contact_centre,operator,auditor,admin")],
    name: Annotated[str, typer.Option()] = "cli",
    var_dir: VarDir = Path("var"),
) -> None:
    """Issue an API key for a workspace; prints it once."""
    os.environ["RETAIN_VAR_DIR"] = str(var_dir.resolve())
    from retain_gateway.keys import create_workspace, issue_key
    from retain_kit.db import create_engine, session_factory

    async def run() -> str:
        settings: Any = _gateway_settings(var_dir.resolve())
        engine = create_engine(settings.database_url, schema=settings.schema)
        sessions = session_factory(engine)
        try:
            await create_workspace(sessions, workspace_id=workspace, name=workspace)
            return await issue_key(
                sessions, workspace_id=workspace, roles=[r.strip() for r in roles.split(",") if r.strip()], name=name
            )
        finally:
            await engine.dispose()

    console.print(f"API key: {asyncio.run(run())}", highlight=False, soft_wrap=True)


@keys_app.command("revoke")
def keys_revoke(key_id: str, var_dir: VarDir = Path("var")) -> None:
    """Revoke an API key by id."""
    os.environ["RETAIN_VAR_DIR"] = str(var_dir.resolve())
    from retain_gateway.keys import revoke_key
    from retain_kit.db import create_engine, session_factory

    async def run() -> None:
        settings: Any = _gateway_settings(var_dir.resolve())
        engine = create_engine(settings.database_url, schema=settings.schema)
        try:
            await revoke_key(session_factory(engine), key_id=key_id)
        finally:
            await engine.dispose()

    asyncio.run(run())
    console.print(f"revoked {key_id}")


if __name__ == "__main__":
    app()
