"""The daily flow: ETL, then monitoring, then training where the retraining policy says so, then forecasts.

Each step is a runbook executed with papermill; executed notebooks and results land in `reports/daily/<as_of>/`.
Retries only around network I/O: the ETL step when the source is Yahoo.
"""

from prefect import flow, get_run_logger

from stockops.config import load_settings, parse_tickers
from stockops.orchestrate import runbook, train_tickers
from stockops.pipeline import relocate_run, resolve_as_of, wait_for_logging
from stockops.prices import write_json_atomic


@flow(name="daily", log_prints=True)
def daily(
    as_of: str = "", tickers: str = "", source: str = "sample", path: str = "", overrides: dict | None = None
) -> dict:
    "One trading day of operations on `tickers` (default: the universe) as of `as_of` (default: the last stored day)."
    logger = get_run_logger()
    overrides = dict(overrides or {})
    settings = load_settings().with_overrides(overrides, origin="flow parameter")
    symbols = parse_tickers(tickers) if tickers else list(settings.universe)
    to_ingest = ",".join(dict.fromkeys(symbols + list(settings.indices)))
    etl = runbook.with_options(retries=2, retry_delay_seconds=20) if source == "yahoo" else runbook
    runs = [
        etl("etl_prices", {"as_of": as_of, "tickers": to_ingest, "source": source, "path": path}, overrides, "daily")
    ]
    day = resolve_as_of(settings, as_of, symbols)
    runs[0] = relocate_run(runs[0], settings, day)  # an ETL "up to today" belongs with the day it loaded
    runs.append(runbook("report_drift", {"as_of": day, "tickers": ",".join(symbols)}, overrides, "daily"))
    decisions = runs[-1]["result"]["tickers"]
    retrain = [ticker for ticker, decision in decisions.items() if decision["retrain"]]
    for ticker, decision in decisions.items():
        logger.info(
            f"{ticker}: {'retrain' if decision['retrain'] else 'keep'} ({'; '.join(decision['reasons']) or 'no rule fired'})"
        )
    runs += train_tickers(retrain, day, overrides, "daily")  # on the work pool, a flow run per ticker, if there is one
    runs.append(runbook("forecast_prices", {"as_of": day, "tickers": ",".join(symbols)}, overrides, "daily"))
    summary = {
        "as_of": day,
        "tickers": symbols,
        "retrained": retrain,
        "decisions": decisions,
        "notebooks": [run["notebook"] for run in runs],
        "seconds": round(sum(run["seconds"] for run in runs), 1),
    }
    wait_for_logging()  # every runbook run is in MLflow (tags stockops.flow, stockops.as_of) before the flow ends
    write_json_atomic(settings.reports_dir / "daily" / day / "run.json", {"summary": summary, "runs": runs})
    return summary
