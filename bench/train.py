"""Benchmark: the full first training of the bundled universe (5 stocks, 3 horizons, baseline experiment).

Prints the time per ticker per model family (walk-forward backtest fits and predictions, timed in this process:
the fit_workers setting 1), the time per ticker for the whole `train_ticker` (backtest, intervals, final fit, MLflow
logging and registration), and the total, against the target of 3 minutes on 2 cores. Then the same training with
the expensive fits in worker processes (the default), quiet and beside one competing CPU-bound process, and the
ratios, measured in this one run. Runs in temporary workspaces on the bundled data.

    .venv/bin/python bench/train.py
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


def first_training(pooled: bool) -> float:
    "Seconds for the first training of the universe in a fresh workspace, fits pooled or in this process."
    from stockops.evaluate import clear_fold_cache

    clear_fold_cache()  # a fresh process's first training: nothing cached
    folder = Path(tempfile.mkdtemp(prefix="stockops-bench-"))
    settings = load_settings(env={}).replace(
        data_dir=folder / "data", reports_dir=folder / "reports", fit_workers=None if pooled else 1
    )
    ingest("sample", settings=settings)
    started = time.perf_counter()
    for ticker in settings.universe:
        train_ticker(ticker, settings=settings, experiment=load_experiment(settings=settings))
    return time.perf_counter() - started


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="stockops-bench-"))
    settings = load_settings(env={}).replace(  # fit_workers=1: the per-family table times every fit here
        data_dir=folder / "data", reports_dir=folder / "reports", fit_workers=1
    )
    experiment = load_experiment(settings=settings)
    ingest("sample", settings=settings)

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
        f"the rest: features, intervals, MLflow logging); target {TARGET_SECONDS}s: "
        f"{'met' if total <= TARGET_SECONDS else 'MISSED'} (ratio {total / TARGET_SECONDS:.2f})"
    )
    quiet = first_training(pooled=True)
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one CPU-bound neighbour
    try:
        busy_pooled = first_training(pooled=True)
        busy_here = first_training(pooled=False)
    finally:
        competitor.kill()
    print(f"fits in worker processes (one thread each): {quiet:.1f}s quiet ({quiet / total:.2f}x the in-process run), "
          f"{busy_pooled:.1f}s beside a CPU-bound process ({busy_pooled / quiet:.2f}x quiet; target <= 2x); "
          f"in-process beside it: {busy_here:.1f}s ({busy_here / total:.2f}x its quiet run)")  # fmt: skip


if __name__ == "__main__":
    main()
