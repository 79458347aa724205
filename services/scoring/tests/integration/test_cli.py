import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from retain_scoring.cli import app
from retain_scoring.store import ModelRegistry
from typer.testing import CliRunner

START = date(1997, 1, 1)
CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)


def write_cohort(path: Path, n: int = 600, seed: int = 2) -> int:
    """A full-cohort layout file simulated from BG/NBD; returns the holdout repeat-purchase days."""
    rng = np.random.default_rng(seed)
    lines = ["customer_id date cds dollars"]
    holdout = 0
    for cid in range(1, n + 1):
        first = START + timedelta(days=int(rng.integers(0, 84)))
        rate, drop = rng.gamma(0.5, 1 / 4.0), rng.beta(0.8, 2.5)
        days = {first}
        t = 0.0
        while True:
            t += rng.exponential(1 / rate) * 7
            if t > (HOLDOUT_END - first).days:
                break
            days.add(first + timedelta(days=int(t)))
            if rng.random() < drop:
                break
        for day in sorted(days):
            lines.append(f"{cid} {day:%Y%m%d} 1 {rng.gamma(4, 8):.2f}")
        holdout += sum(1 for d in days if d > CALIBRATION_END)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return holdout


def test_clv_fit_prints_fit_and_holdout_and_saves(tmp_path: Path) -> None:
    data = tmp_path / "cohort.txt"
    holdout = write_cohort(data)
    home = tmp_path / "bentoml"
    result = CliRunner().invoke(
        app,
        ["fit", "--transactions", str(data), "--format", "cdnow", "--calibration-end", "1997-09-30",
         "--holdout-end", "1998-06-30", "--save", "--bentoml-home", str(home), "--json"],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert all(v > 0 for v in out["bgnbd"].values()) and all(v > 0 for v in out["gamma_gamma"].values())
    metrics = out["metrics"]
    assert metrics["customers"] == 600 and metrics["log_likelihood"] < 0
    assert metrics["holdout_actual_total"] == holdout
    assert metrics["holdout_predicted_total"] > 0 and metrics["holdout_mae"] >= 0
    saved = ModelRegistry(home).load_btyd()
    assert saved.ref.version == out["model"]["version"] and saved.source == "fit:cohort.txt"
    assert saved.bgnbd.r == out["bgnbd"]["r"]


def test_clv_fit_names_bad_dates(tmp_path: Path) -> None:
    data = tmp_path / "cohort.txt"
    write_cohort(data, n=20)
    result = CliRunner().invoke(app, ["fit", "--transactions", str(data), "--calibration-end", "30/09/1997"])
    assert result.exit_code != 0 and "--calibration-end" in result.output
