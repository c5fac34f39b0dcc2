"""Benchmark: the interval report. Do the served intervals hold in storms, and how do they compare with GARCH?

On the 20 bundled sp500 stocks (1990-2022) and the bundled OHLCV sample (AAPL, MSFT, IBM, GOOG, FB, 2000-2013), the
naive forecast's walk-forward test days (the baseline experiment's folds: 504 days to start, refit every 252) get
90% intervals from six volatility models, every one calibrated by the same online conformal step
(`stockops.intervals.online_intervals`, 1000 residuals):

- `ewma`: today's EWMA volatility x sqrt(h); `static`: a fixed width; `reverting`: the EWMA variance reverting to a
  long-run level over the h days (`stockops.intervals.reverting_variance`);
- `served before`: per ticker and horizon, the better of ewma and static by walk-forward Winkler score (what
  training chose before `reverting` existed); `served`: the best of the three (what training chooses now);
- peers: `garch`, GARCH(1,1) with Student-t shocks (`arch`), refit on each fold's past returns and forecasting the
  fold's h-day variance from each day's close; `rolling63`: the 63-day standard deviation x sqrt(h).

Prints, per set and horizon: the Winkler ratio of each against GARCH-t and against `served before` (< 1: better;
per ticker on the same days, then the mean over tickers, as the issue measured, and the median);
90% coverage overall, on the top decile of days by trailing 20-day volatility (the storms, known at the forecast),
in 2008-09-01..2009-03-31 and in 2020-02-20..2020-04-30; QLIKE (log variance + realised / variance) of the variance
forecasts of ewma, reverting, the 20-day rolling variance and GARCH-t, as the median over tickers of each
ticker's mean difference from GARCH-t (< 0: better);
then each goal of the issue, met or not. Saves a plot of coverage by condition and the Winkler ratios.

    .venv/bin/python bench/intervals.py            # both sets, about 2 minutes on 2 cores
    .venv/bin/python bench/intervals.py --sample   # the OHLCV sample only
"""

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from stockops.evaluate import backtest
from stockops.features import make_features, make_targets
from stockops.intervals import online_intervals, reverting_variance, winkler_score
from stockops.sources import SAMPLE_STOCKS, SP500_STOCKS, SampleSource, Sp500Source

HORIZONS = (1, 5, 20)
SPLITS = {"min_train": 504, "step": 252}
CRISES = {"2008-09..2009-03": ("2008-09-01", "2009-03-31"), "2020-02-20..2020-04-30": ("2020-02-20", "2020-04-30")}
GOALS = {  # the issue's goals
    "winkler_vs_garch": 1.0,  # served <= 1.0x GARCH(1,1)-t at every horizon
    "winkler_vs_before_h20": 0.97,  # served <= 0.97x the intervals served before, at h=20
    "storm_coverage": 0.85,  # 90% coverage >= 85% on storm days and in each crisis, every horizon
    "coverage": (0.88, 0.92),  # overall 90% coverage
}


QLIKES: dict[str, pd.DataFrame] = {}  # per set: per horizon, each variance forecast's QLIKE minus GARCH-t's
GARCH_FITS = {"fits": 0, "retried": 0, "previous": 0, "failed": 0}  # how often the optimizer needed help
GARCH_FAILED: set[str] = set()  # tickers with a fold whose GARCH fit never converged to a stationary model


