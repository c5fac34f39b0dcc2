"""The API as real uvicorn processes and the dashboards in a real browser, on a workspace built from the bundled data:
a champion swap under concurrent requests, training started over the API (a real Prefect flow), a real Prometheus
scraping /metrics, and headless Debian Chromium driven by Playwright loading both Voila dashboards."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, STOCKOPS, forecast_history, quick_workspace

from stockops.config import load_settings
from stockops.dashboard import PLOTLY_JS, PLOTLY_JS_VERSION
from stockops.prices import PriceStore

pytestmark = pytest.mark.server
CHROMIUM = Path("/usr/bin/chromium")
PROMETHEUS = Path("/usr/bin/prometheus")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, timeout: float = 10, headers: dict | None = None, data: bytes | None = None):
    "(status, parsed JSON or text) of a request; HTTP errors are answers too."
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body, status = response.read(), response.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def post(url: str, payload: dict, headers: dict | None = None, timeout: float = 10):
    return get(url, timeout, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode())


def wait_until(check, seconds: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"{what}: the process exited with {process.returncode}: {process.stdout.read()[-3000:]}"
            )
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {seconds} s")


class Served:
    "A workspace built from the bundled data, and the servers started on it."

    def __init__(self, root: Path):
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKOPS_", "PREFECT_"))}
        self.env |= {"STOCKOPS_SETTINGS": str(root / "settings.ini"), "STOCKOPS_API_REFRESH_SECONDS": "1",
                     "STOCKOPS_RUNBOOKS_DIR": str(REPO / "nbs" / "runbooks"), "STOCKOPS_FLOWS_DIR": str(REPO / "flows"),
                     "STOCKOPS_DASHBOARDS_DIR": str(REPO / "nbs" / "dashboards"), "NO_COLOR": "1"}  # fmt: skip
        self.processes: list[subprocess.Popen] = []

    @property
    def settings(self):
        return load_settings(self.root / "settings.ini", env={})

    def start(self, *args: str, extra_env: dict | None = None) -> subprocess.Popen:
        process = subprocess.Popen([str(STOCKOPS), *args], cwd=self.root, env=self.env | (extra_env or {}),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
        self.processes.append(process)
        return process

    def start_process(self, command: list[str]) -> subprocess.Popen:
        "A server that is not `stockops` (Prometheus, Alertmanager), stopped with the others."
        process = subprocess.Popen(command, cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)  # fmt: skip
        self.processes.append(process)
        return process

    def api(self, extra_env: dict | None = None) -> tuple[str, subprocess.Popen]:
        port = free_port()
        process = self.start("serve", "--port", str(port), extra_env=extra_env)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: get(f"{base}/health", 2)[0] == 200, 90, "the API", process)
        return base, process

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def served(live):
    "Servers started on the session's shared trained workspace (conftest's `live`), which these tests only read."
    space = Served(Path(live.file).parent)
    yield space
    space.stop()


@pytest.fixture(scope="module")
def writable(tmp_path_factory):
    "A workspace of its own for the tests that train: MSFT trained as of 2012-11-30 (QUICK), forecast on its last two days; IBM stored."
    from stockops.ingest import ingest

    space = Served(quick_workspace(tmp_path_factory.mktemp("writable")).parent)
    settings = space.settings.replace(runbooks_dir=REPO / "nbs" / "runbooks", flows_dir=REPO / "flows")
    forecast_history(settings, ["MSFT"], "2012-11-30", "2013-01-30", "2013-01-31", "2013-01-31")
    ingest("sample", "IBM", end="2013-01-31", settings=settings)
    yield space
    space.stop()


def test_api_process_serves_forecasts_with_evidence(served):
    base, _ = served.api()
    status, answer = get(f"{base}/forecast/IBM")
    assert status == 200
    assert (answer["as_of"], answer["model_version"]) == ("2013-01-31", "1")
    assert [h["target_date"] for h in answer["horizons"]] == ["2013-02-01", "2013-02-07", "2013-03-01"]
    for horizon in answer["horizons"]:
        assert horizon["live"]["n"] > 0 and horizon["backtest"]["naive_mae"] > 0
        assert (
            horizon["lower_90"]
            < horizon["lower_80"]
            <= horizon["forecast"]
            <= horizon["upper_80"]
            < horizon["upper_90"]
        )
    assert get(f"{base}/forecast/TSLA")[0] == 404
    assert get(f"{base}/forecast/%3Bdrop")[0] == 422
    assert get(f"{base}/forecast/IBM?horizon=7")[0] == 422
    status, schema = get(f"{base}/openapi.json")
    assert status == 200 and {"/forecast/{ticker}", "/predict", "/train", "/runs/{run_id}", "/metrics"} <= set(
        schema["paths"]
    )


SCHEMATHESIS = REPO / ".venv-schemathesis" / "bin" / "schemathesis"  # `make test` installs it in its own venv


def test_schemathesis_finds_nothing_with_all_its_checks(served):
    """schemathesis against the real API with every check: no server error, every status code documented, every
    answer valid against its declared schema, schema-valid requests accepted and schema-violating ones refused (the
    few rules across fields or against stored data the document cannot express: tests/schemathesis.toml)."""
    if not SCHEMATHESIS.exists():
        pytest.fail(f"schemathesis is needed at {SCHEMATHESIS}: `make test` installs it")
    base, _ = served.api()
    result = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(REPO / "tests" / "schemathesis.toml"), "run", f"{base}/openapi.json",
         "--checks", "all", "--max-examples", "25", "--seed", "20261204", "--no-color",
         "--exclude-path", "/events"],  # a stream that never ends: test_event_stream_* below
        capture_output=True, text=True, timeout=600, cwd=served.root,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    tested = int(result.stdout.split(" generated, ")[0].split()[-1])
    assert "Tested: 10" in result.stdout and tested > 300 and f"{tested} passed" in result.stdout, result.stdout[-3000:]


@pytest.mark.slow
def test_champion_swap_under_concurrent_requests_fails_none(writable):
    "A retrained champion and its forecasts land while 6 clients hammer /forecast and /predict: all answers are 200."
    from stockops.experiment import load_experiment
    from stockops.forecast import forecast
    from stockops.training import train_ticker

    base, _ = writable.api()
    statuses, versions, stop = [], set(), threading.Event()

    def hammer(kind: str):
        while not stop.is_set():
            if kind == "forecast":
                status, answer = get(f"{base}/forecast/MSFT", 10)
            else:  # as of the retrained champion's day: it is live from then on
                status, answer = post(f"{base}/predict", {"ticker": "MSFT", "as_of": "2013-01-31"})
            statuses.append(status)
            if status == 200:
                versions.add((kind, answer["model_version"]))

    clients = [threading.Thread(target=hammer, args=(kind,)) for kind in ["forecast", "predict"] * 3]
    for client in clients:
        client.start()
    try:
        time.sleep(1)
        settings = writable.settings.replace(runbooks_dir=REPO / "nbs" / "runbooks", flows_dir=REPO / "flows")
        result = train_ticker("MSFT", "2013-01-31", load_experiment(settings=settings), settings, force=True)
        assert result.decision.promote, result.decision.reason  # the same spec refit on newer data: a refresh
        forecast("MSFT", "2013-01-31", settings)
        wait_until(lambda: ("forecast", result.version) in versions and ("predict", result.version) in versions, 30,
                   "the new champion served")  # fmt: skip
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=30)
    assert len(statuses) > 100
    assert set(statuses) == {200}, pd.Series(statuses).value_counts().to_dict()
    assert {("forecast", "1"), ("forecast", result.version), ("predict", "1"), ("predict", result.version)} <= versions
    assert get(f"{base}/health")[1]["refreshes"] >= 1


@pytest.mark.slow
def test_training_over_the_api_needs_the_token_and_runs_the_flow(writable):
    "POST /train: refused without a token, 202 with it, then a real Prefect training flow that GET /runs/{id} follows."
    base, server = writable.api(extra_env={"STOCKOPS_API_TOKEN": "s3cret-token"})
    assert post(f"{base}/train", {"tickers": ["IBM"]})[0] == 401
    assert post(f"{base}/train", {"tickers": ["IBM"]}, {"Authorization": "Bearer wrong"})[0] == 401
    assert post(f"{base}/train", {"tickers": ["../x"]}, {"Authorization": "Bearer s3cret-token"})[0] == 422
    started = time.monotonic()
    status, run = post(f"{base}/train", {"tickers": ["IBM"]}, {"Authorization": "Bearer s3cret-token"})
    assert status == 202 and run["status"] == "scheduled" and time.monotonic() - started < 2
    record = wait_until(lambda: (r := get(f"{base}/runs/{run['run_id']}")[1])["status"] in ("completed", "failed") and r,
                        300, "the training run")  # fmt: skip
    log = (writable.root / "reports" / "runs" / f"{run['run_id']}.log").read_text()
    assert record["status"] == "completed", log[-3000:]
    assert len(record["flow_run_id"]) == 36 and record["result"]["results"]["IBM"]
    assert list((writable.root / "reports" / "train").glob("*/train_forecaster-IBM.ipynb"))  # the executed runbook
    status, again = post(f"{base}/train", {"tickers": ["IBM"]}, {"Authorization": "Bearer s3cret-token"})
    assert status == 202  # IBM's champion is fresh: a run that changes nothing, after which the API starts no process
    wait_until(lambda: get(f"{base}/runs/{again['run_id']}")[1]["status"] in ("completed", "failed"), 300, "the rerun")
    time.sleep(1)  # the waiting thread reaps the training process as it ends
    table = [line.split() for line in subprocess.run(["ps", "-eo", "pid=,ppid=,stat="], capture_output=True,
                                                     text=True).stdout.splitlines()]  # fmt: skip
    tree, grew = {server.pid}, True
    while grew:  # the API's processes: `stockops serve` and the uvicorn under it
        grew = bool({int(pid) for pid, parent, _ in table if int(parent) in tree} - tree)
        tree |= {int(pid) for pid, parent, _ in table if int(parent) in tree}
    zombies = [(pid, stat) for pid, parent, stat in table if int(parent) in tree and stat.startswith("Z")]
    assert len(tree) > 1 and not zombies, zombies  # no zombie per POST /train


def test_refuses_a_public_address_without_a_token(served):
    result = subprocess.run([str(STOCKOPS), "serve", "--host", "0.0.0.0", "--port", str(free_port())], cwd=served.root,
                            env=served.env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 with an empty api_token" in result.stderr


def test_prometheus_scrapes_the_stockops_metrics(served, tmp_path):
    "A real Prometheus scrapes the API; stockops gauges and request metrics answer queries, so do the Grafana panels'."
    if not PROMETHEUS.exists():
        pytest.fail("Debian's prometheus is needed: apt-get install prometheus (.ci/run installs it)")
    base, _ = served.api()
    for _ in range(5):
        get(f"{base}/forecast/IBM")
    check = subprocess.run(["promtool", "check", "config", str(REPO / "monitor" / "prometheus.yml")],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    config = tmp_path / "prometheus.yml"
    shutil.copy(REPO / "monitor" / "alerts.yml", tmp_path)  # the config's rule_files, beside it
    config.write_text(
        (REPO / "monitor" / "prometheus.yml").read_text().replace("api:8000", base.removeprefix("http://"))
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
    )  # fmt: skip
    prometheus = subprocess.Popen([str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    served.processes.append(prometheus)

    def query(expression: str):
        status, answer = get(f"http://127.0.0.1:{port}/api/v1/query?query={urllib.request.quote(expression)}", 5)
        return answer["data"]["result"] if status == 200 else []

    result = wait_until(
        lambda: query('stockops_champion_version{ticker="IBM"}'), 60, "a scraped stockops metric", prometheus
    )
    assert float(result[0]["value"][1]) >= 1
    ratio = wait_until(lambda: query('stockops_live_mae_ratio{ticker="IBM",horizon="1"}'), 30, "live error vs naive")
    assert 0.5 < float(ratio[0]["value"][1]) < 2
    requests = wait_until(lambda: query('sum(http_requests_total{handler="/forecast/{ticker}"})'), 30, "request counts")
    assert float(requests[0]["value"][1]) >= 5
    board = json.loads((REPO / "monitor" / "grafana" / "dashboards" / "stockops.json").read_text())
    expressions = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    assert len(expressions) >= 6
    for expression in expressions:  # every panel's PromQL parses and, but for error rate, has data
        status, answer = get(f"http://127.0.0.1:{port}/api/v1/query?query={urllib.request.quote(expression)}", 5)
        assert status == 200 and answer["status"] == "success", (expression, answer)


ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")


def test_a_stale_forecast_alert_fires_through_alertmanager(served, tmp_path):
    """End to end: the API's gauges, a real Prometheus evaluating monitor/alerts.yml, a real Alertmanager routing with
    deploy/alertmanager.yml's route to a webhook (this test's HTTP server). IBM's latest forecast is as of 2013-01-31,
    so every New York session since is late and StockopsForecastStale fires. The rules' `for` durations are set to 0 s
    in this copy (the promtool unit tests check them); nothing else changes."""
    import http.server

    if not (PROMETHEUS.exists() and ALERTMANAGER.exists()):
        pytest.fail("Debian's prometheus and prometheus-alertmanager are needed (.ci/run installs them)")
    base, _ = served.api()
    received: list[dict] = []

    class Webhook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    route = (REPO / "deploy" / "alertmanager.yml").read_text()
    route = route.replace("group_wait: 30s", "group_wait: 1s").replace("group_interval: 5m", "group_interval: 1s")
    route = route.replace(
        "  - name: stockops\n",
        f"  - name: stockops\n    webhook_configs:\n      - url: http://127.0.0.1:{hook.server_port}/\n",
    )
    (tmp_path / "alertmanager.yml").write_text(route)
    alerting, web = free_port(), free_port()
    manager = served.start_process([str(ALERTMANAGER), f"--config.file={tmp_path / 'alertmanager.yml'}",
                                    f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{alerting}",
                                    "--cluster.listen-address="])  # fmt: skip
    rules = (REPO / "monitor" / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(rules.replace("for: 3h", "for: 0s").replace("for: 1h", "for: 0s"))
    config = (REPO / "monitor" / "prometheus.yml").read_text().replace("api:8000", base.removeprefix("http://"))
    config = config.replace("alertmanager:9093", f"127.0.0.1:{alerting}").replace("interval: 15s", "interval: 1s")
    (tmp_path / "prometheus.yml").write_text(config)
    prometheus = served.start_process([str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{web}"])  # fmt: skip

    def fired():
        for message in received:
            for alert in message["alerts"]:
                labels = alert["labels"]
                if (labels["alertname"], labels.get("ticker"), alert["status"]) == (
                    "StockopsForecastStale",
                    "IBM",
                    "firing",
                ):
                    return alert
        return None

    try:
        alert = wait_until(fired, 90, "StockopsForecastStale for IBM at the webhook", prometheus)
    finally:
        hook.shutdown()
    assert alert["annotations"]["summary"] == "IBM: no forecast since the last close"
    assert alert["labels"]["severity"] == "warning" and manager.poll() is None
    late = int(alert["annotations"]["description"].split()[0])
    assert late > 13 * 240  # sessions since 2013-01-31, from the API's stockops_forecast_sessions_behind


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("headless Chromium is needed: apt-get install chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
        )  # fmt: skip
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def dashboards(served):
    "Voila on the shared workspace, its pages following an API of their own (as under `make run`)."
    base, _ = served.api()
    port = free_port()
    process = served.start("dashboard", "--port", str(port), extra_env={"STOCKOPS_API_PORT": base.rsplit(":", 1)[1]})
    wait_until(lambda: get(f"http://127.0.0.1:{port}/voila/static/voila.js", 2)[0] == 200, 90, "Voila", process)
    return f"http://127.0.0.1:{port}/voila/render"


PLOT = "document.querySelector('.js-plotly-plot')"


@pytest.mark.browser
def test_forecast_dashboard_in_chromium(browser, dashboards):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{dashboards}/forecast.ipynb", timeout=120_000)
    page.wait_for_function(f"() => {PLOT} && {PLOT}.data && {PLOT}.data[3].x.length == 4", timeout=120_000)
    scripts = page.evaluate("""() => Object.fromEntries(performance.getEntriesByType("resource")
        .filter(entry => entry.initiatorType === "script")
        .map(entry => [entry.name.split("/").slice(3).join("/"), entry.decodedBodySize]))""")  # path: bytes, as loaded
    assert scripts.get(PLOTLY_JS, 0) > 1_000_000, scripts
    assert page.evaluate("() => window.Plotly.version") == PLOTLY_JS_VERSION
    assert max(scripts.values()) < 2_000_000, scripts  # not the full plotly.js (4.6 MB) of plotly's FigureWidget
    wide = page.evaluate(f"() => {PLOT}._fullLayout.width")
    page.set_viewport_size({"width": 900, "height": 1000})  # the chart follows its element's width
    page.wait_for_function(f"() => {PLOT}._fullLayout.width < {wide} - 300", timeout=10_000)
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.wait_for_function(f"() => {PLOT}._fullLayout.width == {wide}", timeout=10_000)
    names = page.evaluate(f"() => {PLOT}.data.map(trace => trace.name)")
    assert names == ["price", "90% interval", "80% interval", "forecast", "past forecasts", "past 90% intervals"]
    assert page.evaluate(f"() => {PLOT}.layout.title.text").startswith("IBM: forecast from the close of 2013-01-31")
    assert "the naive forecast" in page.inner_text("body")
    page.wait_for_function(
        '() => document.body.innerText.includes("live: following the API\'s events")', timeout=30_000
    )
    first = page.evaluate(f"() => {PLOT}.data[0].y.slice(-1)[0]")
    page.select_option("select >> nth=0", "MSFT")
    page.wait_for_function(f"() => {PLOT}.layout.title.text.startsWith('MSFT')", timeout=60_000)
    assert page.evaluate(f"() => {PLOT}.data[0].y.slice(-1)[0]") != first  # MSFT's prices now
    assert page.evaluate(f"() => {PLOT}.data[3].x.length") == 4
    assert "Traceback" not in page.content()
    shots = REPO / "reports" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "forecast-dashboard.png"), full_page=True)
    assert (shots / "forecast-dashboard.png").stat().st_size > 20_000
    page.close()


@pytest.mark.browser
def test_monitor_dashboard_in_chromium(browser, dashboards):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(f"{dashboards}/monitor.ipynb", timeout=120_000)
    page.wait_for_function(f"() => {PLOT} && {PLOT}.data && {PLOT}.data[0].x.length > 5", timeout=120_000)
    plots = page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].map(p => p.data.map(t => t.name))")
    assert plots == [["served model", "naive"], ["80% coverage", "90% coverage", "drift share"]]
    text = page.inner_text("body")
    assert "Promotions" in text and "promoted" in text and "Executed runbooks" in text
    page.select_option("select >> nth=0", "MSFT")
    page.wait_for_function(f"() => {PLOT}.layout.title.text.startsWith('MSFT')", timeout=60_000)
    shots = REPO / "reports" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "monitor-dashboard.png"), full_page=True)
    page.close()


@pytest.mark.browser
def test_an_open_forecast_page_shows_a_new_forecast_without_a_reload(browser, writable):
    """The real browser on a young workspace with its own API. The monitor page's live-error chart, with too few
    realised forecasts, says so in a sentence instead of drawing empty axes. On the forecast page: prices of 2013-02-01 arrive, MSFT is
    forecast as of that day (`stockops forecast`), and the open page redraws from the new close within 5 s of the
    forecast landing: the API's snapshot sees it, its /events stream tells the page's kernel, which redraws."""
    port, api_port = free_port(), free_port()  # the dashboard follows this API (its api_port)
    api = writable.start("serve", "--port", str(api_port))
    wait_until(lambda: get(f"http://127.0.0.1:{api_port}/health", 2)[0] == 200, 90, "the API", api)
    dashboard = writable.start("dashboard", "--port", str(port), extra_env={"STOCKOPS_API_PORT": str(api_port)})
    wait_until(lambda: get(f"http://127.0.0.1:{port}/voila/static/voila.js", 2)[0] == 200, 90, "Voila", dashboard)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"http://127.0.0.1:{port}/voila/render/monitor.ipynb", timeout=120_000)  # a young workspace's monitor
    note = f"(({PLOT} && {PLOT}.layout && {PLOT}.layout.annotations && {PLOT}.layout.annotations[0]) || {{}}).text"
    # its first ticker (MSFT, or IBM once an earlier test trained it) has too few realised forecasts, or none logged
    why = "(t => t.includes(' realised so far') || t.includes('has been logged yet'))"
    page.wait_for_function(f"() => {why}({note} || '')", timeout=120_000)
    assert page.evaluate(f"() => {PLOT}.layout.xaxis.visible") is False  # a sentence, not empty axes
    page.goto(f"http://127.0.0.1:{port}/voila/render/forecast.ipynb", timeout=120_000)
    title = f"(({PLOT} && {PLOT}.layout && {PLOT}.layout.title && {PLOT}.layout.title.text) || '')"
    page.wait_for_function(f"() => {title}.startsWith('MSFT: forecast from the close of 2013-01-31')", timeout=120_000)
    page.wait_for_function(
        '() => document.body.innerText.includes("live: following the API\'s events")', timeout=30_000
    )
    env = writable.env | {"STOCKOPS_API_PORT": str(api_port)}
    for args in (
        ["ingest", "--tickers", "MSFT,^GSPC", "--end", "2013-02-01"],
        ["forecast", "--tickers", "MSFT", "--as-of", "2013-02-01"],
    ):
        done = subprocess.run(
            [str(STOCKOPS), *args], cwd=writable.root, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    landed = time.monotonic()
    page.wait_for_function(f"() => {title}.startsWith('MSFT: forecast from the close of 2013-02-01')", timeout=5_000)
    seconds = time.monotonic() - landed
    print(f"the open page redrew {seconds:.2f} s after `stockops forecast` exited")
    assert seconds <= 5
    assert "live: forecast for MSFT as of 2013-02-01" in page.inner_text("body")
    assert "Traceback" not in page.content()
    page.close()

    # the published pages (what the daily flow writes), through the API's /reports: no kernel behind them
    from stockops.publish import publish_site

    publish_site(writable.settings)
    static = browser.new_page(viewport={"width": 1280, "height": 1000})
    static.goto(f"http://127.0.0.1:{api_port}/reports/site/index.html", timeout=30_000)
    static.click("text=MSFT")
    static.wait_for_function(f"() => {PLOT} && {PLOT}.data && {PLOT}.data.length == 6", timeout=30_000)
    assert static.evaluate(f"() => {PLOT}.data.map(trace => trace.name)") == [
        "price", "90% interval", "80% interval", "forecast", "past forecasts", "past 90% intervals"]  # fmt: skip
    assert static.evaluate(f"() => {PLOT}.layout.title.text").startswith("MSFT: forecast from the close of 2013-02-01")
    text = static.inner_text("body")
    assert "the naive forecast" in text and "90%:" in text and "Published" in text
    static.close()


@pytest.mark.browser
def test_preheated_dashboards_and_the_busy_page(browser, served):
    """Voila with its pool (one preheated kernel per dashboard) and a cap of 2 live kernels: the first viewer gets the
    preheated forecast page at once; the second finds the pool empty and the cap reached, and gets a 503 page saying
    the dashboards are busy and where the published pages are, without a kernel started for it."""
    port = free_port()
    process = served.start("dashboard", "--port", str(port), extra_env={"STOCKOPS_DASHBOARD_MAX_KERNELS": "2"})
    base = f"http://127.0.0.1:{port}/voila/render"
    wait_until(lambda: get(f"http://127.0.0.1:{port}/voila/static/voila.js", 2)[0] == 200, 90, "Voila", process)
    time.sleep(15)  # the pool's kernels run their notebooks (not timed: that is what a pool is for)
    first = browser.new_page(viewport={"width": 1280, "height": 1000})
    first.goto(f"{base}/forecast.ipynb", timeout=120_000)
    first.wait_for_function(f"() => {PLOT} && {PLOT}.data && {PLOT}.data[3].x.length == 4", timeout=120_000)
    second = browser.new_page()
    answer = second.goto(f"{base}/forecast.ipynb", timeout=60_000)
    assert answer.status == 503
    text = second.inner_text("body")
    assert "All 2 dashboard kernels are in use: try again in a minute" in text and "/reports/site/index.html" in text
    for page in (first, second):
        page.close()


@pytest.mark.browser
def test_jupyterlab_runs_a_notebook_cell_with_the_project_kernel(browser, served, tmp_path):
    "`make lab` as an author uses it: open nbs/10_prices.ipynb, write code that loads stored prices in a cell, run it, see them."
    (tmp_path / "nbs").mkdir()
    shutil.copy(REPO / "nbs" / "10_prices.ipynb", tmp_path / "nbs")  # a copy: the browser may save it
    port, token = free_port(), "stockops-test-token"
    log = (tmp_path / "lab.log").open("w")
    lab = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_PORT={port}", f"LAB_DIR={tmp_path}"], cwd=REPO,
                           env=served.env | {"JUPYTER_TOKEN": token}, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert lab.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
            return get(f"{base}/api/status?token={token}", 2)[0] == 200

        wait_until(up, 120, "JupyterLab")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/lab/tree/nbs/10_prices.ipynb?token={token}", timeout=120_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)  # kernel ready
        assert "10_prices.ipynb" in page.title()
        editor = page.locator(".jp-Notebook .jp-CodeCell .cm-content").first  # `#| default_exp prices`
        editor.click()  # edit mode in that cell: no keyboard shortcut of command mode can catch what is typed
        page.wait_for_selector(".jp-Notebook.jp-mod-editMode", timeout=30_000)
        page.keyboard.press("Control+a")
        page.keyboard.type("from stockops.config import load_settings\nfrom stockops.prices import PriceStore\n")
        page.keyboard.type("from stockops.dashboard import Chart\n")
        page.keyboard.type("prices = PriceStore.from_settings(load_settings()).load('IBM', end='2013-01-31')\n")
        page.keyboard.type(
            "display(Chart(data=[dict(type='scatter', name='IBM', x=prices['date'], y=prices['close'])]))\n"
        )
        page.keyboard.type("prices.tail(3)")
        assert "PriceStore.from_settings(load_settings())" in editor.inner_text()
        page.locator(".jp-NotebookPanel-toolbar [data-command='notebook:run-cell-and-select-next']").first.click()
        page.wait_for_selector(".jp-Notebook .jp-InputPrompt:has-text('[1]')", timeout=120_000)  # ran in the kernel
        output = page.locator(".jp-OutputArea-output").filter(has_text="2013-01-31")
        try:
            output.first.wait_for(timeout=120_000)
        finally:
            shots = REPO / "reports" / "screenshots"
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "jupyterlab.png"))  # what the author saw, output or not
        text = output.first.inner_text()
        assert "IBM" in text and "2013-01-29" in text and "adj_close" in text, text
        days = len(PriceStore.from_settings(served.settings).load("IBM", end="2013-01-31"))
        drawn = page.wait_for_function(f"() => {PLOT} && {PLOT}.data && {PLOT}.data[0].x.length", timeout=60_000)
        assert drawn.json_value() == days > 3000  # a Chart in JupyterLab: its plotly.js on `make lab`'s JUPYTER_PATH
        page.close()
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGTERM)
            lab.wait(timeout=30)
        log.close()


@pytest.mark.slow
@pytest.mark.browser
def test_up_serves_first_then_shows_the_first_run_and_ctrl_c_stops_it(browser, tmp_path):
    """`stockops up` (what `make run` calls) on a fresh workspace (the five sample stocks, quick experiment): the URLs
    within 30 s, every server answering at once; the first run's progress on the terminal, in /health, in a 409's
    sentence and as the dashboards' banner; no third-party noise on the terminal; forecasts when it ends, with three
    months of backfilled operations on the monitor page (realised live error, coverage, drift, promotions) and past
    forecasts on the forecast page, in Chromium; one Ctrl-C stops everything."""
    quick_workspace(tmp_path)
    ports = {key: free_port() for key in ("API", "DASHBOARD", "MLFLOW_UI", "PREFECT_UI")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKOPS_", "PREFECT_"))}
    env |= {f"STOCKOPS_{key}_PORT": str(port) for key, port in ports.items()} | {
        "STOCKOPS_SETTINGS": str(tmp_path / "settings.ini"), "STOCKOPS_API_REFRESH_SECONDS": "1",
        "STOCKOPS_RUNBOOKS_DIR": str(REPO / "nbs" / "runbooks"), "STOCKOPS_FLOWS_DIR": str(REPO / "flows"),
        "STOCKOPS_DASHBOARDS_DIR": str(REPO / "nbs" / "dashboards"), "NO_COLOR": "1"}  # fmt: skip
    api, started, lines = f"http://127.0.0.1:{ports['API']}", time.monotonic(), []
    up = subprocess.Popen([str(STOCKOPS), "up"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip

    def read():
        for line in up.stdout:
            lines.append((time.monotonic() - started, line.rstrip("\n")))

    threading.Thread(target=read, daemon=True).start()

    def said(prefix: str) -> float | None:
        "When `up` printed a line starting with `prefix` (seconds after it started); fails at once if `up` has ended."
        assert up.poll() is None, "\n".join(line for _, line in lines)[-3000:]
        return next((at for at, line in list(lines) if line.startswith(prefix)), None)

    try:
        wait_until(lambda: said("  logs "), 120, "the URLs")
        print(f"\nstockops up printed its URLs {said('  logs '):.1f} s after it started")
        assert said("  logs ") <= 30, lines
        answering = {f"{api}/health": 200, f"http://127.0.0.1:{ports['DASHBOARD']}/voila/static/voila.js": 200,
                     f"http://127.0.0.1:{ports['MLFLOW_UI']}/health": 200}  # fmt: skip
        assert {url: get(url, 10)[0] for url in answering} == answering
        wait_until(lambda: said("the first run is training ("), 300, "the first run's training")
        training = lambda: get(f"{api}/health", 5)[1]["progress"]  # noqa: E731  (the API reads it at each refresh)
        wait_until(lambda: training()["step"] in ("train", "backfill"), 10, "/health: the first run's training")
        assert training()["job"] == "the first run"
        status, answer = get(f"{api}/forecast/FB")
        assert status == 409 and "the first run is" in answer["detail"], answer
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{ports['DASHBOARD']}/voila/render/forecast.ipynb", timeout=120_000)
        page.wait_for_selector(".stockops-progress", timeout=60_000)
        assert "the first run is" in page.inner_text(".stockops-progress")
        page.close()
        wait_until(lambda: said("the first run completed in"), 600, "the end of the first run")
        wait_until(lambda: get(f"{api}/forecast/IBM", 5)[0] == 200, 30, "IBM's forecast")
        wait_until(lambda: get(f"{api}/health", 5)[1]["progress"]["state"] == "completed", 10, "/health: completed")
        wait_until(lambda: said("serving daily ("), 60, "the schedules")
        assert get(f"http://127.0.0.1:{ports['PREFECT_UI']}/api/health", 10)[0] == 200
        assert said("the first run is backfilling past days of operations (62/62 days;")
        assert said("backfilled 63 days (2012-11-29 to 2013-03-01)")  # the 63 sessions up to 2013-03-01
        page = browser.new_page(viewport={"width": 1280, "height": 1400})  # a past from the first visit
        page.goto(f"http://127.0.0.1:{ports['DASHBOARD']}/voila/render/monitor.ipynb", timeout=120_000)
        page.wait_for_function(f"() => {PLOT} && {PLOT}.data && {PLOT}.data[0].x.length > 40", timeout=120_000)
        points = page.evaluate(
            "() => [...document.querySelectorAll('.js-plotly-plot')].map(p => p.data.map(t => t.x.length))"
        )
        assert points[0][0] == points[0][1] > 40 and points[1][0] == points[1][1] > 40, (
            points
        )  # error and naive; coverage
        assert points[1][2] >= 62, points  # a drift share every backfilled day with a champion, and the run's day
        assert "promoted" in page.inner_text("body")
        page.goto(f"http://127.0.0.1:{ports['DASHBOARD']}/voila/render/forecast.ipynb", timeout=120_000)
        past = f"{PLOT}.data.find(t => t.name == 'past forecasts')"
        page.wait_for_function(f"() => {PLOT} && {PLOT}.data && {past} && {past}.x.length >= 62", timeout=120_000)
        page.close()
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=90)
    output = "\n".join(line for _, line in lines)
    print(output)
    assert up.returncode == 0, output[-3000:]
    assert "stopped: API, dashboards, MLflow UI, Prefect server" in output
    for noise in ("IPKernelApp", "WARNING", "Traceback", "KeyboardInterrupt", "Your deployments are being served"):
        assert noise not in output, noise
    assert (tmp_path / "data" / "logs" / "kernels.log").stat().st_size > 0  # where the kernels' own lines went
    time.sleep(5)
    for url in [*answering, f"http://127.0.0.1:{ports['PREFECT_UI']}/api/health"]:
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=2)


def test_dashboard_token_is_required_and_on_no_command_line(served):
    "The token from the setting: asked for, and in no process's command line (`ps` showed `--token=...` to every user)."
    import httpx

    port, token = free_port(), "a-dashboard-token-" + os.urandom(6).hex()
    process = served.start("dashboard", "--port", str(port), "--host", "0.0.0.0",
                           extra_env={"STOCKOPS_DASHBOARD_TOKEN": token})  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(f"{base}/voila/static/voila.js", 2)[0] == 200, 90, "Voila", process)
    refused = httpx.get(f"{base}/voila/render/forecast.ipynb", follow_redirects=False, timeout=60)
    assert refused.status_code == 302 and refused.headers["location"].startswith("/login")
    allowed = httpx.get(f"{base}/voila/render/forecast.ipynb?token={token}", follow_redirects=False, timeout=120)
    assert allowed.status_code == 200 and "voila" in allowed.text.lower()
    for path in ("/voila/render/forecast.ipynb", "/voila/render/forecast.ipynb/", "/voila/tree/", "/voila/", "/login"):
        answer = httpx.get(base + path, headers={"Host": "attacker.example"}, follow_redirects=False, timeout=60)
        assert "attacker" not in answer.headers.get("location", ""), (path, answer.headers)  # no Host in a redirect
    command_lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            command_lines.append(path.read_bytes())
    assert b"voila" in b" ".join(command_lines) and not any(token.encode() in line for line in command_lines)


TRAVERSALS = [  # after GHSA-2q59-h24c-w6fg: dot segments plain, encoded and double-encoded, under each of Voila's routes
    "/voila/render/../../settings.ini", "/voila/render/%2e%2e/%2e%2e/settings.ini",
    "/voila/render/%252e%252e/%252e%252e/settings.ini", "/voila/render/..%2f..%2fsettings.ini",
    "/voila/render/..%252f..%252fsettings.ini", "/voila/render/....//....//settings.ini",
    "/voila/render/forecast.ipynb/../../../settings.ini", "/voila/render/../10_prices.ipynb",
    "/voila/render/%2e%2e/10_prices.ipynb", "/voila/render//etc/passwd", "/voila/files/../../settings.ini",
    "/voila/files/%2e%2e/%2e%2e/settings.ini", "/voila/files/..%2f..%2fsettings.ini", "/voila/files/../10_prices.ipynb",
    "/voila/files//etc/passwd", "/voila/files/%2fetc%2fpasswd", "/voila/files/forecast.ipynb",
    "/voila/static/../../../../../../etc/passwd", "/voila/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/voila/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/voila/static/%252e%252e/%252e%252e/%252e%252e/etc/passwd",
    "/voila/static//etc/passwd", "/voila/tree/..", "/voila/tree/%2e%2e", "/voila/api/contents/..", "/files/../../settings.ini",
]  # fmt: skip
SECRETS = (
    b"[stockops]",
    b"root:x:0:0",
    b"default_exp prices",
)  # settings.ini, /etc/passwd, a notebook beside dashboards


def test_voila_never_reads_outside_the_dashboards_folder(served):
    "Each path sent as is (no client normalises it), each redirect followed: 4xx, and none of the files' contents."
    import http.client

    port = free_port()
    process = served.start("dashboard", "--port", str(port))
    wait_until(lambda: get(f"http://127.0.0.1:{port}/voila/static/voila.js", 2)[0] == 200, 90, "Voila", process)
    answers = {}
    for path in TRAVERSALS:
        for _ in range(3):  # a redirect, then where it points
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            assert not any(secret in body for secret in SECRETS), (path, body[:300])
            if response.status not in (301, 302):
                break
            path = response.getheader("location")
        answers[path] = response.status
    assert all(400 <= status < 500 for status in answers.values()), answers


def test_oversized_and_deeply_nested_requests_are_4xx_at_once_and_memory_stays_flat(served):
    base, process = served.api()
    worker = int(
        subprocess.run(["pgrep", "-P", str(process.pid), "-n"], capture_output=True, text=True).stdout or process.pid
    )

    def resident_mb() -> float:
        return int(Path(f"/proc/{worker}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

    json_body = {"Content-Type": "application/json"}
    assert get(f"{base}/predict", 30, json_body, b'{"ticker": "IBM"}')[0] == 200
    before = resident_mb()
    started = time.monotonic()
    for _ in range(10):
        try:  # a 1 MB query: uvicorn refuses the request line (400), or closes the connection while it is sent
            assert get(f"{base}/history/IBM?start=" + "2" * 1_000_000, 30)[0] == 400
        except urllib.error.URLError as error:
            assert isinstance(error.reason, ConnectionResetError | BrokenPipeError), error
        huge = get(f"{base}/predict", 30, json_body, b'{"ticker": "IBM", "x": "' + b"a" * 10_000_000 + b'"}')
        assert huge == (413, {"detail": "request body over 1000000 bytes: no request to this API needs that much"})
        nested = b'{"ticker": "IBM", "horizons": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        assert get(f"{base}/predict", 30, json_body, nested)[0] == 400
    assert time.monotonic() - started < 20, "each refusal comes at once"
    assert resident_mb() - before < 30, (before, resident_mb())


def test_an_app_uvicorn_puts_on_a_public_address_without_a_token_refuses_other_machines(served):
    "`uvicorn stockops.api:serve_app --factory --host 0.0.0.0` (not `stockops serve`, which refuses to start so)."
    address = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    assert address, "the machine needs an address besides loopback for this test"
    port = free_port()
    command = [str(STOCKOPS.parent / "python"), "-m", "uvicorn", "stockops.api:serve_app", "--factory", "--host", "0.0.0.0",
               "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, cwd=served.root, env=served.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)  # fmt: skip
    served.processes.append(process)
    wait_until(lambda: get(f"http://127.0.0.1:{port}/health", 2)[0] == 200, 90, "uvicorn", process)
    status, answer = get(f"http://{address[0]}:{port}/forecast/IBM")
    assert status == 403 and answer["detail"].startswith(f"refusing to serve on {address[0]} with an empty api_token")
    assert get(f"http://{address[0]}:{port}/health")[0] == 403  # the fast path too
    assert get(f"http://127.0.0.1:{port}/forecast/IBM")[0] == 200  # this machine is served


def test_sigterm_to_the_dashboard_command_stops_voila(served):
    "As a service manager stops it (was: Voila went on serving)."
    port = free_port()
    process = served.start("dashboard", "--port", str(port))
    wait_until(lambda: get(f"http://127.0.0.1:{port}/voila/static/voila.js", 2)[0] == 200, 90, "Voila", process)
    process.send_signal(signal.SIGTERM)  # to the stockops process only, not its group
    assert process.wait(timeout=60) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/voila/static/voila.js", timeout=2)


def test_sigterm_to_up_stops_every_server_it_started(tmp_path):
    "A service manager's stop, a second after the URLs (was: four servers left running)."
    quick_workspace(tmp_path)
    ports = {key: free_port() for key in ("API", "DASHBOARD", "MLFLOW_UI", "PREFECT_UI")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKOPS_", "PREFECT_"))}
    env |= {f"STOCKOPS_{key}_PORT": str(port) for key, port in ports.items()} | {
        "STOCKOPS_SETTINGS": str(tmp_path / "settings.ini"), "STOCKOPS_DASHBOARDS_DIR": str(REPO / "nbs" / "dashboards"),
        "STOCKOPS_FLOWS_DIR": str(REPO / "flows"), "NO_COLOR": "1"}  # fmt: skip
    up = subprocess.Popen([str(STOCKOPS), "up", "--no-run"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines = []
    threading.Thread(target=lambda: lines.extend(up.stdout), daemon=True).start()
    try:
        wait_until(lambda: any(line.startswith("  logs ") for line in lines), 120, "the URLs", up)
        time.sleep(1)
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=90) == 0, "".join(lines)
    finally:
        if up.poll() is None:
            up.kill()
    assert any(line.startswith("stopped: API, dashboards, MLflow UI, Prefect server") for line in lines), lines
    for port in ports.values():
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
