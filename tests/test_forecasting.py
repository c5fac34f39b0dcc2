"""Training and forecasting as a user runs them: `stockops train`, `forecast` and `models` on the bundled data,
with the real MLflow registry (SQLite in the workspace) and the prediction and promotion logs."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from stockops.features import make_features


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A workspace with IBM and FB trained on the baseline experiment (FB: 196 days, too short for candidates)."
    import os

    from conftest import REPO, Workspace, sample_settings

    root = tmp_path_factory.mktemp("trained")
    sample_settings(root)
    (root / "experiments").mkdir()
    (root / "experiments" / "baseline.toml").write_text((REPO / "experiments" / "baseline.toml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKOPS_")} | {"COLUMNS": "200", "NO_COLOR": "1"}
    workspace = Workspace(root, env)
    assert workspace.run("ingest", "--tickers", "IBM,FB,^GSPC").returncode == 0
    # the fit_workers setting from the environment (it was once refused as an unknown setting)
    result = workspace.run("train", "--tickers", "IBM,FB", timeout=300, extra_env={"STOCKOPS_FIT_WORKERS": "2"})
    assert result.returncode == 0, result.stderr
    workspace.train_output = result.stdout
    return workspace


def client(workspace):
    uri = f"sqlite:///{workspace.data / 'mlflow.db'}"
    return mlflow.MlflowClient(uri, registry_uri=uri)  # explicit: other tests in this process set mlflow's globals


@pytest.mark.slow
def test_train_registers_a_champion_per_ticker_and_says_when_the_random_walk_wins(trained):
    registry = client(trained)
    assert sorted(m.name for m in registry.search_registered_models()) == ["stockops-fb", "stockops-ibm"]
    for name in ["stockops-ibm", "stockops-fb"]:
        champion = registry.get_model_version_by_alias(name, "champion")
        assert str(champion.version) == "1"
        families = json.loads(champion.tags["families"])
        assert set(families) == {"1", "5", "20"}
    assert (
        "No candidate was evaluated for FB: naive is the champion by default, not by evidence." in trained.train_output
    )
    assert "The random walk wins for FB" not in trained.train_output  # no contest took place
    assert (
        "note: no candidate was evaluated: " in trained.train_output
        and "of 196 days have every feature" in trained.train_output
    )
    for family in ["naive", "drift", "ridge", "hgb", "rf"]:  # every candidate and naive, side by side
        assert f"│ {family}" in trained.train_output.split("IBM as of")[1].split("FB as of")[0]  # either order
    run = registry.get_run(registry.get_model_version_by_alias("stockops-ibm", "champion").run_id)
    assert run.data.metrics["naive.h1.mase"] == 1.0
    assert run.data.params["splits.step"] == "252"
    artifacts = {a.path for a in registry.list_artifacts(run.info.run_id, "evidence")}
    assert {
        "evidence/backtest.png",
        "evidence/folds.csv",
        "evidence/metrics.csv",
        "evidence/intervals.csv",
    } <= artifacts
    log = [json.loads(line) for line in (trained.data / "promotion_log.jsonl").read_text().splitlines()]
    assert sorted((e["ticker"], e["decision"], e["from_version"], e["to_version"]) for e in log) == [
        ("FB", "promoted", None, "1"),  # side by side: in the order they finished
        ("IBM", "promoted", None, "1"),
    ]


@pytest.mark.slow
def test_forecast_logs_once_and_the_champion_reloaded_by_alias_reproduces_it(trained):
    first = trained.run("forecast", "--tickers", "IBM,FB")
    assert first.returncode == 0, first.stderr
    assert "2013-04-01" in first.stdout  # the 20-day target: trading days, not calendar days
    logged = pd.read_parquet(trained.data / "predictions" / "IBM.parquet")
    assert logged[["horizon", "model_version"]].values.tolist() == [[1, "1"], [5, "1"], [20, "1"]]
    assert trained.run("forecast", "--tickers", "IBM").returncode == 0
    assert len(pd.read_parquet(trained.data / "predictions" / "IBM.parquet")) == 3  # idempotent

    mlflow.set_tracking_uri(f"sqlite:///{trained.data / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{trained.data / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/stockops-ibm@champion")
    bars = pd.read_parquet(trained.data / "prices" / "IBM.parquet")
    index = pd.read_parquet(trained.data / "prices" / "^GSPC.parquet")
    index = index[index["date"] <= bars["date"].max()]
    again = model.predict(make_features(bars, index).iloc[[-1]])
    pd.testing.assert_series_equal(again["log_return"], logged["log_return"], check_names=False)
    np.testing.assert_allclose(logged["upper_90"], logged["last_close"] * np.exp(again["upper_90"]), rtol=1e-12)
    np.testing.assert_allclose(logged["lower_80"], logged["last_close"] * np.exp(again["lower_80"]), rtol=1e-12)
    assert (logged["lower_90"] < logged["forecast"]).all() and (logged["forecast"] < logged["upper_90"]).all()


@pytest.mark.slow
def test_retraining_the_same_specification_refreshes_the_champion(trained):
    (trained.root / "drift_only.toml").write_text('name = "drift-only"\n[models.drift]\n')
    result = trained.run("train", "--tickers", "FB", "--experiment", "drift_only.toml", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "refresh: same specification" in result.stdout
    assert str(client(trained).get_model_version_by_alias("stockops-fb", "champion").version) == "2"
    rerun = trained.run("train", "--tickers", "FB", "--experiment", "drift_only.toml", timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "FB: up to date: champion v2 was trained as of 2013-03-01 with this experiment" in rerun.stdout
    assert len(client(trained).search_model_versions("name='stockops-fb'")) == 2  # the rerun registered nothing
    shown = trained.run("models", "FB")
    assert shown.returncode == 0, shown.stderr
    assert "stockops-fb champion: v2" in shown.stdout and "promotion history" in shown.stdout


BAD = [
    (["train", "--tickers", "MSFT"], "no stored prices for MSFT"),
    (["train", "--tickers", "IBM", "--as-of", "03/01/2013"], "as-of must be a date"),
    (["train", "--tickers", "IBM", "--experiment", "missing.toml"], "does not exist"),
    (["forecast", "--tickers", "GOOG"], "no stored prices for GOOG"),
    (["models", "../x"], "invalid ticker"),
]


@pytest.mark.slow
@pytest.mark.parametrize("arguments,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_and_changes_nothing(trained, arguments, message):
    before = {path: path.stat().st_mtime_ns for path in trained.data.rglob("*") if path.is_file()}
    result = trained.run(*arguments)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert {path: path.stat().st_mtime_ns for path in trained.data.rglob("*") if path.is_file()} == before


def test_forecast_without_a_champion_says_to_train(workspace):
    assert workspace.run("ingest", "--tickers", "MSFT").returncode == 0
    result = workspace.run("forecast", "--tickers", "MSFT")
    assert result.returncode == 2
    assert "no champion model for MSFT yet: run `stockops train --tickers MSFT` first" in result.stderr


@pytest.mark.slow
def test_close_only_history_trains_every_candidate(tmp_path):
    "IBM's real adjusted closes as a wide file (no open, high, low or volume): ridge is evaluated beside naive."
    import datetime as dt
    import os

    from conftest import Workspace, quick_workspace

    from stockops.sources import SampleSource

    quick_workspace(tmp_path)
    workspace = Workspace(tmp_path, {k: v for k, v in os.environ.items() if not k.startswith("STOCKOPS_")})
    bars = SampleSource().fetch(["IBM", "^GSPC"], end=dt.date(2013, 3, 1))
    closes = pd.DataFrame({t: b.set_index("date")["adj_close"] for t, b in bars.items()})
    closes.rename_axis("Date").to_csv(tmp_path / "closes.csv", date_format="%Y-%m-%d")
    assert workspace.run("ingest", "--source", "csv", "--path", "closes.csv").returncode == 0
    result = workspace.run("train", "--tickers", "IBM", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "│ ridge" in result.stdout and "No candidate was evaluated" not in result.stdout
    assert "days of history are too few" not in result.stdout
