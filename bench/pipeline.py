"""Benchmark: one incremental daily run for the bundled sample universe (five stocks to 2013), as plain function calls and through Prefect + papermill.

Setup (not timed): a temporary workspace with the bundled prices ingested and the universe trained as of DAY0.
Timed, each in a fresh process so both pay their imports:
  plain   - the daily routine (stockops.routine.run_day) for DAY1 with PlainSteps: the functions the runbooks call;
  prefect - the daily flow (the same routine, RunbookSteps) for DAY2 against a running `prefect server` (started here on 127.0.0.1:4299), each step a
            papermill-executed runbook with its notebook kept under reports/daily/.
Prints the time per step and the ratio. Targets: prefect run under 60 s, at most 2x the plain calls.

    .venv/bin/python bench/pipeline.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from stockops.config import environment_of
from stockops.harness import SAMPLE_SETTINGS

REPO = Path(__file__).resolve().parents[1]
DAY0, DAY1, DAY2 = "2012-11-30", "2012-12-03", "2012-12-04"
PORT = 4299

PLAIN = """
import json, sys, time
started = time.perf_counter()
from stockops.config import load_settings
from stockops.routine import PlainSteps, run_day
settings = load_settings()
imports = time.perf_counter() - started
day = run_day(PlainSteps(settings), settings, list(settings.universe), sys.argv[1])  # the daily routine, plain calls
print(json.dumps({"imports": imports, **day.seconds, "total": time.perf_counter() - started}))
"""

FLOW = """
import json, sys, time
started = time.perf_counter()
from stockops.config import load_settings
from stockops.pipeline import load_flow
settings = load_settings()
summary = load_flow(settings, "daily")(as_of=sys.argv[1], overrides=settings.transport())
print(json.dumps({"total": time.perf_counter() - started, "summary": summary}, default=str))
"""


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="stockops-bench-pipeline-"))
    (root / "settings.ini").write_text((REPO / "settings.ini").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKOPS_", "PREFECT_"))}
    env |= {"STOCKOPS_SETTINGS": str(root / "settings.ini"), "STOCKOPS_RUNBOOKS_DIR": str(REPO / "nbs" / "runbooks"),
            "STOCKOPS_FLOWS_DIR": str(REPO / "flows"), "STOCKOPS_EXPERIMENT": str(REPO / "experiments" / "baseline.toml")}  # fmt: skip
    env |= environment_of(SAMPLE_SETTINGS)  # the five sample stocks
    python = sys.executable
    setup = f"""
from stockops.config import load_settings
from stockops.ingest import ingest
from stockops.training import train_ticker
s = load_settings()
ingest("sample", ",".join(s.universe + s.indices), end="{DAY0}", settings=s)
for t in s.universe:
    train_ticker(t, "{DAY0}", settings=s)
"""
    print(f"setup: ingest and train the universe as of {DAY0} in {root} ...", flush=True)
    subprocess.run([python, "-c", setup], env=env, check=True, capture_output=True)
    plain = json.loads(
        subprocess.run(
            [python, "-c", PLAIN, DAY1], env=env, check=True, capture_output=True, text=True
        ).stdout.splitlines()[-1]
    )

    prefect_env = env | {"PREFECT_HOME": str(root / "data" / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{PORT}/api",
                         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}  # fmt: skip
    (root / "data" / "prefect").mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([python, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(PORT)],
                              env=prefect_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        started = time.monotonic()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/health", timeout=2)
                break
            except OSError:
                if time.monotonic() - started > 180:
                    raise RuntimeError("prefect server did not start") from None
                time.sleep(1)
        print(f"prefect server ready in {time.monotonic() - started:.0f} s", flush=True)
        flow = json.loads(
            subprocess.run(
                [python, "-c", FLOW, DAY2], env=prefect_env, check=True, capture_output=True, text=True
            ).stdout.splitlines()[-1]
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    runs = json.loads((root / "reports" / "daily" / DAY2 / "run.json").read_text())["runs"]
    print(f"\n{'step':<22}{'plain calls':>12}{'prefect+papermill':>20}")
    print(f"{'imports':<22}{plain['imports']:>11.1f}s{'(in each kernel)':>20}")
    mapping = {"etl_prices": "etl", "report_drift": "monitor", "forecast_prices": "forecast"}
    for run in runs:
        step = mapping.get(run["runbook"], "train")
        print(
            f"{run['runbook'] + (('-' + run['ticker']) if run.get('ticker') else ''):<22}{plain.get(step, 0):>11.1f}s{run['seconds']:>19.1f}s"
        )
    ratio = flow["total"] / plain["total"]
    print(f"{'total (wall)':<22}{plain['total']:>11.1f}s{flow['total']:>19.1f}s")
    print(f"\nratio prefect+papermill / plain = {ratio:.2f} (target <= 2.0: {'met' if ratio <= 2 else 'MISSED'}); "
          f"daily run {flow['total']:.1f} s (target < 60 s: {'met' if flow['total'] < 60 else 'MISSED'})")  # fmt: skip


if __name__ == "__main__":
    main()
