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
from retain_scoring.domain.churn import INPUT_COLUMNS, churn_probability, model_matrix
from retain_scoring.domain.scores import FEATURE_COLUMNS, SCORE_COLUMNS, ValuePolicy, score_matrix
from retain_scoring.store import BtydModel, ChurnModel, ModelRegistry


def policy_from(settings: Settings) -> ValuePolicy:
    return ValuePolicy(
        clv_horizon_weeks=settings.clv_horizon_days / DAYS_PER_WEEK,
        margin=settings.margin,
        annual_discount_rate=settings.annual_discount_rate,
    )


@bentoml.service(name="retain-scoring", traffic={"timeout": 10})
class ScoringModels:
    """Customer scores from feature rows: BTYD (P(alive), purchases, value, CLV) and the churn model's risk."""

    def __init__(self, registry: ModelRegistry | None = None, policy: ValuePolicy | None = None) -> None:
        if registry is None or policy is None:
            settings = Settings()
            registry = registry or ModelRegistry(settings.bentoml_home)
            policy = policy or policy_from(settings)
        self.registry = registry
        self.policy = policy
        self.btyd: BtydModel = registry.ensure_btyd()
        self.churn: ChurnModel | None = registry.current_churn()

    def reload(self) -> BtydModel:
        """Picks up models saved since start (`retain clv fit --save`, `retain churn evaluate --save`, ...)."""
        self.btyd = self.registry.ensure_btyd()
        self.churn = self.registry.current_churn()
        return self.btyd

    @bentoml.api(batchable=True, batch_dim=(0, 0), max_batch_size=4096, max_latency_ms=20)  # type: ignore[untyped-decorator]
    def score(self, features: np.ndarray) -> np.ndarray:
        """Rows of INPUT_COLUMNS (or just FEATURE_COLUMNS, BTYD only) -> rows of SCORE_COLUMNS.

        With a churn model in the store and full rows, churn risk is its probability of no purchase within
        each row's horizon; otherwise 1 - P(alive).
        """
        table = np.asarray(features, dtype=np.float64)
        table = table.reshape(-1, table.shape[-1] if table.ndim > 1 else len(FEATURE_COLUMNS))
        churn = None
        if self.churn is not None and table.shape[1] == len(INPUT_COLUMNS):
            churn = churn_probability(self.churn.classifier, model_matrix(table, self.churn.bgnbd))
        matrix: npt.NDArray[np.float64] = score_matrix(
            self.btyd.bgnbd, self.btyd.gamma_gamma, table[:, : len(FEATURE_COLUMNS)], policy=self.policy,
            churn=churn,
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
            "churn_model": None if self.churn is None else {
                "name": self.churn.ref.name, "version": self.churn.ref.version, "metrics": self.churn.metrics,
            },
            "feature_columns": list(INPUT_COLUMNS),
            "score_columns": list(SCORE_COLUMNS),
        }


def in_process(registry: ModelRegistry, policy: ValuePolicy) -> ScoringModels:
    """The BentoML service class constructed directly, for in-process calls without an HTTP hop."""
    cls: type[ScoringModels] = ScoringModels.inner  # type: ignore[attr-defined]
    return cls(registry=registry, policy=policy)
