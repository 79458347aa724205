"""Scores written back by scoring: the latest value per (customer, score name) with its model ref."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from retain_kit.errors import InvalidArgument
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from retain_profile.models import ScoreRow

MAX_SCORES = 5000
# 8 columns a row: stays under the bind-parameter limits of SQLite and asyncpg (32766/32767).
_CHUNK = 1000


_UPDATED = ("value", "model_name", "model_version", "horizon_days", "scored_at")


@dataclass(frozen=True)
class StoredScore:
    customer_id: str
    name: str
    value: float
    model_name: str
    model_version: str
    scored_at: datetime
    horizon_days: int = 0


def check_scores(workspace_id: str, scores: Sequence[StoredScore]) -> None:
    if not workspace_id:
        raise InvalidArgument("workspace_id is required", field="workspace_id")
    if len(scores) > MAX_SCORES:
        raise InvalidArgument(f"at most {MAX_SCORES} scores per call", field="scores")
    for i, s in enumerate(scores):
        if not s.customer_id or len(s.customer_id) > 40:
            raise InvalidArgument("customer_id must be 1-40 characters", field=f"scores[{i}].customer_id")
        if not s.name or len(s.name) > 64:
            raise InvalidArgument("name must be 1-64 characters", field=f"scores[{i}].name")
        if not math.isfinite(s.value):
            raise InvalidArgument("value must be a finite number", field=f"scores[{i}].value")
        if not s.model_name or not s.model_version:
            raise InvalidArgument("the model name and version are required", field=f"scores[{i}].model")
        if s.horizon_days < 0:
            raise InvalidArgument("horizon_days must not be negative", field=f"scores[{i}].horizon_days")


class ScoresRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert(self, workspace_id: str, scores: Sequence[StoredScore]) -> int:
        """Replaces each (customer, name) score unless the stored one was scored later (replays are harmless)."""
        if not scores:
            return 0
        # One row per key per statement: PostgreSQL refuses to update the same row twice in one upsert.
        latest: dict[tuple[str, str], StoredScore] = {}
        for s in scores:
            key = (s.customer_id, s.name)
            if key not in latest or latest[key].scored_at <= s.scored_at:
                latest[key] = s
        rows: list[dict[str, Any]] = [
            {"workspace_id": workspace_id, "customer_id": s.customer_id, "name": s.name, "value": s.value,
             "model_name": s.model_name, "model_version": s.model_version, "horizon_days": s.horizon_days,
             "scored_at": s.scored_at}
            for s in latest.values()
        ]
        insert = pg_insert if self.session.get_bind().dialect.name == "postgresql" else sqlite_insert
        for start in range(0, len(rows), _CHUNK):
            stmt = insert(ScoreRow).values(rows[start:start + _CHUNK])
            stmt = stmt.on_conflict_do_update(
                index_elements=["workspace_id", "customer_id", "name"],
                set_={c: getattr(stmt.excluded, c) for c in _UPDATED},
                where=stmt.excluded.scored_at >= ScoreRow.scored_at,
            )
            await self.session.execute(stmt)
        return len(rows)
