"""The shared composition-root runner: `python -m retain_<service> [migrate|serve|migrate-and-serve]`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from retain_kit import migrations, telemetry
from retain_kit.config import KitSettings
from retain_kit.grpcserver import Registration, serve

S = TypeVar("S", bound=KitSettings)
Built = tuple[Sequence[Registration], Callable[[], Awaitable[None]]]


def run_service(
    *,
    settings: S,
    service_dir: Path,
    build: Callable[[S], Awaitable[Built]],
    argv: Sequence[str] | None = None,
) -> None:
    """Migrate and/or serve. `build` wires the servicers and returns them with a cleanup hook."""
    args = list(sys.argv[1:] if argv is None else argv)
    action = args[0] if args else "migrate-and-serve"
    if action not in {"migrate", "serve", "migrate-and-serve"}:
        raise SystemExit(f"usage: python -m retain_{settings.service_name} [migrate|serve|migrate-and-serve]")
    if action in {"migrate", "migrate-and-serve"}:
        migrations.upgrade(service_dir, settings.database_url, schema=settings.schema)
        if action == "migrate":
            return
    telemetry.setup(settings.service_name, log_level=settings.log_level)

    async def main() -> None:
        registrations, on_stop = await build(settings)
        await serve(registrations, host=settings.host, port=settings.port, on_stop=on_stop)

    asyncio.run(main())
