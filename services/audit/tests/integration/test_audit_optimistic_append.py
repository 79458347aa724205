"""The optimistic append (head moved from where this process left it, no lookup first) against two writers
on one database: whatever each one's hint says, the chain stays one unbroken sequence and keys stay unique."""

import asyncio
import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from retain_audit.domain.checkpoint import Signer
from retain_audit.domain.privacy import Vault
from retain_audit.repository import NewRecord
from retain_audit.service import AuditLog
from retain_kit.db import session_factory
from sqlalchemy import text

from conftest import AuditUnderTest


def _replica(audit: AuditUnderTest) -> AuditLog:
    """A second audit process on the same database (its own lock, its own head hint); same signing key."""
    return AuditLog(session_factory(audit.engine), signer=audit.log.signer, vault=audit.log.vault, checkpoint_every=4)


async def _seqs(audit: AuditUnderTest, workspace_id: str) -> list[int]:
    async with audit.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT seq FROM audit_records WHERE workspace_id = :ws ORDER BY seq"), {"ws": workspace_id}
        )
        return [r[0] for r in rows]


async def test_two_writers_with_stale_hints_keep_one_chain(audit: AuditUnderTest) -> None:
    other = _replica(audit)
    ws = "ws_two"
    # Alternate writers: after the first round each one's hint is stale every time it writes.
    for i in range(6):
        writer = audit.log if i % 2 == 0 else other
        await writer.append(ws, NewRecord(kind="decision", customer_id=f"c{i}", payload={"i": i}))
    # And both at once, several groups each.
    await asyncio.gather(
        *(w.append(ws, NewRecord(kind="decision", customer_id=f"d{i}", payload={"i": i}))
          for i in range(20) for w in (audit.log, other))
    )
    assert await _seqs(audit, ws) == list(range(1, 47))
    verification = await audit.log.verify(ws)
    assert verification.ok and verification.checked == 46


async def test_a_key_stored_by_another_writer_is_answered_with_the_stored_record(audit: AuditUnderTest) -> None:
    other = _replica(audit)
    ws = "ws_keys"
    await audit.log.append(ws, NewRecord(kind="decision", customer_id="c1", payload={"n": 1}))  # hint set
    first = await other.append(ws, NewRecord(kind="decision", customer_id="c1", payload={"n": 2},
                                             idempotency_key="dec-1"))
    # audit.log's hint is stale and it has never seen dec-1: the repeat must still be the same record.
    again = await audit.log.append(ws, NewRecord(kind="decision", customer_id="c1", payload={"n": 2},
                                                 idempotency_key="dec-1"))
    assert again.row.record_id == first.row.record_id and again.row.seq == first.row.seq == 2
    # Its hint is fresh now and the key is stored: the optimistic insert hits the unique key and falls back.
    repeat = await audit.log.append(ws, NewRecord(kind="decision", customer_id="c1", payload={"n": 2},
                                                  idempotency_key="dec-1"))
    assert repeat.row.record_id == first.row.record_id
    assert await _seqs(audit, ws) == [1, 2]
    assert (await audit.log.verify(ws)).ok


async def test_a_fresh_process_learns_the_head_and_then_appends_optimistically(audit: AuditUnderTest) -> None:
    ws = "ws_fresh"
    await audit.log.append_batch(ws, [NewRecord(kind="decision", customer_id=f"c{i}") for i in range(5)])
    later = AuditLog(session_factory(audit.engine), signer=Signer(Ed25519PrivateKey.generate()),
                     vault=Vault(os.urandom(32)), checkpoint_every=4)
    for i in range(3):
        await later.append(ws, NewRecord(kind="decision", customer_id=f"e{i}"))
    assert await _seqs(audit, ws) == list(range(1, 9))
    # Checkpoints fall due on the optimistic path too (every 4th record): at 4 and 8.
    async with audit.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT seq FROM audit_checkpoints WHERE workspace_id = :ws ORDER BY seq"), {"ws": ws}
        )
        assert [r[0] for r in rows] == [4, 8]
