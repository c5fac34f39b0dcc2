"""Benchmark: the workspace at the user's scale, universes of 20, 100 and 500 tickers.

The 20 are the real bundled sp500 stocks; bigger universes add SYNTHETIC tickers (named `SYN0021`, `SYN0022`, ...,
read from one wide file `synthetic.csv`, so every one of their bars says `source = csv:synthetic.csv`): each
is 100 times the exponential of a block bootstrap (blocks of 20 days, so volatility clusters) of one real stock's
daily log returns over the same 8,313 New York sessions. Every ticker, real or synthetic, comes from a folder of CSV
files (`source = csv`), as a user's own universe would, with skfolio's S&P 500 index beside them.

Per size, each stage runs in a fresh process (its time and its peak resident memory, from wait4): ingest to
2022-12-27; the first training (`train_many`, as `stockops train` runs it); the daily incremental run of 2022-12-28
with young champions (ingest, monitoring with Evidently reports, retraining where the policy says, forecasts:
`run_day` with the plain steps); the API's snapshot load (twice: cold, then the reload a running API does); the
forecast dashboard's ticker picker (snapshot, the dashboard built, the picker moved to the last ticker); and a
served API (`stockops serve`: start-up, resident memory, then /tickers and /forecast latency over 100 sequential
requests each). Prints the table, then per stage the ratio to the 20-ticker time and the per-ticker cost ratio,
against the targets: 500-ticker time <= 30x the 20-ticker time for every stage; daily run at 500 <= 10 minutes;
API memory at 500 <= 1.5 GB; snapshot reload <= 5 s.

    .venv/bin/python bench/universe.py                  # 20, 100, 500 (the 500 first training is over an hour here)
    .venv/bin/python bench/universe.py --sizes 20,100
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from stockops.config import environment_of
from stockops.processes import free_port, start, stop, wait_for
from stockops.sources import SP500_STOCKS, Sp500Source

REPO = Path(__file__).resolve().parents[1]
BEFORE, DAY = "2022-12-27", "2022-12-28"  # train on the set up to its last day but one; the daily run adds the last
BLOCK = 20  # trading days per bootstrap block
TARGETS = {"ratio_500": 30.0, "daily_500_seconds": 600.0, "api_rss_500_mb": 1536.0, "reload_seconds": 5.0}


def synthetic(real: dict[str, pd.DataFrame], count: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    "A wide frame of `count` synthetic closes: block-bootstrapped log returns of the real stocks in turn, same dates."
    rng, made = np.random.default_rng(seed), {}
    names = sorted(real)
    for i in range(count):
        bars = real[names[i % len(names)]]
        returns = np.diff(np.log(bars["adj_close"].to_numpy()))
        starts = rng.integers(0, len(returns) - BLOCK, size=len(returns) // BLOCK + 1)
        drawn = np.concatenate([returns[s : s + BLOCK] for s in starts])[: len(returns)]
        closes = 100 * np.exp(np.concatenate([[0.0], np.cumsum(drawn)]))
        made[f"SYN{len(real) + i + 1:04d}"] = closes.round(4)
    dates = real[names[0]]["date"].dt.strftime("%Y-%m-%d")
    return pd.DataFrame(made, index=pd.Index(dates, name="Date"))


def make_workspace(size: int, root: Path) -> tuple[dict[str, str], list[str]]:
    "A CSV folder of `size` tickers (the 20 real ones first) and the index under `root`; the workspace's settings."
    shelf = root / "prices-in"
    shelf.mkdir(parents=True)
    real = Sp500Source().fetch([*SP500_STOCKS, "^GSPC"])
    for ticker, bars in real.items():
        closes = pd.DataFrame({"Date": bars["date"].dt.strftime("%Y-%m-%d"), "Adj Close": bars["adj_close"]})
        closes.to_csv(shelf / f"{ticker}.csv", index=False)
    stocks = {ticker: bars for ticker, bars in real.items() if ticker != "^GSPC"}
    made = synthetic(stocks, size - len(stocks))
    if len(made.columns):
        made.to_csv(shelf / "synthetic.csv")
    universe = [*stocks, *made.columns]
    settings = {
        "source": "csv", "csv_path": str(shelf), "universe": ", ".join(universe), "indices": "^GSPC",
        "data_dir": str(root / "data"), "reports_dir": str(root / "reports"),
        "experiment": str(REPO / "experiments" / "baseline.toml"), "api_refresh_seconds": "3600",
    }  # fmt: skip
    return settings, universe


def environment(settings: dict[str, str]) -> dict[str, str]:
    "This process's environment without its STOCKOPS_ variables, with the repository's settings.ini and `settings`."
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKOPS_")}
    return env | {"STOCKOPS_SETTINGS": str(REPO / "settings.ini"), "OMP_NUM_THREADS": "1"} | environment_of(settings)


STAGES = {
    "ingest": f"""
