"""One truth of what is live: the promotion log. A training process killed between its two writes (the log's line,
then the registry's alias), or before the log's line, leaves one answer everywhere: batch forecasts, the API, the
promotion log and the next training's gate."""

import subprocess
import sys

import mlflow
import pytest
from conftest import REPO, quick_experiment
from fastapi.testclient import TestClient

from stockops.config import child_environment, load_settings

pytestmark = pytest.mark.slow

KILLED = """
import os, sys
sys.path.insert(0, {tests!r})
from conftest import quick_experiment
from stockops.config import load_settings
import stockops.tracking as tracking
import stockops.training as training
import mlflow

def die(*args, **kwargs):
    os._exit(9)  # as a SIGKILL would: no cleanup, no exception handlers

if {where!r} == "alias":
    mlflow.MlflowClient.set_registered_model_alias = die  # after the log's line, before the alias moves
else:
    tracking.append_jsonl = die  # after the version is registered, before the log's line
settings = load_settings()
training.train_ticker("IBM", {as_of!r}, quick_experiment(settings), settings, force=True)
"""


def killed_training(settings, as_of: str, where: str) -> int:
    script = KILLED.format(tests=str(REPO / "tests"), where=where, as_of=as_of)
    done = subprocess.run(
        [sys.executable, "-c", script], env=child_environment(settings), capture_output=True, timeout=300
    )
    return done.returncode


def answers(settings) -> dict:
    "What each reader says is IBM's champion, forecasting as of the last stored day (the newest champion is live then)."
    from stockops.api import create_app
    from stockops.forecast import _LOADED, forecast
    from stockops.tracking import live_champion, model_name

    _LOADED.clear()
    batch = forecast("IBM", "2013-03-01", settings, log=False)
    with TestClient(create_app(settings, refresh=False)) as client:
        api_models = client.get("/models/IBM").json()["champion_version"]
        api_predict = client.post("/predict", json={"ticker": "IBM", "as_of": "2013-03-01"}).json()["model_version"]
    registry = mlflow.MlflowClient(settings.tracking_uri)
    return {
        "log": str(live_champion(settings, "IBM")["to_version"]),
        "forecast": str(batch["model_version"].iloc[0]),
        "api /models": str(api_models),
        "api /predict": str(api_predict),
        "alias": str(registry.get_model_version_by_alias(model_name("IBM"), "champion").version),
    }


def test_a_kill_at_any_moment_of_a_promotion_leaves_one_answer(tmp_path):
    from stockops.ingest import ingest
    from stockops.tracking import promotion_log
    from stockops.training import train_ticker

    settings = load_settings(env={}).replace(data_dir=tmp_path / "data", reports_dir=tmp_path / "reports")
    ingest("sample", "IBM,^GSPC", end="2013-03-01", settings=settings)
    experiment = quick_experiment(settings)
    assert train_ticker("IBM", "2012-06-29", experiment, settings).champion_after == "1"

    # killed after the log's line, before the alias: the log says 2, so does every reader; only the alias lags
    assert killed_training(settings, "2012-12-31", "alias") == 9
    assert answers(settings) == {"log": "2", "forecast": "2", "api /models": "2", "api /predict": "2", "alias": "1"}
    third = train_ticker("IBM", "2013-01-31", experiment, settings, force=True)
    assert (third.champion_before, third.champion_after) == ("2", "3")  # the gate saw v2: "2 -> 3", v2 on record
    log = promotion_log(settings, "IBM")
    assert log[["from_version", "to_version"]].astype(str).values.tolist()[-2:] == [["1", "2"], ["2", "3"]]
    assert set(answers(settings).values()) == {"3"}  # the alias caught up

    # killed after registering v4, before the log's line: v4 was never promoted, and nobody serves it
    assert killed_training(settings, "2013-02-28", "log") == 9
    registry = mlflow.MlflowClient(settings.tracking_uri)
    assert max(int(v.version) for v in registry.search_model_versions("name = 'stockops-ibm'")) == 4
    assert set(answers(settings).values()) == {"3"}
    fifth = train_ticker("IBM", "2013-03-01", experiment, settings, force=True)
    assert (fifth.champion_before, fifth.champion_after) == ("3", "5")
    assert "4" not in set(promotion_log(settings, "IBM")["to_version"].astype(str))
