"""The alerting rules in monitor/alerts.yml, unit-tested with Prometheus' own promtool (monitor/alerts.test.yml): each
alert fires on the series that should fire it, after its `for`, with its annotations, and not on those that should not."""

import shutil
import subprocess

import pytest
from conftest import REPO

MONITOR = REPO / "monitor"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is needed: apt-get install prometheus (.ci/run installs it)")
    return found


def test_the_rules_are_valid(promtool):
    result = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=MONITOR, capture_output=True, text=True)
    assert result.returncode == 0 and "SUCCESS: 5 rules found" in result.stdout, result.stdout + result.stderr


def test_the_rules_pass_their_unit_tests(promtool):
    result = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=MONITOR, capture_output=True, text=True)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_the_unit_tests_can_fail(promtool, tmp_path):
    "The same tests against rules with the live-error margin ignored: the MSFT and h=1 series fire, and promtool says so."
    rules = (MONITOR / "alerts.yml").read_text()
    loose = rules.replace('> 1 + scalar(max(stockops_retrain_threshold{setting="retrain_error_margin"})))', "> 1)")
    assert loose != rules
    (tmp_path / "alerts.yml").write_text(loose)
    shutil.copy(MONITOR / "alerts.test.yml", tmp_path)
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    report = result.stdout + result.stderr  # promtool writes the failures to stderr
    assert result.returncode == 1 and "alertname: StockopsLiveErrorAboveNaive" in report, report