from stockops.ingest import ingest
report = ingest(end="{BEFORE}")
out = {{"tickers": len(report.tickers), "rows": int(sum(t.inserted for t in report.tickers))}}
""",
    "first training": f"""
import sys
from stockops.config import load_settings
from stockops.training import train_many
settings = load_settings()
done, refused = 0, {{}}
for ticker, result in train_many(list(settings.universe), "{BEFORE}", settings=settings):
    done += 1
    if isinstance(result, Exception):
        refused[ticker] = str(result)
    if done % 10 == 0 or done == len(settings.universe):
        print(f"  trained {{done}}/{{len(settings.universe)}}", file=sys.stderr, flush=True)
out = {{"trained": done - len(refused), "refused": refused}}
""",
    "daily run": f"""
from stockops.config import load_settings
from stockops.routine import PlainSteps, run_day
settings = load_settings()
day = run_day(PlainSteps(settings), settings, list(settings.universe), "{DAY}")
out = {{"as_of": day.as_of, "retrained": len(day.retrained), "forecast": len(day.forecast),
        "steps": {{k: round(v, 1) for k, v in day.seconds.items()}}}}
""",
    "snapshot load": """
import time
from stockops.config import load_settings
from stockops.serving import load_snapshot
settings = load_settings()
started = time.perf_counter()
snapshot = load_snapshot(settings)
cold = time.perf_counter() - started
started = time.perf_counter()
load_snapshot(settings)
out = {"views": len(snapshot.views), "cold_seconds": round(cold, 2), "reload_seconds": round(time.perf_counter() - started, 2)}
""",
    "dashboard picker": """
import time
from stockops.config import load_settings
from stockops.dashboard import ForecastDashboard
from stockops.serving import load_snapshot
settings = load_settings()
started = time.perf_counter()
dashboard = ForecastDashboard(load_snapshot(settings))
built = time.perf_counter() - started
started = time.perf_counter()
dashboard.ticker.value = dashboard.ticker.options[-1]
out = {"options": len(dashboard.ticker.options), "built_seconds": round(built, 2),
       "switch_ms": round(1000 * (time.perf_counter() - started), 1)}
