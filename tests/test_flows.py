"""The daily flow through Prefect (test harness) and papermill on the bundled data: executed notebooks with their
injected parameters, results, MLflow runs and artifacts, drift reports, forecasts; a failing runbook fails the flow
with a failure record."""

import json
import os
import shutil

import mlflow
import nbformat
import pandas as pd
import pytest
from conftest import REPO, Workspace, sample_settings, yahoo_export

from stockops.config import load_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def harness():
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def space(tmp_path_factory, harness):
    root = tmp_path_factory.mktemp("flows")
    sample_settings(root)
    shutil.copytree(REPO / "experiments", root / "experiments")
    settings = load_settings(root / "settings.ini", env={}).replace(
        runbooks_dir=REPO / "nbs" / "runbooks", flows_dir=REPO / "flows"
    )
    return Workspace(root, dict(os.environ)), settings


def injected(notebook: str) -> str:
    cells = nbformat.read(notebook, as_version=4).cells
    return next(cell.source for cell in cells if "injected-parameters" in cell.metadata.get("tags", []))


def test_daily_flow_runs_the_runbooks_and_leaves_the_audit_trail(space):
    workspace, settings = space
    from stockops.pipeline import load_flow

    daily = load_flow(settings, "daily")
    first = daily(as_of="2012-12-31", tickers="IBM", overrides=settings.transport(), return_state=True)
    assert first.is_completed(), first.message
    summary = first.result()
    assert summary["retrained"] == ["IBM"]  # no champion yet: the policy says train
    folder = settings.reports_dir / "daily" / "2012-12-31"
    names = sorted(p.name for p in folder.glob("*.ipynb"))
    assert names == ["etl_prices.ipynb", "forecast_prices.ipynb", "report_drift.ipynb", "train_forecaster-IBM.ipynb"]
    assert 'as_of = "2012-12-31"' in injected(str(folder / "train_forecaster-IBM.ipynb"))
    assert 'ticker = "IBM"' in injected(str(folder / "train_forecaster-IBM.ipynb"))
    trained = json.loads((folder / "train_forecaster-IBM.json").read_text())
    assert (trained["promoted"], trained["champion"]) == (True, "1")

    second = daily(as_of="2013-01-31", tickers="IBM", overrides=settings.transport(), return_state=True)
    assert second.is_completed(), second.message
    decision = second.result()["decisions"]["IBM"]
    assert decision["retrain"] is False and decision["champion_version"] == "1"
    assert decision["live"][0]["n"] >= 1  # the 2012-12-31 forecasts were realised and scored
    html = settings.reports_dir / "drift" / "2013-01-31" / "IBM.html"
    assert html.is_file() and html.stat().st_size > 10_000
    log = pd.read_parquet(settings.data_dir / "predictions" / "IBM.parquet")
    assert sorted(log["as_of"].dt.strftime("%Y-%m-%d").unique()) == ["2012-12-31", "2013-01-31"]
    assert second.result()["published"] == 2  # the flow published IBM's page and the index (plotly.js the first day)
    page = (settings.reports_dir / "site" / "IBM.html").read_text()
    assert "close of <b>2013-01-31</b>" in page and "stockops-ibm v1" in page

    client = mlflow.MlflowClient(settings.tracking_uri, registry_uri=settings.tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("stockops").experiment_id], "tags.`stockops.kind` = 'runbook'", max_results=50
    )
    assert len(runs) == 7  # 4 runbooks the first day, 3 the second
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "runbook")}
    assert any(path.endswith(".ipynb") for path in artifacts) and any(path.endswith(".json") for path in artifacts)
    assert {"as_of", "tickers"} <= set(runs[0].data.params)
    drift_run = next(
        r
        for r in runs
        if r.data.tags["stockops.runbook"] == "report_drift" and r.data.tags["stockops.as_of"] == "2013-01-31"
    )
    assert [a.path for a in client.list_artifacts(drift_run.info.run_id, "reports")] == ["reports/IBM.html"]


def test_a_failing_runbook_fails_the_flow_with_a_failure_record(space):
    workspace, settings = space
    from stockops.pipeline import load_flow

    daily = load_flow(settings, "daily")
    state = daily(as_of="2013-02-01", tickers="IBM", source="csv", path="/nonexistent/prices.csv",
                  overrides=settings.transport(), return_state=True)  # fmt: skip
    assert state.is_failed()
    assert "runbook etl_prices failed in cell" in state.message and "BadInput: no such file" in state.message
    record = json.loads((settings.reports_dir / "daily" / "2013-02-01" / "etl_prices.failure.json").read_text())
    failure = record["runs"][0]["failure"]
    assert failure["error"] == "BadInput" and "no such file" in failure["message"]
    assert isinstance(failure["cell"], int)
    notebook = nbformat.read(settings.reports_dir / "daily" / "2013-02-01" / "etl_prices.ipynb", as_version=4)
    assert any(o.get("ename") == "BadInput" for cell in notebook.cells for o in cell.get("outputs", []))


