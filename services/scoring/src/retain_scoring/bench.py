"""Scoring benchmarks for `make bench`: batch throughput and single-customer gRPC latency.

Both build the real pieces in-process (BentoML service class, servicer, SQLite outcome store) in a
temporary directory, with a churn model trained on synthetic data so churn is the supervised model's.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
from retain.profile.v1 import profile_pb2
from retain.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from retain_kit import migrations
from retain_kit.db import create_engine, session_factory
from retain_kit.grpcserver import Registration, start
from retain_kit.testing import run_paced

from retain_scoring.bento_service import ScoringModels, in_process
from retain_scoring.domain.btyd import DAYS_PER_WEEK
from retain_scoring.domain.churn import INPUT_COLUMNS, fit_classifier, model_matrix
from retain_scoring.domain.offers import BetaPrior
from retain_scoring.domain.scores import CustomerFeatures, ValuePolicy
from retain_scoring.server import ScoringServicer
from retain_scoring.service import CustomerScorer, OfferPropensities
from retain_scoring.store import CDNOW_BGNBD, ModelRegistry

SERVICE_DIR = Path(__file__).resolve().parents[2]
BATCH = 10_000


def synthetic_inputs(n: int, *, seed: int = 0, horizon_days: float = 90.0) -> np.ndarray:
    """INPUT_COLUMNS rows shaped like a real customer base (a quarter one-time buyers)."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(1.0, 150.0, n)
    x = np.where(rng.random(n) < 0.25, 0.0, rng.poisson(3.0, n).astype(np.float64))
    t_x = np.where(x > 0, age * rng.uniform(0.05, 1.0, n), 0.0)
    aov = rng.gamma(4.0, 12.0, n)
    orders = x + 1
    recency_days = (age - t_x) * DAYS_PER_WEEK
    table = np.zeros((n, len(INPUT_COLUMNS)))
    columns = {
        "x": x, "t_x": t_x, "T": age, "monetary": aov, "horizon_weeks": np.full(n, horizon_days / DAYS_PER_WEEK),
        "recency_days": recency_days, "frequency": orders, "monetary_total": orders * aov,
        "average_order_value": aov, "tenure_days": age * DAYS_PER_WEEK,
        "orders_90d": np.where(recency_days < 90, 1.0, 0.0), "orders_30d": np.where(recency_days < 30, 1.0, 0.0),
    }
    for name, values in columns.items():
        table[:, INPUT_COLUMNS.index(name)] = values
    return table


def _models(home: Path) -> ScoringModels:
    registry = ModelRegistry(home)
    inputs = synthetic_inputs(4000, seed=1)
    matrix = model_matrix(inputs, CDNOW_BGNBD)
    rng = np.random.default_rng(2)
    labels = rng.random(len(matrix)) < matrix[:, -1]
    registry.save_churn(fit_classifier(matrix, labels, calibrate=False), CDNOW_BGNBD, horizon_days=90,
                        source="bench:synthetic", metrics={})
    return in_process(registry, ValuePolicy())


def bench_batch_scoring(n_customers: int = 1_000_000) -> float:
    """Customers scored per second (churn + BTYD + CLV) through the BentoML service class, 10k per batch."""
    with tempfile.TemporaryDirectory() as tmp:
        models = _models(Path(tmp))
        batch = synthetic_inputs(BATCH, seed=3)
        models.score(batch[:10])
        done = 0
        began = time.perf_counter()
        while done < n_customers:
            size = min(BATCH, n_customers - done)
            models.score(batch[:size])
            done += size
        return done / (time.perf_counter() - began)


def _customer(i: int) -> scoring_pb2.CustomerInput:
    x = i % 7
    return scoring_pb2.CustomerInput(
        customer_id=f"cus_{i:032x}",
        features=profile_pb2.Features(
            repeat_transactions=x, recency_weeks=float(x * 3), age_weeks=30.0 + x, average_order_value=40.0,
            frequency=x + 1, recency_days=7.0 * (30 - 2 * x), tenure_days=7.0 * (30 + x),
            monetary_total=40.0 * (x + 1),
        ),
    )


