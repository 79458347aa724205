from pydantic_settings import SettingsConfigDict
from retain_kit.config import KitSettings


class Settings(KitSettings):
    model_config = SettingsConfigDict(env_prefix="RETAIN_DECISION_", extra="ignore")

    service_name: str = "decision"
    port: int = 50053
    # Base contact cost per channel (baht-equivalent goodwill), grown by the customer's message load.
    contact_cost_in_app: float = 0.0
    contact_cost_email: float = 0.5
    contact_cost_push: float = 1.0
    contact_cost_line: float = 1.5
    contact_cost_sms: float = 3.0
    default_limit: int = 3
    max_limit: int = 20
    # Used when neither the request nor the profile carries a locale.
    default_locale: str = "th"
    # Governance defaults for a workspace that never set a policy (SetPolicy replaces them).
    default_time_zone: str = "Asia/Bangkok"
    contact_slot_minutes: int = 60
    arbitration_ms: int = 80
    # How often messages held for quiet hours are checked for release.
    release_interval_seconds: float = 5.0
    # Seed the demo catalogue into a workspace that has no offers yet (see domain/catalogue.py).
    seed_demo_catalogue: bool = True
    # Count caps in process memory when no Redis is configured (single-process deployments and tests only).
    single_process_caps: bool = False
    # Offers and the policy are read on every decision: cache them this long per replica (0 = always read).
    config_cache_seconds: float = 2.0

    def contact_costs(self) -> dict[str, float]:
        return {
            "in_app": self.contact_cost_in_app,
            "email": self.contact_cost_email,
            "push": self.contact_cost_push,
            "line": self.contact_cost_line,
            "sms": self.contact_cost_sms,
        }
