"""The daily routine's entry points: the `source` setting reaches the ETL from `stockops run` and from the scheduled
deployment; a run "up to today" is filed and logged under the trading day it loaded; settings reach a runbook's
kernel whole, secrets by its environment only."""

import json
import os

import mlflow
import nbformat
import pytest
from conftest import REPO

from stockops.config import load_settings

pytestmark = pytest.mark.slow


def csv_source_workspace(workspace):
    "The workspace's settings.ini says `source = csv` (which needs a file per run): an ETL that uses it fails at once."
    text = (workspace.root / "settings.ini").read_text()
    (workspace.root / "settings.ini").write_text(text.replace("source = sample", "source = csv"))
    assert "source = csv" in (workspace.root / "settings.ini").read_text()
    workspace.env |= {
        "STOCKOPS_RUNBOOKS_DIR": str(REPO / "nbs" / "runbooks"),
        "STOCKOPS_FLOWS_DIR": str(REPO / "flows"),
    }
    return workspace


def test_stockops_run_honours_the_source_setting(workspace):
    workspace = csv_source_workspace(workspace)
    result = workspace.run("run", "--tickers", "IBM", "--as-of", "2013-01-31", timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "runbook etl_prices failed" in result.stdout and "source=csv needs path" in result.stdout
    assert not (workspace.data / "prices").exists()  # before the fix: the bundled sample was ingested


def test_scheduled_daily_runs_honour_the_source_setting(workspace, monkeypatch):
    workspace = csv_source_workspace(workspace)
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
    assert state.is_failed() and "source=csv needs path" in state.message, state.message


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
