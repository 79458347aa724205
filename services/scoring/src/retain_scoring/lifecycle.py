"""`retain train`: fit every model on a held-out split, compare with the serving version, promote or not.

The split holds out the last `horizon_days` of the history: models are fitted on what was known at its
start and judged on what happened in it. The serving version is judged on the same window, so promotion
compares like with like. A candidate is saved either way (labelled promoted=false when it lost) so its
metrics stay on record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from retain_scoring.data.cdnow import Transaction, summarise
from retain_scoring.store import ModelRef, ModelRegistry, evaluate, fit_btyd
from retain_scoring.training import History, evaluate_churn, train_churn

Step = Callable[[str], None]


@dataclass(frozen=True)
class Outcome:
    """One model kind's result: the candidate's and the serving version's held-out metric."""

    kind: str
    metric: str
    candidate: float
    incumbent: float | None
    promoted: bool
    ref: ModelRef
    metrics: dict[str, float] = field(default_factory=dict)


def _not_worse(candidate: float, incumbent: float | None, *, higher_is_better: bool) -> bool:
    if incumbent is None:
        return True
    return candidate >= incumbent if higher_is_better else candidate <= incumbent


def train_all(
    transactions: Sequence[Transaction],
    *,
    workspace: str | None,
    registry: ModelRegistry,
    horizon_days: int = 90,
    source: str = "train",
    step: Step | None = None,
) -> list[Outcome]:
    """Trains BTYD and churn, evaluates each on the held-out window and promotes the ones not worse.

    With a workspace the models are that workspace's own (`retain-btyd-<workspace>`, ...) and the serving
    version they must match is the workspace's, or the deployment-wide one it falls back to; without one
    they are the deployment-wide models.
    """
    if horizon_days <= 0:
        raise ValueError("horizon_days must be positive")
    history = History.of(transactions)
    end = history.last_day
    cutoff = end - timedelta(days=horizon_days)
    if cutoff <= history.first_day:
        raise ValueError("the history is shorter than the held-out window")
    note = step or (lambda _: None)
    meta = {"holdout_days": float(horizon_days)}
    tag = f"{source} ws={workspace or '*'} cutoff={cutoff.isoformat()}"
    serving = registry.serving(workspace)

    note("BTYD: fitting")
    summary = summarise(transactions, calibration_end=cutoff, holdout_end=end)
    report = fit_btyd(summary)
    # An empty store serves the published CDNOW prior: that is what a first fit has to beat.
    incumbent = evaluate(serving.btyd.bgnbd, serving.btyd.gamma_gamma, summary)["holdout_mae"]
    mae = report.metrics["holdout_mae"]
    promote = _not_worse(mae, incumbent, higher_is_better=False)
    ref = registry.save_btyd(report.bgnbd, report.gamma_gamma, source=tag, metrics={**report.metrics, **meta},
                             promoted=promote, workspace=workspace)
    outcomes = [Outcome("btyd", "holdout_mae", mae, incumbent, promote, ref, report.metrics)]

    note("churn: training")
    fit = train_churn(history, cutoff, horizon_days=horizon_days, progress=note)
    note("churn: evaluating")
    result = evaluate_churn(history, cutoff, horizon_days=horizon_days, classifier=fit.classifier, bgnbd=fit.bgnbd)
    current = serving.churn
    serving_auc: float | None = None
    if current is not None:
        serving_auc = evaluate_churn(
            history, cutoff, horizon_days=horizon_days, classifier=current.classifier, bgnbd=current.bgnbd
        ).supervised["roc_auc"]
    auc = result.supervised["roc_auc"]
    promote = _not_worse(auc, serving_auc, higher_is_better=True)
    metrics = {
        **result.supervised,
        **{f"bgnbd_{k}": v for k, v in result.bgnbd.items()},
        "training_rows": float(fit.training_rows),
        **meta,
    }
    ref = registry.save_churn(fit.classifier, fit.bgnbd, horizon_days=horizon_days, source=tag, metrics=metrics,
                              promoted=promote, workspace=workspace)
    outcomes.append(Outcome("churn", "roc_auc", auc, serving_auc, promote, ref, metrics))
    return outcomes
