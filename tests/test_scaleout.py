"""The team stack, run natively: PostgreSQL, an S3 server, the MLflow and Prefect servers, two process workers, two API
replicas behind nginx and the dashboards, each started and stopped here. The daily flow runs against it.

Opt-in (`make scaleout`, run by .ci/run): needs Debian's postgresql, nginx-light and docker-compose packages.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from stockops.dashboard import JUPYTER_DATA, PLOTLY_BASIC, PLOTLY_JS
from stockops.harness import SAMPLE_SETTINGS, NativeStack

pytestmark = pytest.mark.scaleout

REPO = Path(__file__).resolve().parents[1]
AS_OF = "2013-01-31"  # the first day: no champions yet, every ticker trains on the pool
NEXT_DAY = "2013-02-15"  # a later day: champions are young, so monitoring, drift reports and forecasts only
UNIVERSE = ["AAPL", "MSFT", "IBM", "GOOG", "FB"]


def get(url: str, data: bytes | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, dict(response.headers), response.read()


@pytest.fixture(scope="module")
def stack():
    root = Path(tempfile.mkdtemp(prefix="stockops-stack-"))
    with NativeStack(root, settings=SAMPLE_SETTINGS) as servers:
        servers.postgres()
        servers.s3()
        servers.mlflow()
        servers.prefect()
        servers.workers(2)
        for day in (AS_OF, NEXT_DAY):
            daily = servers.stockops("run", "--as-of", day)
            assert daily.returncode == 0, daily.stdout[-3000:] + daily.stderr[-3000:]
        servers.apis(2)
        servers.dashboards()
        servers.nginx()
        yield servers
    shutil.rmtree(root, ignore_errors=True)


def test_daily_flow_retrained_every_ticker_on_the_pool(stack):
    summary = json.loads((stack.root / "reports" / "daily" / AS_OF / "run.json").read_text())["summary"]
    assert summary["as_of"] == AS_OF and summary["retrained"] == UNIVERSE
    for ticker in UNIVERSE:  # each training left its executed notebook and its record in the shared reports
        record = json.loads(
            (stack.root / "reports" / "daily" / AS_OF / f"train_forecaster-{ticker}.run.json").read_text()
        )
        assert record["status"] == "ok" and record["ticker"] == ticker and record["mlflow_run_id"]
    assert not (stack.root / "data" / "prices").exists()  # prices live in the bucket, not on a disk
    later = json.loads((stack.root / "reports" / "daily" / NEXT_DAY / "run.json").read_text())["summary"]
    assert later["retrained"] == []  # champions 11 trading days old: younger than retrain_min_gap
    no_drift = [ticker for ticker, decision in later["decisions"].items() if decision["drift_share"] is None]
    assert no_drift == ["FB"]  # listed in May 2012: too short a training window to compare with


def test_flow_runs_spread_over_both_workers(stack):
    api = f"http://127.0.0.1:{stack.ports['prefect']}/api"
    _, _, body = get(f"{api}/deployments/name/train-ticker/stockops")
    deployment = json.loads(body)
    _, _, body = get(
        f"{api}/flow_runs/filter", json.dumps({"deployments": {"id": {"any_": [deployment["id"]]}}}).encode()
    )
    runs = json.loads(body)
    assert sorted(run["name"] for run in runs) == [
        f"train-AAPL,MSFT,IBM-{AS_OF}",
        f"train-GOOG,FB-{AS_OF}",
    ]  # a batch each
    assert {run["state_type"] for run in runs} == {"COMPLETED"}
    assert {run["work_pool_name"] for run in runs} == {"stockops"}
    by_worker = {name: stack.worker_runs(name) for name in ("worker-1", "worker-2")}
    assert all(by_worker.values()), by_worker  # both workers trained
    assert by_worker["worker-1"].isdisjoint(by_worker["worker-2"])
    assert by_worker["worker-1"] | by_worker["worker-2"] == {run["id"] for run in runs}
    # the parent daily flow waited for them: its run is completed in the same server
    _, _, body = get(f"{api}/flow_runs/filter", json.dumps({"flows": {"name": {"any_": ["daily"]}}}).encode())
    assert [run["state_type"] for run in json.loads(body)] == ["COMPLETED", "COMPLETED"]


def test_runs_and_models_in_postgres_backed_mlflow(stack):
    models = {row[0] for row in stack.psql("select name from registered_models", database="mlflow")}
    assert models == {f"stockops-{t.lower()}" for t in UNIVERSE}
    aliases = stack.psql("select name, alias from registered_model_aliases order by name", database="mlflow")
    assert [alias for _, alias in aliases] == ["champion"] * 5
    runs = stack.psql("select count(*) from runs where lifecycle_stage = 'active'", database="mlflow")
    assert int(runs[0][0]) >= 5 + 4  # 5 trainings, and the runbooks of the day (etl, drift, 5 trainings, forecast)
    [[location]] = stack.psql("select artifact_location from experiments where name = 'stockops'", database="mlflow")
    assert location.startswith("mlflow-artifacts:")  # the server proxies artifacts: clients need no bucket credentials


def test_artifacts_and_prices_in_the_bucket(stack):
    prices = stack.objects("prices/")
    assert sorted(prices) == sorted(f"prices/{t}.parquet" for t in [*UNIVERSE, "^GSPC", "^IXIC"])
    artifacts = stack.objects("mlflow/")
    assert sum(key.endswith("/MLmodel") for key in artifacts) == 5  # a registered forecaster per ticker
    notebooks = [key for key in artifacts if key.endswith(".ipynb")]
    assert {Path(key).name for key in notebooks} >= {f"train_forecaster-{t}.ipynb" for t in UNIVERSE} | {
        "etl_prices.ipynb"
    }
    drift_reports = {Path(key).name for key in artifacts if "/artifacts/reports/" in key and key.endswith(".html")}
    assert drift_reports == {f"{t}.html" for t in UNIVERSE if t != "FB"}  # the Evidently reports of the later day


def test_artifact_location_setting_sends_artifacts_straight_to_the_bucket(stack):
    "Without a tracking server: SQLite runs, artifacts written by the client itself to s3:// (mlflow_artifact_location)."
    local = {"STOCKOPS_MLFLOW_TRACKING_URI": "", "STOCKOPS_DATA_DIR": str(stack.root / "embedded"),
             "STOCKOPS_MLFLOW_ARTIFACT_LOCATION": f"s3://{stack.bucket}/direct", "STOCKOPS_PREFECT_WORK_POOL": ""}  # fmt: skip
    result = stack.stockops("train", "--tickers", "FB", "--as-of", AS_OF, env=local)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (stack.root / "embedded" / "mlflow.db").is_file()  # runs and registry: local SQLite
    assert not (stack.root / "embedded" / "mlartifacts").exists()
    direct = stack.objects("direct/")
    assert sum(key.endswith("/MLmodel") for key in direct) == 1 and any(
        key.endswith("forecaster.joblib") for key in direct
    )


def test_a_training_failing_on_the_pool_fails_the_flow_naming_ticker_and_cell(stack):
    "Batches [IBM, FB] and [MSFT] on the two workers: FB fails after IBM trained; MSFT trains; the flow names FB."
    result = stack.stockops("train", "--flow", "--tickers", "IBM,FB,MSFT", "--as-of", "2012-06-29")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "training failed on the work pool: FB: cell" in result.stderr
    assert "(BadInput: FB has 30 days of history up to 2012-06-29" in result.stderr  # the runbook's own error
    assert "3 tickers as 2 flow runs" in result.stderr
    folder = stack.root / "reports" / "train" / "2012-06-29"
    failure = json.loads((folder / "train_forecaster-FB.failure.json").read_text())
    assert failure["runs"][0]["failure"]["error"] == "BadInput"
    assert not (folder / "train_forecaster-FB.run.json").exists()
    for ticker in ["IBM", "MSFT"]:  # the rest of FB's batch, and the other batch, trained
        assert json.loads((folder / f"train_forecaster-{ticker}.run.json").read_text())["status"] == "ok"


def test_api_replicas_behind_nginx(stack):
    base = f"http://127.0.0.1:{stack.ports['nginx']}"
    upstreams, bodies = [], set()
    for _ in range(12):
        status, headers, body = get(f"{base}/forecast/AAPL?horizon=5")
        assert status == 200
        upstreams.append(headers["X-Upstream"])
        bodies.add(body)
    assert set(upstreams) == {f"127.0.0.1:{port}" for port in stack.api_ports}  # both replicas answered
    assert len(bodies) == 1  # and they agree: the same snapshot of the shared workspace
    answer = json.loads(bodies.pop())
    assert answer["as_of"] == NEXT_DAY and answer["ticker"] == "AAPL"
    status, _, body = get(f"{base}/history/IBM?start=2013-02-11")  # read from the bucket by the replicas
    assert [row["date"] for row in json.loads(body)["bars"]][-1] == NEXT_DAY
    served = {}
    for port in stack.api_ports:  # each replica counted its own share of the requests
        _, _, metrics = get(f"http://127.0.0.1:{port}/metrics")
        counts = re.findall(
            r'http_requests_total\{[^}]*handler="/forecast/\{ticker\}"[^}]*\} (\d+(?:\.\d+)?)', metrics.decode()
        )
        served[port] = sum(float(count) for count in counts)
    assert all(count >= 1 for count in served.values()) and sum(served.values()) >= 12, served


def test_dashboards_through_nginx(stack):
    base = f"http://127.0.0.1:{stack.ports['nginx']}"
    status, _, body = get(f"{base}/dashboards/voila/render/forecast.ipynb")
    assert status == 200 and b"Forecasts" in body
    status, _, script = get(f"{base}/dashboards/{PLOTLY_JS}")  # the charts' plotly.js, under the page's base URL
    assert status == 200 and script == (JUPYTER_DATA / PLOTLY_BASIC).read_bytes()


def test_nginx_config_is_the_deployed_one(stack):
    "The running nginx's file is deploy/nginx.conf but for the three addresses compose names (the rest, to the letter)."
    deployed = (REPO / "deploy" / "nginx.conf").read_text().splitlines()
    rendered = (stack.root / "nginx" / "nginx.conf").read_text().splitlines()
    compose_only = [line for line in deployed if line not in rendered]
    native_only = [line.strip() for line in rendered if line not in deployed]
    assert [line.split("#")[0].strip() for line in compose_only] == [
        "server api:8000;",
        "server voila:8866;",
        "listen 80;",
        "alias /workspace/reports/site/;",
    ]
    ports = [*stack.api_ports, stack.ports["voila"]]
    assert native_only == [f"server 127.0.0.1:{port};" for port in ports] + [
        f"listen 127.0.0.1:{stack.ports['nginx']};",
        f"alias {stack.root / 'reports' / 'site'}/;",
    ]


def test_published_pages_through_nginx(stack):
    "The daily flow's static pages, served by nginx from the shared workspace (no API, no kernel)."
    base = f"http://127.0.0.1:{stack.ports['nginx']}"
    status, headers, body = get(f"{base}/site/")
    assert status == 200 and b"<a href='AAPL.html'>AAPL</a>" in body and not headers.get("X-Upstream")  # no API
    status, _, page = get(f"{base}/site/AAPL.html")
    assert status == 200 and f"close of <b>{NEXT_DAY}</b>".encode() in page


@pytest.fixture
def compose_env(tmp_path):
    "A filled .env from .env.example beside a copy of the compose file and what it mounts."
    for name in ["docker-compose.yml", "Dockerfile"]:
        shutil.copy(REPO / name, tmp_path / name)
    for folder in ["deploy", "monitor"]:
        shutil.copytree(REPO / folder, tmp_path / folder)
    example = (REPO / ".env.example").read_text()
    (tmp_path / ".env").write_text(re.sub(r"^(\w+)=$", r"\1=filled-\1", example, flags=re.MULTILINE))
    return tmp_path


def compose(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POSTGRES_", "MINIO_", "S3_", "STOCKOPS_"))
    }
    return subprocess.run(["docker-compose", *args], cwd=folder, capture_output=True, text=True, env=env)


def test_compose_file_validates_with_every_service_healthchecked(compose_env):
    import yaml

    checked = compose(compose_env, "config")
    assert checked.returncode == 0, checked.stderr
    config = yaml.safe_load(checked.stdout)
    services = config["services"]
    assert set(services) >= {"postgres", "minio", "minio-init", "mlflow", "prefect-server", "prefect-worker", "api",
                             "nginx", "voila", "prometheus", "alertmanager", "grafana"}  # fmt: skip
    assert [name for name, service in services.items() if "test" not in service.get("healthcheck", {})] == []
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] in ("service_healthy", "service_completed_successfully"), (name, dependency)
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert set(config["volumes"]) == {"workspace", "postgres", "minio", "prometheus", "grafana"}
    assert set(config["networks"]) == {"stockops"}
    assert all(service["networks"] == {"stockops": None} for service in services.values())
    worker = services["prefect-worker"]["environment"]
    assert (worker["STOCKOPS_PREFECT_WORK_POOL"], worker["STOCKOPS_PRICES_URL"]) == ("stockops", "s3://stockops/prices")


def test_compose_refuses_a_missing_secret(compose_env):
    env_file = compose_env / ".env"
    env_file.write_text(
        re.sub(r"^POSTGRES_PASSWORD=.*$", "POSTGRES_PASSWORD=", env_file.read_text(), flags=re.MULTILINE)
    )
    checked = compose(compose_env, "config")
    assert checked.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in checked.stderr


def test_prometheus_config_of_the_stack_is_valid():
    checked = subprocess.run(["promtool", "check", "config", str(REPO / "deploy" / "prometheus.yml")], capture_output=True, text=True)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
