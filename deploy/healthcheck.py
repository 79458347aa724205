"""Container HEALTHCHECK: is this process up and serving? Exit 0 when it is, 1 otherwise.

gRPC services answer the standard health Check for the whole server (""); the gateway answers
GET /livez. Deliberately shallow: a dependency that is down must not mark this container unhealthy
(its callers get clear errors and it recovers by itself; restarting it would not help). The port comes from
the service's own Settings, so RETAIN_<SERVICE>_PORT is honoured exactly as the service reads it.
"""

from __future__ import annotations

import importlib
import os
import sys
import urllib.request


def main() -> int:
    module = os.environ["MODULE"]
    port = importlib.import_module(f"{module}.config").Settings().port
    if module == "retain_gateway":
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as response:
            return 0 if response.status == 200 else 1
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # any failure to reach the server is "unhealthy", with the reason in the log
        print(f"unhealthy: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(1)
