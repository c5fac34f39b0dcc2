"""The daily routine's entry points: the `source` setting (a folder of CSV files, Yahoo through recorded answers)
reaches the ETL from `stockops run` and from the scheduled deployment; a run "up to today" is filed and logged under
the trading day it loaded; settings reach a runbook's kernel whole, secrets by its environment only."""

import json
import os

import mlflow
import nbformat
import pandas as pd
import pytest
from conftest import REPO, quick_workspace, yahoo_export, yfinance_recording

from stockops.config import load_settings

pytestmark = pytest.mark.slow


def own_source_workspace(workspace, source: str):
    """The workspace's settings.ini names `source` (csv: `csv_path = my-prices`, a folder of Yahoo-layout files of real
    IBM and S&P 500 bars to 2013-03-01) and the quick experiment; `indices = ^GSPC` (the one index the files have)."""
    import datetime as dt

    from stockops.sources import SampleSource

    quick_workspace(workspace.root)
    shelf = workspace.root / "my-prices"
    shelf.mkdir()
    bars = SampleSource().fetch(["IBM", "^GSPC"], end=dt.date(2013, 3, 1))
    for ticker, frame in bars.items():
        yahoo_export(frame).to_csv(shelf / f"{ticker}.csv.gz", index=False)
    text = (workspace.root / "settings.ini").read_text().replace("source = sample", f"source = {source}")
    text = text.replace("csv_path =\n", "csv_path = my-prices\n").replace("indices = ^GSPC, ^IXIC", "indices = ^GSPC")
    (workspace.root / "settings.ini").write_text(text)
    assert f"source = {source}" in text and "csv_path = my-prices" in text
    workspace.env |= {
        "STOCKOPS_RUNBOOKS_DIR": str(REPO / "nbs" / "runbooks"),
        "STOCKOPS_FLOWS_DIR": str(REPO / "flows"),
    }
    return workspace, bars


def stored(workspace, ticker: str) -> pd.DataFrame:
    return pd.read_parquet(workspace.data / "prices" / f"{ticker}.parquet")


