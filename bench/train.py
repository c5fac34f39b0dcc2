"""Benchmark: the first training of the default universe (the 20 bundled sp500 stocks to 2022-12-28, 3 horizons,
baseline experiment).

Prints the time per ticker per model family (walk-forward backtest fits and predictions, timed in this process:
the fit_workers setting 1), the time per ticker for the whole `train_ticker` (backtest, intervals, final fit, MLflow
logging and registration) and the total. Then the training as `stockops train` runs it (`train_many`: tickers side
by side in worker processes, one thread each), quiet and beside one competing CPU-bound process, against the
targets (3 minutes quiet on 2 cores; at most 2x that when busy), with the ratios measured in this one run. Runs in
temporary workspaces on the bundled data.

    .venv/bin/python bench/train.py
    .venv/bin/python bench/train.py --pooled-only   # only the quiet and busy runs
"""

import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from stockops import models
from stockops.config import load_settings
from stockops.experiment import load_experiment
from stockops.ingest import ingest
from stockops.training import train_ticker

TARGET_SECONDS = 180


FIRST_TRAINING = """
import json, tempfile, time
from pathlib import Path
from stockops.config import load_settings
from stockops.ingest import ingest
from stockops.training import train_many
folder = Path(tempfile.mkdtemp(prefix="stockops-bench-"))
settings = load_settings(env={}).replace(data_dir=folder / "data", reports_dir=folder / "reports")
ingest(settings=settings)
started = time.perf_counter()
outcomes = dict(train_many(list(settings.universe), settings=settings))
refused = {ticker: str(outcome) for ticker, outcome in outcomes.items() if isinstance(outcome, Exception)}
assert not refused, refused
print(json.dumps(time.perf_counter() - started))
"""


def first_training() -> float:
    """Seconds for the first training of the universe in a fresh workspace and a fresh process (its own fit pool, no
    fold cached anywhere), as `stockops train` runs it."""
    import json

    answer = subprocess.run([sys.executable, "-c", FIRST_TRAINING], capture_output=True, text=True, check=True)
    return json.loads(answer.stdout.strip().splitlines()[-1])


def main() -> None:
    if "--pooled-only" in sys.argv:  # skip the in-process table (about 6 minutes)
        return pooled(None)
    folder = Path(tempfile.mkdtemp(prefix="stockops-bench-"))
    settings = load_settings(env={}).replace(  # fit_workers=1: the per-family table times every fit here
        data_dir=folder / "data", reports_dir=folder / "reports", fit_workers=1
    )
    experiment = load_experiment(settings=settings)
    ingest(settings=settings)  # the default source and universe: sp500's 20 stocks and ^GSPC

    spent: dict[tuple[str, str], float] = defaultdict(float)
    current = {"ticker": ""}
    original = models.make_model

    class Timed:
        "Wraps an estimator to charge its fit and predict time to (ticker, family)."

        def __init__(self, family, estimator):
            self.family, self.estimator = family, estimator

        def fit(self, X, y):
            started = time.perf_counter()
            self.estimator.fit(X, y)
            spent[(current["ticker"], self.family)] += time.perf_counter() - started
            return self

        def predict(self, X):
            started = time.perf_counter()
            result = self.estimator.predict(X)
            spent[(current["ticker"], self.family)] += time.perf_counter() - started
            return result

    import stockops.evaluate as evaluate

    evaluate.make_model = lambda family, **params: Timed(family, original(family, **params))
    totals = {}
    started_all = time.perf_counter()
    for ticker in settings.universe:
        current["ticker"] = ticker
        started = time.perf_counter()
        result = train_ticker(ticker, settings=settings, experiment=experiment)
        totals[ticker] = (time.perf_counter() - started, result.families)
    total = time.perf_counter() - started_all
    evaluate.make_model = original

    families = ["naive", *experiment.models]
    print(f"first training of {len(settings.universe)} tickers x horizons {experiment.horizons}, "
          f"folds: {experiment.splits}, families: {', '.join(families)}")  # fmt: skip
    print(f"{'ticker':<8}" + "".join(f"{family:>9}" for family in families) + f"{'train_ticker':>14}  chosen")
    for ticker, (seconds, chosen) in totals.items():
        cells = "".join(f"{spent[(ticker, family)]:>8.2f}s" for family in families)
        print(f"{ticker:<8}{cells}{seconds:>13.1f}s  {chosen}")
    fits = sum(spent.values())
    print(
        f"total {total:.1f}s for the universe (model fits and predictions {fits:.1f}s, "
        f"the rest: features, intervals, MLflow logging) in this process, one ticker after another"
    )
    pooled(total)


def pooled(in_process: float | None) -> None:
    "The first training as `stockops train` runs it, quiet and beside a CPU-bound process, against the targets."
    quiet = first_training()
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one CPU-bound neighbour
    try:
        busy = first_training()
    finally:
        competitor.kill()
    versus = f" ({quiet / in_process:.2f}x the in-process run)" if in_process else ""
    print(f"as `stockops train` runs it (tickers side by side in worker processes, one thread each; a fresh process "
          f"each): {quiet:.1f}s quiet{versus}, target {TARGET_SECONDS}s: "
          f"{'met' if quiet <= TARGET_SECONDS else 'MISSED'}; {busy:.1f}s beside a CPU-bound process "
          f"({busy / quiet:.2f}x quiet; target <= 2x: {'met' if busy <= 2 * quiet else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
