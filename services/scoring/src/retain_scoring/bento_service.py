"""The BentoML service over the models in the store.

The gRPC servicer builds it in-process (`ScoringModels.inner(registry=..., policy=...)`, or
`ScoringModels()` for the defaults); `bentoml serve retain_scoring.bento_service:ScoringModels` serves the
same class over HTTP with adaptive batching.
"""

from __future__ import annotations

import bentoml
import numpy as np
import numpy.typing as npt

from retain_scoring.config import Settings
from retain_scoring.domain.btyd import DAYS_PER_WEEK
from retain_scoring.domain.scores import FEATURE_COLUMNS, SCORE_COLUMNS, ValuePolicy, score_matrix
from retain_scoring.store import BtydModel, ModelRegistry


def policy_from(settings: Settings) -> ValuePolicy:
    return ValuePolicy(
        clv_horizon_weeks=settings.clv_horizon_days / DAYS_PER_WEEK,
        margin=settings.margin,
        annual_discount_rate=settings.annual_discount_rate,
    )


@bentoml.service(name="retain-scoring", traffic={"timeout": 10})
class ScoringModels:
    """BTYD scores (P(alive), expected purchases and value, CLV, value at risk) from feature rows."""

    def __init__(self, registry: ModelRegistry | None = None, policy: ValuePolicy | None = None) -> None:
        if registry is None or policy is None:
            settings = Settings()
            registry = registry or ModelRegistry(settings.bentoml_home)
            policy = policy or policy_from(settings)
        self.registry = registry
        self.policy = policy
        self.btyd: BtydModel = registry.ensure_btyd()

    def reload(self) -> BtydModel:
        """Picks up a model saved since start (e.g. by `retain clv fit --save`)."""
        self.btyd = self.registry.ensure_btyd()
        return self.btyd

    @bentoml.api(batchable=True, batch_dim=(0, 0), max_batch_size=4096, max_latency_ms=20)  # type: ignore[untyped-decorator]
    def score(self, features: np.ndarray) -> np.ndarray:
        """Rows of (x, t_x, T, monetary, horizon_weeks) in weeks -> rows of SCORE_COLUMNS."""
        matrix: npt.NDArray[np.float64] = score_matrix(
            self.btyd.bgnbd, self.btyd.gamma_gamma, features, policy=self.policy
        )
        return matrix

    @bentoml.api  # type: ignore[untyped-decorator]
    def model(self) -> dict[str, object]:
        """The model behind the scores and the column layouts of `score`."""
        return {
            "name": self.btyd.ref.name,
            "version": self.btyd.ref.version,
            "source": self.btyd.source,
            "parameters": self.btyd.parameters,
            "feature_columns": list(FEATURE_COLUMNS),
            "score_columns": list(SCORE_COLUMNS),
        }


def in_process(registry: ModelRegistry, policy: ValuePolicy) -> ScoringModels:
    """The BentoML service class constructed directly, for in-process calls without an HTTP hop."""
    cls: type[ScoringModels] = ScoringModels.inner  # type: ignore[attr-defined]
    return cls(registry=registry, policy=policy)
