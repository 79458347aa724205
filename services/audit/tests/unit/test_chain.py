from dataclasses import replace
from datetime import UTC, datetime, timedelta

from retain_audit.domain.chain import GENESIS, Entry, link_hash, verify

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_chain(n: int) -> list[tuple[Entry, str]]:
    chain: list[tuple[Entry, str]] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        entry = Entry(
            workspace_id="ws", seq=seq, kind="message", customer_id=f"c{seq}", decision_id="", message_id="",
            channel="sms", journey_id="", offer_id="o1", outcome="sent", actor="op", payload={"n": seq},
            occurred_at=T0 + timedelta(seconds=seq), recorded_at=T0 + timedelta(seconds=seq), prev_hash=prev,
        )
        digest = link_hash(entry)
        chain.append((entry, digest))
        prev = digest
    return chain


def test_intact_chain_verifies_and_reports_head() -> None:
    chain = make_chain(5)
    result = verify(chain)
    assert result.ok and result.checked == 5 and result.head_hash == chain[-1][1]


def test_edited_content_is_caught_at_that_record() -> None:
    chain = make_chain(5)
    entry, digest = chain[2]
    chain[2] = (replace(entry, payload={"n": 999}), digest)
    result = verify(chain)
    assert not result.ok and result.first_broken_seq == 3 and "content" in result.detail


def test_removed_record_is_caught_as_gap() -> None:
    chain = make_chain(5)
    del chain[1]
    result = verify(chain)
    assert not result.ok and result.first_broken_seq == 3


def test_hash_is_stable_across_timezone_representation() -> None:
    entry = make_chain(1)[0][0]
    naive = replace(entry, occurred_at=entry.occurred_at.replace(tzinfo=None))
    assert link_hash(naive) == link_hash(entry)


def test_fast_and_strftime_timestamps_agree() -> None:
    from retain_audit.domain.chain import iso_utc

    for value in (T0, T0.replace(microsecond=7), datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)):
        assert iso_utc(value) == value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
