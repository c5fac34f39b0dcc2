"""The kill -9 matrix: a writer killed at each named step (an injected hook sends SIGKILL to its own process there, as
kill -9 would: no cleanup, no exception handler), then the next commands on the same workspace. After each kill the
workspace reads (`stockops status`), every reader names one champion, and the rerun completes, saying what it
recovered: the runs the dead process left RUNNING end KILLED, the version it registered without a decision is tagged
never promoted, the alias follows the log. No temporary file is left after the rerun."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import Workspace, quick_experiment, quick_workspace
from test_champion import answers

from stockops.config import load_settings

pytestmark = pytest.mark.slow

KILL_AT = textwrap.dedent(
    """
    import importlib, os, signal, sys
    from stockops.cli import main

    target, nth, torn = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "torn"
    module, _, attribute = target.partition(":")
    owner = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    real, calls = getattr(owner, name), [0]

    def hook(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            if torn:  # write the real bytes, keep the first half in the file, then die like a power cut
                real(*args, **kwargs)
                args[1].flush()
                os.ftruncate(args[1].fileno(), os.fstat(args[1].fileno()).st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(owner, name, hook)
    sys.argv = ["stockops", *sys.argv[4:]]
    main()
    """
)
TRAIN = ("train", "--tickers", "IBM", "--force", "--as-of", "2012-12-31")
KILLED_RUN = "recovered: run 'train IBM 2012-12-31' ("
NEVER_PROMOTED = "tagged never promoted: its training ended before recording a decision"
MATRIX = [  # (step, where the hook kills, on which call, torn write?, the command, what the rerun says it recovered)
    ("ingest: the second file half-written", "pandas:DataFrame.to_parquet", 2, True, ("ingest", "--tickers", "IBM,^GSPC"), []),
    ("train: backtest done", "stockops.training:choose_families", 1, False, TRAIN, []),
    ("train: model write", "mlflow:MlflowClient.log_model_artifacts", 1, False, TRAIN, [KILLED_RUN, "marked FAILED: its files were not all written"]),
    ("train: registration", "mlflow:MlflowClient.set_model_version_tag", 1, False, TRAIN, [KILLED_RUN, NEVER_PROMOTED]),
    ("train: log append", "stockops.tracking:append_jsonl", 1, False, TRAIN, [KILLED_RUN, NEVER_PROMOTED]),
    ("train: alias move", "mlflow:MlflowClient.set_registered_model_alias", 1, False, TRAIN, [KILLED_RUN, "champion alias of stockops-ibm moved from"]),
    ("forecast: prediction log half-written", "pandas:DataFrame.to_parquet", 1, True, ("forecast", "--tickers", "IBM"), []),
]  # fmt: skip


def killed(workspace, target: str, nth: int, torn: bool, command: tuple) -> subprocess.CompletedProcess:
    arguments = [sys.executable, "-c", KILL_AT, target, str(nth), "torn" if torn else "whole", *command]
    return subprocess.run(arguments, cwd=workspace.root, env=workspace.env, capture_output=True, text=True, timeout=300)


def temporary_files(workspace) -> list[str]:
    return sorted(str(p.relative_to(workspace.root)) for p in workspace.data.rglob("*.tmp"))


def test_kill_9_at_each_step_of_each_writer(workspace):
    quick_workspace(workspace.root)
    settings = load_settings(env={}).replace(data_dir=workspace.data, reports_dir=workspace.reports)
    assert workspace.run("ingest", "--tickers", "IBM,^GSPC", "--end", "2012-12-31").returncode == 0
    recovered = {}
    for step, target, nth, torn, command, says in MATRIX:
        if command[0] != "ingest" and not (workspace.data / "promotion_log.jsonl").exists():
            first = workspace.run("train", "--tickers", "IBM", "--as-of", "2012-06-29", timeout=300)
            assert first.returncode == 0, first.stderr
        before = {path: pd.read_parquet(path) for path in workspace.data.glob("*/*.parquet")}

        died = killed(workspace, target, nth, torn, command)
        assert died.returncode == -signal.SIGKILL, (step, died.stderr[-2000:])
        for path in workspace.data.glob("*/*.parquet"):  # every store file reads: the old one or the new whole
            assert len(pd.read_parquet(path)) >= len(before.get(path, [])), (step, path)
        status = workspace.run("status")
        assert status.returncode == 0, (step, status.stderr)
        if (workspace.data / "promotion_log.jsonl").exists():
            readers = answers(settings)
            lagging = readers.pop("alias")
            assert len(set(readers.values())) == 1, (step, readers)  # the log, batch forecasts and the API agree
            assert lagging == readers["log"] or step == "train: alias move", (step, lagging, readers)

        rerun = workspace.run(*command, timeout=300)
        assert rerun.returncode == 0, (step, rerun.stderr)
        lines = [line for line in rerun.stderr.splitlines() if line.startswith("recovered: ")]
        recovered[step] = lines
        for said in says:
            assert any(said in line for line in lines), (step, said, lines)
        assert len(lines) == len(says), (step, lines)  # nothing else was wrong
        assert temporary_files(workspace) == [], (step, temporary_files(workspace))
        if (workspace.data / "promotion_log.jsonl").exists():
            assert len(set(answers(settings).values())) == 1, step  # the alias too

    for step, lines in recovered.items():
        print(f"{step}: {lines or 'nothing to recover'}")
    registry = mlflow.MlflowClient(settings.tracking_uri)
    killed_runs = registry.search_runs(
        [registry.get_experiment_by_name("stockops").experiment_id], "attributes.status = 'KILLED'"
    )
    assert len(killed_runs) == 4 and all(
        "ended before the run did" in r.data.tags["stockops.killed"] for r in killed_runs
    )
    tagged = [v for v in registry.search_model_versions("name = 'stockops-ibm'") if "stockops.never_promoted" in v.tags]
    log = pd.read_json(workspace.data / "promotion_log.jsonl", lines=True)
    assert len(tagged) == 2 and not {v.version for v in tagged} & set(log["to_version"].dropna().astype(int))
    assert log["from_version"].astype("Int64").iloc[1:].tolist() == log["to_version"].astype("Int64").iloc[:-1].tolist()


def test_a_full_disk_is_exit_1_saying_where_and_how_much_and_changes_nothing(workspace):
    "The data folder on a small filesystem (a 32 MB tmpfs, mounted here: the suite runs as root), filled up to 40 kB."
    quick_workspace(workspace.root)
    workspace.data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(workspace.data)], check=True)
    try:
        assert workspace.run("ingest", "--tickers", "IBM,^GSPC", "--end", "2012-12-31").returncode == 0
        assert workspace.run("train", "--tickers", "IBM", "--as-of", "2012-06-29", timeout=300).returncode == 0
        before = workspace.files()
        filler = workspace.data / "filler"
        with open(filler, "wb") as sink:
            os.posix_fallocate(sink.fileno(), 0, shutil.disk_usage(workspace.data).free - 40_000)

        ingest = workspace.run("ingest", "--tickers", "IBM,^GSPC")
        assert ingest.returncode == 1, ingest.stderr
        said = " ".join(ingest.stderr.split())
        assert f"failed: no space left on {workspace.data} (needed about 0." in said, said
        assert ".parquet, 0.0 MB free)" in said and "Traceback" not in said, said
        train = workspace.run("train", "--tickers", "IBM", "--force", "--as-of", "2012-12-31", timeout=300)
        assert train.returncode == 1, train.stderr
        said = " ".join(train.stderr.split())
        assert f"failed: no space left on {workspace.data} (needed about " in said, said
        assert f"MB for {workspace.data}/mlartifacts, 0.0 MB free)" in said, said
        after = workspace.files()
        after.pop("data/filler")
        assert after == before  # every file as it was: nothing written, no temporary file

        filler.unlink()
        assert workspace.run("ingest", "--tickers", "IBM,^GSPC").returncode == 0
        assert workspace.run("train", "--tickers", "IBM", "--as-of", "2012-12-31", timeout=300).returncode == 0
    finally:
        subprocess.run(["umount", str(workspace.data)], check=True)


def test_a_broken_champion_is_never_served(workspace):
    "IBM's new champion is cut in half on disk: 503 for IBM's /predict only, reported by /health and /metrics, exit 1."
    from fastapi.testclient import TestClient

    from stockops.api import create_app
    from stockops.forecast import FORECASTER_FILE, forecast
    from stockops.ingest import ingest
    from stockops.training import train_ticker

    quick_workspace(workspace.root)
    settings = load_settings(env={}).replace(data_dir=workspace.data, reports_dir=workspace.reports)
    experiment = quick_experiment(settings)
    ingest("sample", "IBM,MSFT,^GSPC", end="2013-03-01", settings=settings)
    for ticker in ("IBM", "MSFT"):
        assert train_ticker(ticker, "2012-06-29", experiment, settings).champion_after == "1"
        forecast(ticker, "2013-03-01", settings)
    predict = {"ticker": "IBM", "as_of": "2013-03-01"}
    with TestClient(create_app(settings, refresh=False)) as client:
        assert client.post("/predict", json=predict).json()["model_version"] == "1"
        retrained = train_ticker("IBM", "2012-12-31", experiment, settings, force=True)
        assert (retrained.champion_before, retrained.champion_after) == ("1", "2")
        registry = mlflow.MlflowClient(settings.tracking_uri)
        folder = registry.get_model_version_download_uri("stockops-ibm", "2").removeprefix("file://")
        model_file = Path(folder) / FORECASTER_FILE
        whole = model_file.read_bytes()
        model_file.write_bytes(whole[: len(whole) // 2])  # a copy cut short
        assert client.app.state.serving.refresh()  # the running API sees the new champion

        answer = client.post("/predict", json=predict)
        assert answer.status_code == 503, answer.text
        assert answer.json()["detail"].startswith(
            f"the champion of IBM (version 2) cannot be loaded: {model_file} has {len(whole) // 2} bytes, {len(whole)} "
        )
        assert client.post("/predict", json=predict | {"ticker": "MSFT"}).status_code == 200  # the others are served
        assert client.get("/forecast/IBM").json()["model_version"] == "1"  # the forecasts it has: still served
        health = client.get("/health").json()
        assert health["status"] == "degraded" and [(u["ticker"], u["version"]) for u in health["unavailable"]] == [
            ("IBM", "2")
        ]
        assert 'stockops_model_unavailable{ticker="IBM",version="2"} 1.0' in client.get("/metrics").text

    with TestClient(
        create_app(settings, refresh=False)
    ) as restarted:  # a restart starts, and says what it cannot serve
        for _ in range(300):
            if restarted.get("/health").json()["unavailable"]:
                break
            time.sleep(0.1)
        assert restarted.get("/health").json()["unavailable"][0]["fault"].startswith(f"{model_file} has ")
        assert restarted.post("/predict", json=predict | {"ticker": "MSFT"}).status_code == 200
        assert restarted.post("/predict", json=predict).status_code == 503

    batch = workspace.run("forecast", "--tickers", "IBM,MSFT")
    assert batch.returncode == 1, batch.stderr
    assert "MSFT: close" in batch.stdout and "IBM: close" not in batch.stdout  # MSFT forecast, IBM not
    said = " ".join(batch.stderr.split())
    assert said.startswith("failed: the champion of IBM (version 2) cannot be loaded: ") and "Traceback" not in said

    model_file.write_bytes(whole)  # put right: served again from the next snapshot
    with TestClient(create_app(settings, refresh=False)) as healed:
        assert healed.post("/predict", json=predict).json()["model_version"] == "2"
        assert healed.get("/health").json()["status"] == "ok"


def test_a_data_dir_that_is_a_file_or_read_only_is_exit_2_naming_the_setting(workspace):
    (workspace.root / "notes.txt").write_text("not a folder")
    as_file = workspace.run("ingest", "--tickers", "IBM", extra_env={"STOCKOPS_DATA_DIR": "notes.txt"})
    assert as_file.returncode == 2, as_file.stderr
    assert (
        f"env STOCKOPS_DATA_DIR: data_dir = 'notes.txt': {workspace.root}/notes.txt is a file, not a folder"
        in " ".join(as_file.stderr.split())
    )
    workspace.data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(workspace.data)], check=True)
    try:
        read_only = workspace.run("ingest", "--tickers", "IBM")
        assert read_only.returncode == 2, read_only.stderr
        said = " ".join(read_only.stderr.split())
        assert f"data_dir = {workspace.data}: cannot be written (Read-only file system)" in said, said
        assert workspace.run("status").returncode == 0  # a reader reads it
    finally:
        subprocess.run(["umount", str(workspace.data)], check=True)


def test_a_moved_workspace_loads_its_models_and_trains_where_it_is_now(tmp_path):
    "The hardening issue's attack: a workspace moved with `mv` failed with 'No such artifact' and trained into the old folder."
    import sqlite3

    from fastapi.testclient import TestClient

    from stockops.api import create_app
    from stockops.tracking import _FILE_COLUMNS

    made = tmp_path / "made-here"
    made.mkdir()
    quick_workspace(made)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKOPS_", "PREFECT_"))}
    env |= {"COLUMNS": "200", "NO_COLOR": "1"}
    space = Workspace(made, env)
    for command in (
        ("ingest", "--tickers", "IBM,^GSPC", "--end", "2013-03-01"),
        ("train", "--tickers", "IBM", "--as-of", "2012-06-29"),
    ):
        done = space.run(*command)
        assert done.returncode == 0, done.stderr
    moved = tmp_path / "moved-there"
    made.rename(moved)
    space = Workspace(moved, env)

    batch = space.run("forecast", "--tickers", "IBM")
    assert batch.returncode == 0, batch.stderr
    said = " ".join(batch.stderr.split())
    assert f"relocated: the MLflow store named its files under {(made / 'data' / 'mlartifacts').as_uri()} " in said
    assert f"1 run(s) and 1 model version(s) now name {(moved / 'data' / 'mlartifacts').as_uri()}" in said
    retrained = space.run("train", "--tickers", "IBM", "--force", "--as-of", "2012-12-31")
    assert retrained.returncode == 0, retrained.stderr
    assert "relocated" not in retrained.stderr  # once
    assert not made.exists()  # nothing written where the workspace was
    with sqlite3.connect(moved / "data" / "mlflow.db") as db:
        named = [value for table, column in _FILE_COLUMNS for (value,) in db.execute(f"SELECT {column} FROM {table}")]
    files = [value for value in named if value.startswith("file://")]
    assert len(files) >= 7 and all(value.startswith((moved / "data" / "mlartifacts").as_uri() + "/") or
                                   value == (moved / "data" / "mlartifacts").as_uri() for value in files), files  # fmt: skip
    settings = load_settings(moved / "settings.ini", env={})
    with TestClient(create_app(settings, refresh=False)) as client:
        answer = client.post("/predict", json={"ticker": "IBM", "as_of": "2013-03-01"})
        assert answer.status_code == 200 and answer.json()["model_version"] == "2", answer.text
