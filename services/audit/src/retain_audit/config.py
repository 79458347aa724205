from pydantic_settings import SettingsConfigDict
from retain_kit.config import KitSettings


class Settings(KitSettings):
    model_config = SettingsConfigDict(env_prefix="RETAIN_AUDIT_", extra="ignore")

    service_name: str = "audit"
    port: int = 50055
    # Ed25519 private key (PEM, or base64 of the 32 raw bytes). Empty: read or create signing_key_path.
    signing_key: str = ""
    signing_key_path: str = ""
    # Base64 of 32 bytes wrapping every customer data key. Empty: read or create master_key_path.
    master_key: str = ""
    master_key_path: str = ""
    # A signed checkpoint every N records of a workspace (0: never by count) ...
    checkpoint_every: int = 1000
    # ... and, for workspaces with unsigned records, every this many seconds (0: no timer).
    checkpoint_interval_seconds: float = 300.0
