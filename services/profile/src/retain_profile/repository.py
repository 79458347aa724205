"""Every profile query lives here."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from retain_kit.db import upsert
from retain_kit.protoconv import aware
from sqlalchemy import Table, TextClause, and_, bindparam, delete, insert, or_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from retain_profile.domain.consent import ConsentRecord
from retain_profile.domain.features import EventFact
from retain_profile.domain.identity import LOOKUP_ORDER, Identifier
from retain_profile.models import (
    ConsentHistoryRow,
    ConsentRow,
    CustomerRow,
    ErasureRow,
    EventOutboxRow,
    EventRow,
    FeaturesRow,
    IdentifierRow,
    MergeRow,
    SegmentRow,
    WorkspaceSettingsRow,
)

# Core tables for the hot paths (no ORM unit of work or identity map).
CUSTOMERS = cast(Table, CustomerRow.__table__)
IDENTIFIERS = cast(Table, IdentifierRow.__table__)
EVENTS = cast(Table, EventRow.__table__)
FEATURES = cast(Table, FeaturesRow.__table__)
OUTBOX = cast(Table, EventOutboxRow.__table__)

# Changes with every write of a customer_features row: the writing transaction, and the time it wrote (which
# rules out a transaction id seen again after wraparound).
_FEATURES_VERSION = "CAST(f.xmin AS TEXT) || '/' || CAST(f.updated_at AS TEXT)"

# Events are written from one array per column (see ProfileRepository._insert_events_pg).
_EVENT_ARRAYS = {
    "workspace_id": "TEXT", "message_id": "TEXT", "customer_id": "TEXT", "type": "TEXT", "event": "TEXT",
    "user_id": "TEXT", "anonymous_id": "TEXT", "previous_id": "TEXT", "timestamp": "TIMESTAMPTZ",
    "received_at": "TIMESTAMPTZ", "published": "BOOLEAN", "properties": "TEXT", "traits": "TEXT", "context": "TEXT",
}
_EVENT_JSON_COLUMNS = ("properties", "traits", "context")
_EVENT_PLAIN_COLUMNS = tuple(c for c in _EVENT_ARRAYS if c not in _EVENT_JSON_COLUMNS)
_INSERT_EVENTS = (
    f"INSERT INTO events ({', '.join(_EVENT_ARRAYS)}) SELECT "
    + ", ".join(f"CAST(u.{c} AS JSON)" if c in _EVENT_JSON_COLUMNS else f"u.{c}" for c in _EVENT_ARRAYS)
    + " FROM unnest(" + ", ".join(f"CAST(:{c} AS {kind}[])" for c, kind in _EVENT_ARRAYS.items())
    + f") AS u({', '.join(_EVENT_ARRAYS)}) RETURNING id, message_id"
)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if value else "{}"


# Merged-away ids can chain (a merged into b, b into c); this bounds the walk.
MAX_MERGE_HOPS = 16


def consent_record(row: ConsentRow) -> ConsentRecord:
    return ConsentRecord(
        channel=row.channel,
        purpose=row.purpose,
        status=row.status,
        source=row.source,
        lawful_basis=row.lawful_basis,
        policy_version=row.policy_version,
        updated_at=aware(row.updated_at),
    )


class ProfileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # customers and identifiers

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    async def analyze(self) -> None:
        """Refresh planner statistics of the ingest tables (PostgreSQL). Without them a young table's keyed
        probes get planned as scans of the whole workspace, once per event of a batch."""
        if self.dialect == "postgresql":
            await self.session.execute(text("ANALYZE events, customers, customer_identifiers, customer_features"))

    async def owners(self, workspace_id: str, identifiers: Iterable[Identifier]) -> dict[Identifier, str]:
        keys = [(i.kind, i.value) for i in identifiers]
        if not keys:
            return {}
        if self.dialect == "postgresql":
            # One index probe per key whatever the (possibly stale) statistics say: a long IN list on a
            # young table is otherwise planned as a scan of the whole workspace.
            probe = text(
                "SELECT m.kind, m.value, o.customer_id FROM unnest(CAST(:kinds AS TEXT[]), CAST(:vals AS TEXT[]))"
                " AS m(kind, value) CROSS JOIN LATERAL (SELECT customer_id FROM customer_identifiers i"
                " WHERE i.workspace_id = :ws AND i.kind = m.kind AND i.value = m.value LIMIT 1) o"
            )
            params = {"ws": workspace_id, "kinds": [k for k, _ in keys], "vals": [v for _, v in keys]}
            return {Identifier(k, v): cid for k, v, cid in (await self.session.execute(probe, params)).all()}
        t = IDENTIFIERS
        stmt = select(t.c.kind, t.c.value, t.c.customer_id).where(
            t.c.workspace_id == workspace_id, tuple_(t.c.kind, t.c.value).in_(keys)
        )
        return {Identifier(k, v): cid for k, v, cid in (await self.session.execute(stmt)).all()}

    async def identifiers_of(self, workspace_id: str, customer_id: str) -> list[Identifier]:
        stmt = (
            select(IdentifierRow)
            .where(IdentifierRow.workspace_id == workspace_id, IdentifierRow.customer_id == customer_id)
            .order_by(IdentifierRow.kind, IdentifierRow.value)
        )
        return [Identifier(r.kind, r.value) for r in (await self.session.execute(stmt)).scalars()]

    async def lock_customer_states(
        self, workspace_id: str, customer_ids: Iterable[str]
    ) -> list[tuple[str, datetime, dict[str, Any], dict[str, str]]]:
        """(id, created_at, traits, trait_times) of these customers as plain rows, row-locked (PostgreSQL) in id
        order so concurrent ingests never deadlock on them."""
        ids = sorted(set(customer_ids))
        if not ids:
            return []
        t = CUSTOMERS
        stmt = (
            select(t.c.customer_id, t.c.created_at, t.c.traits, t.c.trait_times)
            .where(t.c.workspace_id == workspace_id, t.c.customer_id.in_(ids))
            .order_by(t.c.customer_id)
            .with_for_update()
        )
        return [(cid, aware(at), traits or {}, times or {}) for cid, at, traits, times in
                (await self.session.execute(stmt)).all()]

    async def insert_customers(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(CUSTOMERS), rows)

    async def update_customer_traits(self, rows: list[dict[str, Any]]) -> None:
        """Executemany UPDATE of traits by id; rows hold b_id, traits, trait_times, updated_at."""
        if not rows:
            return
        t = CUSTOMERS
        stmt = (
            update(t)
            .where(t.c.customer_id == bindparam("b_id"))
            .values(traits=bindparam("traits"), trait_times=bindparam("trait_times"),
                    updated_at=bindparam("updated_at"))
        )
        await self.session.execute(stmt, rows)

    async def customer(self, workspace_id: str, customer_id: str, *, for_update: bool = False) -> CustomerRow | None:
        stmt = select(CustomerRow).where(
            CustomerRow.workspace_id == workspace_id, CustomerRow.customer_id == customer_id
        )
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def live_customer(self, workspace_id: str, customer_id: str) -> CustomerRow | None:
        """The customer behind an id, following merges to the survivor."""
        row = await self.customer(workspace_id, customer_id)
        for _ in range(MAX_MERGE_HOPS):
            if row is None or row.merged_into is None:
                return row
            row = await self.customer(workspace_id, row.merged_into)
        return None

    async def move_customer(self, workspace_id: str, *, loser: str, survivor: str, reason: str, now: datetime) -> None:
        """Re-home everything the loser owned except consent state (the caller merges that)."""
        for model in (EventRow, IdentifierRow, ConsentHistoryRow):
            await self.session.execute(
                update(model)
                .where(model.workspace_id == workspace_id, model.customer_id == loser)
                .values(customer_id=survivor)
            )
        await self.session.execute(
            update(CustomerRow)
            .where(CustomerRow.workspace_id == workspace_id, CustomerRow.merged_into == loser)
            .values(merged_into=survivor)
        )
        await self.session.execute(
            update(CustomerRow)
            .where(CustomerRow.workspace_id == workspace_id, CustomerRow.customer_id == loser)
            .values(merged_into=survivor, updated_at=now, traits={}, trait_times={})
        )
        await self.session.execute(delete(FeaturesRow).where(FeaturesRow.customer_id == loser))
        self.session.add(
            MergeRow(workspace_id=workspace_id, survivor_id=survivor, merged_id=loser, reason=reason, merged_at=now)
        )

    async def merges_into(self, workspace_id: str, survivor: str) -> list[MergeRow]:
        stmt = (
            select(MergeRow)
            .where(MergeRow.workspace_id == workspace_id, MergeRow.survivor_id == survivor)
            .order_by(MergeRow.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    # events

    async def known_message_ids(self, workspace_id: str, message_ids: Sequence[str]) -> dict[str, str]:
        if not message_ids:
            return {}
        if self.dialect == "postgresql":
            # See owners(): per-id probes of the unique index, robust to stale statistics.
            probe = text(
                "SELECT m.id, o.customer_id FROM unnest(CAST(:ids AS TEXT[])) AS m(id) CROSS JOIN LATERAL"
                " (SELECT customer_id FROM events e WHERE e.workspace_id = :ws AND e.message_id = m.id LIMIT 1) o"
            )
            rows = await self.session.execute(probe, {"ws": workspace_id, "ids": list(message_ids)})
            return {mid: cid for mid, cid in rows.all()}
        t = EVENTS
        stmt = select(t.c.message_id, t.c.customer_id).where(
            t.c.workspace_id == workspace_id, t.c.message_id.in_(list(message_ids))
        )
        return {mid: cid for mid, cid in (await self.session.execute(stmt)).all()}

    async def facts(self, workspace_id: str, customer_id: str) -> list[EventFact]:
        stmt = select(EventRow.type, EventRow.event, EventRow.timestamp, EventRow.properties).where(
            EventRow.workspace_id == workspace_id, EventRow.customer_id == customer_id
        )
        return [
            EventFact(type=t, event=e, timestamp=aware(ts), properties=p or {})
            for t, e, ts, p in (await self.session.execute(stmt)).all()
        ]

    async def events_page(
        self, workspace_id: str, customer_id: str, *, before: tuple[datetime, int] | None, limit: int
    ) -> list[EventRow]:
        stmt = select(EventRow).where(EventRow.workspace_id == workspace_id, EventRow.customer_id == customer_id)
        if before is not None:
            ts, row_id = before
            stmt = stmt.where(
                or_(EventRow.timestamp < ts, and_(EventRow.timestamp == ts, EventRow.id < row_id))
            )
        stmt = stmt.order_by(EventRow.timestamp.desc(), EventRow.id.desc()).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def events_by_ids(self, ids: Sequence[int]) -> list[EventRow]:
        stmt = select(EventRow).where(EventRow.id.in_(list(ids))).order_by(EventRow.id)
        return list((await self.session.execute(stmt)).scalars())

    async def unpublished(self, *, received_before: datetime, limit: int) -> list[EventRow]:
        stmt = (
            select(EventRow)
            .where(EventRow.published.is_(False), EventRow.received_at <= received_before)
            .order_by(EventRow.id)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def add_outbox(self, workspace_id: str, event_ids: list[int], *, now: datetime) -> int:
        stmt = insert(OUTBOX).returning(OUTBOX.c.id)
        row_id = (await self.session.execute(
            stmt, {"workspace_id": workspace_id, "event_ids": event_ids, "created_at": now}
        )).scalar_one()
        return int(row_id)

    async def remove_outbox(self, outbox_id: int) -> None:
        await self.session.execute(delete(OUTBOX).where(OUTBOX.c.id == outbox_id))

    async def outbox(self, *, created_before: datetime, limit: int) -> list[tuple[int, list[int]]]:
        stmt = (
            select(OUTBOX.c.id, OUTBOX.c.event_ids)
            .where(OUTBOX.c.created_at <= created_before)
            .order_by(OUTBOX.c.id)
            .limit(limit)
        )
        return [(row_id, list(ids or [])) for row_id, ids in (await self.session.execute(stmt)).all()]

    async def mark_published(self, ids: Sequence[int]) -> None:
        if ids:
            await self.session.execute(update(EventRow).where(EventRow.id.in_(list(ids))).values(published=True))

    # features

    async def features_row(
        self, workspace_id: str, customer_id: str, *, for_update: bool = False
    ) -> FeaturesRow | None:
        stmt = select(FeaturesRow).where(
            FeaturesRow.workspace_id == workspace_id, FeaturesRow.customer_id == customer_id
        )
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def lock_summaries(
        self, workspace_id: str, customer_ids: Iterable[str], *, known: Mapping[str, str] | None = None
    ) -> dict[str, tuple[str, dict[str, Any] | None]]:
        """Stored summaries of these customers, row-locked (PostgreSQL) in id order: id -> (version, summary).

        The version (PostgreSQL only, else "") changes with every write of the row; the summary is None when
        the version equals the one in `known` (the caller holds that summary already and is spared decoding
        it). Customers without a row are absent."""
        ids = sorted(set(customer_ids))
        if not ids:
            return {}
        if self.dialect == "postgresql":
            known = known or {}
            sql = (
                f"SELECT f.customer_id, {_FEATURES_VERSION}, CASE WHEN {_FEATURES_VERSION} = u.known THEN NULL"
                " ELSE CAST(f.summary AS TEXT) END FROM unnest(CAST(:ids AS TEXT[]), CAST(:known AS TEXT[]))"
                " AS u(id, known) JOIN customer_features f ON f.customer_id = u.id AND f.workspace_id = :ws"
                " ORDER BY f.customer_id FOR UPDATE OF f"
            )
            params = {"ws": workspace_id, "ids": ids, "known": [known.get(c, "") for c in ids]}
            return {
                cid: (version, json.loads(raw) if raw is not None else None)
                for cid, version, raw in (await self.session.execute(text(sql), params)).all()
            }
        t = FEATURES
        stmt = (
            select(t.c.customer_id, t.c.summary)
            .where(t.c.workspace_id == workspace_id, t.c.customer_id.in_(ids))
            .order_by(t.c.customer_id)
            .with_for_update()
        )
        return {cid: ("", summary or {}) for cid, summary in (await self.session.execute(stmt)).all()}

    async def upsert_features(self, workspace_id: str, rows: list[dict[str, Any]], *, now: datetime) -> dict[str, str]:
        """One INSERT ... ON CONFLICT DO UPDATE for every touched customer's feature row; rows hold customer_id,
        summary, features, lifecycle_stage. Returns each row's new version (PostgreSQL; see lock_summaries)."""
        if not rows:
            return {}
        if self.dialect == "postgresql":
            sql = (
                "INSERT INTO customer_features AS f (customer_id, workspace_id, summary, features, lifecycle_stage,"
                " updated_at) SELECT u.id, :ws, CAST(u.summary AS JSON), CAST(u.features AS JSON), u.stage, :now"
                " FROM unnest(CAST(:ids AS TEXT[]), CAST(:summaries AS TEXT[]), CAST(:features AS TEXT[]),"
                " CAST(:stages AS TEXT[])) AS u(id, summary, features, stage) ON CONFLICT (customer_id) DO UPDATE"
                " SET summary = excluded.summary, features = excluded.features,"
                " lifecycle_stage = excluded.lifecycle_stage, updated_at = excluded.updated_at"
                f" RETURNING f.customer_id, {_FEATURES_VERSION}"
            )
            params = {
                "ws": workspace_id, "now": now, "ids": [r["customer_id"] for r in rows],
                "summaries": [json.dumps(r["summary"]) for r in rows],
                "features": [json.dumps(r["features"]) for r in rows],
                "stages": [r["lifecycle_stage"] for r in rows],
            }
            return {cid: version for cid, version in (await self.session.execute(text(sql), params)).all()}
        stmt = upsert(self.dialect, FEATURES, keys=["customer_id"],
                      update=("summary", "features", "lifecycle_stage", "updated_at"))
        await self.session.execute(stmt, [{**r, "workspace_id": workspace_id, "updated_at": now} for r in rows])
        return {}

    async def insert_identifiers(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(IDENTIFIERS), rows)

    async def insert_events(
        self, rows: list[dict[str, Any]], *, outbox: tuple[str, datetime] | None = None
    ) -> tuple[list[int], int | None]:
        """Stores `rows` (events table columns; `properties_json` may carry the properties already encoded)
        and, with `outbox` = (workspace, now), one outbox row holding their ids. Returns the ids in the order
        of `rows` and the outbox row's id (None without `outbox`)."""
        if not rows:
            return [], None
        if self.dialect == "postgresql":
            return await self._insert_events_pg(rows, outbox)
        t = EVENTS
        stmt = insert(t).returning(t.c.id, sort_by_parameter_order=True)
        plain = [{k: v for k, v in r.items() if k != "properties_json"} for r in rows]
        ids = list((await self.session.execute(stmt, plain)).scalars().all())
        outbox_id = await self.add_outbox(outbox[0], ids, now=outbox[1]) if outbox else None
        return ids, outbox_id

    async def _insert_events_pg(
        self, rows: list[dict[str, Any]], outbox: tuple[str, datetime] | None
    ) -> tuple[list[int], int | None]:
        """One statement: a multi-row INSERT from arrays (one parameter set, so no per-row driver work) and,
        in the same statement, the outbox row. Ids are matched back by message id."""
        params: dict[str, Any] = {name: [r[name] for r in rows] for name in _EVENT_PLAIN_COLUMNS}
        params["properties"] = [r.get("properties_json") or _json_text(r["properties"]) for r in rows]
        params["traits"] = [_json_text(r["traits"]) for r in rows]
        params["context"] = [_json_text(r["context"]) for r in rows]
        insert_sql = _INSERT_EVENTS
        if outbox is None:
            sql = f"WITH ins AS ({insert_sql}) SELECT id, message_id, NULL FROM ins"
        else:
            params["ob_ws"], params["ob_now"] = outbox
            sql = (
                f"WITH ins AS ({insert_sql}), ob AS (INSERT INTO event_outbox (workspace_id, event_ids, created_at)"
                " SELECT :ob_ws, json_agg(id ORDER BY id), :ob_now FROM ins RETURNING id)"
                " SELECT ins.id, ins.message_id, (SELECT id FROM ob) FROM ins"
            )
        result = (await self.session.execute(text(sql), params)).all()
        by_message = {mid: int(row_id) for row_id, mid, _ in result}
        outbox_id = int(result[0][2]) if outbox is not None and result else None
        return [by_message[r["message_id"]] for r in rows], outbox_id

    async def summaries(self, workspace_id: str, *, chunk: int = 1000) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Every live customer's stored feature summary (merged-away customers have none)."""
        stmt = (
            select(FeaturesRow.customer_id, FeaturesRow.summary)
            .where(FeaturesRow.workspace_id == workspace_id)
            .execution_options(yield_per=chunk)
        )
        result = await self.session.stream(stmt)
        async for customer_id, summary in result:
            yield customer_id, summary or {}

    # consent

    async def consents(self, workspace_id: str, customer_id: str) -> list[ConsentRow]:
        stmt = (
            select(ConsentRow)
            .where(ConsentRow.workspace_id == workspace_id, ConsentRow.customer_id == customer_id)
            .order_by(ConsentRow.channel, ConsentRow.purpose)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def consent(self, workspace_id: str, customer_id: str, *, channel: str, purpose: str) -> ConsentRow | None:
        stmt = select(ConsentRow).where(
            ConsentRow.workspace_id == workspace_id,
            ConsentRow.customer_id == customer_id,
            ConsentRow.channel == channel,
            ConsentRow.purpose == purpose,
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def put_consent(self, workspace_id: str, customer_id: str, record: ConsentRecord) -> None:
        row = await self.consent(workspace_id, customer_id, channel=record.channel, purpose=record.purpose)
        if row is None:
            row = ConsentRow(
                workspace_id=workspace_id, customer_id=customer_id, channel=record.channel, purpose=record.purpose
            )
            self.session.add(row)
        row.status = record.status
        row.source = record.source
        row.lawful_basis = record.lawful_basis
        row.policy_version = record.policy_version
        row.updated_at = record.updated_at

    async def replace_consents(self, workspace_id: str, customer_id: str, records: Iterable[ConsentRecord]) -> None:
        wanted = {r.key: r for r in records}
        for row in await self.consents(workspace_id, customer_id):
            if (row.channel, row.purpose) not in wanted:
                await self.session.delete(row)
        for record in wanted.values():
            await self.put_consent(workspace_id, customer_id, record)

    async def drop_consents(self, workspace_id: str, customer_id: str) -> None:
        await self.session.execute(
            delete(ConsentRow).where(ConsentRow.workspace_id == workspace_id, ConsentRow.customer_id == customer_id)
        )

    def add_consent_history(self, row: ConsentHistoryRow) -> None:
        self.session.add(row)

    async def consent_history(self, workspace_id: str, customer_id: str) -> list[ConsentHistoryRow]:
        stmt = (
            select(ConsentHistoryRow)
            .where(ConsentHistoryRow.workspace_id == workspace_id, ConsentHistoryRow.customer_id == customer_id)
            .order_by(ConsentHistoryRow.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    # workspace settings and segments

    async def settings(self, workspace_id: str) -> WorkspaceSettingsRow | None:
        return await self.session.get(WorkspaceSettingsRow, workspace_id)

    async def put_settings(
        self, workspace_id: str, *, lifecycle: dict[str, Any], actor: str, now: datetime
    ) -> WorkspaceSettingsRow:
        row = await self.session.get(WorkspaceSettingsRow, workspace_id, with_for_update=True)
        if row is None:
            row = WorkspaceSettingsRow(workspace_id=workspace_id)
            self.session.add(row)
        row.lifecycle, row.updated_by, row.updated_at = lifecycle, actor, now
        return row

    async def segments(self, workspace_id: str) -> list[SegmentRow]:
        stmt = select(SegmentRow).where(SegmentRow.workspace_id == workspace_id).order_by(SegmentRow.name)
        return list((await self.session.execute(stmt)).scalars())

    async def segment(self, workspace_id: str, name: str) -> SegmentRow | None:
        return await self.session.get(SegmentRow, (workspace_id, name))

    def add_segment(self, row: SegmentRow) -> None:
        self.session.add(row)

    async def delete_segment(self, workspace_id: str, name: str) -> bool:
        result = await self.session.execute(
            delete(SegmentRow).where(SegmentRow.workspace_id == workspace_id, SegmentRow.name == name)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # privacy

    async def all_events(self, workspace_id: str, customer_id: str) -> list[EventRow]:
        stmt = (
            select(EventRow)
            .where(EventRow.workspace_id == workspace_id, EventRow.customer_id == customer_id)
            .order_by(EventRow.timestamp, EventRow.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def remove_identifiers(self, workspace_id: str, customer_id: str) -> int:
        result = await self.session.execute(
            delete(IdentifierRow).where(
                IdentifierRow.workspace_id == workspace_id, IdentifierRow.customer_id == customer_id
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def erase_merged_traits(self, workspace_id: str, survivor: str) -> list[str]:
        """Customers merged into `survivor` (directly or not) have their (already emptied) rows wiped too."""
        merged = [m.merged_id for m in await self.merges_into(workspace_id, survivor)]
        if merged:
            await self.session.execute(
                update(CustomerRow)
                .where(CustomerRow.workspace_id == workspace_id, CustomerRow.customer_id.in_(merged))
                .values(traits={}, trait_times={})
            )
        return merged

    def add_erasure(self, row: ErasureRow) -> None:
        self.session.add(row)

    async def erasures(self, workspace_id: str, customer_id: str) -> list[ErasureRow]:
        stmt = (
            select(ErasureRow)
            .where(ErasureRow.workspace_id == workspace_id, ErasureRow.customer_id == customer_id)
            .order_by(ErasureRow.id)
        )
        return list((await self.session.execute(stmt)).scalars())


async def profile_rows(
    connection: AsyncConnection,
    workspace_id: str,
    *,
    customer_id: str | None,
    candidates: Sequence[Identifier],
    scores: bool = False,
) -> list[Any]:
    """Everything a profile read needs in one round trip: the live customer behind `customer_id` or the first
    of `candidates` (in lookup order), merges followed, with its summary, identifiers and consents, and with
    `scores` the model scores stored for it. On a plain connection, without an ORM session: the hot read path.

    Rows are (part, a, b, c, d, e, f, at): part 0 customer (id, traits json, erased_at), 1 summary json,
    2 identifier (kind, value), 3 consent (channel, purpose, status, source, basis, version, updated_at),
    4 score (name, model name, model version, value as text, horizon days as text, -, scored_at)."""
    params: dict[str, Any] = {"ws": workspace_id, "ref": customer_id}
    for n, ident in enumerate(candidates):
        params[f"k{n}"], params[f"v{n}"] = ident.kind, ident.value
    statement = _profile_statement(len(candidates), scores=scores, dialect=connection.dialect.name)
    return list((await connection.execute(statement, params)).all())


@functools.lru_cache(maxsize=64)
def _profile_statement(candidates: int, *, scores: bool, dialect: str) -> TextClause:
    """The profile read's statement for a number of identifier candidates, built and parsed once (a new
    `text()` per read showed in profiles)."""
    matches = [f"(kind = :k{n} AND value = :v{n})" for n in range(candidates)]
    ranks = " ".join(f"WHEN '{kind}' THEN {n + 1}" for n, kind in enumerate(LOOKUP_ORDER))
    by_identifier = (
        f" UNION ALL SELECT customer_id, CASE kind {ranks} ELSE 99 END FROM customer_identifiers"
        f" WHERE workspace_id = :ws AND ({' OR '.join(matches)})"
        if matches else ""
    )
    # Text exactly as stored: PostgreSQL prints a double's shortest round-trip form, SQLite needs 17 digits.
    value = "printf('%.17g', s.value)" if dialect == "sqlite" else "CAST(s.value AS TEXT)"
    score_rows = (
        "\nUNION ALL\nSELECT 4, s.name, s.model_name, s.model_version, " + value + ","
        " CAST(s.horizon_days AS TEXT), NULL, s.scored_at\n  FROM customer_scores s"
        " WHERE s.workspace_id = :ws AND s.customer_id = (SELECT customer_id FROM live)"
        if scores else ""
    )
    return text(f"""
WITH RECURSIVE
start_ids(customer_id, pri) AS (
  SELECT customer_id, 0 FROM customers WHERE workspace_id = :ws AND customer_id = :ref{by_identifier}
),
first_id(customer_id) AS (SELECT customer_id FROM start_ids ORDER BY pri LIMIT 1),
chain(customer_id, merged_into, depth) AS (
  SELECT c.customer_id, c.merged_into, 0 FROM customers c JOIN first_id f ON c.customer_id = f.customer_id
  WHERE c.workspace_id = :ws
  UNION ALL
  SELECT c.customer_id, c.merged_into, chain.depth + 1 FROM customers c JOIN chain ON c.customer_id = chain.merged_into
  WHERE c.workspace_id = :ws AND chain.depth < {MAX_MERGE_HOPS}
),
live(customer_id) AS (SELECT customer_id FROM chain WHERE merged_into IS NULL LIMIT 1)
SELECT 0 AS part, c.customer_id AS a, CAST(c.traits AS TEXT) AS b, NULL AS c, NULL AS d, NULL AS e, NULL AS f,
       c.erased_at AS at
  FROM customers c WHERE c.customer_id = (SELECT customer_id FROM live)
UNION ALL
SELECT 1, NULL, CAST(s.summary AS TEXT), NULL, NULL, NULL, NULL, NULL
  FROM customer_features s WHERE s.customer_id = (SELECT customer_id FROM live)
UNION ALL
SELECT 2, i.kind, i.value, NULL, NULL, NULL, NULL, NULL
  FROM customer_identifiers i WHERE i.customer_id = (SELECT customer_id FROM live) AND i.workspace_id = :ws
UNION ALL
SELECT 3, n.channel, n.purpose, n.status, n.source, n.lawful_basis, n.policy_version, n.updated_at
  FROM consents n WHERE n.workspace_id = :ws AND n.customer_id = (SELECT customer_id FROM live){score_rows}
ORDER BY 1, 2, 3""")
