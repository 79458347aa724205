"""The BentoML model store: BTYD models saved as JSON parameters plus metadata, loaded by tag.

A store is addressed by its BentoML home so tests and tools can use their own; the default is the
process's BENTOML_HOME (set by retain_scoring.config).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from bentoml._internal.models.model import ModelStore

from retain_scoring.config import Settings
from retain_scoring.data.cdnow import Summary
from retain_scoring.domain.btyd import (
    BgNbdParams,
    GammaGammaParams,
    bgnbd_log_likelihood,
    conditional_expected_transactions,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
)

BTYD_MODEL = "retain-btyd"
PARAMS_FILE = "params.json"
PRIOR_SOURCE = "prior:cdnow-fhl2005"
# Published maximum-likelihood estimates on CDNOW (Fader, Hardie & Lee 2005): the prior every workspace
# scores with until `retain clv fit --save` (or `retain train`) fits the workspace's own data.
CDNOW_BGNBD = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
CDNOW_GAMMA_GAMMA = GammaGammaParams(p=6.25, q=3.74, gamma=15.44)
CDNOW_LOG_LIKELIHOOD = -9582.4


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str


@dataclass(frozen=True)
class BtydModel:
    """A loaded BG/NBD + Gamma-Gamma model with where it came from."""

    ref: ModelRef
    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams
    source: str
    created_at: datetime
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def parameters(self) -> dict[str, float]:
        return {
            **{f"bgnbd.{k}": v for k, v in self.bgnbd.as_dict().items()},
            **{f"gamma_gamma.{k}": v for k, v in self.gamma_gamma.as_dict().items()},
        }


@dataclass(frozen=True)
class FitReport:
    """A fit's parameters and quality, with holdout accuracy when the summary carries a holdout."""

    bgnbd: BgNbdParams
    gamma_gamma: GammaGammaParams
    metrics: dict[str, float]


def evaluate(bgnbd: BgNbdParams, gamma_gamma: GammaGammaParams, summary: Summary) -> dict[str, float]:
    """Log-likelihoods on the calibration data and, with a holdout, predicted vs actual repeat purchases."""
    repeat = (summary.x > 0) & (summary.monetary > 0)
    metrics = {
        "log_likelihood": bgnbd_log_likelihood(bgnbd, summary.x, summary.t_x, summary.T),
        "gamma_gamma_log_likelihood": gamma_gamma_log_likelihood(
            gamma_gamma, summary.x[repeat], summary.monetary[repeat]
        ),
        "customers": float(len(summary)),
        "repeat_buyers": float(repeat.sum()),
    }
    if summary.holdout_x is not None:
        predicted = conditional_expected_transactions(
            bgnbd, summary.holdout_weeks, summary.x, summary.t_x, summary.T
        )
        actual = summary.holdout_x
        corr = float(np.corrcoef(predicted, actual)[0, 1]) if np.std(actual) > 0 else float("nan")
        metrics.update(
            holdout_weeks=summary.holdout_weeks,
            holdout_predicted_total=float(predicted.sum()),
            holdout_actual_total=float(actual.sum()),
            holdout_correlation=corr,
            holdout_mae=float(np.mean(np.abs(predicted - actual))),
        )
    return metrics


def fit_btyd(summary: Summary) -> FitReport:
    """BG/NBD on every customer, Gamma-Gamma on repeat buyers' mean repeat spend."""
    bgnbd = fit_bgnbd(summary.x, summary.t_x, summary.T)
    gamma_gamma = fit_gamma_gamma(summary.x, summary.monetary)
    return FitReport(bgnbd.params, gamma_gamma.params, evaluate(bgnbd.params, gamma_gamma.params, summary))


class ModelRegistry:
    """BTYD models in one BentoML model store."""

    def __init__(self, bentoml_home: str | Path | None = None) -> None:
        home = Path(bentoml_home) if bentoml_home else Path(Settings().bentoml_home)
        self.path = home / "models"
        self.path.mkdir(parents=True, exist_ok=True)
        self._store = ModelStore(str(self.path))

    def save_btyd(
        self,
        bgnbd: BgNbdParams,
        gamma_gamma: GammaGammaParams,
        *,
        source: str,
        metrics: dict[str, float],
    ) -> ModelRef:
        params = {"bgnbd": bgnbd.as_dict(), "gamma_gamma": gamma_gamma.as_dict()}
        # NaN (a holdout without variation has no correlation) is not valid JSON in the model metadata.
        clean = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        headline: dict[str, Any] = {"source": source, "metrics": clean, "parameters": params}
        if "log_likelihood" in clean:
            headline["log_likelihood"] = clean["log_likelihood"]
        with bentoml.models.create(
            BTYD_MODEL,
            labels={"kind": "btyd"},
            metadata=headline,
            _model_store=self._store,
        ) as model:
            Path(model.path, PARAMS_FILE).write_text(json.dumps(params, indent=2), encoding="utf-8")
        return ModelRef(model.tag.name, str(model.tag.version))

    def load_btyd(self, version: str = "latest") -> BtydModel:
        """Raises bentoml.exceptions.NotFound when the store holds no such model."""
        return self._to_btyd(self._store.get(f"{BTYD_MODEL}:{version}"))

    def list_btyd(self) -> list[BtydModel]:
        try:
            models = self._store.list(BTYD_MODEL)
        except bentoml.exceptions.NotFound:
            return []
        return sorted((self._to_btyd(m) for m in models), key=lambda m: m.created_at, reverse=True)

    def ensure_btyd(self) -> BtydModel:
        """The latest BTYD model, bootstrapping the published CDNOW prior into an empty store."""
        try:
            return self.load_btyd()
        except bentoml.exceptions.NotFound:
            self.save_btyd(
                CDNOW_BGNBD,
                CDNOW_GAMMA_GAMMA,
                source=PRIOR_SOURCE,
                metrics={"log_likelihood": CDNOW_LOG_LIKELIHOOD, "customers": 2357.0, "repeat_buyers": 946.0},
            )
            return self.load_btyd()

    @staticmethod
    def _to_btyd(model: Any) -> BtydModel:
        params = json.loads(Path(model.path, PARAMS_FILE).read_text(encoding="utf-8"))
        metadata = model.info.metadata
        created = model.info.creation_time
        return BtydModel(
            ref=ModelRef(model.tag.name, str(model.tag.version)),
            bgnbd=BgNbdParams(**params["bgnbd"]),
            gamma_gamma=GammaGammaParams(**params["gamma_gamma"]),
            source=str(metadata.get("source", "")),
            created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
            metrics={k: float(v) for k, v in dict(metadata.get("metrics", {})).items()},
        )


def fit_and_save_btyd(
    summary: Summary, *, registry: ModelRegistry | None = None, source: str = "fit"
) -> ModelRef:
    """Fits BG/NBD + Gamma-Gamma on a summary and saves it as the newest retain-btyd model."""
    report = fit_btyd(summary)
    return (registry or ModelRegistry()).save_btyd(
        report.bgnbd, report.gamma_gamma, source=source, metrics=report.metrics
    )
