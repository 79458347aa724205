"""Model CLIs: `retain clv` (BTYD fit), `retain churn` (churn evaluation) and `retain train` (everything).

The lead mounts `app` as `retain clv`, `churn_app` as `retain churn` and `train_app` as `retain train`.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from retain_scoring.data.cdnow import read_transactions, summarise
from retain_scoring.data.transactions import Format as TransactionFormat
from retain_scoring.data.transactions import load

app = typer.Typer(help="Customer lifetime value models (BG/NBD + Gamma-Gamma).", no_args_is_help=True)


@app.callback()
def clv() -> None:
    """Customer lifetime value models (BG/NBD + Gamma-Gamma)."""


class Format(StrEnum):
    cdnow = "cdnow"


def _date(value: str, option: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not YYYY-MM-DD", param_hint=option) from exc


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@app.command()
def fit(
    transactions: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Transaction file.")],
    calibration_end: Annotated[str, typer.Option(help="Last day of the calibration period, YYYY-MM-DD.")],
    fmt: Annotated[Format, typer.Option("--format", help="File layout.")] = Format.cdnow,
    holdout_end: Annotated[str | None, typer.Option(help="Last day of the holdout period, YYYY-MM-DD.")] = None,
    cohort_weeks: Annotated[
        float | None, typer.Option(help="Only customers whose first purchase is this many weeks from the start.")
    ] = None,
    save: Annotated[bool, typer.Option("--save", help="Save the fit as the newest retain-btyd model.")] = False,
    bentoml_home: Annotated[str | None, typer.Option(help="Model store home (default BENTOML_HOME).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Fit BG/NBD and Gamma-Gamma on the calibration period; with a holdout, report predicted vs actual."""
    from retain_scoring.store import ModelRegistry, fit_btyd  # heavy (BentoML): keeps `retain --help` fast
    calibration = _date(calibration_end, "--calibration-end")
    holdout = _date(holdout_end, "--holdout-end") if holdout_end else None
    try:
        summary = summarise(
            read_transactions(transactions), calibration_end=calibration, holdout_end=holdout,
            cohort_weeks=cohort_weeks,
        )
        report = fit_btyd(summary)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--transactions") from exc
    result: dict[str, object] = {
        "format": fmt.value,
        "calibration_end": calibration.isoformat(),
        "holdout_end": holdout.isoformat() if holdout else None,
        "bgnbd": report.bgnbd.as_dict(),
        "gamma_gamma": report.gamma_gamma.as_dict(),
        "metrics": {k: _finite(v) for k, v in report.metrics.items()},
    }
    if save:
        ref = ModelRegistry(bentoml_home).save_btyd(
            report.bgnbd, report.gamma_gamma, source=f"fit:{transactions.name}", metrics=report.metrics
        )
        result["model"] = {"name": ref.name, "version": ref.version}
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    b, g, m = report.bgnbd, report.gamma_gamma, report.metrics
    typer.echo(f"customers {int(m['customers'])}, repeat buyers {int(m['repeat_buyers'])}")
    typer.echo(f"BG/NBD      r={b.r:.4f} alpha={b.alpha:.4f} a={b.a:.4f} b={b.b:.4f} LL={m['log_likelihood']:.2f}")
    typer.echo(f"Gamma-Gamma p={g.p:.4f} q={g.q:.4f} gamma={g.gamma:.4f}")
    if "holdout_actual_total" in m:
        typer.echo(
            f"holdout {m['holdout_weeks']:.1f} weeks: predicted {m['holdout_predicted_total']:.1f} vs actual "
            f"{m['holdout_actual_total']:.0f} repeat transactions; correlation {m['holdout_correlation']:.3f}, "
            f"MAE {m['holdout_mae']:.3f}"
        )
    if "model" in result:
        typer.echo(f"saved {result['model']}")


churn_app = typer.Typer(help="Churn risk: a supervised model of no purchase within a horizon.", no_args_is_help=True)


