"""What the scoring use cases need from elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from retain_scoring.data.cdnow import Transaction
from retain_scoring.domain.scores import CustomerFeatures
from retain_scoring.store import ModelRef


class FeatureSource(Protocol):
    """Reads a customer's live features (profile service in production)."""

    async def features(self, workspace_id: str, customer_id: str, *, field: str) -> tuple[str, CustomerFeatures]:
        """The internal customer id and its features; errors name `field` as the offending input."""
        ...


@dataclass(frozen=True)
class ScoreRecord:
    """One score as stored in the profile: value, the model behind it, when and over what horizon."""

    customer_id: str
    name: str
    value: float
    model: ModelRef
    scored_at: datetime
    horizon_days: int


class TrainingData(Protocol):
    """A workspace's order history and where its batch scores go (profile service in production)."""

    async def orders(self, workspace_id: str) -> list[Transaction]:
        """Every order of the workspace, keyed by internal customer id."""
        ...

    async def store(self, workspace_id: str, scores: Sequence[ScoreRecord]) -> int:
        """Writes the scores back; returns how many were stored."""
        ...
