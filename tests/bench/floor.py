"""The transport floor under next-best-actions: the suite's process shape with every piece of work taken out.

An empty FastAPI gateway (uvicorn, uvloop, httptools, as the real one) makes one gRPC call to an empty
"decision" server, which fans out in parallel to empty "leaf" servers (profile, scoring and audit in the real
suite) that answer 200 bytes at once. What it costs on this machine is the least any request through that
shape can cost, so the bench prints it beside the real rows: the distance between the two is the suite's own
work, and a latency aim below the floor cannot be met by optimising that work.

Run alone: `uv run python -m tests.bench.floor` (LEAVES=3, RATES=200,300,400,500).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
from retain_kit.testing import free_port

from tests.bench.load import Measured, measure_paced

ROOT = Path(__file__).resolve().parents[2]


def _same(payload: bytes) -> bytes:
    return payload


def _serve_grpc(port: int, service: str, handler: grpc.RpcMethodHandler) -> None:  # type: ignore[type-arg]
    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"Call": handler}),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def leaf(port: int) -> None:
    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        return b"x" * 200

    _serve_grpc(port, "floor.Leaf", grpc.unary_unary_rpc_method_handler(call, _same, _same))


def decision(port: int, leaves: list[int]) -> None:
    calls: list[grpc.aio.UnaryUnaryMultiCallable] = []  # type: ignore[type-arg]

    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
        if not calls:  # channels belong to the server's event loop
            for p in leaves:
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{p}")
                calls.append(channel.unary_unary("/floor.Leaf/Call", request_serializer=_same,
                                                 response_deserializer=_same))
        answers = await asyncio.gather(*(c(request, timeout=5) for c in calls))
        return b"".join(answers)

    _serve_grpc(port, "floor.Decision", grpc.unary_unary_rpc_method_handler(call, _same, _same))


def gateway(port: int, decision_port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    calls: list[grpc.aio.UnaryUnaryMultiCallable] = []  # type: ignore[type-arg]

    @app.get("/v1/customers/{customer_id}/next-best-actions")
    async def next_best_actions(customer_id: str, placement: str = "", limit: int = 3) -> dict[str, int]:
        if not calls:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{decision_port}")
            calls.append(channel.unary_unary("/floor.Decision/Call", request_serializer=_same,
                                             response_deserializer=_same))
        answer = await calls[0](customer_id.encode(), timeout=5)
        return {"bytes": len(answer), "limit": limit}

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)


@dataclass
class Floor:
    url: str
    pids: dict[str, int]


@contextmanager
def floor_stack(leaves: int = 3) -> Iterator[Floor]:
    """Start the empty shape; yields the gateway URL and the pid of every process."""
    ports = [free_port() for _ in range(leaves + 2)]
    *leaf_ports, decision_port, gateway_port = ports
    me = [sys.executable, "-m", "tests.bench.floor"]
    procs = {f"leaf{i}": subprocess.Popen([*me, "leaf", str(p)], cwd=ROOT) for i, p in enumerate(leaf_ports)}
    procs["decision"] = subprocess.Popen([*me, "decision", str(decision_port), *map(str, leaf_ports)], cwd=ROOT)
    procs["gateway"] = subprocess.Popen([*me, "gateway", str(gateway_port), str(decision_port)], cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{gateway_port}"
        asyncio.run(_wait_ready(url, procs))
        yield Floor(url, {name: p.pid for name, p in procs.items()})
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(10)


async def _wait_ready(url: str, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession(url) as session:
        while True:
            dead = [name for name, p in procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"floor processes exited: {dead}")
            try:
                async with session.get("/v1/customers/c/next-best-actions") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the floor stack did not come up in 30 s")
            await asyncio.sleep(0.1)


def _floor_path(i: int) -> str:
    return f"/v1/customers/c{i % 20}/next-best-actions?placement=home&limit=3"


def measure_floor(leaves: int, rates: list[float]) -> list[Measured]:
    with floor_stack(leaves) as floor:
        measure_paced(floor.url, floor.pids, _floor_path, 100.0, {}, seconds=3.0)  # warm-up
        return [measure_paced(floor.url, floor.pids, _floor_path, rate, {}) for rate in rates]


def main() -> None:
    leaves = int(os.environ.get("LEAVES", "3"))
    rates = [float(r) for r in os.environ.get("RATES", "200,300,400,500").split(",")]
    for measured in measure_floor(leaves, rates):
        print(measured.describe())  # noqa: T201


if __name__ == "__main__":
    role, *args = sys.argv[1:] or ["main"]
    if role == "leaf":
        leaf(int(args[0]))
    elif role == "decision":
        decision(int(args[0]), [int(a) for a in args[1:]])
    elif role == "gateway":
        gateway(int(args[0]), int(args[1]))
    else:
        main()
