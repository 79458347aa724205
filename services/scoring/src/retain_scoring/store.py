"""The BentoML model store: BTYD models saved as JSON parameters plus metadata, loaded by tag.

A store is addressed by its BentoML home so tests and tools can use their own; the default is the
process's BENTOML_HOME (set by retain_scoring.config).
"""

from __future__ import annotations

import json
import math
import pickle
import re
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
CHURN_MODEL = "retain-churn"
PARAMS_FILE = "params.json"
CLASSIFIER_FILE = "classifier.pkl"
# Label on every model `retain train` saves: "true" when it replaced the serving version. Models saved
# without it (the bootstrap prior, `retain clv fit --save`) were put there on purpose and count as promoted.
PROMOTED = "promoted"
PRIOR_SOURCE = "prior:cdnow-fhl2005"
# Published maximum-likelihood estimates on CDNOW (Fader, Hardie & Lee 2005): the prior every workspace
# scores with until `retain clv fit --save` (or `retain train`) fits the workspace's own data.
CDNOW_BGNBD = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
CDNOW_GAMMA_GAMMA = GammaGammaParams(p=6.25, q=3.74, gamma=15.44)
CDNOW_LOG_LIKELIHOOD = -9582.4
WORKSPACE = "workspace"
# BentoML tag names: lower-case alphanumerics, '-', '_' and '.', at most 63 characters.
_TAG_NAME = re.compile(r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$")


def model_name(base: str, workspace: str | None) -> str:
    """`retain-churn` deployment-wide, `retain-churn-<workspace>` for one workspace's own models."""
    if not workspace:
        return base
    name = f"{base}-{workspace}"
    if len(name) > 63 or not _TAG_NAME.match(name):
        raise ValueError(f"workspace {workspace!r} cannot name a model (lower-case letters, digits, -, _, .)")
    return name



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
class ChurnModel:
    """A calibrated churn classifier with the BG/NBD parameters its input columns were computed with."""

    ref: ModelRef
    classifier: Any
    bgnbd: BgNbdParams
    horizon_days: int
    source: str
    created_at: datetime
    promoted: bool
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingModels:
    """The models one workspace is scored with: its own promoted ones, else the deployment-wide ones."""

    btyd: BtydModel
    churn: ChurnModel | None


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
        promoted: bool | None = None,
        workspace: str | None = None,
    ) -> ModelRef:
        params = {"bgnbd": bgnbd.as_dict(), "gamma_gamma": gamma_gamma.as_dict()}
        clean = _finite(metrics)
        headline: dict[str, Any] = {"source": source, "metrics": clean, "parameters": params}
        if "log_likelihood" in clean:
            headline["log_likelihood"] = clean["log_likelihood"]
        with bentoml.models.create(
            model_name(BTYD_MODEL, workspace),
            labels=_labels("btyd", promoted, workspace),
            metadata=headline,
            _model_store=self._store,
        ) as model:
            Path(model.path, PARAMS_FILE).write_text(json.dumps(params, indent=2), encoding="utf-8")
        return ModelRef(model.tag.name, str(model.tag.version))

    def load_btyd(self, version: str = "latest", *, workspace: str | None = None) -> BtydModel:
        """Raises bentoml.exceptions.NotFound when the store holds no such model."""
        return self._to_btyd(self._store.get(f"{model_name(BTYD_MODEL, workspace)}:{version}"))

    def list_btyd(self) -> list[BtydModel]:
        """Every BTYD model, deployment-wide and per workspace, newest first."""
        return sorted((self._to_btyd(m) for m in self._list_kind(BTYD_MODEL)), key=lambda m: m.created_at,
                      reverse=True)

    def current_btyd(self, workspace: str | None = None) -> BtydModel | None:
        """The newest BTYD model (of the workspace, when given) not turned down by `retain train`."""
        m = self._current(model_name(BTYD_MODEL, workspace))
        return self._to_btyd(m) if m is not None else None

    def serving(self, workspace: str | None = None) -> ServingModels:
        """A workspace's promoted models, each falling back to the deployment-wide one it lacks."""
        btyd = self.current_btyd(workspace) if workspace else None
        churn = self.current_churn(workspace) if workspace else None
        return ServingModels(btyd or self.ensure_btyd(), churn or self.current_churn())

    def ensure_btyd(self) -> BtydModel:
        """The serving BTYD model, bootstrapping the published CDNOW prior into an empty store."""
        current = self.current_btyd()
        if current is not None:
            return current
        ref = self.save_btyd(
            CDNOW_BGNBD,
            CDNOW_GAMMA_GAMMA,
            source=PRIOR_SOURCE,
            metrics={"log_likelihood": CDNOW_LOG_LIKELIHOOD, "customers": 2357.0, "repeat_buyers": 946.0},
        )
        return self.load_btyd(ref.version)

    def save_churn(
        self,
        classifier: Any,
        bgnbd: BgNbdParams,
        *,
        horizon_days: int,
        source: str,
        metrics: dict[str, float],
        promoted: bool | None = None,
        workspace: str | None = None,
    ) -> ModelRef:
        params = {"bgnbd": bgnbd.as_dict(), "horizon_days": horizon_days}
        metadata: dict[str, Any] = {"source": source, "metrics": _finite(metrics), "parameters": params}
        with bentoml.models.create(
            model_name(CHURN_MODEL, workspace), labels=_labels("churn", promoted, workspace), metadata=metadata,
            _model_store=self._store,
        ) as model:
            Path(model.path, PARAMS_FILE).write_text(json.dumps(params, indent=2), encoding="utf-8")
            Path(model.path, CLASSIFIER_FILE).write_bytes(pickle.dumps(classifier))
        return ModelRef(model.tag.name, str(model.tag.version))

    def load_churn(self, version: str = "latest", *, workspace: str | None = None) -> ChurnModel:
        """Raises bentoml.exceptions.NotFound when the store holds no such model."""
        return self._to_churn(self._store.get(f"{model_name(CHURN_MODEL, workspace)}:{version}"))

    def current_churn(self, workspace: str | None = None) -> ChurnModel | None:
        """The newest churn model (of the workspace, when given) not turned down by `retain train`."""
        m = self._current(model_name(CHURN_MODEL, workspace))
        return self._to_churn(m) if m is not None else None

    def list_churn(self) -> list[ChurnModel]:
        """Every churn model, deployment-wide and per workspace, newest first."""
        return sorted((self._to_churn(m) for m in self._list_kind(CHURN_MODEL)), key=lambda m: m.created_at,
                      reverse=True)

    def _list_kind(self, base: str) -> list[Any]:
        return [m for m in self._store.list() if m.tag.name == base or m.tag.name.startswith(base + "-")]

    def _list(self, name: str) -> list[Any]:
        try:
            return list(self._store.list(name))
        except bentoml.exceptions.NotFound:
            return []

    def _current(self, name: str) -> Any | None:
        serving = [m for m in self._list(name) if m.info.labels.get(PROMOTED) != "false"]
        return max(serving, key=lambda m: m.info.creation_time, default=None)

    @staticmethod
    def _to_churn(model: Any) -> ChurnModel:
        params = json.loads(Path(model.path, PARAMS_FILE).read_text(encoding="utf-8"))
        # The store is this deployment's own directory, written only by `retain churn`/`retain train`.
        classifier = pickle.loads(Path(model.path, CLASSIFIER_FILE).read_bytes())  # noqa: S301
        metadata = model.info.metadata
        created = model.info.creation_time
        return ChurnModel(
            ref=ModelRef(model.tag.name, str(model.tag.version)),
            classifier=classifier,
            bgnbd=BgNbdParams(**params["bgnbd"]),
            horizon_days=int(params["horizon_days"]),
            source=str(metadata.get("source", "")),
            created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
            promoted=model.info.labels.get(PROMOTED) != "false",
            metrics={k: float(v) for k, v in dict(metadata.get("metrics", {})).items()},
        )

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


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """NaN (e.g. a correlation without variation) is not valid JSON in the model metadata."""
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def _labels(kind: str, promoted: bool | None, workspace: str | None = None) -> dict[str, str]:
    labels = {"kind": kind}
    if promoted is not None:
        labels[PROMOTED] = "true" if promoted else "false"
    if workspace:
        labels[WORKSPACE] = workspace
    return labels


def fit_and_save_btyd(
    summary: Summary, *, registry: ModelRegistry | None = None, source: str = "fit"
) -> ModelRef:
    """Fits BG/NBD + Gamma-Gamma on a summary and saves it as the newest retain-btyd model."""
    report = fit_btyd(summary)
    return (registry or ModelRegistry()).save_btyd(
        report.bgnbd, report.gamma_gamma, source=source, metrics=report.metrics
    )
