"""Benchmark: the API's routes under load against a bare FastAPI endpoint and MLflow's scoring server, in one run.

Setup (not timed): a temporary workspace with the bundled AAPL and S&P 500 prices, AAPL trained (baseline experiment)
as of 2013-01-31 and forecast for that day. Then, one after another on the same machine, one uvicorn worker each:
  forecast  - GET /forecast/AAPL of `stockops serve` (the latest logged forecast with its evidence: prebuilt bytes
              through the ordinary router)
  predict   - POST /predict {"ticker": "AAPL", "as_of": "2013-01-31"} (the champion forecasting on demand)
  history   - GET /history/AAPL (13 years of bars, 0.4 MB) and GET /history/AAPL?start=2012-02-01 (a year)
  site      - GET of the published page of AAPL (stockops.publish), from the API's /reports and from nginx (Debian's
              nginx-light, a minimal config serving the folder): readers of a page that need no kernel
  mixed     - /history and /predict loaded at once (32 + 31 connections) while one connection asks GET /health:
              the event loop is never blocked, so /health stays fast. /health is timed by a client of its own (`probe`:
              one request after another on one connection, each timed on a monotonic clock, their sum printed beside
              the round's length), not by wrk: on one connection, wrk's latencies summed to more than its round in
              each round where it reported a p99 over 100 ms (1,328 requests at a mean of 9.32 ms, 12.4 s in a
              10.02 s round), while curl, in rounds alternating with wrk's, saw p99s of 16-21 ms and sums within its rounds
  bare      - GET /constant of a plain FastAPI app returning {"ok": true} (the ceiling)
  same-stack- GET /constant added to the stockops app (the ceiling with its instrumentation: request metrics)
  mlflow    - POST /invocations of `mlflow models serve --env-manager local` scoring the same champion on one feature row
All servers run at once; load: wrk, 1 thread, 64 connections, DURATION seconds per endpoint, in 3 interleaved rounds after
a warm-up; the median round counts. Prints req/s, p50, p99 and the ratios.
Targets: forecast >= 0.8x bare and >= 25x mlflow; predict >= 3x mlflow with p99 < 100 ms; /history p99 < 50 ms with
no errors; /health p99 < 20 ms while /history and /predict are loaded; the published page >= 2000 req/s.

    apt-get install wrk   # once
    .venv/bin/python bench/api.py [DURATION]
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AS_OF = PREDICT_DAY = "2013-01-31"  # /predict as of the day the champion was trained on (it is live from then on)
PORTS = {"forecast": 8301, "bare": 8302, "same-stack": 8303, "mlflow": 8304, "nginx": 8305}
CONNECTIONS = 64
ROUNDS = 3


def _with_constant(app):
    @app.get("/constant")
    async def constant():
        return {"ok": True}

    return app


def bare_app():
    "A plain FastAPI app with one constant endpoint: the ceiling."
    from fastapi import FastAPI

    return _with_constant(FastAPI())


def same_stack_app():
    "The stockops app with a constant endpoint: the ceiling under the same middleware."
    from stockops.api import serve_app

    return _with_constant(serve_app())


def wait(url: str, process: subprocess.Popen, seconds: int = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers (405 for a GET on a POST route)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{url} did not come up") from None
            time.sleep(0.5)


def wrk(url: str, seconds: int, body: dict | None = None, connections: int = CONNECTIONS) -> dict:
    "req/s, p50 and p99 (ms) and non-2xx count and socket errors (timeouts included) from one wrk run."
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency", url]
    script = None
    if body is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')  # fmt: skip
        script.close()
        command[1:1] = ["-s", script.name]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if script is not None:
        os.unlink(script.name)

    def latency(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", output).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    failed = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)), "p50": latency("50%"),
            "p99": latency("99%"), "errors": (int(errors.group(1)) if errors else 0)
            + (sum(int(n) for n in failed.groups()) if failed else 0)}  # fmt: skip


PROBE = """
import http.client, json, sys, time
host, port, path, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
connection, times = http.client.HTTPConnection(host, port), []
started = time.perf_counter()
while time.perf_counter() - started < seconds:
    sent = time.perf_counter()
    connection.request("GET", path)
    answer = connection.getresponse()
    answer.read()
    times.append((time.perf_counter() - sent) * 1000)
    if answer.status != 200:
        sys.exit(f"{path} answered {answer.status}")
