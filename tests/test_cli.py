"""The `stockops` command as a user runs it: real processes, real bundled data, an isolated workspace."""

import json
import re

import pandas as pd
import pytest

from stockops.sources import SAMPLE_INDICES, SAMPLE_STOCKS

ALL = list(SAMPLE_STOCKS) + list(SAMPLE_INDICES)
BUNDLED_ROWS = {"AAPL": 3270, "MSFT": 3270, "IBM": 3270, "GOOG": 2148, "FB": 196, "^GSPC": 5031, "^IXIC": 5031}


def stored(workspace):
    return {p.name: p.read_bytes() for p in sorted((workspace.data / "prices").glob("*.parquet"))}


@pytest.mark.parametrize("command", [[], ["config"], ["ingest"], ["status"]])
def test_help_on_every_command(workspace, command):
    result = workspace.run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: stockops" in result.stdout
    assert not workspace.data.exists()
    (workspace.root / "settings.ini").write_bytes(b"[stockops]\nsource = \xff\xfe sample\n")
    result = workspace.run("status")
    assert result.returncode == 2, result.stderr
    assert f"{workspace.root / 'settings.ini'}: not a settings file: not UTF-8 text" in result.stderr


def test_forecast_of_a_ticker_it_cannot_forecast_writes_nothing(workspace):
    "`forecast --tickers IBM,MSFT` with no champion for MSFT: exit 2 before IBM's rows are logged (they were)."
    from conftest import QUICK

    (workspace.root / "experiments").mkdir()
    (workspace.root / "experiments" / "baseline.toml").write_text(QUICK)
    assert workspace.run("ingest", "--tickers", "IBM,MSFT,^GSPC").returncode == 0
    assert workspace.run("train", "--tickers", "IBM", timeout=300).returncode == 0
    before = workspace.files()
    result = workspace.run("forecast", "--tickers", "IBM,MSFT")
    assert result.returncode == 2, result.stderr
    assert "no champion model for MSFT yet" in result.stderr
    assert not (workspace.data / "predictions").exists() and workspace.files() == before


def test_ingest_bundled_data_twice_gives_identical_rows(workspace):
    first = workspace.run("ingest")
    assert first.returncode == 0, first.stderr
    files = stored(workspace)
    assert sorted(files) == sorted(f"{t}.parquet" for t in ALL)
    for ticker, rows in BUNDLED_ROWS.items():
        assert len(pd.read_parquet(workspace.data / "prices" / f"{ticker}.parquet")) == rows
    assert "suspected split on 2005-02-28" in first.stdout  # AAPL's 2:1 split, found by the health checks
    assert "suspected split on 2003-02-18" in first.stdout  # MSFT's

    again = workspace.run("ingest", "--refresh")
    assert again.returncode == 0, again.stderr
    assert stored(workspace) == files  # byte-identical: unchanged rows keep their fetched_at
    report = json.loads(sorted((workspace.reports / "ingest").glob("*.json"))[-1].read_text())
    assert {t["ticker"]: (t["inserted"], t["updated"], t["unchanged"]) for t in report["tickers"]} == {
        t: (0, 0, rows) for t, rows in BUNDLED_ROWS.items()
    }

    status = workspace.run("status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {row["ticker"]: row for row in json.loads(status.stdout)}
    assert {t: rows[t]["rows"] for t in ALL} == BUNDLED_ROWS
    assert rows["AAPL"]["first_date"] == "2000-03-01" and rows["AAPL"]["last_date"] == "2013-03-01"
    assert rows["AAPL"]["health"] == "warnings" and rows["IBM"]["health"] == "ok"


def test_incremental_ingest_fetches_only_new_days(workspace):
    assert workspace.run("ingest", "--tickers", "AAPL", "--end", "2012-12-31").returncode == 0
    result = workspace.run("ingest", "--tickers", "AAPL")
    assert result.returncode == 0, result.stderr
    report = json.loads(sorted((workspace.reports / "ingest").glob("*.json"))[-1].read_text())
    line = report["tickers"][0]
    assert (line["requested_from"], line["fetched"], line["inserted"], line["rows"]) == ("2013-01-01", 41, 41, 3270)
    log = [json.loads(x) for x in (workspace.data / "ingest_log.jsonl").read_text().splitlines()]
    assert [entry["inserted"] for entry in log] == [3229, 41]


def test_status_of_an_empty_store(workspace):
    result = workspace.run("status")
    assert result.returncode == 0
    assert "is empty" in result.stdout


def test_the_two_bundled_sets_and_status_says_which_one_a_ticker_came_from(workspace):
    "sp500 (skfolio: 20 stocks and the index to 2022, close-only) beside sample (OHLCV to 2013); AAPL is in both."
    result = workspace.run("ingest", "--source", "sp500", "--tickers", "AAPL,JPM,^GSPC", "--start", "1990-01-01")
    assert result.returncode == 0, result.stderr
    assert workspace.run("ingest", "--source", "sample", "--tickers", "IBM").returncode == 0
    status = {row["ticker"]: row for row in json.loads(workspace.run("status", "--json").stdout)}
    assert {t: row["sources"] for t, row in status.items()} == {
        "AAPL": "sp500",
        "JPM": "sp500",
        "^GSPC": "sp500",
        "IBM": "sample",
    }
    assert (status["JPM"]["rows"], status["JPM"]["first_date"][:10], status["JPM"]["last_date"][:10]) == (
        8313,
        "1990-01-02",
        "2022-12-28",
    )
    stored = pd.read_parquet(workspace.data / "prices" / "JPM.parquet")
    assert (
        stored[["open", "high", "low", "volume"]].isna().all().all() and (stored["close"] == stored["adj_close"]).all()
    )
    refused = workspace.run("ingest", "--source", "sp500", "--tickers", "IBM")
    assert refused.returncode == 2 and "not in the bundled sp500 set: IBM" in refused.stderr


def test_config_shows_origins(workspace):
    result = workspace.run("config", extra_env={"STOCKOPS_HORIZONS": "5,1"})
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "horizons" in line)
    assert "1, 5" in line and "env STOCKOPS_HORIZONS" in line
    assert re.search(r"source\s+.*sample\s+.*settings\.ini", result.stdout)


