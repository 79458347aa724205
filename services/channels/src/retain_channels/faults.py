"""Test-only crash hook: `RETAIN_CHANNELS_CRASH_AT=<point>` kills the process at that point of a delivery.

Inert unless the variable is set (it is read at each point, so nothing is cached at import). The crash
tests use it to prove the outbox survives a dispatcher dying mid-delivery; never set it in production.

Points, in the order a delivery passes them:
- `after_commit`: the message and its outbox row are committed; nothing audited or sent yet.
- `before_send`: `queued` is audited and the attempt counted; the provider has not been called.
- `after_send`: the provider accepted the message; its outcome is not recorded yet.
"""

from __future__ import annotations

import os
import sys

CRASH_ENV = "RETAIN_CHANNELS_CRASH_AT"
CRASH_POINTS = frozenset({"after_commit", "before_send", "after_send"})
# What `kill -9` leaves as the exit status a supervisor sees (128 + SIGKILL).
CRASH_EXIT_CODE = 137


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) != name:
        return
    sys.stderr.write(f"retain-channels: crashing at {name} ({CRASH_ENV})\n")
    sys.stderr.flush()
    # os._exit skips finally blocks, atexit and buffered I/O, like a killed process.
    os._exit(CRASH_EXIT_CODE)
