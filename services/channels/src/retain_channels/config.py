from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from retain_kit.config import VAR_DIR, KitSettings


class Settings(KitSettings):
    model_config = SettingsConfigDict(env_prefix="RETAIN_CHANNELS_", extra="ignore")

    service_name: str = "channels"
    port: int = 50054
    var_dir: Path = VAR_DIR
    # Provider name per channel, e.g. RETAIN_CHANNELS_PROVIDERS='{"sms": "twilio"}'; unset channels use "log".
    providers: dict[str, str] = Field(default_factory=dict)
    # Provider settings per channel, validated by the provider's own pydantic model.
    provider_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    max_attempts: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 300.0
    backoff_jitter: float = 0.5
    # Retries whose backoff fits in this many seconds happen inside the Dispatch call; longer ones go
    # back to the outbox for the worker so a slow provider does not hold the caller.
    inline_retry_max_delay_seconds: float = 2.0
    # How long a claimed outbox row stays reserved before another worker may take it over.
    outbox_lease_seconds: float = 60.0
    outbox_poll_seconds: float = 2.0
    outbox_batch_size: int = 50
    # Audit payloads carry at most this much of the body (the full text stays in this service).
    audit_body_preview_chars: int = 200

    def provider_for(self, channel: str) -> str:
        return self.providers.get(channel, "log")

