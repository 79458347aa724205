"""`retain clv ...`: fit BTYD models on a transaction file, report quality, optionally save to the store."""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from retain_scoring.data.cdnow import read_transactions, summarise
from retain_scoring.store import ModelRegistry, fit_btyd

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