@churn_app.callback()
def churn() -> None:
    """Churn risk: a supervised model of no purchase within a horizon."""


def _metrics(values: dict[str, float]) -> dict[str, float | None]:
    return {k: _finite(v) for k, v in values.items()}


@churn_app.command()
def evaluate(
    transactions: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Transaction file.")],
    cutoff: Annotated[str, typer.Option(help="Score as of this day (YYYY-MM-DD); train on data up to it.")],
    fmt: Annotated[TransactionFormat, typer.Option("--format", help="File layout.")] = TransactionFormat.cdnow,
    horizon_days: Annotated[int, typer.Option(min=1, help="Churn = no purchase within this many days.")] = 90,
    save: Annotated[bool, typer.Option("--save/--no-save", help="Save the model as the newest retain-churn.")] = True,
    bentoml_home: Annotated[str | None, typer.Option(help="Model store home (default BENTOML_HOME).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Train on data up to the cutoff, score everyone at it, compare with the next horizon_days.

    Prints ROC AUC, PR AUC, Brier score, top-decile lift and base rate for the supervised model and for
    the BG/NBD expected-purchases ranking on the same split.
    """
    from retain_scoring.store import ModelRegistry
    from retain_scoring.training import History, evaluate_churn, train_churn
    cut = _date(cutoff, "--cutoff")
    try:
        history = History.of(load(transactions, fmt))
        fit = train_churn(history, cut, horizon_days=horizon_days)
        result = evaluate_churn(history, cut, horizon_days=horizon_days, classifier=fit.classifier, bgnbd=fit.bgnbd)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--transactions") from exc
    if history.last_day < cut + timedelta(days=horizon_days):
        typer.echo(f"warning: the data ends {history.last_day}, before the horizon does", err=True)
    out: dict[str, object] = {
        "format": fmt.value,
        "cutoff": cut.isoformat(),
        "horizon_days": horizon_days,
        "training": {
            "rows": fit.training_rows,
            "snapshots": [{"cutoff": d.isoformat(), "horizon_days": w} for d, w in fit.snapshots],
            "calibrated": fit.calibrated,
            "bgnbd": fit.bgnbd.as_dict(),
        },
        "supervised": _metrics(result.supervised),
        "bgnbd_expected_purchases": _metrics(result.bgnbd),
    }
    if save:
        ref = ModelRegistry(bentoml_home).save_churn(
            fit.classifier, fit.bgnbd, horizon_days=horizon_days, source=f"churn:{transactions.name}",
            metrics={**result.supervised, **{f"bgnbd_{k}": v for k, v in result.bgnbd.items()}},
        )
        out["model"] = {"name": ref.name, "version": ref.version}
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title=f"churn within {horizon_days} days of {cut.isoformat()}")
    table.add_column("model")
    for name in ("roc_auc", "pr_auc", "brier", "top_decile_lift", "base_rate"):
        table.add_column(name, justify="right")
    for name, values in (("supervised", result.supervised), ("BG/NBD expected purchases", result.bgnbd)):
        table.add_row(name, *(f"{values[k]:.4f}" for k in ("roc_auc", "pr_auc", "brier", "top_decile_lift",
                                                             "base_rate")))
    Console().print(table)
    if "model" in out:
        typer.echo(f"saved {out['model']}")


train_app = typer.Typer(help="Train, evaluate and promote every model for a workspace.")


def _outcome_rows(outcomes: list[Any]) -> list[dict[str, object]]:
    return [
        {"kind": o.kind, "metric": o.metric, "candidate": _finite(o.candidate),
         "incumbent": None if o.incumbent is None else _finite(o.incumbent), "promoted": o.promoted,
         "model": {"name": o.ref.name, "version": o.ref.version}, "metrics": _metrics(o.metrics)}
        for o in outcomes
    ]


async def _train_from_profile(
    workspace: str, *, profile_addr: str, bentoml_home: str | None, holdout_days: int, step: Any
) -> Any:
    from retain_kit.grpcserver import channel

    from retain_scoring.app import in_process_models
    from retain_scoring.config import Settings
    from retain_scoring.profile_client import ProfileOrders
    from retain_scoring.retraining import train_workspace

    settings = Settings()
    if bentoml_home:
        settings.bentoml_home = str(Path(bentoml_home).resolve())
    models = await asyncio.to_thread(in_process_models, settings)
    profile = channel(profile_addr)
    try:
        return await train_workspace(
            workspace, data=ProfileOrders(profile, timeout=max(settings.rpc_timeout_seconds, 30.0)), models=models,
            holdout_days=holdout_days, score_horizon_days=settings.default_horizon_days, step=step,
        )
    finally:
        await profile.close()


@train_app.callback(invoke_without_command=True)
def train(
    transactions: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Train from this file instead of profile.")
    ] = None,
    fmt: Annotated[TransactionFormat, typer.Option("--format", help="File layout.")] = TransactionFormat.cdnow,
    workspace: Annotated[
        str | None, typer.Option(help="Train this workspace's own models (from profile unless --transactions).")
    ] = None,
    holdout_days: Annotated[int, typer.Option(min=1, help="Held-out window at the end of the data (days).")] = 90,
    profile_addr: Annotated[str | None, typer.Option(help="Profile address (RETAIN_PROFILE_ADDR).")] = None,
    bentoml_home: Annotated[str | None, typer.Option(help="Model store home (default BENTOML_HOME).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Fit BTYD and churn on all but the last holdout_days, promote each only if not worse than serving.

    `--workspace ws_x` alone trains ws_x's models from its orders in the profile service and stores every
    customer's new scores (with model name and version) back in the profile. `--transactions FILE` trains
    from a file instead: the workspace's models with --workspace, the deployment-wide ones without.
    """
    if transactions is None and not workspace:
        raise typer.BadParameter("give --workspace (train from profile) or --transactions", param_hint="--workspace")
    from retain_scoring.lifecycle import train_all
    from retain_scoring.store import ModelRegistry
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    stored: int | None = None
    with Progress(*columns, console=console, transient=as_json) as progress:
        total = 14 if transactions is not None else 17
        task = progress.add_task("loading", total=total)

        def step(text: str) -> None:
            progress.update(task, description=text, advance=1)

        try:
            if transactions is not None:
                outcomes = train_all(load(transactions, fmt), workspace=workspace,
                                     registry=ModelRegistry(bentoml_home), horizon_days=holdout_days,
                                     source=f"train:{transactions.name}", step=step)
            else:
                from retain_kit.config import Endpoints
                from retain_kit.errors import RetainError
                try:
                    result = asyncio.run(_train_from_profile(
                        workspace or "", profile_addr=profile_addr or Endpoints().profile_addr,
                        bentoml_home=bentoml_home, holdout_days=holdout_days, step=step,
                    ))
                except RetainError as exc:
                    raise typer.BadParameter(str(exc), param_hint="--workspace") from exc
                outcomes, stored = result.outcomes, result.stored_scores
        except ValueError as exc:
            hint = "--transactions" if transactions is not None else "--workspace"
            raise typer.BadParameter(str(exc), param_hint=hint) from exc
        progress.update(task, description="done", completed=total)
    if as_json:
        rows = _outcome_rows(outcomes)
        typer.echo(json.dumps(rows if stored is None else {"models": rows, "stored_scores": stored}, indent=2))
        return
    table = Table(title=f"retain train: {workspace or 'all workspaces'}, last {holdout_days} days held out")
    for name in ("model", "metric", "candidate", "serving", "promoted", "name", "version"):
        table.add_column(name)
    for o in outcomes:
        table.add_row(o.kind, o.metric, f"{o.candidate:.4f}", "-" if o.incumbent is None else f"{o.incumbent:.4f}",
                      "yes" if o.promoted else "no", o.ref.name, o.ref.version)
    Console().print(table)
    if stored is not None:
        typer.echo(f"stored {stored} scores in the profile")