def test_stockops_run_ingests_from_the_csv_folder_the_settings_name(workspace):
    workspace, _ = own_source_workspace(workspace, "csv")
    result = workspace.run("run", "--tickers", "IBM", "--as-of", "2013-01-31", timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    for ticker, file in [("IBM", "csv:IBM.csv.gz"), ("^GSPC", "csv:^GSPC.csv.gz")]:
        bars = stored(workspace, ticker)
        assert set(bars["source"]) == {file} and bars["date"].max() == pd.Timestamp("2013-01-31")
    folder = workspace.reports / "daily" / "2013-01-31"
    assert (folder / "train_forecaster-IBM.ipynb").is_file() and (folder / "forecast_prices.ipynb").is_file()
    assert json.loads((folder / "etl_prices.json").read_text())["source"] == "csv"
    forecasts = pd.read_parquet(workspace.data / "predictions" / "IBM.parquet")
    assert set(forecasts["as_of"].astype(str)) == {"2013-01-31"}


def test_stockops_run_ingests_from_yahoo_through_a_recorded_answer(workspace):
    "source = yahoo: every process of the run (CLI, flow, runbook kernels) gets recorded yfinance answers (tests/edge)."
    workspace, bars = own_source_workspace(workspace, "yahoo")
    recording = yfinance_recording(bars, workspace.root / "yahoo-answer.csv")
    edge = {"PYTHONPATH": str(REPO / "tests" / "edge"), "YAHOO_RECORDING": str(recording)}
    result = workspace.run("run", "--tickers", "IBM", "--as-of", "2013-01-31", timeout=400, extra_env=edge)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (workspace.root / "yahoo-answer.csv.calls").read_text().splitlines()
    assert calls == ["IBM,^GSPC 1999-01-01 2013-02-01"], calls  # history_start to as_of (yfinance's end is exclusive)
    for ticker in ["IBM", "^GSPC"]:
        got = stored(workspace, ticker)
        assert set(got["source"]) == {"yahoo"} and got["date"].max() == pd.Timestamp("2013-01-31")
        expected = bars[ticker][bars[ticker]["date"] <= "2013-01-31"]
        assert got["adj_close"].round(6).tolist() == expected["adj_close"].round(6).tolist()
    assert (workspace.reports / "daily" / "2013-01-31" / "forecast_prices.ipynb").is_file()


def test_scheduled_daily_runs_honour_the_source_setting(workspace, monkeypatch):
    workspace, _ = own_source_workspace(workspace, "csv")
    for key, value in workspace.env.items():
        if key.startswith("STOCKOPS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(workspace.root)
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.testing.utilities import prefect_test_harness

    from stockops.cli_pipeline import deployments
    from stockops.pipeline import load_flow

    settings = load_settings()
    assert settings.source == "csv"
    daily, _retrain = deployments(settings)
    assert daily.parameters["overrides"]["source"] == "csv"
    with prefect_test_harness(server_startup_timeout=120):
        state = load_flow(settings, "daily")(as_of="2013-01-31", tickers="IBM", **daily.parameters, return_state=True)
    assert state.is_completed(), state.message
    assert set(stored(workspace, "IBM")["source"]) == {"csv:IBM.csv.gz"}


def test_an_etl_up_to_today_is_filed_and_logged_under_the_day_it_loaded(tmp_path):
    from stockops.pipeline import run_runbook, wait_for_logging

    settings = load_settings(env={}).replace(
        data_dir=tmp_path / "data", reports_dir=tmp_path / "reports", runbooks_dir=REPO / "nbs" / "runbooks"
    )
    run = run_runbook("etl_prices", {"tickers": "IBM,^GSPC", "source": "sample"}, settings, flow="daily")
    run_id = wait_for_logging()[-1]
    assert run.status == "ok", run.failure
    assert run.as_of == "2013-03-01"  # IBM's last bundled day (the index runs to 2018)
    assert sorted(p.name for p in (tmp_path / "reports" / "daily").iterdir()) == ["2013-03-01"]
    logged = mlflow.MlflowClient(settings.tracking_uri).get_run(run_id)
    assert logged.info.run_name == "daily/etl_prices 2013-03-01"  # before the fix: the wall-clock date
    assert logged.data.tags["stockops.as_of"] == "2013-03-01"


def test_settings_reach_a_runbook_kernel_whole_and_secrets_only_by_its_environment(tmp_path):
    from stockops.pipeline import run_runbook

    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    cells = [
        nbformat.v4.new_code_cell("settings_overrides: dict = {}\nresult_path: str = ''"),
        nbformat.v4.new_code_cell(
            "from stockops.config import settings_from\nfrom stockops.pipeline import save_result\n"
            "settings = settings_from(settings_overrides)\n"
            "save_result(result_path, {'token': settings.api_token[::-1], 'horizons': list(settings.horizons), "
            "'data_dir': str(settings.data_dir)})"
        ),
    ]
    cells[0].metadata["tags"] = ["parameters"]
    kernel = {"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=kernel), runbooks / "probe.ipynb")
    settings = load_settings(env={}).replace(
        data_dir=tmp_path / "data", reports_dir=tmp_path / "reports", runbooks_dir=runbooks, horizons=(3, 7),
        api_token="s3cret-token",
    )  # fmt: skip
    run = run_runbook("probe", {"as_of": "2013-03-01"}, settings, flow="manual", log_to_mlflow=False, warm=False)
    assert run.status == "ok", run.failure
    assert run.result == {"token": "nekot-terc3s", "horizons": [3, 7], "data_dir": str(tmp_path / "data")}
    executed = open(run.notebook).read()
    assert "s3cret-token" not in executed and "(set, hidden)" not in executed
    assert json.loads(open(run.result_path).read())["horizons"] == [3, 7]
    assert "STOCKOPS_API_TOKEN" not in os.environ  # the parent's own environment was not written
