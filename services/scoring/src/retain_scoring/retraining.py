"""Training a workspace from its profile data, writing its scores back, and doing both on a schedule.

`retain train --workspace` and the scheduled retrainer run the same `train_workspace`: export the
workspace's orders from profile, `train_all` (promote only if not worse on the held-out window), then
score every customer with the workspace's serving models and store the scores, with their model refs, in
the profile. Batch scores use order-derived features as of now (what the export carries); live
ScoreCustomers additionally sees profile's support and feedback signals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from retain_scoring.bento_service import ScoringModels
from retain_scoring.domain.btyd import DAYS_PER_WEEK
from retain_scoring.domain.churn import input_row
from retain_scoring.lifecycle import Outcome, Step, train_all
from retain_scoring.ports import ScoreRecord, TrainingData
from retain_scoring.service import CustomerScore, scores_of
from retain_scoring.training import History

log = logging.getLogger(__name__)
STORED_SCORES = ("churn_risk", "value_at_risk", "p_alive", "expected_purchases", "expected_value", "clv")
# Values that come from the churn model when one serves; the rest are the BTYD model's.
CHURN_SCORES = ("churn_risk", "value_at_risk")


@dataclass(frozen=True)
class WorkspaceTraining:
    workspace: str
    orders: int
    outcomes: list[Outcome]
    stored_scores: int


def score_history(
    models: ScoringModels, workspace: str, history: History, *, now: datetime, horizon_days: int
) -> list[CustomerScore]:
    """Every customer in `history`, scored as of `now` with the workspace's serving models."""
    customers = history.customers_at(now.date())
    features = history.features_at(customers, now.date())
    stamp = now.timestamp()
    rows = np.array([input_row(f, now=stamp, horizon_weeks=horizon_days / DAYS_PER_WEEK) for f in features],
                    dtype=np.float64)
    serving = models.serving(workspace)
    return scores_of(customers, models.score_with(rows, serving), serving)


def records(scores: Sequence[CustomerScore], *, scored_at: datetime, horizon_days: int) -> list[ScoreRecord]:
    return [
        ScoreRecord(s.customer_id, name, s.values[name], s.churn_model if name in CHURN_SCORES else s.model,
                    scored_at, horizon_days)
        for s in scores
        for name in STORED_SCORES
    ]


async def train_workspace(
    workspace: str,
    *,
    data: TrainingData,
    models: ScoringModels,
    holdout_days: int,
    score_horizon_days: int,
    step: Step | None = None,
) -> WorkspaceTraining:
    """Export, train and promote, then batch-score the workspace and store the scores in the profile."""
    note = step or (lambda _: None)
    note(f"{workspace}: exporting orders")
    transactions = await data.orders(workspace)
    if not transactions:
        raise ValueError(f"workspace {workspace} has no orders")
    outcomes = await asyncio.to_thread(
        train_all, transactions, workspace=workspace, registry=models.registry, horizon_days=holdout_days,
        source="train:profile", step=note,
    )
    models.forget(workspace)
    note(f"{workspace}: scoring customers")
    now = datetime.now(UTC)
    history = History.of(transactions)
    scores = await asyncio.to_thread(score_history, models, workspace, history, now=now,
                                     horizon_days=score_horizon_days)
    note(f"{workspace}: storing {len(scores)} customers' scores")
    stored = await data.store(workspace, records(scores, scored_at=now, horizon_days=score_horizon_days))
    return WorkspaceTraining(workspace, len(transactions), outcomes, stored)


class Retrainer:
    """Retrains workspaces every `interval_seconds`: the configured ones plus those scored recently."""

    def __init__(
        self,
        train: Callable[[str], Awaitable[WorkspaceTraining]],
        *,
        interval_seconds: float,
        workspaces: Sequence[str] = (),
        recent: Callable[[], Sequence[str]] = lambda: (),
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        self.train = train
        self.interval_seconds = interval_seconds
        self.workspaces = list(workspaces)
        self.recent = recent
        self.last_run: list[WorkspaceTraining] = []
        self.rounds = 0

    def due(self) -> list[str]:
        return list(dict.fromkeys([*self.workspaces, *self.recent()]))

    async def run_once(self) -> list[WorkspaceTraining]:
        done = []
        for workspace in self.due():
            try:
                done.append(await self.train(workspace))
            except asyncio.CancelledError:
                raise
            except Exception:
                # One workspace's bad data or a profile outage must not stop the others or the schedule.
                log.exception("retraining %s failed", workspace)
        self.last_run = done
        self.rounds += 1
        return done

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            await self.run_once()
