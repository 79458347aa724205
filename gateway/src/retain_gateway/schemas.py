"""Request and response models of the REST surface (they are what /openapi.json documents)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

ChannelName = Literal["email", "sms", "push", "line", "in_app"]
ConsentStatusName = Literal["granted", "denied", "withdrawn"]
PlayTypeName = Literal[
    "onboarding", "engagement", "cross_sell", "upsell", "save", "winback", "reactivation",
    "service_recovery", "replenishment",
]
OutcomeName = Literal["impression", "click", "accept", "decline"]
RecordKindName = Literal["decision", "message", "consent", "config", "privacy"]


def _id_as_text(value: Any) -> Any:
    # Some Segment clients send numeric user ids.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


IdText = Annotated[str, BeforeValidator(_id_as_text), Field(min_length=1, max_length=256)]
Json = dict[str, Any]


# --- Segment HTTP Tracking API -------------------------------------------------------------------

class SegmentMessage(BaseModel):
    """Fields common to every Segment call; unknown fields (integrations, sentAt, ...) are ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    user_id: IdText | None = Field(None, alias="userId")
    anonymous_id: IdText | None = Field(None, alias="anonymousId")
    context: Json | None = None
    timestamp: datetime | None = None
    message_id: str | None = Field(None, alias="messageId", max_length=200)
    write_key: str | None = Field(None, alias="writeKey", description="Tolerated; the key is read from auth.")


class TrackIn(SegmentMessage):
    type: Literal["track"] = "track"
    event: str = Field(min_length=1, max_length=200)
    properties: Json | None = None


class IdentifyIn(SegmentMessage):
    type: Literal["identify"] = "identify"
    traits: Json | None = None


class PageIn(SegmentMessage):
    type: Literal["page"] = "page"
    name: str | None = Field(None, max_length=200)
    category: str | None = Field(None, max_length=200)
    properties: Json | None = None


class ScreenIn(SegmentMessage):
    type: Literal["screen"] = "screen"
    name: str | None = Field(None, max_length=200)
    properties: Json | None = None


class AliasIn(SegmentMessage):
    type: Literal["alias"] = "alias"
    previous_id: IdText = Field(alias="previousId")


