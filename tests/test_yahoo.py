"""The yahoo source at the network edge: recorded yfinance answers stand in for Yahoo (unreachable from CI)."""

import datetime as dt
import logging
from pathlib import Path

import pandas as pd
import pytest

from stockops import sources
from stockops.config import load_settings
from stockops.ingest import ingest
from stockops.prices import PriceStore, SourceUnavailable

RECORDED = Path(__file__).parent / "fixtures" / "yfinance_download_AAPL_MSFT_2013-01.csv"


def recorded() -> pd.DataFrame:
    return pd.read_csv(RECORDED, header=[0, 1], index_col=0, parse_dates=True)


class Yahoo:
    "A stand-in for yfinance.download that replays recorded answers and records the calls."

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def __call__(self, tickers, **kwargs):
        self.calls.append({"tickers": list(tickers), **kwargs})
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, str):  # yfinance logs the failure and returns an empty frame
            logging.getLogger("yfinance").error(answer)
            return recorded().iloc[:0]
        return answer


@pytest.fixture
def settings(tmp_path):
    return load_settings(env={}).replace(data_dir=tmp_path / "data", reports_dir=tmp_path / "reports")


def test_recorded_download_is_stored_with_raw_and_adjusted_close(settings):
    yahoo = Yahoo(recorded())
    report = ingest("yahoo", "AAPL,MSFT", start="2013-01-02", end="2013-01-31", settings=settings, download=yahoo)
    call = yahoo.calls[0]
    assert call["auto_adjust"] is False  # explicit: we keep both closes
    assert (call["start"], call["end"]) == ("2013-01-02", "2013-02-01")  # yfinance's end is exclusive
    assert sorted(call["tickers"]) == ["AAPL", "MSFT"]
    assert [t.inserted for t in report.tickers] == [21, 21]
    aapl = PriceStore.from_settings(settings).load("AAPL")
    assert aapl["source"].unique().tolist() == ["yahoo"]
    first = aapl.iloc[0]
    assert (str(first["date"].date()), first["close"], round(first["adj_close"], 4)) == ("2013-01-02", 549.03, 71.1957)


@pytest.fixture
def pauses(monkeypatch):
    "Backoff pauses, recorded instead of slept."
    slept = []
    monkeypatch.setattr(sources.time, "sleep", slept.append)
    return slept


def test_transient_failures_are_retried_with_backoff(settings, pauses):
    yahoo = Yahoo("['AAPL', 'MSFT']: ConnectionError('Failed to perform, curl: (28) Operation timed out')", recorded())
    report = ingest("yahoo", "AAPL,MSFT", start="2013-01-02", end="2013-01-31", settings=settings, download=yahoo)
    assert len(yahoo.calls) == 2 and pauses == [1.0]
    assert [t.rows for t in report.tickers] == [21, 21]


def test_one_ticker_missing_fails_the_ingest_and_writes_nothing(settings, pauses):
    partial = recorded().astype("float64")
    partial.loc[:, (slice(None), "MSFT")] = float("nan")  # yfinance's answer when one of two tickers fails
    yahoo = Yahoo(partial, "$MSFT: possibly delisted; no price data found")
    with pytest.raises(SourceUnavailable, match="no data for MSFT after 3 attempt"):
        ingest("yahoo", "AAPL,MSFT", start="2013-01-02", end="2013-01-31", settings=settings, download=yahoo)
    assert pauses == [1.0, 2.0]
    assert [c["tickers"] for c in yahoo.calls] == [
        ["AAPL", "MSFT"],
        ["MSFT"],
        ["MSFT"],
    ]  # only the missing one is retried
    assert not settings.data_dir.exists() and not settings.reports_dir.exists()


def test_incremental_yahoo_asks_only_after_the_last_stored_day(settings):
    ingest("yahoo", "AAPL,MSFT", start="2013-01-02", end="2013-01-15", settings=settings, download=Yahoo(recorded()))
    yahoo = Yahoo(recorded())
    report = ingest("yahoo", "AAPL,MSFT", end="2013-01-31", settings=settings, download=yahoo)
    assert yahoo.calls[0]["start"] == str(dt.date(2013, 1, 16))
    assert [(t.inserted, t.unchanged, t.rows) for t in report.tickers] == [(11, 0, 21), (11, 0, 21)]
