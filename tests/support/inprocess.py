"""The five gRPC services wired by their own `app.build`, in-process on port 0, each on a fresh database.

For tests that need the real suite behind a caller (gateway, decision) without starting processes.
Services named in `down` get an address nothing listens on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from retain_kit import migrations
from retain_kit.config import Endpoints
from retain_kit.grpcserver import start
from retain_kit.testing import DbTarget, free_port

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
ORDER = ("audit", "profile", "scoring", "channels", "decision")


async def start_suite(
    *,
    db_target: DbTarget,
    grpc_serve: Callable[[Any], Awaitable[str]],
    redis_url: str,
    tmp_path: Path,
    stops: list[Callable[[], Awaitable[None]]],
    down: tuple[str, ...] = (),
) -> Endpoints:
    """Start every service not in `down`, in dependency order; append their cleanup hooks to `stops`."""
    from retain_audit import app as audit_app
    from retain_audit.config import Settings as AuditSettings
    from retain_channels import app as channels_app
    from retain_channels.config import Settings as ChannelsSettings
    from retain_decision import app as decision_app
    from retain_decision.config import Settings as DecisionSettings
    from retain_profile import app as profile_app
    from retain_profile.config import Settings as ProfileSettings
    from retain_scoring import app as scoring_app
    from retain_scoring.config import Settings as ScoringSettings

    addrs = {name: f"127.0.0.1:{free_port()}" for name in ORDER}
    endpoints = Endpoints(**{f"{name}_addr": addr for name, addr in addrs.items()})

    async def database(service: str) -> dict[str, Any]:
        url, schema = db_target.fresh(service)
        await asyncio.to_thread(migrations.upgrade, SERVICES_DIR / service, url, schema=schema)
        settings: dict[str, Any] = {"database_url": url}
        if schema:
            settings["database_schema"] = schema
        return settings

    builders: dict[str, Callable[[], Awaitable[Any]]] = {
        "audit": lambda: _settings(AuditSettings, database("audit")),
        "profile": lambda: _settings(ProfileSettings, database("profile"), redis_url=redis_url),
        "scoring": lambda: _settings(ScoringSettings, database("scoring"), bentoml_home=str(tmp_path / "bentoml")),
        "channels": lambda: _settings(ChannelsSettings, database("channels"), var_dir=tmp_path / "channels"),
        "decision": lambda: _settings(DecisionSettings, database("decision"), redis_url=redis_url),
    }
    apps = {"audit": audit_app, "profile": profile_app, "scoring": scoring_app, "channels": channels_app,
            "decision": decision_app}
    for name in ORDER:
        if name in down:
            continue
        settings = await builders[name]()
        registrations, on_stop = await apps[name].build(settings, endpoints=endpoints)
        stops.append(on_stop)
        # Appended after on_stop, so the server stops taking calls before its resources close.
        actual = await _serve_at(addrs[name], registrations, grpc_serve, stops)
        addrs[name] = actual
        # Later services must reach the real port this one got.
        endpoints = Endpoints(**{f"{n}_addr": a for n, a in addrs.items()})
    return endpoints


async def _serve_at(
    addr: str,
    registrations: Any,
    grpc_serve: Callable[[Any], Awaitable[str]],
    stops: list[Callable[[], Awaitable[None]]],
) -> str:
    """Serve on the address picked up front, so services built earlier (profile's analytics calls scoring)
    reach services built later; falls back to any free port if that one was taken meanwhile."""
    try:
        server, port, _ = await start(registrations, port=int(addr.rsplit(":", 1)[1]))
    except RuntimeError:
        return await grpc_serve(registrations)

    async def stop() -> None:
        await server.stop(None)

    stops.append(stop)
    return f"127.0.0.1:{port}"


async def _settings(cls: Any, database: Awaitable[dict[str, Any]], **extra: Any) -> Any:
    return cls(**(await database), rpc_timeout_seconds=2.0, **extra)
