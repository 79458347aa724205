from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from retain_cli.stack import GRPC_SERVICES, Stack, pick_ports
from retain_kit.db import drop_schemas

from tests.otlp_receiver import OtlpReceiver


@dataclass
class RunningSuite:
    stack: Stack
    otlp: OtlpReceiver
    workspace: str
    key: str

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.stack.gateway_url, headers={"Authorization": f"Bearer {key or self.key}"}, timeout=30
        )


def issue_key(stack: Stack, workspace: str, roles: str) -> str:
    """Through the operator CLI, exactly as a user would."""
    out = subprocess.run(
        [sys.executable, "-m", "retain_cli.main", "keys", "create", "--workspace", workspace, "--roles", roles,
         "--var-dir", str(stack.var_dir)],
        env=stack.env(), check=True, capture_output=True, text=True,
    ).stdout
    match = re.search(r"API key: (\S+)", out)
    assert match, out
    return match.group(1)


def _fresh_schemas(env: dict[str, str]) -> list[str]:
    """On PostgreSQL, every service gets a schema of its own for this run (nothing left over is reused)."""
    if not os.environ.get("RETAIN_DATABASE_URL", "").startswith("postgres"):
        return []
    run = uuid.uuid4().hex[:8]
    schemas = []
    for name in (*GRPC_SERVICES, "gateway"):
        schema = f"e2e_{run}_{name}"
        env[f"RETAIN_{name.upper()}_DATABASE_SCHEMA"] = schema
        schemas.append(schema)
    return schemas


def _drop_schemas(schemas: list[str]) -> None:
    if schemas:
        asyncio.run(drop_schemas(os.environ["RETAIN_DATABASE_URL"], schemas))


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSuite]:
    var_dir: Path = tmp_path_factory.mktemp("retain-var")
    otlp = OtlpReceiver().start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "RETAIN_VAR_DIR": str(var_dir),
    }
    schemas = _fresh_schemas(env)
    stack = Stack(var_dir=var_dir, ports=pick_ports(fixed=False), extra_env=env, log_dir=var_dir / "logs")
    try:
        stack.start(timeout=120)
    except Exception as exc:
        stack.stop()
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((var_dir / "logs").glob("*.log")))
        otlp.stop()
        _drop_schemas(schemas)
        raise RuntimeError(f"suite did not start: {exc}\n{logs}") from None
    workspace = f"ws_e2e_{uuid.uuid4().hex[:8]}"
    key = issue_key(stack, workspace, "admin")
    yield RunningSuite(stack=stack, otlp=otlp, workspace=workspace, key=key)
    stack.stop()
    otlp.stop()
    _drop_schemas(schemas)
    os.environ.pop("RETAIN_VAR_DIR", None)
