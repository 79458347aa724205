import os
from pathlib import Path

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict
from retain_kit.config import VAR_DIR, KitSettings

# BentoML reads BENTOML_HOME once, when its model store is first used: set the default before any import.
os.environ.setdefault("BENTOML_HOME", str((VAR_DIR / "bentoml").resolve()))


class Settings(KitSettings):
    model_config = SettingsConfigDict(env_prefix="RETAIN_SCORING_", extra="ignore")

    service_name: str = "scoring"
    port: int = 50052
    # BentoML home holding the model store; empty means BENTOML_HOME (default <RETAIN_VAR_DIR>/bentoml).
    bentoml_home: str = ""
    default_horizon_days: int = 90
    clv_horizon_days: int = 365
    # Gross margin applied to expected revenue in CLV.
    margin: float = 0.3
    annual_discount_rate: float = 0.10
    offer_prior_alpha: float = 1.0
    offer_prior_beta: float = 9.0
    # Offer outcome counts are read per workspace at most this often (an outcome recorded by this process
    # shows at once, another replica's within this many seconds); 0 reads them on every request.
    offer_counts_cache_seconds: float = 2.0
    # Scheduled retraining (`retain train` per workspace); 0 turns it off.
    retrain_interval_hours: float = 0.0
    # Retrained on every round, plus every workspace scored within retrain_recent_hours.
    retrain_workspaces: list[str] = []
    retrain_recent_hours: float = 24.0
    # The held-out window a new model must not be worse on, and the horizon of the scores written back.
    retrain_holdout_days: int = 90

    @model_validator(mode="after")
    def _bentoml_home(self) -> "Settings":
        if not self.bentoml_home:
            self.bentoml_home = os.environ["BENTOML_HOME"]
        self.bentoml_home = str(Path(self.bentoml_home).resolve())
        return self
