"""The daily flow: one trading day of operations (`stockops.routine.run_day`: ETL, monitoring, training where the
retraining policy says so, forecasts), each step a runbook executed with papermill; then the static pages of the
latest forecasts (`stockops.publish`: reports/site/, served at /reports/site/ by the API and /site/ by nginx).

Executed notebooks and results land in `reports/daily/<as_of>/`, with the flow's record in `run.json`. Its progress
(step, tickers trained of how many, elapsed, an estimate of the step's rest) goes to the terminal and to
`data/progress.json`, which the API (`GET /health`) and the dashboards show.
"""

from prefect import flow, get_run_logger

from stockops.config import parse_tickers, settings_from
from stockops.files import write_json_atomic
from stockops.lock import workspace_lock
from stockops.orchestrate import RunbookSteps
from stockops.pipeline import wait_for_logging
from stockops.progress import Progress, to_terminal
from stockops.publish import publish_site
from stockops.routine import run_day


@flow(name="daily", log_prints=True)
def daily(
    as_of: str = "",
    tickers: str = "",
    source: str = "",
    path: str = "",
    overrides: dict | None = None,
    job: str = "",
    since: str = "",
) -> dict:
    """One trading day of operations on `tickers` (default: the universe) as of `as_of` (default: the last day the
    source has), fetching from `source` (default: the source setting); `job` names it in the progress reports.
    `since`: the job began then (UTC) and its progress goes on (a first run's backfill, `stockops run --backfill`,
    replays its past as plain calls in the command's own process before this flow, while the Prefect server starts)."""
    settings = settings_from(overrides, "flow parameter")
    symbols = parse_tickers(tickers) if tickers else list(settings.universe)
    with workspace_lock(settings, "the daily flow"):  # one writer at a time (`stockops run` holds it already)
        steps = RunbookSteps(settings.transport(), "daily", source, path)
        progress = Progress(settings, job or "the daily run", to_terminal, since=since or None)
        try:
            day = run_day(steps, settings, symbols, as_of, log=get_run_logger().info, progress=progress)
            progress.step("publish")
            summary = {
                "as_of": day.as_of,
                "tickers": symbols,
                "retrained": day.retrained,
                "forecast": day.forecast,
                "waiting": {t: o.reasons for t, o in day.tickers.items() if o.status == "waiting"},
                "decisions": day.decisions,
                "notebooks": [run["notebook"] for run in steps.runs],
                "seconds": round(sum(run["seconds"] for run in steps.runs), 1),
                "published": len(publish_site(settings)),  # pages written, plotly.js and the index included
            }
            wait_for_logging()  # every runbook run is in MLflow (tags stockops.flow, stockops.as_of) before the flow ends
            write_json_atomic(
                settings.reports_dir / "daily" / day.as_of / "run.json", {"summary": summary, "runs": steps.runs}
            )
        except BaseException as error:
            progress.fail(error)
            raise
        progress.finish()
        return summary
