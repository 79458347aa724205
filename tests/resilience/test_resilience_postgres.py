"""Restart PostgreSQL under load: a private cluster (initdb/pg_ctl in a temp dir on a free port), never the
machine's shared one."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from retain_cli.stack import free_port, wait_tcp

from tests.resilience.conftest import pg_bin
from tests.resilience.resilience_harness import Suite, running_suite
from tests.resilience.resilience_load import FaultReport
from tests.resilience.test_resilience_faults import run_fault

pytestmark = [pytest.mark.e2e, pytest.mark.resilience]


class PrivateCluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
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
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
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


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
    try:
        pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    except KeyError:
        pytest.skip("running as root and there is no postgres OS user to own a private cluster")
    pg = PrivateCluster(bin_dir)
    try:
        pg.init()
        pg.start()
    except (RuntimeError, TimeoutError, subprocess.TimeoutExpired) as exc:
        pg.remove()
        pytest.skip(f"cannot start a private PostgreSQL cluster: {exc}")
    yield pg
    pg.remove()


@pytest.fixture(scope="module")
def on_private_pg(tmp_path_factory: pytest.TempPathFactory, cluster: PrivateCluster) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("resilience-pg-var"), own_redis=True, database_url=cluster.url) as s:
        yield s


def test_postgres_restart(on_private_pg: Suite, cluster: PrivateCluster, reports: list[FaultReport]) -> None:
    def act() -> tuple[float, float]:
        start = time.monotonic()
        cluster.stop("immediate")  # a crash: no checkpoint, every connection cut
        time.sleep(2.0)
        back = time.monotonic()
        cluster.start()
        return time.monotonic() - start, back

    restart: Callable[[], tuple[float, float]] = act
    # While PostgreSQL is down the services answer UNAVAILABLE, so clients see 503 + Retry-After, never 502.
    run_fault(on_private_pg, reports, "restart postgresql", restart, index=9)
