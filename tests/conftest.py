"""Shared fixtures: an isolated workspace per test and the real `stockops` command."""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    "An empty workspace: its own settings.ini, data and reports folders (not created until written)."
    (tmp_path / "settings.ini").write_text((REPO / "settings.ini").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKOPS_")}
    env |= {"COLUMNS": "200", "NO_COLOR": "1"}
    return Workspace(tmp_path, env)


def quick_experiment(settings):
    "The baseline experiment with ridge as the only candidate and yearly refits: a champion in seconds."
    from stockops.experiment import load_experiment

    baseline = load_experiment(REPO / "experiments" / "baseline.toml", settings)
    return type(baseline)(
        **{**baseline.__dict__, "models": {"ridge": {"alpha": 10.0}}, "splits": {"min_train": 504, "step": 252}}
    )


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
