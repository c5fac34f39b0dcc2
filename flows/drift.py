"""The monitoring flow on its own: live error, drift and the retraining decision (no training)."""

from prefect import flow

from stockops.config import parse_tickers, settings_from
from stockops.orchestrate import runbook
from stockops.pipeline import wait_for_logging
from stockops.routine import resolve_as_of


@flow(name="drift", log_prints=True)
def drift(as_of: str = "", tickers: str = "", overrides: dict | None = None) -> dict:
    "Monitor `tickers` (default: the universe) as of `as_of` (default: the last stored day)."
    overrides = dict(overrides or {})
    settings = settings_from(overrides, "flow parameter")
    symbols = parse_tickers(tickers) if tickers else list(settings.universe)
    day = resolve_as_of(settings, as_of, symbols)
    run = runbook("report_drift", {"as_of": day, "tickers": ",".join(symbols)}, overrides, "drift")
    wait_for_logging()
    return {"as_of": day, "decisions": run["result"]["tickers"], "notebook": run["notebook"]}
