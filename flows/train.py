"""The training flow: one `train_forecaster` runbook per ticker; the gate decides each champion."""

from prefect import flow

from stockops.config import load_settings, parse_tickers
from stockops.orchestrate import runbook
from stockops.pipeline import resolve_as_of, wait_for_logging


@flow(name="train", log_prints=True)
def train(as_of: str = "", tickers: str = "", force: bool = False, overrides: dict | None = None) -> dict:
    "Train `tickers` (default: the universe) on data up to `as_of` (default: the last stored day)."
    overrides = dict(overrides or {})
    settings = load_settings().with_overrides(overrides, origin="flow parameter")
    symbols = parse_tickers(tickers) if tickers else list(settings.universe)
    day = resolve_as_of(settings, as_of, symbols)
    runs = [
        runbook(
            "train_forecaster", {"as_of": day, "ticker": t, "force": force}, overrides, "train", ticker=t, label=f"-{t}"
        )
        for t in symbols
    ]
    wait_for_logging()
    return {"as_of": day, "results": {run["ticker"]: run["result"] for run in runs}}