class BatchIn(BaseModel):
    """Up to 500 items / 500 KB; each item is validated on its own so one bad item rejects only itself."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    batch: list[Json] = Field(
        description="Segment messages, each with `type` track, identify, page, screen or alias."
    )
    context: Json | None = None
    write_key: str | None = Field(None, alias="writeKey")


class IngestOut(BaseModel):
    success: bool
    message_id: str = Field(serialization_alias="messageId")
    status: Literal["accepted", "duplicate"]
    customer_id: str = ""


class IdentifyOut(BaseModel):
    success: bool
    message_id: str = Field(serialization_alias="messageId")
    customer_id: str


class AliasOut(BaseModel):
    success: bool
    message_id: str = Field(serialization_alias="messageId")
    customer_id: str
    merged_customer_ids: list[str]


class ItemResult(BaseModel):
    index: int
    message_id: str = ""
    status: Literal["accepted", "duplicate", "rejected"]
    customer_id: str = ""
    field: str = ""
    error: str = ""


class BatchOut(BaseModel):
    success: bool
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]


# --- customers -----------------------------------------------------------------------------------

class IdentifierOut(BaseModel):
    kind: str
    value: str


class ConsentOut(BaseModel):
    channel: str
    purpose: str
    status: str
    source: str
    lawful_basis: str
    policy_version: str
    updated_at: datetime | None


class FeaturesOut(BaseModel):
    recency_days: float
    frequency: int
    monetary_total: float
    average_order_value: float
    tenure_days: float
    orders_30d: int
    spend_30d: float
    orders_90d: int
    spend_90d: float
    activity_level: float
    activity_change: float
    category_affinity: dict[str, float]
    negative_feedback_streak: int
    open_tickets: int
    lifecycle_stage: str = Field(description="new, active, at_risk, lapsed, churned or reactivated")
    segments: list[str]
    first_seen: datetime | None
    last_seen: datetime | None
    last_order_at: datetime | None
    first_order_at: datetime | None
    repeat_transactions: int
    recency_weeks: float
    age_weeks: float
    as_of: datetime | None
    orders_365d: int = 0
    spend_365d: float = 0.0
    discount_total: float = 0.0
    discount_share: float = Field(0.0, description="discount / (revenue + discount) over all orders")
    channel_engagement: dict[str, Json] = Field(
        default_factory=dict, description="Per channel: delivered/opened/clicked counts and latest times"
    )
    products_added: int = 0
    last_product_added_at: datetime | None = None
    checkouts_started: int = 0
    last_checkout_started_at: datetime | None = None
    subscriptions_started: int = 0
    subscriptions_cancelled: int = 0
    subscription_active: bool = False
    nps_responses: int = 0
    nps_negative: int = 0
    last_nps_score: float = -1.0
    offers_accepted: int = 0
    offers_declined: int = 0


class CustomerOut(BaseModel):
    customer_id: str
    identifiers: list[IdentifierOut]
    traits: Json
    events_count: int
    first_seen: datetime | None
    last_seen: datetime | None
    features: FeaturesOut | None
    consents: list[ConsentOut]
    time_zone: str
    locale: str


class EventOut(BaseModel):
    message_id: str
    type: str
    event: str
    user_id: str
    anonymous_id: str
    properties: Json
    traits: Json
    context: Json
    timestamp: datetime | None
    received_at: datetime | None
    customer_id: str
    previous_id: str


class EventsOut(BaseModel):
    events: list[EventOut]
    next_cursor: str = ""


class ConsentIn(BaseModel):
    channel: ChannelName
    purpose: str = Field(min_length=1, max_length=64)
    status: ConsentStatusName
    source: str = Field("", max_length=200)
    lawful_basis: str = Field("", max_length=64)
    policy_version: str = Field("", max_length=64)
    occurred_at: datetime | None = None


class ConsentsIn(BaseModel):
    consents: list[ConsentIn] = Field(min_length=1, max_length=100)


class ConsentsOut(BaseModel):
    customer_id: str
    consents: list[ConsentOut]


class OutcomeIn(BaseModel):
    offer_id: str = Field(min_length=1, max_length=64)
    outcome: OutcomeName
    decision_id: str = Field("", max_length=64)
    occurred_at: datetime | None = None


class OutcomeOut(BaseModel):
    recorded: bool


# --- decisions -----------------------------------------------------------------------------------

class ModelRefOut(BaseModel):
    name: str
    version: str


class ScoreOut(BaseModel):
    propensity: float
    value: float
    lever: float
    contact_cost: float
    offer_cost: float
    expected_value: float
    propensity_model: ModelRefOut | None


class RankedActionOut(BaseModel):
    rank: int
    offer_id: str
    name: str
    play_type: str
    channel: str
    score: ScoreOut | None
    reason: str


class SuppressedOut(BaseModel):
    offer_id: str
    channel: str
    rule: str
    detail: str


class CustomerContextOut(BaseModel):
    customer_id: str
    churn_risk: float
    clv: float
    value_at_risk: float
    lifecycle_stage: str
    models: list[ModelRefOut]


class NextBestActionsOut(BaseModel):
    decision_id: str
    actions: list[RankedActionOut]
    suppressed: list[SuppressedOut]
    customer: CustomerContextOut | None
    decided_at: datetime | None


class DecisionIn(BaseModel):
    customer_id: str = Field(min_length=1, max_length=256)
    placement: str = Field("", max_length=64)
    channels: list[ChannelName] = Field(default_factory=list)
    limit: int = Field(3, ge=1, le=50)
    dispatch: bool = Field(False, description="Send the top action through governance (trigger evaluation).")
    idempotency_key: str = Field("", max_length=200, description="Required with dispatch.")
    journey_id: str = Field("", max_length=128)


class MessageIn(BaseModel):
    customer_id: str = Field(min_length=1, max_length=256)
    channel: ChannelName
    offer_id: str = Field(min_length=1, max_length=64)
    purpose: str = Field(min_length=1, max_length=64)
    idempotency_key: str = Field(min_length=1, max_length=200)
    locale: str = Field("", max_length=16)
    variables: Json | None = None


class MessageOut(BaseModel):
    decision_id: str
    status: str = Field(description="sent, queued, suppressed, failed or duplicate")
    message_id: str
    delivery_status: str
    suppressed: list[SuppressedOut]
    provider: str
    rule: str = Field("", description="The rule that suppressed the send, when it was suppressed.")
    deliver_after: datetime | None = Field(None, description="Held for quiet hours: released at this time.")


class DecisionOut(NextBestActionsOut):
    send: MessageOut | None = Field(None, description="With dispatch: what happened to the top action.")


# --- offers --------------------------------------------------------------------------------------

class TemplateIO(BaseModel):
    channel: ChannelName
    locale: str = Field("", max_length=16)
    subject: str = ""
    body: str = ""


class TemplateOut(BaseModel):
    channel: str
    locale: str
    subject: str
    body: str


class OfferIn(BaseModel):
    offer_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    play_type: PlayTypeName
    channels: list[ChannelName] = Field(default_factory=list)
    placements: list[str] = Field(default_factory=list)
    purpose: str = Field("marketing", max_length=64)
    eligibility: str = Field("", max_length=2000)
    value: float = 0.0
    cost: float = 0.0
    lever: float = 1.0
    conflict_group: str = Field("", max_length=64)
    templates: list[TemplateIO] = Field(default_factory=list)
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    active: bool = True
    prior_propensity: float = Field(0.0, ge=0.0, le=1.0)


class OfferOut(BaseModel):
    offer_id: str
    name: str
    play_type: str
    channels: list[str]
    placements: list[str]
    purpose: str
    eligibility: str
    value: float
    cost: float
    lever: float
    conflict_group: str
    templates: list[TemplateOut]
    valid_from: datetime | None
    valid_until: datetime | None
    active: bool
    version: int
    prior_propensity: float


class OffersOut(BaseModel):
    offers: list[OfferOut]


# --- audit ---------------------------------------------------------------------------------------

class AuditRecordOut(BaseModel):
    record_id: str
    seq: int
    kind: str
    customer_id: str
    decision_id: str
    message_id: str
    channel: str
    journey_id: str
    offer_id: str
    outcome: str
    actor: str
    payload: Json
    occurred_at: datetime | None
    recorded_at: datetime | None
    prev_hash: str
    hash: str


class AuditRecordsOut(BaseModel):
    records: list[AuditRecordOut]
    next_cursor: str = ""


class VerifyOut(BaseModel):
    ok: bool
    records_checked: int
    first_broken_seq: int
    detail: str
    head_hash: str


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    services: dict[str, str]


class ErrorOut(BaseModel):
    error: str
    detail: str
    field: str = ""