def garch_fit(returns: np.ndarray, start: int, previous: dict | None = None) -> dict:
    """GARCH(1,1)-t parameters fit on the returns before position `start` (the fold's first test day). When the
    optimizer does not converge to a plausible stationary fit (alpha + beta < 1, alpha < 0.5, omega > 0: RRC's
    early-1990s closes, flat for days on end, give alpha = 1), it starts again from typical equity values; failing
    that, the previous fold's parameters are kept (counted in GARCH_FITS)."""
    from arch import arch_model

    model = arch_model(returns[:start] * 100, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False)
    variance = float(np.var(returns[:start] * 100))
    GARCH_FITS["fits"] += 1
    for attempt, starting in enumerate((None, np.array([0.05 * variance, 0.08, 0.9, 8.0]))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = model.fit(disp="off", starting_values=starting, options={"maxiter": 500})
        params = fitted.params
        alpha, persistence = params["alpha[1]"], params["alpha[1]"] + params["beta[1]"]
        if fitted.convergence_flag == 0 and persistence < 0.9999 and alpha < 0.5 and params["omega"] > 1e-6:
            return {"omega": params["omega"] / 1e4, "alpha": params["alpha[1]"], "beta": params["beta[1]"]}
        GARCH_FITS["retried"] += attempt == 0
    if previous is not None:
        GARCH_FITS["previous"] += 1
        return previous
    GARCH_FITS["failed"] += 1
    return {"omega": params["omega"] / 1e4, "alpha": params["alpha[1]"], "beta": params["beta[1]"], "failed": True}


def garch_variances(returns: np.ndarray, spans: pd.DataFrame, horizon: int, fits: dict) -> np.ndarray:
    """Per position, the GARCH(1,1)-t forecast made at that close of the variance of the next `horizon` days' summed
    return, with the parameters of its fold (fit on the returns before the fold: `fits`, by first test position,
    shared by the horizons); NaN outside the test folds. The analytic forecast: tomorrow's variance from the
    recursion, reverting to omega / (1 - alpha - beta) at the rate alpha + beta."""
    out = np.full(len(returns), np.nan)
    clean = np.nan_to_num(returns)
    for start, stop in zip(spans["start"], spans["stop"], strict=True):
        start, stop = int(start), int(stop)
        if start not in fits:
            earlier = [fits[key] for key in sorted(fits) if key < start]
            fits[start] = garch_fit(clean, start, earlier[-1] if earlier else None)
        omega, alpha, beta = fits[start]["omega"], fits[start]["alpha"], fits[start]["beta"]
        persistence = alpha + beta
        variance = np.empty(stop + 1)  # variance[t]: of the return of day t, given the days before
        variance[0] = clean[:start].var()
        for t in range(stop):
            variance[t + 1] = omega + alpha * clean[t] ** 2 + beta * variance[t]
        tomorrow = variance[start + 1 : stop + 1]  # made at the close of start .. stop - 1
        if persistence < 1:
            total = reverting_variance(tomorrow, omega / (1 - persistence), horizon, persistence)
        else:  # integrated: today's variance lasts
            total = horizon * tomorrow
        out[start:stop] = total
    return out


def ticker_rows(ticker: str, bars: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The naive forecast's test rows of every horizon: (intervals, one row per method and day; variance forecasts,
    one row per day with a column per variance model); None for a history too short for a fold."""
    features = make_features(bars).dropna(subset=["ma_ratio_200d", "vol_60d"])
    targets = make_targets(bars, HORIZONS).reindex(features.index)
    predictions, _ = backtest(features, targets, {}, SPLITS, workers=1)
    if predictions.empty:  # too short for a walk-forward fold (FB: 2012-2013)
        return None
    returns = features["ret_lag0"].to_numpy()
    rolling63 = pd.Series(returns).rolling(63, min_periods=63).std().to_numpy()
    storms = features["vol_20d"].to_numpy()
    intervals, variances, fits = [], [], {}
    for horizon, rows in predictions.groupby("horizon"):
        rows = rows.sort_values("pos").reset_index(drop=True)
        positions = rows["pos"].to_numpy()
        spans = rows.groupby("fold")["pos"].agg(start="min", stop="max")
        spans["stop"] += 1
        garch = garch_variances(returns, spans, int(horizon), fits)[positions]
        sigmas = {"garch": np.sqrt(garch / horizon), "rolling63": rolling63[positions]}  # peers: daily sigma x sqrt(h)
        for name in ("ewma", "static", "reverting", *sigmas):
            table = rows.assign(sigma_daily=sigmas[name]) if name in sigmas else rows
            one = online_intervals(table.dropna(subset=["sigma_daily"]), (0.9,), name if name not in sigmas else "ewma")
            intervals.append(one.assign(method=name))
        variances.append(rows.assign(
            var_ewma=horizon * rows["sigma_daily"] ** 2,
            var_reverting=reverting_variance(rows["sigma_daily"] ** 2, rows["sigma_long"] ** 2, int(horizon)),
            var_rolling20=horizon * features["vol_20d"].to_numpy()[positions] ** 2, var_garch=garch))  # fmt: skip
    intervals, variances = (pd.concat(frames, ignore_index=True) for frames in (intervals, variances))
    if any(fit.get("failed") for fit in fits.values()):
        GARCH_FAILED.add(ticker)
    intervals["storm_level"] = storms[intervals["pos"].to_numpy()]
    return intervals.assign(ticker=ticker), variances.assign(ticker=ticker)


def served_choice(intervals: pd.DataFrame, methods: tuple[str, ...], name: str) -> pd.DataFrame:
    "Per ticker and horizon, the rows of the method among `methods` with the lowest walk-forward Winkler score (as training chooses)."
    scored = intervals[intervals["method"].isin(methods)].dropna(subset=["lower_90"])
    winkler = scored.assign(w=winkler_score(scored["y_true"], scored["lower_90"], scored["upper_90"], 0.9))
    means = winkler.groupby(["ticker", "horizon", "method"])["w"].mean().reset_index()
    means["order"] = means["method"].map({m: i for i, m in enumerate(methods)})
    best = means.sort_values(["w", "order"]).groupby(["ticker", "horizon"]).head(1)[["ticker", "horizon", "method"]]
    return scored.merge(best, on=["ticker", "horizon", "method"]).assign(method=name)


def report(name: str, intervals: pd.DataFrame, variances: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    "The set's table per method and horizon, and its goals in words."
    intervals = pd.concat([intervals, served_choice(intervals, ("ewma", "static"), "served before"),
                           served_choice(intervals, ("ewma", "static", "reverting"), "served")], ignore_index=True)  # fmt: skip
    # every method on the same days: those where all of them have an interval
    complete = (
        intervals.dropna(subset=["lower_90"]).pivot_table("lower_90", ["ticker", "horizon", "pos"], "method").dropna()
    )
    keys = complete.index.to_frame(index=False)
    days = intervals.merge(keys, on=["ticker", "horizon", "pos"])
    days["winkler"] = winkler_score(days["y_true"], days["lower_90"], days["upper_90"], 0.9)
    days["inside"] = (days["y_true"] >= days["lower_90"]) & (days["y_true"] <= days["upper_90"])
    cut = days.groupby("ticker")["storm_level"].transform(lambda level: level.quantile(0.9))
    days["storm"] = days["storm_level"] >= cut
    rows = []
    for (method, horizon), group in days.groupby(["method", "horizon"]):
        row = {"set": name, "method": method, "h": horizon, "days": len(group), "winkler": group["winkler"].mean(),
               "coverage": group["inside"].mean(), "storm decile": group.loc[group["storm"], "inside"].mean()}  # fmt: skip
        for label, (first, last) in CRISES.items():
            inside = group.loc[group["date"].between(first, last), "inside"]
            row[label] = inside.mean() if len(inside) else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    # the issue's measure: per ticker, the Winkler ratio on the same days; then the mean over tickers (GARCH-t
    # only over tickers where every fold's fit converged: a failed fit is not GARCH's forecast, it is no forecast)
    per_ticker = days.groupby(["method", "horizon", "ticker"])["winkler"].mean().unstack("method")
    fitted = per_ticker[~per_ticker.index.get_level_values("ticker").isin(GARCH_FAILED)]
    for peer, column, frame in (("garch", "vs garch", fitted), ("served before", "vs before", per_ticker)):
        ratios = frame.div(frame[peer], axis=0).groupby(level="horizon")
        means, medians = ratios.mean(), ratios.median()
        table[column] = [means.loc[h, m] for m, h in zip(table["method"], table["h"], strict=True)]
        if peer == "garch":
            table["vs garch median"] = [medians.loc[h, m] for m, h in zip(table["method"], table["h"], strict=True)]
    qlike = variances.merge(keys, on=["ticker", "horizon", "pos"]).dropna(subset=["var_garch"])
    losses = {
        m: np.log(qlike[f"var_{m}"]) + qlike["y_true"] ** 2 / qlike[f"var_{m}"]
        for m in ("ewma", "reverting", "rolling20", "garch")
    }
    frame = pd.DataFrame(losses).assign(h=qlike["horizon"].to_numpy(), ticker=qlike["ticker"].to_numpy())
    per_ticker_q = frame.groupby(["h", "ticker"]).mean()  # one ticker's bad variance must not swamp the rest
    q = per_ticker_q.sub(per_ticker_q["garch"], axis=0).groupby(level="h").median()
    table["QLIKE - garch"] = [q.loc[h, m] if m in q else np.nan
                              for m, h in zip(table["method"], table["h"], strict=True)]  # fmt: skip
    QLIKES[name] = q.drop(columns="garch")
    served = table[table["method"] == "served"].set_index("h")
    storm_columns = ["storm decile", *[label for label in CRISES if served[label].notna().any()]]
    goals = []
    for h, row in served.iterrows():
        goals.append(
            f"{name} h={h}: Winkler {row['vs garch']:.3f}x GARCH-t, mean over tickers (median "
            f"{row['vs garch median']:.3f}; goal <= {GOALS['winkler_vs_garch']}): "
            f"{'met' if row['vs garch'] <= GOALS['winkler_vs_garch'] else 'NOT met'}"
        )
        low, high = GOALS["coverage"]
        goals.append(
            f"{name} h={h}: coverage {row['coverage']:.3f} (goal {low}-{high}): "
            f"{'met' if low <= row['coverage'] <= high else 'NOT met'}"
        )
        for column in storm_columns:
            value = row[column]
            goals.append(
                f"{name} h={h}: coverage in {column} {value:.3f} (goal >= {GOALS['storm_coverage']}): "
                f"{'met' if value >= GOALS['storm_coverage'] else 'NOT met'}"
            )
    ratio = served.loc[20, "vs before"]
    goals.append(
        f"{name} h=20: Winkler {ratio:.3f}x the intervals served before (goal <= {GOALS['winkler_vs_before_h20']}): "
        f"{'met' if ratio <= GOALS['winkler_vs_before_h20'] else 'NOT met'}"
    )
    return table, goals


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = table[table["method"].isin(["served before", "served", "reverting", "garch", "rolling63"])]
    conditions = ["coverage", "storm decile", *CRISES]
    sets = list(dict.fromkeys(shown["set"]))
    figure, axes = plt.subplots(len(sets), 2, figsize=(13, 4 * len(sets)), squeeze=False, constrained_layout=True)
    for row, name in enumerate(sets):
        part = shown[shown["set"] == name]
        for method, group in part.groupby("method"):
            labels = [f"h={h} {c}" for h in group["h"] for c in conditions]
            values = [group.set_index("h").loc[h, c] for h in group["h"] for c in conditions]
            axes[row, 0].plot(range(len(labels)), values, marker="o", label=method)
            axes[row, 0].set_xticks(range(len(labels)), labels, rotation=75, fontsize=7)
            axes[row, 1].plot(group["h"], group["vs garch"], marker="o", label=method)
        axes[row, 0].axhline(0.9, color="black", lw=0.8)
        axes[row, 0].axhline(GOALS["storm_coverage"], color="tab:red", lw=0.8, ls="--")
        axes[row, 0].set_title(f"{name}: 90% interval coverage by condition (red: the 85% storm goal)")
        axes[row, 1].axhline(1, color="black", lw=0.8)
        axes[row, 1].set_xscale("log")
        axes[row, 1].set_xticks(list(HORIZONS), [str(h) for h in HORIZONS])
        axes[row, 1].set_title(f"{name}: Winkler score / GARCH(1,1)-t's (below 1: better)")
        for axis in axes[row]:
            axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", action="store_true", help="only the OHLCV sample (2000-2013)")
    arguments = parser.parse_args()
    sets = {"OHLCV sample": (SampleSource(), SAMPLE_STOCKS)}
    if not arguments.sample:
        sets = {"sp500 20": (Sp500Source(), SP500_STOCKS)} | sets
    tables, goals = [], []
    started = time.perf_counter()
    for name, (source, tickers) in sets.items():
        bars = source.fetch(list(tickers))
        parts = []
        for number, ticker in enumerate(tickers, 1):
            rows = ticker_rows(ticker, bars[ticker])
            parts += [] if rows is None else [rows]
            said = "" if rows is not None else ": too short for a walk-forward fold, left out"
            print(
                f"{name}: {ticker} ({number}/{len(tickers)}) {time.perf_counter() - started:.0f} s{said}",
                file=sys.stderr,
            )
        table, said = report(name, *(pd.concat(frames, ignore_index=True) for frames in zip(*parts, strict=True)))
        tables.append(table)
        goals += said
    table = pd.concat(tables, ignore_index=True)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 200):
        print(table.round(3).to_string(index=False))
    for name, q in QLIKES.items():
        print(f"\n{name}: QLIKE of the variance forecasts minus GARCH-t's (median over tickers; < 0: better)")
        print(q.round(4).to_string())
    print("\nGoals (the served intervals: per ticker and horizon the best of ewma, static and reverting):")
    for line in goals:
        print(f"  {line}")
    path = Path(tempfile.mkdtemp(prefix="stockops-bench-intervals-")) / "intervals.png"
    plot(table, path)
    print(
        f"\nGARCH(1,1)-t fits: {GARCH_FITS['fits']}; restarted from typical values: {GARCH_FITS['retried']}; "
        f"kept the previous fold's parameters: {GARCH_FITS['previous']}; never converged: {GARCH_FITS['failed']} "
        f"(tickers left out of the GARCH ratios: {', '.join(sorted(GARCH_FAILED)) or 'none'})"
    )
    print(f"\nplot: {path}  ({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
