"""Benchmark: memory and time of ingesting a large CSV file (the hardening issue: a 50 MB file needed 1 GB).

Two shapes of file, each at about 25 and 50 MB, each ingested by `stockops ingest` in a fresh process on an empty
workspace (time, and peak resident memory from wait4), with a bare `stockops --help` as the interpreter's baseline:

- universe: a long-format file (Date, Ticker, Adj Close) of SYNTHETIC tickers (block-bootstrapped real returns of the
  20 bundled sp500 stocks over their 8,313 sessions: `bench/universe.py`'s `synthetic`), 100 or 200 tickers: every
  row is kept, so the rows' numbers are what memory must hold;
- repeated: the bundled sample's IBM bars in Yahoo's layout, the same rows written again and again (the attack's
  file): the store keeps one of each, so memory should not grow with the file.

Prints per file its size, rows, seconds, peak MB, MB above the interpreter and that per MB of file, then the growth
from 25 to 50 MB. Target: a 50 MB file of either shape ingests in <= 512 MB peak (half of the 1 GB the issue saw).

    .venv/bin/python bench/csv_ingest.py
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from universe import synthetic  # bench/universe.py: the one definition of the synthetic tickers

from stockops.sources import SP500_STOCKS, SampleSource, Sp500Source

STOCKOPS = Path(sys.executable).parent / "stockops"
REPO = Path(__file__).resolve().parents[1]
TARGET_MB = 512


def universe_file(path: Path, tickers: int) -> Path:
    "A long-format file of `tickers` synthetic tickers' adjusted closes, every session since 1990."
    wide = synthetic(Sp500Source().fetch(list(SP500_STOCKS)), tickers)
    wide.stack().rename("Adj Close").rename_axis(["Date", "Ticker"]).reset_index().to_csv(path, index=False)
    return path


def repeated_file(path: Path, megabytes: float) -> Path:
    "IBM's bundled bars in Yahoo's layout, the whole table written again until the file has `megabytes`."
    bars = SampleSource().fetch(["IBM"])["IBM"]
    text = pd.DataFrame({"Date": bars["date"].dt.strftime("%Y-%m-%d"), "Open": bars["open"], "High": bars["high"],
                         "Low": bars["low"], "Close": bars["close"], "Adj Close": bars["adj_close"],
                         "Volume": bars["volume"]}).to_csv(index=False)  # fmt: skip
    header, body = text.split("\n", 1)
    copies = max(1, round(megabytes * 1e6 / len(body)))
    path.write_text(header + "\n" + body * copies)
    return path


def measure(arguments: list[str], env: dict) -> tuple[float, float, str]:
    "Seconds, peak resident MB and standard error of `stockops <arguments>` in a fresh process."
    started = time.perf_counter()
    child = subprocess.Popen([str(STOCKOPS), *arguments], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    said = child.stderr.read().decode()
    _pid, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"stockops {' '.join(arguments)} failed: {said[-2000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, said


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="stockops-bench-csv-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("STOCKOPS_")}
    base |= {"STOCKOPS_SETTINGS": str(REPO / "settings.ini"), "STOCKOPS_SOURCE": "csv", "STOCKOPS_INDICES": ""}
    _, interpreter, _ = measure(["--help"], base)
    print(f"files and workspaces in {root}; a bare `stockops --help` peaks at {interpreter:.0f} MB", flush=True)
    files = {
        ("universe", 25): lambda p: universe_file(p, 100),
        ("universe", 50): lambda p: universe_file(p, 200),
        ("repeated", 25): lambda p: repeated_file(p, 25),
        ("repeated", 50): lambda p: repeated_file(p, 50),
    }
    results = {}
    for (shape, megabytes), make in files.items():
        path = make(root / f"{shape}-{megabytes}.csv")
        size = path.stat().st_size / 1e6
        rows = sum(1 for _ in path.open()) - 1
        space = root / f"{shape}-{megabytes}"
        env = base | {"STOCKOPS_CSV_PATH": str(path), "STOCKOPS_DATA_DIR": str(space / "data"),
                      "STOCKOPS_REPORTS_DIR": str(space / "reports"), "STOCKOPS_UNIVERSE": "IBM"}  # fmt: skip
        named = ["--tickers", "IBM"] if shape == "repeated" else []  # a file of one ticker's bars names no ticker
        seconds, peak, _ = measure(["ingest", *named], env)
        stored = len(list((space / "data" / "prices").glob("*.parquet")))
        results[shape, megabytes] = (size, rows, seconds, peak, stored)
        print(f"  {shape} {size:.1f} MB: {rows} rows, {stored} ticker(s) stored, {seconds:.1f} s, {peak:.0f} MB peak",
              flush=True)  # fmt: skip

    print(f"\n{'file':<22}{'MB':>7}{'rows':>10}{'stored':>8}{'s':>8}{'peak MB':>9}{'above':>7}{'per file MB':>12}")
    for (shape, megabytes), (size, rows, seconds, peak, stored) in results.items():
        above = peak - interpreter
        print(f"{shape + ' ~' + str(megabytes) + ' MB':<22}{size:>7.1f}{rows:>10}{stored:>8}{seconds:>8.1f}{peak:>9.0f}"
              f"{above:>7.0f}{above / size:>12.2f}")  # fmt: skip
    for shape in ("universe", "repeated"):
        small, large = results[shape, 25], results[shape, 50]
        growth = (large[3] - interpreter) / (small[3] - interpreter)
        verdict = "met" if large[3] <= TARGET_MB else "MISSED"
        print(f"  {shape}: 25 -> 50 MB of file, memory above the interpreter x{growth:.2f}, time x{large[2] / small[2]:.2f}; "
              f"peak at 50 MB {large[3]:.0f} MB (target <= {TARGET_MB} MB: {verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
