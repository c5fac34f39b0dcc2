"""The API through FastAPI's TestClient with dependency overrides: every endpoint, every error case, never a 500 for
bad input, and training started through an overridden launcher (the real one is tested as a process)."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from stockops.api import create_app
from stockops.api.deps import get_launcher, get_settings, get_snapshot
from stockops.serving import load_snapshot


@pytest.fixture(scope="module")
def settings(live):
    "The session's shared trained workspace (conftest's `live`): IBM and MSFT served, AAPL stored but never trained."
    return live


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings, refresh=False)) as client:
        yield client


def test_every_endpoint_answers(client):
    assert client.get("/health").json()["status"] == "ok"
    tickers = {t["ticker"]: t for t in client.get("/tickers").json()}
    assert tickers["IBM"]["champion_version"] == "1" and tickers["IBM"]["last_forecast_as_of"] == "2013-01-31"
    assert tickers["AAPL"]["champion_version"] is None and tickers["AAPL"]["last_forecast_as_of"] is None
    history = client.get("/history/IBM", params={"start": "2012-12-24", "end": "2012-12-31"}).json()
    assert [bar["date"] for bar in history["bars"]] == [
        "2012-12-24",
        "2012-12-26",
        "2012-12-27",
        "2012-12-28",
        "2012-12-31",
    ]
    assert history["bars"][-1]["close"] == pytest.approx(191.55)
    forecast = client.get("/forecast/IBM").json()
    assert [h["horizon"] for h in forecast["horizons"]] == [1, 5, 20]
    assert all(h["backtest"]["naive_mae"] > 0 and h["live"]["n"] > 0 for h in forecast["horizons"])
    predicted = client.post("/predict", json={"ticker": "ibm", "as_of": "2013-01-31", "horizons": [5]}).json()
    assert [h["horizon"] for h in predicted["horizons"]] == [5]
    assert predicted["horizons"][0]["forecast"] == pytest.approx(forecast["horizons"][1]["forecast"], rel=1e-12)
    models = client.get("/models/IBM").json()
    assert models["champion_version"] == "1" and {c["family"] for c in models["candidates"]} == {"naive", "ridge"}
    assert [p["decision"] for p in models["promotions"]] == ["promoted"]
    drift = client.get("/drift/IBM").json()
    assert drift["as_of"] == "2013-01-31" and set(drift["columns"]) == {"ret_lag0", "abs_ret", "volume_z_20d"}
    assert client.get(drift["report_url"]).status_code == 200
    metrics = client.get("/metrics").text
    assert 'stockops_champion_version{ticker="IBM"} 1.0' in metrics and "http_requests_total" in metrics
    behind = next(
        line for line in metrics.splitlines() if line.startswith('stockops_forecast_sessions_behind{ticker="IBM"}')
    )
    assert float(behind.split()[-1]) > 13 * 240  # forecast as of 2013-01-31: every New York session since is late
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("get", "/forecast/NVDA", None, 404),
        ("get", "/forecast/" + "A" * 40, None, 422),
        ("get", "/forecast/%E2%82%AC", None, 422),
        ("get", "/forecast/IBM?horizon=-1", None, 422),
        ("get", "/forecast/IBM?horizon=abc", None, 422),
        ("get", "/forecast/IBM?horizon=2", None, 422),
        ("get", "/forecast/AAPL", None, 409),  # stored, never trained
        ("get", "/forecast/^IXIC", None, 404),  # a market index: stored as a feature, never forecast
        ("get", "/history/NVDA", None, 404),
        ("get", "/history/IBM?start=2013-02-30", None, 422),
        ("get", "/history/IBM?start=2013-01-31&end=2013-01-01", None, 422),
        ("get", "/models/..etc", None, 422),
        ("get", "/models/..%2Fetc", None, 404),  # a slash: no such route
        ("get", "/drift/AAPL", None, 404),
        ("get", "/runs/not-a-run", None, 422),
        ("get", "/runs/" + "a" * 32, None, 404),
        ("post", "/predict", {"ticker": "IBM", "horizons": [0]}, 422),
        ("post", "/predict", {"ticker": "IBM", "as_of": "1999-01-01"}, 422),
        ("post", "/predict", {"ticker": "IBM", "as_of": "2000-03-02"}, 422),  # too little history for its features
        ("post", "/predict", {"ticker": "IBM", "as_of": "last tuesday"}, 422),
        ("post", "/predict", {"ticker": "NVDA"}, 404),
        ("post", "/predict", {"ticker": "AAPL"}, 409),
        ("post", "/predict", {"ticker": "^IXIC"}, 404),
        ("post", "/predict", {"ticker": "IBM", "horizons": list(range(1, 18))}, 422),  # at most 16
        ("get", "/history/IBM?columns=vwap", None, 422),
        ("post", "/predict", {"horizons": [1]}, 422),
        ("post", "/predict", "not json", 422),
        ("post", "/train", {"tickers": ["IBM"]}, 401),  # no token given (and none configured: the message says so)
    ],
)
def test_bad_input_is_a_clear_4xx_never_a_5xx(client, method, url, body, status):
    if method == "get":
        response = client.get(url)
    elif isinstance(body, str):
        response = client.post(url, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(url, json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and len(detail) >= 9  # a message, at least Starlette's 'Not Found'


def test_the_409_says_what_to_run(client):
    assert "stockops train --tickers AAPL" in client.get("/forecast/AAPL").json()["detail"]
    assert "market index" in client.get("/forecast/^IXIC").json()["detail"]


def test_a_token_when_none_is_configured_is_a_403_a_missing_one_a_401(client):
    missing = client.post("/train", json={})
    assert missing.status_code == 401 and "training over the API is disabled" in missing.json()["detail"]
    given = client.post("/train", json={}, headers={"Authorization": "Bearer anything"})
    assert given.status_code == 403 and given.json()["detail"].startswith("training over the API is disabled")


def test_history_ranges_and_columns_come_from_one_prepared_answer(client):
    whole = client.get("/history/IBM").json()["bars"]
    december = client.get("/history/IBM", params={"start": "2012-12-01", "end": "2012-12-31"}).json()["bars"]
    assert december == [bar for bar in whole if "2012-12-01" <= bar["date"] <= "2012-12-31"] and len(december) == 20
    closes = client.get("/history/IBM", params={"start": "2012-12-01", "end": "2012-12-31", "columns": "close"}).json()
    assert closes["bars"] == [{"date": bar["date"], "close": bar["close"]} for bar in december]


def test_training_with_overridden_settings_and_launcher(settings, tmp_path):
    "With a token (settings override) and a launcher that records instead of spawning a process."
    app = create_app(settings, refresh=False)
    launched = []
    # the run record goes to this test's own reports folder: the shared workspace is only read
    app.dependency_overrides[get_settings] = lambda: settings.replace(api_token="t0ken", reports_dir=tmp_path)
    app.dependency_overrides[get_launcher] = lambda: (
        lambda s, run_id, tickers, force: launched.append((run_id, tickers, force))
    )
    with TestClient(app) as client:
        assert client.post("/train", json={}).status_code == 401
        assert client.post("/train", json={}, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert (
            client.post("/train", json={"tickers": ["NVDA"]}, headers={"Authorization": "Bearer t0ken"}).status_code
            == 404
        )
        response = client.post(
            "/train", json={"tickers": ["ibm"], "force": True}, headers={"Authorization": "Bearer t0ken"}
        )
        assert response.status_code == 202
        run = response.json()
        assert launched == [(run["run_id"], ["IBM"], True)]
        record = client.get(f"/runs/{run['run_id']}").json()
        assert (record["status"], record["kind"], record["tickers"]) == ("scheduled", "train", ["IBM"])


def test_snapshot_override(settings, tmp_path):
    "The snapshot is a dependency: an empty workspace's snapshot serves no tickers."
    empty = settings.replace(data_dir=tmp_path / "data", reports_dir=tmp_path / "reports")
    app = create_app(settings, refresh=False)
    app.dependency_overrides[get_snapshot] = lambda: load_snapshot(empty)
    with TestClient(app) as client:
        assert client.get("/tickers").json() == []
        assert client.get("/forecast/IBM").status_code == 404
        assert "stored tickers are " in client.get("/models/IBM").json()["detail"]


class IndexEcho:
    "An estimator forecasting the market index's latest daily return: its answer shows which index the features used."

    def __init__(self, column: int):
        self.column = column

    def predict(self, X):
        return X[:, self.column]


@pytest.fixture
def echoing_champion(settings, monkeypatch):
    """IBM's registered champion (naive at every horizon: no feature matters) with every horizon's estimator replaced
    by `IndexEcho`; `load_champion` in serving returns it and records which version was asked for."""
    import dataclasses
    from types import SimpleNamespace

    import stockops.serving
    from stockops.forecast import load_champion

    model, registered = load_champion("IBM", settings)
    forecaster = model.unwrap_python_model().forecaster
    echo = IndexEcho(forecaster.feature_names.index("index_ret_lag0"))
    models = {h: dataclasses.replace(m, estimator=echo) for h, m in forecaster.models.items()}
    bundle = SimpleNamespace(forecaster=dataclasses.replace(forecaster, models=models))
    asked = []

    def load(ticker, settings, version=None):
        asked.append((ticker, version))
        return SimpleNamespace(unwrap_python_model=lambda: bundle), registered

    monkeypatch.setattr(stockops.serving, "load_champion", load)
    return asked


def test_a_models_features_come_from_its_own_metadata_not_settings(settings, echoing_champion):
    "Settings listing another stored index first (^IXIC) change no answer: the champion's metadata names ^GSPC."
    from stockops.prices import PriceStore

    answers = []
    for indices in (("^GSPC", "^IXIC"), ("^IXIC", "^GSPC")):
        with TestClient(create_app(settings.replace(indices=indices), refresh=False)) as client:
            latest = client.get("/forecast/IBM")
            predicted = client.post("/predict", json={"ticker": "IBM", "as_of": "2012-12-14", "horizons": [1]})
        answers.append((latest.content, predicted.json()["horizons"][0]["log_return"]))
    assert answers[0] == answers[1]
    assert {version for ticker, version in echoing_champion if ticker == "IBM"} == {"1"}  # the snapshot's version
    store = PriceStore.from_settings(settings)

    def daily_return(index):
        close = store.load(index, end="2012-12-14")["adj_close"].to_numpy()
        return float(np.log(close[-1] / close[-2]))

    assert answers[0][1] == pytest.approx(daily_return("^GSPC"), rel=1e-9)
    assert abs(daily_return("^GSPC") - daily_return("^IXIC")) > 1e-4  # another index would have shown
