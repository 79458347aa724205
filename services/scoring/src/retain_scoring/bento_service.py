"""The BentoML service over the models in the store.

The gRPC servicer builds it in-process (`ScoringModels.inner(registry=..., policy=...)`, or
`ScoringModels()` for the defaults); `bentoml serve retain_scoring.bento_service:ScoringModels` serves the
same class over HTTP with adaptive batching: `score` (every customer score), `churn`, `clv` and `nbo`.
The HTTP endpoints score with the deployment-wide models; the gRPC path picks each workspace's own
(`serving`). See services/scoring/README.md for why the suite calls the class in-process.
"""

from __future__ import annotations

import time

import bentoml
import numpy as np
import numpy.typing as npt

from retain_scoring.config import Settings
from retain_scoring.domain.btyd import DAYS_PER_WEEK
from retain_scoring.domain.churn import INPUT_COLUMNS, churn_probability, model_matrix
from retain_scoring.domain.offers import OFFER_INPUT_COLUMNS, OFFER_SCORE_COLUMNS, offer_matrix
from retain_scoring.domain.scores import FEATURE_COLUMNS, SCORE_COLUMNS, ValuePolicy, score_matrix
from retain_scoring.store import BtydModel, ChurnModel, ModelRegistry, ServingModels

Array = npt.NDArray[np.float64]
BATCHING = {"batchable": True, "batch_dim": (0, 0), "max_batch_size": 4096, "max_latency_ms": 20}


def policy_from(settings: Settings) -> ValuePolicy:
    return ValuePolicy(
        clv_horizon_weeks=settings.clv_horizon_days / DAYS_PER_WEEK,
        margin=settings.margin,
        annual_discount_rate=settings.annual_discount_rate,
    )


@bentoml.service(name="retain-scoring", traffic={"timeout": 10})
class ScoringModels:
    """Customer scores from feature rows: BTYD (P(alive), purchases, value, CLV) and the churn model's risk."""

    def __init__(
        self,
        registry: ModelRegistry | None = None,
        policy: ValuePolicy | None = None,
        *,
        refresh_seconds: float = 60.0,
    ) -> None:
        if registry is None or policy is None:
            settings = Settings()
            registry = registry or ModelRegistry(settings.bentoml_home)
            policy = policy or policy_from(settings)
        self.registry = registry
        self.policy = policy
        self.refresh_seconds = refresh_seconds
        self.btyd: BtydModel = registry.ensure_btyd()
        self.churn: ChurnModel | None = registry.current_churn()
        self.rng = np.random.default_rng()
        # workspace -> (monotonic time looked up, its serving models)
        self._serving: dict[str, tuple[float, ServingModels]] = {}

    def reload(self) -> BtydModel:
        """Picks up models saved since start (`retain clv fit --save`, `retain train`, ...)."""
        self.btyd = self.registry.ensure_btyd()
        self.churn = self.registry.current_churn()
        self._serving.clear()
        return self.btyd

    def cached(self, workspace: str) -> ServingModels | None:
        """The workspace's models looked up within refresh_seconds, else None (look them up with `serving`)."""
        hit = self._serving.get(workspace)
        if hit is None or time.monotonic() - hit[0] > self.refresh_seconds:
            return None
        return hit[1]

    def serving(self, workspace: str) -> ServingModels:
        """The workspace's promoted models (deployment-wide ones where it has none): store I/O, call off-loop."""
        try:
            models = self.registry.serving(workspace)
        except ValueError:
            # A workspace id that cannot name a model never has models of its own.
            models = self.registry.serving(None)
        self._serving[workspace] = (time.monotonic(), models)
        return models

    def forget(self, workspace: str) -> None:
        """After `retain train` promoted models for the workspace: the next request looks them up again."""
        self._serving.pop(workspace, None)

    def score_with(self, features: npt.ArrayLike, models: ServingModels) -> Array:
        """Rows of INPUT_COLUMNS (or just FEATURE_COLUMNS, BTYD only) -> rows of SCORE_COLUMNS.

        With a churn model and full rows, churn risk is its probability of no purchase within each row's
        horizon; otherwise 1 - P(alive).
        """
        table = np.asarray(features, dtype=np.float64)
        table = table.reshape(-1, table.shape[-1] if table.ndim > 1 else len(FEATURE_COLUMNS))
        churn = None
        if models.churn is not None and table.shape[1] == len(INPUT_COLUMNS):
            churn = churn_probability(models.churn.classifier, model_matrix(table, models.churn.bgnbd))
        matrix: Array = score_matrix(
            models.btyd.bgnbd, models.btyd.gamma_gamma, table[:, : len(FEATURE_COLUMNS)], policy=self.policy,
            churn=churn,
        )
        return matrix

    @bentoml.api(**BATCHING)  # type: ignore[untyped-decorator]
    def score(self, features: np.ndarray) -> np.ndarray:
        """Rows of INPUT_COLUMNS (or FEATURE_COLUMNS) -> rows of SCORE_COLUMNS, deployment-wide models."""
        return self.score_with(features, ServingModels(self.btyd, self.churn))

    @bentoml.api(**BATCHING)  # type: ignore[untyped-decorator]
    def churn_risk(self, features: np.ndarray) -> np.ndarray:
        """Rows of INPUT_COLUMNS -> churn risk per row (the churn model's, else 1 - P(alive))."""
        scores = self.score_with(features, ServingModels(self.btyd, self.churn))
        result: Array = scores[:, SCORE_COLUMNS.index("churn_risk")]
        return result

    @bentoml.api(**BATCHING)  # type: ignore[untyped-decorator]
    def clv(self, features: np.ndarray) -> np.ndarray:
        """Rows of FEATURE_COLUMNS (or INPUT_COLUMNS) -> CLV per row under the service's value policy."""
        scores = self.score_with(features, ServingModels(self.btyd, None))
        result: Array = scores[:, SCORE_COLUMNS.index("clv")]
        return result

    @bentoml.api(**BATCHING)  # type: ignore[untyped-decorator]
    def nbo(self, counts: np.ndarray) -> np.ndarray:
        """Rows of OFFER_INPUT_COLUMNS (one per customer x offer) -> rows of OFFER_SCORE_COLUMNS."""
        return offer_matrix(counts, self.rng)

    @bentoml.api  # type: ignore[untyped-decorator]
    def model(self) -> dict[str, object]:
        """The model behind the scores and the column layouts of the endpoints."""
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
            "offer_columns": list(OFFER_INPUT_COLUMNS),
            "offer_score_columns": list(OFFER_SCORE_COLUMNS),
        }


def in_process(registry: ModelRegistry, policy: ValuePolicy, *, refresh_seconds: float = 60.0) -> ScoringModels:
    """The BentoML service class constructed directly, for in-process calls without an HTTP hop."""
    cls: type[ScoringModels] = ScoringModels.inner  # type: ignore[attr-defined]
    return cls(registry=registry, policy=policy, refresh_seconds=refresh_seconds)
