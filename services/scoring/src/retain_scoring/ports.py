"""What the scoring use cases need from elsewhere."""

from __future__ import annotations

from typing import Protocol

from retain_scoring.domain.scores import CustomerFeatures


class FeatureSource(Protocol):
    """Reads a customer's live features (profile service in production)."""

    async def features(self, workspace_id: str, customer_id: str, *, field: str) -> tuple[str, CustomerFeatures]:
        """The internal customer id and its features; errors name `field` as the offending input."""
        ...
