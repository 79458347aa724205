"""Shared by tests/replicas and tests/resilience: start a private suite of processes (on a private PostgreSQL
cluster when the binaries are there) and read what it sent."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import uuid
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from retain_cli.stack import Stack, free_port, pick_ports, wait_tcp

from tests.e2e.conftest import _drop_schemas, _fresh_schemas, issue_key


@dataclass
class Suite:
    stack: Stack
    workspace: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, gateway: int = 0, *, timeout: float = 15.0) -> httpx.Client:
        return httpx.Client(base_url=self.stack.gateway_urls[gateway], headers=self.headers, timeout=timeout)

    def sent_lines(self) -> list[dict[str, Any]]:
        """What the log provider wrote for this workspace (every channel using `log`)."""
        path = Path(self.stack.var_dir) / "channels-outbox.jsonl"
        if not path.exists():
            return []
        lines = [json.loads(raw) for raw in path.read_text(encoding="utf-8").splitlines() if raw.strip()]
        return [line for line in lines if line.get("workspace_id") == self.workspace]


def logs_tail(var_dir: Path, chars: int = 2500) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
                     for p in sorted((var_dir / "logs").glob("*.log")))


@contextmanager
def running_suite(
    var_dir: Path, *, replicas: int = 1, own_redis: bool = False, extra_env: Mapping[str, str] | None = None,
    database_url: str | None = None, timeout: float = 180.0,
) -> Iterator[Suite]:
    """Start every service (migrated first) with fresh PostgreSQL schemas when on PostgreSQL; stop and drop after.

    `database_url` points the suite at another PostgreSQL than RETAIN_DATABASE_URL (a private cluster)."""
    env: dict[str, str] = {"RETAIN_VAR_DIR": str(var_dir), **(extra_env or {})}
    if not own_redis:
        # The journey workers find streams by SCAN over the whole Redis: a consumer group of this suite's own
        # keeps workers of another stack on a shared Redis (other test runs, the bench) from taking its events.
        env.setdefault("RETAIN_DECISION_JOURNEY_GROUP", f"journeys-{uuid.uuid4().hex[:8]}")
    schemas: list[str] = []
    if database_url is not None:
        env["RETAIN_DATABASE_URL"] = database_url
    elif os.environ.get("RETAIN_DATABASE_URL", "").startswith("postgres"):
        schemas = _fresh_schemas(env)
    for attempt in range(2):
        stack = Stack(var_dir=var_dir, ports=pick_ports(fixed=False), extra_env=env, log_dir=var_dir / "logs",
                      replicas=replicas, own_redis=own_redis)
        try:
            stack.start(timeout=timeout)
            break
        except Exception as exc:
            stack.stop()
            # A free port picked here can be taken by another process before the child binds it: try once more.
            if attempt == 0 and "exited with" in str(exc):
                continue
            _drop_schemas(schemas)
            raise RuntimeError(f"suite did not start: {exc}\n{logs_tail(var_dir)}") from None
    try:
        workspace = f"ws_res_{uuid.uuid4().hex[:8]}"
        yield Suite(stack=stack, workspace=workspace, key=issue_key(stack, workspace, "admin"))
    finally:
        stack.stop()
        _drop_schemas(schemas)


WINBACK_OFFER = "winback_200_baht"  # sms + email; eligible once the last order is over 120 days old


def consented_customer(client: httpx.Client, user: str, *, consent: bool = True, phone: str = "") -> None:
    """A lapsed customer (two orders long ago) with a phone and email; sms+email marketing consent granted
    (or withdrawn), so the winback offer is eligible and only consent decides whether it may go out.
    The phone is the user's own unless given: identify with a phone another customer holds merges the two
    (one shared default made the replica tests' customers one, who carried the caps of the earlier test)."""
    phone = phone or f"08{zlib.crc32(user.encode()) % 10**8:08d}"
    for i in range(2):
        r = client.post("/v1/track", json={
            "userId": user, "event": "Order Completed", "messageId": f"{user}-o{i}",
            "properties": {"revenue": 900.0}, "timestamp": f"2025-0{i + 1}-10T10:00:00Z"})
        assert r.status_code == 200, r.text
    r = client.post("/v1/identify", json={"userId": user, "messageId": f"{user}-id", "traits": {
        "first_name": "Suda", "email": f"{user}@example.co.th", "phone": phone}})
    assert r.status_code == 200, r.text
    status = "granted" if consent else "withdrawn"
    r = client.put(f"/v1/customers/{user}/consents", json={"consents": [
        {"channel": "sms", "purpose": "marketing", "status": status, "source": "resilience"},
        {"channel": "email", "purpose": "marketing", "status": status, "source": "resilience"},
    ]})
    assert r.status_code == 200, r.text


def only_when_selected(config: pytest.Config, items: list[pytest.Item], folder: str) -> None:
    """These suites start whole stacks and take minutes: they run when named on the command line
    (`make test-resilience`, `pytest tests/resilience`, `-m resilience`) or with RETAIN_RESILIENCE=1,
    and are skipped with that advice in a plain `pytest` / `make test`."""
    raw = " ".join(str(a) for a in config.invocation_params.args)
    if os.environ.get("RETAIN_RESILIENCE") == "1" or folder in raw or "resilience" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason=f"slow: run `make test-resilience` (or name {folder} on the command line)")
    for item in items:
        if f"/{folder}/" in str(item.path):
            item.add_marker(skip)


def pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


class PrivateCluster:
    """initdb/pg_ctl in a temp dir on a free port, never the machine's shared server: the suites neither
    compete with other users of that server for its connection slots nor may they restart it."""

    def __init__(self, bin_dir: Path, *, max_connections: int = 100) -> None:
        self.bin = bin_dir
        self.max_connections = max_connections
        self.root = Path(tempfile.mkdtemp(prefix="retain-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        # PostgreSQL refuses to run as root: the cluster belongs to the postgres OS user then.
        self.user = "postgres" if os.geteuid() == 0 else ""
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stdout[-1500:]} {done.stderr[-1500:]}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c max_connections={self.max_connections}")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start")
        wait_tcp(self.port, timeout=30)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def cluster_unavailable() -> str:
    """Why no private cluster can be started here ("" when one can)."""
    if pg_bin() is None:
        return "no PostgreSQL binaries under /usr/lib/postgresql/*/bin"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser: cannot start PostgreSQL as the postgres user"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres OS user to own a private cluster"
    return ""


@contextmanager
def private_postgres(*, max_connections: int = 100, required: bool = True) -> Iterator[PrivateCluster | None]:
    """A private cluster for the duration; when none can be started, skip (required) or yield None."""
    reason = cluster_unavailable()
    pg = None if reason else PrivateCluster(pg_bin() or Path(), max_connections=max_connections)
    if pg is not None:
        try:
            pg.init()
            pg.start()
        except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
            pg.remove()
            pg, reason = None, f"cannot start a private PostgreSQL cluster: {exc}"
    if pg is None and required:
        pytest.skip(reason)
    try:
        yield pg
    finally:
        if pg is not None:
            pg.remove()


class Sampler:
    """Calls `sample()` every `interval` seconds in a background thread while its `with` block runs."""

    interval = 0.5

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Runs in the sampling thread once it stops."""

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self.sample()
                self._stop.wait(self.interval)
        finally:
            self.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class ConnectionPeak(Sampler):
    """The most client connections the cluster held at once, sampled twice a second."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.peak = 0
        self._loop_ = asyncio.new_event_loop()
        self._conn: Any = None

    def sample(self) -> None:
        run = self._loop_.run_until_complete
        if self._conn is None:
            self._conn = run(asyncpg.connect(self.url))
        count = run(self._conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
        self.peak = max(self.peak, int(count) - 1)  # not counting this one

    def close(self) -> None:
        if self._conn is not None:
            self._loop_.run_until_complete(self._conn.close())
        self._loop_.close()