def test_replay_cli_writes_a_report(workspace):
    (workspace.root / "experiments").mkdir()
    (workspace.root / "experiments" / "baseline.toml").write_text(
        'name = "quick"\n[splits]\nstep = 252\n[models.drift]\n'
    )
    result = workspace.run(
        "replay", "--start", "2012-04-02", "--end", "2012-06-29", "--every", "10", "--tickers", "MSFT,FB", timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "served forecasts on realised prices" in result.stdout
    report = workspace.reports / "replay" / "2012-04-02_2012-06-27_every10"  # 7 steps, 10 trading days apart
    assert (report / "replay.html").is_file() and (report / "replay.png").is_file()
    data = json.loads((report / "replay.json").read_text())
    assert {row["policy"] for row in data["summary"]} == {"auto", "never"}
    fb = [step for step in data["steps"] if step["ticker"] == "FB" and step["policy"] == "auto"]
    assert fb[0]["reasons"] == "no prices yet"  # FB listed on 2012-05-18
    assert "training needs 121: waiting" in fb[-1]["reasons"]  # a month of history is not enough
    msft = [step for step in data["steps"] if step["ticker"] == "MSFT" and step["policy"] == "auto"]
    assert msft[0]["retrained"] and msft[-1]["champion_version"] is not None


def test_replay_reads_the_source_the_settings_name_a_folder_of_csv_files(workspace):
    "source = csv with csv_path naming a folder (one Yahoo-layout file per ticker): every replayed day ingests from it."
    import datetime as dt

    from stockops.sources import SampleSource

    shelf = workspace.root / "my-prices"
    shelf.mkdir()
    for ticker, bars in SampleSource().fetch(["IBM", "^GSPC"], end=dt.date(2013, 3, 1)).items():
        yahoo_export(bars).to_csv(shelf / f"{ticker}.csv.gz", index=False)
    settings = (workspace.root / "settings.ini").read_text().replace("source = sample", "source = csv")
    settings = settings.replace("csv_path =\n", "csv_path = my-prices\n")
    settings = settings.replace("indices = ^GSPC, ^IXIC", "indices = ^GSPC")  # the folder has one index
    (workspace.root / "settings.ini").write_text(settings)
    (workspace.root / "experiments").mkdir()
    (workspace.root / "experiments" / "baseline.toml").write_text(
        'name = "quick"\n[splits]\nstep = 252\n[models.drift]\n'
    )
    result = workspace.run(
        "replay", "--start", "2012-11-01", "--end", "2012-12-31", "--every", "20", "--tickers", "IBM", timeout=600
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((workspace.reports / "replay" / "2012-11-01_2012-12-31_every20" / "replay.json").read_text())
    ibm = [step for step in data["steps"] if step["policy"] == "auto"]
    assert len(ibm) == 3 and ibm[0]["retrained"] and ibm[-1]["champion_version"] is not None
    stored = pd.read_parquet(
        workspace.data / "replay" / "2012-11-01_2012-12-31_every20" / "auto" / "prices" / "IBM.parquet"
    )
    assert set(stored["source"]) == {"csv:IBM.csv.gz"} and stored["date"].max() == pd.Timestamp("2012-12-31")


def test_daily_flow_waits_for_a_new_listing_to_have_enough_history(space):
    "FB six weeks after its IPO: the flow completes; FB is neither trained nor forecast, and the reason says why."
    workspace, settings = space
    from stockops.pipeline import load_flow

    state = load_flow(settings, "daily")(
        as_of="2012-06-29", tickers="FB", overrides=settings.transport(), return_state=True
    )
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["retrained"] == []
    assert summary["decisions"]["FB"]["reasons"] == [
        "no champion yet, and 30 days of history; training needs 121: waiting"
    ]
    assert summary["waiting"] == {"FB": ["no champion yet, and 30 days of history; training needs 121: waiting"]}
    assert summary["forecast"] == []  # the routine forecasts only tickers with a champion: no forecast runbook at all
    assert not (settings.reports_dir / "daily" / "2012-06-29" / "forecast_prices.ipynb").exists()


@pytest.mark.server
def test_schedule_serves_cron_deployments_that_run(workspace):
    "`stockops schedule` starts a Prefect server, serves `daily` and `periodic-retrain` on their crons; a triggered run completes."
    import signal
    import subprocess
    import time
    import urllib.request

    from conftest import STOCKOPS

    port = 4311
    env = {k: v for k, v in workspace.env.items() if not k.startswith("PREFECT_")}
    env |= {"STOCKOPS_RUNBOOKS_DIR": str(REPO / "nbs" / "runbooks"), "STOCKOPS_FLOWS_DIR": str(REPO / "flows")}
    shutil.copytree(REPO / "experiments", workspace.root / "experiments")
    serving = subprocess.Popen([str(STOCKOPS), "schedule", "--port", str(port)], cwd=workspace.root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        deployments, deadline = [], time.monotonic() + 180
        while len(deployments) < 2 and time.monotonic() < deadline:
            time.sleep(2)
            try:
                request = urllib.request.Request(
                    f"{api}/deployments/filter", data=b"{}", headers={"Content-Type": "application/json"}
                )
                deployments = json.load(urllib.request.urlopen(request, timeout=5))
            except OSError:
                continue
        schedules = {
            d["name"]: [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in d["schedules"]] for d in deployments
        }
        assert schedules == {
            "daily": [("30 17 * * 1-5", "America/New_York")],
            "periodic-retrain": [("0 6 * * 6", "America/New_York")],
        }
        run_env = env | {"PREFECT_API_URL": api, "PREFECT_HOME": str(workspace.data / "prefect")}
        triggered = subprocess.run(
            [str(STOCKOPS.parent / "prefect"), "deployment", "run", "daily/daily", "--param", "tickers=FB", "--watch"],
            cwd=workspace.root,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "Completed" in triggered.stdout, triggered.stdout[-2000:] + triggered.stderr[-2000:]
        assert (workspace.reports / "daily" / "2013-03-01" / "forecast_prices.ipynb").is_file()
    finally:
        os.killpg(serving.pid, signal.SIGINT)
        try:
            serving.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serving.pid, signal.SIGKILL)
