"""`bentoml serve` over the ScoringModels class: each batchable endpoint answers like the in-process call.

Starting the server takes 20-30 s here, so this runs only with RETAIN_BENTO_SERVE=1.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from retain_scoring.bench import _free_port, _models, synthetic_inputs
from retain_scoring.domain.scores import FEATURE_COLUMNS, SCORE_COLUMNS

pytestmark = pytest.mark.skipif(os.environ.get("RETAIN_BENTO_SERVE") != "1", reason="set RETAIN_BENTO_SERVE=1")


def test_bentoml_serve_exposes_churn_clv_and_nbo(tmp_path: Path) -> None:
    models = _models(tmp_path)
    port = _free_port()
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "RETAIN_SCORING_BENTOML_HOME": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "retain_scoring.bento_service:ScoringModels",
                               "--port", str(port), "--host", "127.0.0.1"], env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and server.poll() is None, "bentoml serve did not start"
                time.sleep(0.5)
            rows = synthetic_inputs(3, seed=9)
            expected = models.score(rows)
            churn = client.post("/churn_risk", json={"features": rows.tolist()}).json()
            assert np.allclose(churn, expected[:, SCORE_COLUMNS.index("churn_risk")])
            clv = client.post("/clv", json={"features": rows[:, : len(FEATURE_COLUMNS)].tolist()}).json()
            assert np.allclose(clv, expected[:, SCORE_COLUMNS.index("clv")])
            # 100 shown, 10 accepted, prior Beta(1, 9): posterior mean 11/110.
            nbo = client.post("/nbo", json={"counts": [[100, 10, 0, 0, 1, 9], [0, 0, 0, 0, 1, 1]]}).json()
            assert nbo[0][0] == pytest.approx(0.1) and nbo[1][0] == pytest.approx(0.5)
            assert all(0.0 <= draw <= 1.0 for _, draw in nbo)
            info = client.post("/model", json={}).json()
            assert info["churn_model"]["version"] == models.churn.ref.version  # type: ignore[union-attr]
    finally:
        server.terminate()
        server.wait(timeout=30)