BAD_INPUT = [
    (["ingest", "--tickers", "../x"], "invalid ticker '../x'"),
    (["ingest", "--tickers", "AA PL"], "invalid ticker 'AA PL'"),
    (["ingest", "--tickers", "AAPL;rm -rf"], "invalid ticker"),
    (["ingest", "--tickers", "A" * 40], "invalid ticker"),
    (["ingest", "--tickers", "TSLA"], "not in the bundled sample: TSLA"),
    (["ingest", "--source", "bloomberg"], "unknown source 'bloomberg'"),
    (["ingest", "--source", "csv"], "needs a file"),
    (["ingest", "--source", "csv", "--path", "missing.csv", "--tickers", "AAPL"], "no such file"),
    (["ingest", "--start", "2013-02-01", "--end", "2013-01-01"], "after end"),
    (["ingest", "--start", "yesterday"], "start must be a date"),
    (["ingest", "--frobnicate"], "No such option"),
    (["ingest", "--tickers", ""], "no tickers given"),
    (["train", "--tickers", ""], "no tickers given"),  # was: the whole universe
    (["train", "--tickers", " , "], "no tickers given"),
    (
        ["serve", "--port", "83632"],
        "Invalid value for '--port': Input should be less than or equal to 65535",
    ),  # was: announced, another port bound
    (
        ["serve", "--port", "-1"],
        "Invalid value for '--port': Input should be greater than or equal to 1",
    ),  # was: exit 3
    (["dashboard", "--port", "70000"], "Invalid value for '--port': Input should be less than or equal to 65535"),
    (["models", "ZZZZ"], "no stored prices for ZZZZ"),  # was: exit 0
]


@pytest.mark.parametrize("arguments,message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_exits_2_and_writes_nothing(workspace, arguments, message):
    before = workspace.files()
    result = workspace.run(*arguments)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert workspace.files() == before


def test_bad_settings_exit_2_naming_key_and_origin(workspace):
    result = workspace.run("status", extra_env={"STOCKOPS_HORIZONS": "0"})
    assert result.returncode == 2
    assert "env STOCKOPS_HORIZONS: horizons = '0'" in result.stderr
    (workspace.root / "settings.ini").write_text("[stockops]\nhistory_start = last tuesday\n")
    result = workspace.run("ingest")
    assert result.returncode == 2
    assert f"{workspace.root / 'settings.ini'} [stockops]: history_start = 'last tuesday'" in result.stderr
    assert not workspace.data.exists()


def test_yahoo_unreachable_exits_1_within_60s_and_leaves_store_untouched(workspace):
    assert workspace.run("ingest", "--tickers", "AAPL,MSFT").returncode == 0
    before = workspace.files()
    # real yfinance, with the network closed: every request goes to a proxy port nobody listens on
    closed = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    result = workspace.run("ingest", "--source", "yahoo", "--tickers", "AAPL,MSFT", "--refresh", extra_env=closed)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.seconds < 60
    assert "Yahoo Finance returned no data for AAPL, MSFT after 3 attempt(s)" in result.stderr
    assert "the store was not changed" in result.stderr
    assert "possibly delisted" not in result.stderr.split("last error:")[1].split(")")[0]  # the real cause is named
    assert workspace.files() == before


WORKER_INPUT = [
    ({}, "prefect_work_pool is empty"),
    ({"STOCKOPS_PREFECT_WORK_POOL": "stockops"}, "a worker needs a Prefect server: set prefect_api_url"),
    (
        {"STOCKOPS_PREFECT_WORK_POOL": "stockops", "STOCKOPS_PREFECT_API_URL": "http://127.0.0.1:9/api"},
        "no Prefect server answers at http://127.0.0.1:9/api",
    ),  # fmt: skip
    ({"STOCKOPS_PRICES_URL": "ftp://host/prices"}, "prices_url = 'ftp://host/prices': expected a folder or an s3://"),
    ({"STOCKOPS_S3_ENDPOINT_URL": "minio:9000"}, "s3_endpoint_url = 'minio:9000': expected an http(s):// URL"),
]


@pytest.mark.parametrize("env,message", WORKER_INPUT, ids=[m.split(":")[0] for _, m in WORKER_INPUT])
def test_worker_without_a_pool_or_server_exits_2(workspace, env, message):
    result = workspace.run("worker", extra_env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert not workspace.data.exists()


def test_dashboard_on_a_public_address_needs_a_token(workspace):
    result = workspace.run("dashboard", "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 with an empty dashboard_token" in result.stderr