print(json.dumps({"times": times, "wall": time.perf_counter() - started}))
"""


def probe(port: int, path: str, seconds: int) -> dict:
    """Latency of `path` over one keep-alive connection, one request after another for `seconds`, each timed by the
    client on a monotonic clock: p50, p99 and max (ms), and the sum of the times, which fits in the wall time."""
    run = json.loads(subprocess.run([sys.executable, "-c", PROBE, "127.0.0.1", str(port), path, str(seconds)],
                                    capture_output=True, text=True, check=True).stdout)  # fmt: skip
    times = sorted(run["times"])
    return {"rps": len(times) / run["wall"], "p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)],
            "max": times[-1], "sum": sum(times) / 1000, "wall": run["wall"], "errors": 0}  # fmt: skip


def mixed(seconds: int, predict_body: dict) -> dict:
    "/health latency over one connection while /history (32 connections) and /predict (31) load the same server."
    from concurrent.futures import ThreadPoolExecutor

    base = f"http://127.0.0.1:{PORTS['forecast']}"
    with ThreadPoolExecutor(3) as pool:
        history = pool.submit(wrk, f"{base}/history/AAPL", seconds, None, 32)
        predict = pool.submit(wrk, f"{base}/predict", seconds, predict_body, 31)
        health = pool.submit(probe, PORTS["forecast"], "/health", seconds)
        return {"health": health.result(), "history": history.result(), "predict": predict.result()}


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    for tool, package in (("wrk", "wrk"), ("nginx", "nginx-light")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: apt-get install {package}")
    root = Path(tempfile.mkdtemp(prefix="stockops-bench-api-"))
    env = {**os.environ, "STOCKOPS_DATA_DIR": str(root / "data"), "STOCKOPS_REPORTS_DIR": str(root / "reports"),
           "STOCKOPS_API_REFRESH_SECONDS": "60", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench")])}  # fmt: skip
    python = sys.executable
    print(f"workspace {root}: ingest, train AAPL as of {AS_OF} (baseline experiment), forecast ...", flush=True)
    setup = f"""
from stockops.config import load_settings
from stockops.features import make_features
from stockops.forecast import forecast
from stockops.ingest import ingest
from stockops.prices import PriceStore
from stockops.training import train_ticker
import json
settings = load_settings()
ingest("sample", "AAPL,^GSPC", end="{AS_OF}", settings=settings)
result = train_ticker("AAPL", "{AS_OF}", settings=settings)
forecast("AAPL", "{AS_OF}", settings)
from stockops.publish import publish_site
publish_site(settings)
store = PriceStore.from_settings(settings)
row = make_features(store.load("AAPL", end="{PREDICT_DAY}"), store.load("^GSPC", end="{PREDICT_DAY}")).iloc[[-1]]
print(json.dumps({{"families": result.families, "tracking": settings.tracking_uri,
                  "row": json.loads(row.to_json(orient="split", date_format="iso"))}}))
