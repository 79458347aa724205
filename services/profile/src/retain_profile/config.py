from pydantic_settings import SettingsConfigDict
from retain_kit.config import KitSettings


class Settings(KitSettings):
    model_config = SettingsConfigDict(env_prefix="RETAIN_PROFILE_", extra="ignore")

    service_name: str = "profile"
    port: int = 50051
    # Approximate cap on each workspace's event stream (XADD MAXLEN ~).
    stream_maxlen: int = 100_000
    # How often the background task retries events Redis did not take.
    republish_interval_seconds: float = 5.0
    default_time_zone: str = "Asia/Bangkok"
    default_locale: str = "th"
    # Country calling code assumed for local numbers without one (Thailand).
    default_country_code: str = "66"
