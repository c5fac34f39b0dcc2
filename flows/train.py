"""The training flows: `train` trains the universe (or some tickers); `train-ticker` trains a batch of tickers, one
after another, as a flow run of its own on a work pool when the workspace has one (`prefect_work_pool`), so training
fans out over the workers in batches of at most `train_batch` tickers."""

from prefect import flow

from stockops.config import parse_tickers, settings_from
from stockops.lock import workspace_lock
from stockops.orchestrate import train_batch, train_tickers
from stockops.pipeline import wait_for_logging
from stockops.routine import resolve_as_of


@flow(name="train", log_prints=True)
def train(as_of: str = "", tickers: str = "", force: bool = False, overrides: dict | None = None) -> dict:
    "Train `tickers` (default: the universe) on data up to `as_of` (default: the last stored day)."
    overrides = dict(overrides or {})
    settings = settings_from(overrides, "flow parameter")
    symbols = parse_tickers(tickers) if tickers else list(settings.universe)
    with workspace_lock(settings, "the train flow"):  # one writer at a time (`stockops train --flow` holds it already)
        day = resolve_as_of(settings, as_of, symbols)
        runs = train_tickers(symbols, day, overrides, "train", force=force)
        wait_for_logging()  # every runbook run is in MLflow before the flow ends
    return {"as_of": day, "results": {run["ticker"]: run["result"] for run in runs}}


@flow(name="train-ticker", log_prints=True)
def train_ticker(
    as_of: str, tickers: list[str], force: bool = False, overrides: dict | None = None, flow_name: str = "train"
) -> list[dict]:
    "Train a batch of tickers as of `as_of`: a `train_forecaster` runbook each; their records land beside the notebooks."
    return train_batch(as_of, list(tickers), force, dict(overrides or {}), flow_name)