"""
    prepared = json.loads(subprocess.run([python, "-c", setup], env=env, cwd=REPO, capture_output=True, text=True,
                                         check=True).stdout.strip().splitlines()[-1])  # fmt: skip
    print(f"champion families by horizon: {prepared['families']}", flush=True)
    split = prepared["row"]
    invocation = {"dataframe_split": {"columns": split["columns"], "data": split["data"]}}
    servers = {
        "forecast": [python, "-m", "stockops.cli", "serve", "--port", str(PORTS["forecast"])],
        "bare": [python, "-m", "uvicorn", "api:bare_app", "--factory", "--port", str(PORTS["bare"]),
                 "--log-level", "warning", "--no-access-log"],
        "same-stack": [python, "-m", "uvicorn", "api:same_stack_app", "--factory", "--port", str(PORTS["same-stack"]),
                       "--log-level", "warning", "--no-access-log"],
        "mlflow": [python, "-m", "mlflow", "models", "serve", "-m", "models:/stockops-aapl@champion", "--env-manager",
                   "local", "--host", "127.0.0.1", "--port", str(PORTS["mlflow"])],
    }  # fmt: skip
    env_mlflow = {**env, "MLFLOW_TRACKING_URI": prepared["tracking"],  # it execs `uvicorn` from PATH
                  "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    loads = {
        "GET /forecast/AAPL": ("forecast", "/forecast/AAPL", None),
        "POST /predict": ("forecast", "/predict", {"ticker": "AAPL", "as_of": PREDICT_DAY}),
        "GET /history/AAPL": ("forecast", "/history/AAPL", None),
        "GET /history/AAPL, a year": ("forecast", "/history/AAPL?start=2012-02-01", None),
        "bare FastAPI constant": ("bare", "/constant", None),
        "constant, stockops stack": ("same-stack", "/constant", None),
        "mlflow models serve": ("mlflow", "/invocations", invocation),
    }
    site = root / "reports" / "site"
    root.chmod(0o755)  # nginx's worker (nobody) reads the pages under it; mkdtemp makes it 0700
    (root / "nginx").mkdir()
    (root / "nginx" / "nginx.conf").write_text(
        "worker_processes 1; events { worker_connections 1024; } http { access_log off; "
        f"server {{ listen 127.0.0.1:{PORTS['nginx']}; location /site/ {{ alias {site}/; }} }} }}"
    )
    servers["nginx"] = ["nginx", "-p", str(root / "nginx"), "-c", str(root / "nginx" / "nginx.conf"), "-g",
                        f"daemon off; pid {root / 'nginx' / 'nginx.pid'}; error_log {root / 'nginx' / 'error.log'};"]  # fmt: skip
    loads["published page, API"] = ("forecast", "/reports/site/AAPL.html", None)
    loads["published page, nginx"] = ("nginx", "/site/AAPL.html", None)
    processes = {name: subprocess.Popen(command, env=env_mlflow if name == "mlflow" else env, cwd=REPO,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, command in servers.items()}  # fmt: skip
    health = {
        "forecast": "/health",
        "bare": "/constant",
        "same-stack": "/constant",
        "mlflow": "/ping",
        "nginx": "/site/",
    }
    samples: dict[str, list[dict]] = {name: [] for name in loads}
    loaded: list[dict] = []  # the mixed rounds
    try:
        for name, process in processes.items():
            wait(f"http://127.0.0.1:{PORTS[name]}{health[name]}", process)
        for target, path, body in loads.values():
            wrk(f"http://127.0.0.1:{PORTS[target]}{path}", 2, body)  # warm-up: champion loaded, caches filled
        for round_ in range(1, ROUNDS + 1):  # interleaved rounds: drift of the machine hits every endpoint alike
            for name, (target, path, body) in loads.items():
                sample = wrk(f"http://127.0.0.1:{PORTS[target]}{path}", seconds, body)
                samples[name].append(sample)
                print(f"  round {round_} {name:<26} {sample['rps']:>8.0f} req/s  p50 {sample['p50']:7.2f} ms  "
                      f"p99 {sample['p99']:7.2f} ms  errors {sample['errors']}", flush=True)  # fmt: skip
            loaded.append(mixed(seconds, loads["POST /predict"][2]))
            health = loaded[-1]["health"]
            print(f"  round {round_} mixed: /health p50 {health['p50']:.2f} ms p99 {health['p99']:.2f} ms max "
                  f"{health['max']:.0f} ms ({health['rps'] * health['wall']:.0f} requests, {health['sum']:.2f} s of "
                  f"{health['wall']:.2f} s) while /history "
                  f"{loaded[-1]['history']['rps']:.0f} req/s (p99 {loaded[-1]['history']['p99']:.1f} ms) and /predict "
                  f"{loaded[-1]['predict']['rps']:.0f} req/s", flush=True)  # fmt: skip
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(timeout=30)
    results = {name: {key: sorted(s[key] for s in runs)[len(runs) // 2] for key in ("rps", "p50", "p99")}
               | {"errors": sum(s["errors"] for s in runs)} for name, runs in samples.items()}  # fmt: skip
    forecast, predict, history = results["GET /forecast/AAPL"], results["POST /predict"], results["GET /history/AAPL"]
    under_load = sorted(m["health"]["p99"] for m in loaded)[len(loaded) // 2]
    bare, stack, scoring = (
        results["bare FastAPI constant"],
        results["constant, stockops stack"],
        results["mlflow models serve"],
    )
    print(f"\nmedian of {ROUNDS} interleaved rounds of wrk -t1 -c{CONNECTIONS} -d{seconds}s; one uvicorn worker per server, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"{'endpoint':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>9}")
    for name, row in results.items():
        print(f"{name:<28}{row['rps']:>9.0f}{row['p50']:>9.2f}{row['p99']:>9.2f}{row['errors']:>9}")
    checks = [
        ("/forecast vs bare FastAPI", forecast["rps"] / bare["rps"], 0.8),
        ("/forecast vs constant on the stockops stack", forecast["rps"] / stack["rps"], 0.8),
        ("/forecast vs mlflow scoring", forecast["rps"] / scoring["rps"], 25),
        ("/predict vs mlflow scoring", predict["rps"] / scoring["rps"], 3),
    ]
    print("\nratio                                          measured  target")
    for label, ratio, target in checks:
        print(f"{label:<47}{ratio:>8.2f}x  >= {target}x  {'met' if ratio >= target else 'NOT met'}")
    print(f"/predict p99                                   {predict['p99']:>7.1f} ms  < 100 ms  "
          f"{'met' if predict['p99'] < 100 else 'NOT met'}")  # fmt: skip
    page, nginx = results["published page, API"], results["published page, nginx"]
    for label, row in (("published page from the API", page), ("published page from nginx", nginx)):
        print(f"{label:<47}{row['rps']:>8.0f} req/s  >= 2000  {'met' if row['rps'] >= 2000 else 'NOT met'}")
    history_ok = history["p99"] < 50 and history["errors"] == 0
    print(f"/history (13 years) p99                        {history['p99']:>7.1f} ms  < 50 ms, 0 errors "
          f"({history['errors']})  {'met' if history_ok else 'NOT met'}")  # fmt: skip
    print(f"/health p99 while /history and /predict load   {under_load:>7.1f} ms  < 20 ms  "
          f"{'met' if under_load < 20 else 'NOT met'}")  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
