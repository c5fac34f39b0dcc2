"""Users' own CSV files through `stockops ingest --source csv`: the layouts people have, and files that are not prices."""

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import yahoo_export

from stockops.sources import SampleSource

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def february():
    "Real MSFT bars, February 2013 (19 trading days)."
    return SampleSource().fetch(["MSFT"], dt.date(2013, 2, 1), dt.date(2013, 2, 28))["MSFT"]


def last_report(workspace):
    return json.loads(sorted((workspace.reports / "ingest").glob("*.json"))[-1].read_text())


def test_yahoo_export_with_damaged_rows_keeps_the_good_ones(workspace, february):
    export = yahoo_export(february)
    export.loc[3, "Close"] = np.nan  # 2013-02-06
    export.loc[5, "High"] = export.loc[5, "Low"] / 2  # 2013-02-08
    export = pd.concat([export, export.iloc[[7]]])  # 2013-02-12 twice, same values
    export.loc[len(export)] = ["2013-02-16", *export.iloc[0, 1:]]  # a Saturday
    export = export.drop(index=10)  # 2013-02-15 missing
    export.to_csv(workspace.root / "msft.csv", index=False)
    result = workspace.run("ingest", "--source", "csv", "--path", "msft.csv", "--tickers", "MSFT")
    assert result.returncode == 0, result.stderr
    stored = pd.read_parquet(workspace.data / "prices" / "MSFT.parquet")
    assert len(stored) == 19 - 3  # minus the missing day and the two damaged ones
    assert stored["source"].unique().tolist() == ["csv:msft.csv"]
    health = last_report(workspace)["health"][0]
    assert health["reasons"] == {
        "missing close": 1, "high below low": 1, "open outside [low, high]": 1, "close outside [low, high]": 1,
        "duplicate date": 1, "not a trading day (XNYS)": 1,
    }  # fmt: skip
    assert health["missing_days_first"] == ["2013-02-06", "2013-02-08", "2013-02-15"]
    assert "rejected 1 row(s): not a trading day (XNYS)" in result.stdout


