from pydantic import Field
from pydantic_settings import SettingsConfigDict
from retain_kit.config import KitSettings


class Settings(KitSettings):
    model_config = SettingsConfigDict(env_prefix="RETAIN_GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    port: int = 8080
    # Requests per key per window; 0 disables the limit even when Redis is configured.
    rate_limit: int = 6000
    rate_window_seconds: int = 60
    # A revoked key keeps working on a replica for at most this long.
    auth_cache_ttl_seconds: float = 5.0
    auth_cache_size: int = 10_000
    health_timeout_seconds: float = 0.5
    max_batch_items: int = 500
    max_batch_bytes: int = 500_000
    # Seconds a client should wait when a downstream service is unavailable or the gateway is overloaded.
    retry_after_seconds: int = 1
    # Admission control (admission.py), per process: requests served at once in the default pool and in the
    # ingest pool (/v1/track, /v1/page, /v1/screen, /v1/identify, /v1/alias, /v1/batch); 0: no limit. A
    # request finding its pool full waits at most admission_wait_ms for a slot, then gets 503 overloaded.
    max_in_flight: int = Field(default=64, ge=0)
    ingest_max_in_flight: int = Field(default=32, ge=0)
    admission_wait_ms: int = Field(default=100, ge=0)
    # Provider webhooks (signature-verified, no API key), see routes/webhooks.py. JSON, e.g.
    # {"twilio": {"<AccountSid>": {"workspace_id": "ws_1", "auth_token": "..."}},
    #  "line": {"<bot user id (destination)>": {"workspace_id": "ws_1", "channel_secret": "..."}}}
    webhook_secrets: dict[str, dict[str, dict[str, str]]] = Field(default_factory=dict)
    # Public base URL the providers call (Twilio signs the exact URL); empty: the URL the request reached.
    webhook_public_url: str = ""