""",
}


def run_stage(name: str, env: dict) -> dict:
    "Run a stage's script in a fresh process: its answer, seconds and peak resident memory (MB)."
    script = STAGES[name] + "\nimport json\nprint(json.dumps(out))\n"
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _pid, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"stage {name} failed (exit {child.returncode})")
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, **json.loads(output.strip().splitlines()[-1])}


def latency(url: str, count: int = 100) -> tuple[float, float]:
    "Median and p99 milliseconds of `count` sequential GETs."
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times), float(np.percentile(times, 99))


def serve_stage(env: dict, universe: list[str], root: Path) -> dict:
    "`stockops serve`: seconds until /health answers, its resident memory, /tickers and /forecast latency."
    port = free_port()
    started = time.perf_counter()
    server = start([str(Path(sys.executable).parent / "stockops"), "serve", "--port", str(port)], root / "api.log", env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", server, f"the API did not come up; see {root / 'api.log'}", root / "api.log", 600)
        ready = time.perf_counter() - started
        tickers = latency(f"{base}/tickers", 100)
        forecast = latency(f"{base}/forecast/{universe[-1]}", 100)
        rss = int(Path(f"/proc/{server.pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
    finally:
        stop(server)
    return {"seconds": ready, "rss_mb": rss, "tickers_ms": tickers, "forecast_ms": forecast}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,100,500", help="comma-separated universe sizes (20 is the real set)")
    sizes = [int(size) for size in parser.parse_args().sizes.split(",")]
    assert sizes[0] == 20 and all(size >= 20 for size in sizes), "the sizes start with 20 (the real set)"
    results: dict[int, dict[str, dict]] = {}
    for size in sizes:
        root = Path(tempfile.mkdtemp(prefix=f"stockops-bench-universe-{size}-"))
        settings, universe = make_workspace(size, root)
        env = environment(settings)
        print(f"universe of {size}: 20 real sp500 stocks + {size - 20} synthetic, in {root}", flush=True)
        results[size] = {}
        for name in STAGES:
            print(f"  {name} ...", flush=True)
            results[size][name] = run_stage(name, env)
            print(f"  {name}: {results[size][name]}", flush=True)
        results[size]["API"] = serve_stage(env, universe, root)
        print(f"  API: {results[size]['API']}", flush=True)

    stages = [*STAGES, "API"]
    print(f"\n{'stage':<18}" + "".join(f"{f'{size}: s':>12}{'MB':>7}" for size in sizes))
    for stage in stages:
        row = "".join(f"{results[s][stage]['seconds']:>12.1f}{results[s][stage]['rss_mb']:>7.0f}" for s in sizes)
        print(f"{stage:<18}{row}")
    print("\nratios to the 20-ticker run (time; per-ticker cost: 1.0 is linear; target at 500: time <= 30x)")
    for size in sizes[1:]:
        for stage in stages:
            ratio = results[size][stage]["seconds"] / results[20][stage]["seconds"]
            per_ticker = ratio / (size / 20)
            verdict = f"{'met' if ratio <= TARGETS['ratio_500'] else 'MISSED'}" if size == 500 else ""
            print(f"  {size:>4} {stage:<18} {ratio:6.2f}x time, {per_ticker:5.2f}x per ticker {verdict}")
    for size in sizes:
        api, snap, daily = results[size]["API"], results[size]["snapshot load"], results[size]["daily run"]
        print(f"  {size:>4}: API {api['rss_mb']:.0f} MB resident, /tickers p50 {api['tickers_ms'][0]:.1f} ms "
              f"p99 {api['tickers_ms'][1]:.1f} ms, /forecast p50 {api['forecast_ms'][0]:.1f} ms "
              f"p99 {api['forecast_ms'][1]:.1f} ms; snapshot reload {snap['reload_seconds']:.2f} s "
              f"(target <= {TARGETS['reload_seconds']:.0f} s: {'met' if snap['reload_seconds'] <= TARGETS['reload_seconds'] else 'MISSED'}); "
              f"daily run {daily['seconds']:.0f} s, {daily['retrained']} retrained")  # fmt: skip
    if 500 in results:
        api, daily = results[500]["API"], results[500]["daily run"]
        daily_ok, api_ok = daily["seconds"] <= TARGETS["daily_500_seconds"], api["rss_mb"] <= TARGETS["api_rss_500_mb"]
        print(f"  at 500: daily run {daily['seconds']:.0f} s (target <= {TARGETS['daily_500_seconds']:.0f} s: "
              f"{'met' if daily_ok else 'MISSED'}), API {api['rss_mb']:.0f} MB (target <= "
              f"{TARGETS['api_rss_500_mb']:.0f} MB: {'met' if api_ok else 'MISSED'})")  # fmt: skip
    else:
        print("  500 not run here: the targets at 500 are not measured by this run")


if __name__ == "__main__":
    main()
