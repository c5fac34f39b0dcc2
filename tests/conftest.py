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
