"""Training fanned out over a Prefect process work pool: one worker against two, on the team stack run natively.

Each round trains a universe (first training: no champion yet) through the `train` flow, which splits the tickers
into batches (at least one per online worker, at most `train_batch` tickers each), starts a `train-ticker` flow run
per batch on the pool and waits for them. The universe is the five `sample` stocks as of 2013-01-31, or with
`--size N` the 20 sp500 stocks plus N - 20 synthetic ones from a CSV folder (as `bench/universe.py` makes them) as of
2022-12-27. Rounds run in a fresh workspace
(prices under their own bucket prefix, their own MLflow server and database) against the same PostgreSQL, S3 server
and Prefect server; the in-flow round (no pool) is the same training without fan-out, for the overhead.

    python bench/scaleout.py             # about 6 minutes on 2 cores; needs Debian's postgresql (see `make scaleout`)
    python bench/scaleout.py --size 100  # 100 tickers: about 15 s of training per ticker and round here
    python bench/scaleout.py --size 100 --rounds 1,2  # the worker rounds only (the in-flow round: 2244 s at 100)

Each round prints the machine's load average over it (os.getloadavg), so a busy machine shows in the figures.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from stockops.harness import SAMPLE_SETTINGS, NativeStack

sys.path.insert(0, str(Path(__file__).parent))
from universe import BEFORE, make_workspace  # noqa: E402 (the synthetic universe of bench/universe.py)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", type=int, default=0, help="tickers: 0 the five sample stocks, N >= 20 sp500 + synthetic"
    )
    parser.add_argument("--rounds", default="0,1,2", help="worker counts to run, 0 is the in-flow round (no pool)")
    arguments = parser.parse_args()
    size, rounds = arguments.size, [int(count) for count in arguments.rounds.split(",")]
    root = Path(tempfile.mkdtemp(prefix="stockops-bench-"))
    seconds = {}
    if size:
        made, universe = make_workspace(size, root / "universe")
        settings = {key: made[key] for key in ("source", "csv_path", "universe", "indices")}  # the rest: the stack's
        as_of = BEFORE
    else:
        settings, universe, as_of = SAMPLE_SETTINGS, SAMPLE_SETTINGS["universe"].split(", "), "2013-01-31"
    with NativeStack(root, settings=settings) as stack:
        started = time.perf_counter()
        stack.postgres()
        stack.s3()
        stack.prefect()
        print(f"PostgreSQL, S3 server and Prefect server up in {time.perf_counter() - started:.1f} s", flush=True)
        labels = {0: "in the flow (no pool)", 1: "1 worker", 2: "2 workers"}
        for label, workers in [(labels[count], count) for count in rounds]:
            key = f"round{workers}"
            tracking = stack.mlflow(database=f"mlflow_{key}")
            stack.services[f"mlflow-{key}"] = stack.services.pop("mlflow")
            env = stack.env(data_dir=str(root / key / "data"), reports_dir=str(root / key / "reports"),
                            prices_url=f"s3://{stack.bucket}/{key}/prices", mlflow_tracking_uri=tracking)  # fmt: skip
            if not workers:
                env["STOCKOPS_PREFECT_WORK_POOL"] = ""
            ingest = stack.stockops("ingest", "--end", as_of, env=env)
            assert ingest.returncode == 0, ingest.stderr[-2000:]
            names = stack.workers(workers, env) if workers else []
            started = time.perf_counter()
            trained = stack.stockops("train", "--flow", "--as-of", as_of, env=env, timeout=6 * 3600)
            seconds[label] = time.perf_counter() - started
            assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
            spread = {name: len(stack.worker_runs(name)) for name in names}
            load = os.getloadavg()[1]  # the 5-minute average, at the round's end
            print(f"{label:<24} {seconds[label]:7.1f} s   flow runs per worker (cumulative): {spread}; "
                  f"load average (5 min) {load:.1f}", flush=True)  # fmt: skip
            stack.stop(*names, f"mlflow-{key}")
    shutil.rmtree(root, ignore_errors=True)
    one, two, plain = (seconds.get(labels[count]) for count in (1, 2, 0))
    print()
    print(f"training {len(universe)} tickers (first training) as of {as_of}")
    if plain:
        print(f"  in the flow, no pool   {plain:7.1f} s")
    if one:
        overhead = f"   ({one / plain:.2f}x the in-flow time: a process and a kernel per flow run)" if plain else ""
        print(f"  1 worker               {one:7.1f} s{overhead}")
    if two:
        print(f"  2 workers              {two:7.1f} s")
    if one and two:
        print(
            f"  speed-up 1 -> 2 workers {one / two:.2f}x (2 cores: the two workers, the servers and this process share them)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
