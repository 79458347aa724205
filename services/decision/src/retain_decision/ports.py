"""What the decision use cases need from other services. gRPC adapters live in clients.py.

Adapters raise retain_kit errors: NotFound for an unknown customer, Unavailable when the other
service cannot be reached or fails, so the use cases decide what fails closed and what degrades.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from retain_kit.expressions import Value

from retain_decision.domain.pipeline import ModelRef, Propensity
from retain_decision.domain.policies import Counter


@dataclass(frozen=True)
class CustomerProfile:
    customer_id: str
    identifiers: tuple[tuple[str, str], ...] = ()
    traits: Mapping[str, Any] = field(default_factory=dict)
    features: Mapping[str, Value] = field(default_factory=dict)
    consents: Mapping[tuple[str, str], str] = field(default_factory=dict)
    locale: str = ""
    time_zone: str = ""
    # The features as profile sent them, passed on to scoring as they are (so scoring need not read the
    # profile again); opaque to the pipeline.
    features_message: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ConsentAnswer:
    allowed: bool
    status: str
    reason: str


@dataclass(frozen=True)
class CustomerScores:
    values: Mapping[str, float]
    models: Mapping[str, ModelRef]


@dataclass(frozen=True)
class DecisionScores:
    """One scoring call for a decision: the offers' propensities and the customer's scores, or why the
    scores are missing (the propensities still stand)."""

    propensities: Mapping[str, Propensity]
    scores: CustomerScores
    scores_unavailable: str = ""


@dataclass(frozen=True)
class OutboundMessage:
    idempotency_key: str
    customer_id: str
    channel: str
    offer_id: str
    purpose: str
    decision_id: str
    recipient: str
    locale: str
    subject: str
    body: str
    variables: Mapping[str, Any]
    journey_id: str = ""


@dataclass(frozen=True)
class DispatchResult:
    message_id: str
    status: str
    provider: str
    duplicate: bool


@dataclass(frozen=True)
class AuditEntry:
    kind: str
    outcome: str
    customer_id: str = ""
    decision_id: str = ""
    message_id: str = ""
    channel: str = ""
    offer_id: str = ""
    journey_id: str = ""  # the journey whose step asked, so auditors can query a journey's whole trail
    actor: str = ""
    payload: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    idempotency_key: str = ""


class ProfileReader(Protocol):
    """The profile service: who the customer is, and whether they may be contacted."""

    async def get_profile(self, workspace_id: str, customer_id: str) -> CustomerProfile: ...

    async def check_consent(
        self, workspace_id: str, customer_id: str, *, channel: str, purpose: str
    ) -> ConsentAnswer: ...


class Scorer(Protocol):
    """The scoring service: customer scores, per-offer propensities, and outcome learning."""

    async def score_customer(
        self, workspace_id: str, customer_id: str, *, features: Any = None
    ) -> CustomerScores: ...

    async def score_for_decision(
        self, workspace_id: str, customer_id: str, offer_ids: Sequence[str], *, features: Any = None
    ) -> DecisionScores: ...

    async def record_outcome(
        self,
        workspace_id: str,
        *,
        customer_id: str,
        offer_id: str,
        outcome: str,
        decision_id: str,
        occurred_at: datetime | None,
    ) -> None: ...


class Dispatcher(Protocol):
    """The channels service: delivers an approved message once per idempotency key."""

    async def dispatch(self, workspace_id: str, message: OutboundMessage) -> DispatchResult: ...


class AuditSink(Protocol):
    """The audit log: returns only once the record is durable."""

    async def append(self, workspace_id: str, entry: AuditEntry) -> str: ...


@dataclass(frozen=True)
class SlotBid:
    """A claim on a customer's contact slot: the sender's identity, what it offers, what it is worth."""

    member: str
    offer_id: str
    value: float


# The value of a claimed idempotency key while its request runs (CounterStore.claim).
PENDING = "pending"


class CounterStore(Protocol):
    """Cap counters and contact slots shared by every decision replica (Redis; in memory for one).

    Raises retain_kit Unavailable when the store cannot be reached: callers fail closed.
    """

    async def counts(self, keys: Sequence[str]) -> Mapping[str, int]: ...

    async def reserve(self, counters: Sequence[Counter]) -> Counter | None:
        """Increment every counter, or none when one would pass its limit (that one is returned)."""
        ...

    async def release(self, counters: Sequence[Counter]) -> None:
        """Give back a reservation whose message was never sent."""
        ...

    async def bid(self, slot: str, bid: SlotBid, *, arbitration_ms: int, slot_seconds: int) -> tuple[str, int]:
        """Enter the arbitration for `slot`: (awarded member or "", milliseconds left to collect bids)."""
        ...

    async def award(self, slot: str, *, slot_seconds: int) -> tuple[str, str]:
        """Close the arbitration (if still open) and return the winner's (member, offer_id)."""
        ...

    async def release_slot(self, slot: str, member: str) -> None: ...

    async def claim(self, key: str, *, ttl_seconds: int) -> str | None:
        """Take `key` for this request (None) unless another holds it: then its value, PENDING while
        that request runs, its settled outcome afterwards."""
        ...

    async def settle(self, key: str, outcome: str, *, ttl_seconds: int) -> None:
        """Record the outcome of the request holding `key`, for its repeats."""
        ...

    async def unclaim(self, key: str) -> None:
        """Let a repeat run again (the holder failed before an outcome)."""
        ...