VARIANTS = {
    "lowercase, spaced, no Adj Close": lambda bars: pd.DataFrame(
        {
            " date ": bars["date"].dt.strftime("%Y-%m-%d"),
            "CLOSE ": bars["close"],
            "Open": bars["open"],
            "HIGH": bars["high"],
            "low": bars["low"],
            "Volume": bars["volume"],
        }
    ),  # fmt: skip
    "US dates, dollars, thousands separators": lambda bars: pd.DataFrame(
        {
            "Date": bars["date"].dt.strftime("%m/%d/%Y"),
            "Close/Last": bars["close"].map("${:,.4f}".format),
            "Adj. Close": bars["adj_close"],
            "Volume": bars["volume"].map("{:,.0f}".format),
            "Open": bars["open"],
            "High": bars["high"],
            "Low": bars["low"],
        }
    ),  # fmt: skip
    "tz-aware timestamps": lambda bars: yahoo_export(bars).assign(
        Date=bars["date"].dt.tz_localize("America/New_York").dt.strftime("%Y-%m-%d %H:%M:%S%z")
    ),
    "ticker column, several tickers": lambda bars: pd.concat(
        [yahoo_export(bars).assign(Symbol="MSFT"), yahoo_export(bars).assign(Symbol="OTHER")]
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_csv_variants_read_to_the_same_bars(workspace, february, variant):
    VARIANTS[variant](february).to_csv(workspace.root / "prices.csv", index=False)
    result = workspace.run("ingest", "--source", "csv", "--path", "prices.csv", "--tickers", "MSFT")
    assert result.returncode == 0, result.stderr
    stored = pd.read_parquet(workspace.data / "prices" / "MSFT.parquet")
    assert stored["date"].tolist() == february["date"].tolist()
    np.testing.assert_allclose(stored["close"], february["close"], rtol=1e-6)
    np.testing.assert_allclose(stored["volume"], february["volume"])
    expected_adjusted = february["close"] if "no Adj Close" in variant else february["adj_close"]
    np.testing.assert_allclose(stored["adj_close"], expected_adjusted, rtol=1e-6)
    assert last_report(workspace)["health"][0]["status"] == "ok"


def test_yfinance_csv_layout_all_tickers(workspace):
    fixture = workspace.root / "download.csv"
    fixture.write_bytes((FIXTURES / "yfinance_download_AAPL_MSFT_2013-01.csv").read_bytes())
    result = workspace.run("ingest", "--source", "csv", "--path", "download.csv")
    assert result.returncode == 0, result.stderr
    for ticker in ["AAPL", "MSFT"]:
        assert len(pd.read_parquet(workspace.data / "prices" / f"{ticker}.parquet")) == 21


NOT_PRICES = {
    "people.csv": ("name,age\nada,36\ngrace,45\n", "no date column"),
    "temperatures.csv": ("date,celsius\n2013-01-02,3.5\n", "no close or adjusted close column"),
    "words.csv": ("date,close\nmonday,high\ntuesday,low\nwednesday,mid\n", "only 0 of 3 rows"),
    "header-only.csv": ("Date,Open,High,Low,Close,Adj Close,Volume\n", "has a header but no rows"),
    "image.csv": (bytes(range(256)) * 8, "it is binary, not text"),
    "latin-1.csv": (
        "Date,Close,Note\n2013-01-02,1.5,caf\xe9\n".encode("latin-1"),
        "is not UTF-8, UTF-16 or UTF-32 text",
    ),
    "twice.csv": ("Date,Close,Close\n2013-01-02,1.5,1.6\n", "repeated column name(s) 'Close'"),
}


@pytest.mark.parametrize("name", NOT_PRICES)
def test_a_file_that_is_not_price_data_is_refused_whole(workspace, name):
    content, message = NOT_PRICES[name]
    path = workspace.root / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = workspace.files()
    result = workspace.run("ingest", "--source", "csv", "--path", name, "--tickers", "XYZ")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert workspace.files() == before


def test_csv_without_ticker_needs_one(workspace, february):
    yahoo_export(february).to_csv(workspace.root / "msft.csv", index=False)
    result = workspace.run("ingest", "--source", "csv", "--path", "msft.csv")
    assert result.returncode == 2
    assert "no ticker/symbol column" in result.stderr


def test_pandas_layouts_indexed_gzipped_and_wide(workspace, february):
    "What `DataFrame.to_csv()` writes: dates in the unnamed index column, gzipped; wide: one close column per ticker."
    indexed = yahoo_export(february).set_index("Date").rename_axis(None)
    indexed.to_csv(workspace.root / "indexed.csv.gz")
    result = workspace.run("ingest", "--source", "csv", "--path", "indexed.csv.gz", "--tickers", "MSFT")
    assert result.returncode == 0, result.stderr
    stored = pd.read_parquet(workspace.data / "prices" / "MSFT.parquet")
    assert stored["date"].tolist() == february["date"].tolist()
    np.testing.assert_allclose(stored["volume"], february["volume"])

    ibm = SampleSource().fetch(["IBM"], dt.date(2013, 2, 1), dt.date(2013, 2, 28))["IBM"]
    wide = pd.DataFrame({"IBM": ibm["adj_close"].to_numpy(), "AAPL": february["adj_close"].to_numpy()})
    wide.index = february["date"].dt.strftime("%Y-%m-%d")
    wide.rename_axis("Date").to_csv(workspace.root / "closes.csv")
    result = workspace.run("ingest", "--source", "csv", "--path", "closes.csv")  # no --tickers: every column
    assert result.returncode == 0, result.stderr
    for ticker, expected in [("IBM", ibm["adj_close"]), ("AAPL", february["adj_close"])]:
        stored = pd.read_parquet(workspace.data / "prices" / f"{ticker}.parquet")
        np.testing.assert_allclose(stored["adj_close"], expected, rtol=1e-9)
        np.testing.assert_allclose(stored["close"], expected, rtol=1e-9)  # close-only: the adjusted close
        assert stored[["open", "high", "low", "volume"]].isna().all().all()
    assert {h["ticker"]: h["status"] for h in last_report(workspace)["health"]} == {"IBM": "ok", "AAPL": "ok"}


def test_text_in_a_price_column_exits_2_naming_column_and_lines(workspace, february):
    export = yahoo_export(february).astype({"Close": object})
    export.loc[4, "Close"], export.loc[9, "Close"] = "27.6O", "#REF!"
    export.to_csv(workspace.root / "msft.csv", index=False)
    before = workspace.files()
    result = workspace.run("ingest", "--source", "csv", "--path", "msft.csv", "--tickers", "MSFT")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert (
        "msft.csv: column 'Close' has 2 value(s) that are not numbers: line 6 ('27.6O'), line 11 ('#REF!')"
        in result.stderr
    )
    assert workspace.files() == before


def hostile_files(folder: Path, bars: pd.DataFrame) -> dict[str, dict]:
    "The same real bars as other tools, locales and accidents write them; what each ingest must report (reasons)."
    export = yahoo_export(bars)
    export.to_csv(folder / "excel-unicode.csv", index=False, encoding="utf-16", sep="\t")
    export.to_csv(folder / "german.csv", index=False, sep=";", decimal=",")
    odd = export.astype({"Close": object, "Date": object})
    odd.loc[2, "Close"], odd.loc[3, "Close"], odd.loc[4, "Close"] = "inf", "1e308", "-inf"
    odd.loc[len(odd)] = ["2099-01-05", *odd.iloc[0, 1:]]  # a Monday, far ahead
    odd.to_csv(folder / "odd.csv", index=False)
    copies = 50_000_000 // len(export.to_csv(index=False)) + 1  # 50 MB of the same month over and over
    pd.concat([export] * copies).to_csv(folder / "repeated.csv", index=False)
    today = str(dt.datetime.now(dt.UTC).date())
    return {
        "excel-unicode.csv": {},
        "german.csv": {},
        "odd.csv": {"close outside [low, high]": 3, "non-finite close": 2, "implausible close (above 1e+09)": 1,
                    "non-positive close": 1, f"in the future (after {today})": 1},
        "repeated.csv": {"duplicate date": (copies - 1) * len(export)},
    }  # fmt: skip


def test_hostile_and_odd_files_ingest_their_good_rows_with_a_report(workspace, february, tmp_path):
    for name, reasons in hostile_files(tmp_path, february).items():
        result = workspace.run(
            "ingest", "--source", "csv", "--path", str(tmp_path / name), "--tickers", "MSFT", "--refresh"
        )
        assert result.returncode == 0, (name, result.stderr)
        health = last_report(workspace)["health"][0]
        assert health["reasons"] == reasons, (name, health["reasons"])
        assert health["rows_good"] == len(february) - (3 if name == "odd.csv" else 0), name
        stored = pd.read_parquet(workspace.data / "prices" / "MSFT.parquet")
        assert np.allclose(stored["close"], february["close"]), name  # the decimal commas, the UTF-16: same prices
