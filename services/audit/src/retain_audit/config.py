from pydantic_settings import SettingsConfigDict
from retain_kit.config import KitSettings


class Settings(KitSettings):
    model_config = SettingsConfigDict(env_prefix="RETAIN_AUDIT_", extra="ignore")

    service_name: str = "audit"
    port: int = 50055
