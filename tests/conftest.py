"""Shared fixtures: an isolated workspace per test and the real `stockops` command."""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from stockops.harness import SAMPLE_SETTINGS
from stockops.sources import YAHOO_FIELDS

REPO = Path(__file__).resolve().parents[1]
STOCKOPS = Path(sys.executable).parent / "stockops"


@dataclass
class Workspace:
    root: Path
    env: dict

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def run(self, *args: str, timeout: float = 120, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        "Run the installed `stockops` command in this workspace; the result has `.seconds` too."
        started = time.monotonic()
        result = subprocess.run(
            [str(STOCKOPS), *args],
            cwd=self.root,
            env=self.env | (extra_env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result.seconds = time.monotonic() - started
        return result

    def files(self) -> dict[str, bytes]:
        "Every file under the workspace (relative path -> bytes), to prove nothing was written."
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}


def sample_settings(root: Path) -> Path:
    "Write `root`/settings.ini: the repository's settings on the sample source (five stocks to 2013); returns its path."
    pinned, lines = set(), []
    for line in (REPO / "settings.ini").read_text().splitlines():
        key = line.split("=")[0].strip()
        if key in SAMPLE_SETTINGS:
            line = f"{key} = {SAMPLE_SETTINGS[key]}"
            pinned.add(key)
        lines.append(line)
    assert pinned == set(SAMPLE_SETTINGS), "settings.ini lost a key the tests pin"
    (root / "settings.ini").write_text("\n".join(lines) + "\n")
    return root / "settings.ini"


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    "An empty workspace on the sample source: its own settings.ini, data and reports folders (not created until written)."
    sample_settings(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKOPS_")}
    env |= {"COLUMNS": "200", "NO_COLOR": "1"}
    return Workspace(tmp_path, env)


QUICK = """name = "quick"
horizons = []
index = "^GSPC"
start = ""
[splits]
window = "expanding"
min_train = 504
step = 252
[gate]
recent_days = 252
margin = 0.01
[intervals]
levels = [0.8, 0.9]
calibration_window = 1000
min_calibration = 100
[models.ridge]
alpha = 10.0
"""  # the baseline experiment with ridge as the only candidate and yearly refits: a champion in seconds


def quick_workspace(root: Path) -> Path:
    "Make `root` a workspace whose experiment is QUICK (for `stockops` processes started in it); returns its settings."
    sample_settings(root)
    (root / "experiments").mkdir(exist_ok=True)
    (root / "experiments" / "baseline.toml").write_text(QUICK)
    return root / "settings.ini"


def quick_experiment(settings):
    "QUICK as an Experiment, whatever experiment `settings` name."
    import tempfile

    from stockops.experiment import load_experiment

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "quick.toml").write_text(QUICK)
        return load_experiment(Path(folder) / "quick.toml", settings)


def forecast_history(settings, tickers: list[str], trained_on: str, first: str, last: str, monitored_on: str) -> None:
    """Ingest `tickers` to `monitored_on`, train them as of `trained_on` (quick experiment), forecast every trading day
    from `first` to `last` and monitor them on `monitored_on`: a workspace with live evidence to serve."""
    from stockops.calendar import trading_days
    from stockops.routine import PlainSteps

    steps = PlainSteps(settings, quick_experiment(settings), source="sample")  # the daily routine's steps
    steps.ingest([*tickers, "^GSPC"], monitored_on)
    trained = steps.train(tickers, trained_on)
    assert all(outcome["champion"] for outcome in trained.values()), trained
    for day in trading_days("XNYS", first, last):
        steps.forecast(tickers, str(day.date()))
    steps.monitor(tickers, monitored_on)


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    """The shared trained workspace, built once per session for the tests that only read it (in process or through
    servers started on it): IBM and MSFT trained as of 2012-11-30 (QUICK), forecast every trading day from 2012-12-03
    to 2013-01-31 and monitored on 2013-01-31; AAPL and ^IXIC stored, AAPL never trained. Its settings are returned.
    A test that trains, forecasts or otherwise writes builds its own workspace instead."""
    from stockops.config import load_settings
    from stockops.ingest import ingest

    settings = load_settings(quick_workspace(tmp_path_factory.mktemp("live")), env={})
    forecast_history(settings, ["IBM", "MSFT"], "2012-11-30", "2012-12-03", "2013-01-31", "2013-01-31")
    ingest("sample", "AAPL,^IXIC", end="2013-01-31", settings=settings)
    return settings


def yahoo_export(bars):
    "Bars (the bar schema) as Yahoo's download CSV writes them: Date,Open,High,Low,Close,Adj Close,Volume."
    export = bars.rename(columns={v: k for k, v in YAHOO_FIELDS.items()})[list(YAHOO_FIELDS)]
    return export.assign(Date=bars["date"].dt.strftime("%Y-%m-%d"))


def yfinance_recording(bars_by_ticker: dict, path: Path) -> Path:
    """Write what `yfinance.download(tickers, auto_adjust=False)` answers for these bars, in its `to_csv()` layout
    (the shape of tests/fixtures/yfinance_download_AAPL_MSFT_2013-01.csv); `tests/edge` replays it. Returns `path`."""
    import pandas as pd

    fields = [field for field in YAHOO_FIELDS if field != "Date"]
    parts = {t: yahoo_export(b).set_index(b["date"].rename("Date"))[fields] for t, b in bars_by_ticker.items()}
    frame = pd.concat(parts, axis=1).swaplevel(axis=1).sort_index(axis=1)
    frame.columns.names = ["Price", "Ticker"]
    frame.to_csv(path)
    return path
