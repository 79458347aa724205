"""deploy/healthcheck.py (the images' HEALTHCHECK) against real service processes on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.deploy_settings import ROOT

HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(module: str, port: int, var_dir: Path) -> dict[str, str]:
    prefix = module.removeprefix("retain_").upper()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETAIN_", "OTEL_", "REDIS_URL"))}
    env.update({"MODULE": module, "RETAIN_VAR_DIR": str(var_dir), f"RETAIN_{prefix}_PORT": str(port),
                f"RETAIN_{prefix}_HOST": "127.0.0.1"})
    return env


def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture(params=["retain_audit", "retain_gateway"])
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, str], subprocess.Popen[str]]]:
    env = environment(request.param, free_port(), tmp_path)
    # Other services are not running: the gateway must still count as healthy (its checks are shallow).
    proc = subprocess.Popen([sys.executable, "-m", request.param], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while check(env).returncode != 0:
            if proc.poll() is not None:
                pytest.fail(f"{request.param} exited: {proc.stderr.read() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                pytest.fail(f"{request.param} never became healthy")
            time.sleep(0.3)
        yield env, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def test_healthy_while_serving_and_unhealthy_once_stopped(
    running: tuple[dict[str, str], subprocess.Popen[str]],
) -> None:
    env, proc = running
    assert check(env).returncode == 0
    proc.terminate()
    proc.wait(timeout=30)
    result = check(env)
    assert result.returncode == 1 and "unhealthy" in result.stderr
