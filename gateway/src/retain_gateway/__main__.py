"""`python -m retain_gateway [migrate|serve|migrate-and-serve]`: the gateway's composition root."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from retain_kit import migrations, telemetry

from retain_gateway.app import create_app
from retain_gateway.config import Settings

SERVICE_DIR = Path(__file__).resolve().parents[2]
ACTIONS = {"migrate", "serve", "migrate-and-serve"}


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    action = args[0] if args else "migrate-and-serve"
    if action not in ACTIONS:
        raise SystemExit("usage: python -m retain_gateway [migrate|serve|migrate-and-serve]")
    settings = Settings()
    if action in {"migrate", "migrate-and-serve"}:
        migrations.upgrade(SERVICE_DIR, settings.database_url, schema=settings.schema)
        if action == "migrate":
            return
    telemetry.setup(settings.service_name, log_level=settings.log_level)
    app = create_app(settings)
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