async def _latency(rate: float, seconds: float, offers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/scoring.db"
        await asyncio.to_thread(migrations.upgrade, SERVICE_DIR, url, schema=None)
        engine = create_engine(url, schema=None)
        models = await asyncio.to_thread(_models, Path(tmp) / "bentoml")
        servicer = ScoringServicer(
            CustomerScorer(models, _NoProfile()), OfferPropensities(session_factory(engine), prior=BetaPrior())
        )
        name = scoring_pb2.DESCRIPTOR.services_by_name["ScoringService"].full_name
        server, port, _ = await start(
            [Registration(servicer, scoring_pb2_grpc.add_ScoringServiceServicer_to_server, name)]
        )
        try:
            return await paced_latency(f"127.0.0.1:{port}", rate=rate, seconds=seconds, offers=offers)
        finally:
            await server.stop(None)
            await engine.dispose()


async def paced_latency(target: str, *, rate: float, seconds: float, offers: int) -> dict[str, float]:
    """Open-loop load on a scoring server at `target`: requests start on schedule whatever earlier ones do."""
    offer_ids = [f"offer_{k}" for k in range(offers)]
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)

        async def one(i: int) -> None:
            c = _customer(i)
            began = time.perf_counter()
            await asyncio.gather(
                stub.ScoreCustomers(scoring_pb2.ScoreCustomersRequest(workspace_id="ws_bench", customers=[c])),
                stub.ScoreOffers(scoring_pb2.ScoreOffersRequest(
                    workspace_id="ws_bench", customer_id=c.customer_id, offer_ids=offer_ids, features=c.features,
                )),
            )
            latencies.append(time.perf_counter() - began)

        for i in range(20):
            await one(i)
        latencies.clear()
        wall = await run_paced(one, rate=rate, seconds=seconds)
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(int(0.99 * len(ordered)), len(ordered) - 1)] * 1000,
        "requests": float(len(ordered)),
        "achieved_rps": len(ordered) / wall,
    }


class _NoProfile:
    """Every benchmark request carries its features, so profile is never asked."""

    async def features(self, workspace_id: str, customer_id: str, *, field: str) -> tuple[str, CustomerFeatures]:
        raise RuntimeError("the benchmark passes features")


def bench_grpc_latency(rate: float = 300.0, seconds: float = 5.0, offers: int = 20) -> dict[str, float]:
    """Single-customer scoring (ScoreCustomers + ScoreOffers over `offers` offers, concurrently) at a paced
    `rate` through an in-process gRPC server; p50/p99 in milliseconds."""
    return asyncio.run(_latency(rate, seconds, offers))


if __name__ == "__main__":
    print(f"batch: {bench_batch_scoring():,.0f} customers/s")  # noqa: T201
    print(bench_grpc_latency())  # noqa: T201


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": statistics.median(ordered) * 1000, "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000}


def bench_bento_http_vs_in_process(calls: int = 300, *, start_timeout: float = 120.0) -> dict[str, float]:
    """Single-customer `score` latency: the class called in-process vs `bentoml serve` over HTTP (httpx).

    Starts `bentoml serve retain_scoring.bento_service:ScoringModels` on a free port against a temporary
    model store holding the bench churn model, and reports its start-up time too.
    """
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        models = _models(home)
        row = synthetic_inputs(1, seed=5)
        local = []
        for _ in range(calls):
            began = time.perf_counter()
            models.score(row)
            local.append(time.perf_counter() - began)
        port = _free_port()
        env = {**os.environ, "BENTOML_HOME": str(home), "RETAIN_SCORING_BENTOML_HOME": str(home)}
        began = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "retain_scoring.bento_service:ScoringModels", "--port",
             str(port), "--host", "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
                while True:
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.perf_counter() - began > start_timeout or server.poll() is not None:
                        raise RuntimeError("bentoml serve did not become ready")
                    time.sleep(0.2)
                startup = time.perf_counter() - began
                body = {"features": row.tolist()}
                client.post("/score", json=body).raise_for_status()
                remote = []
                for _ in range(calls):
                    began = time.perf_counter()
                    client.post("/score", json=body).raise_for_status()
                    remote.append(time.perf_counter() - began)
        finally:
            server.terminate()
            server.wait(timeout=30)
    inner, http = _percentiles(local), _percentiles(remote)
    return {"in_process_p50_ms": inner["p50_ms"], "in_process_p99_ms": inner["p99_ms"],
            "http_p50_ms": http["p50_ms"], "http_p99_ms": http["p99_ms"], "serve_startup_s": startup}
