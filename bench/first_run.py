"""Benchmark: `make run`'s first run on a fresh workspace, as a new user gets it: `stockops up` on the bundled default
(the 20 sp500 stocks and the index to 2022-12-28, the baseline experiment) in a temporary workspace with its own ports.

Prints the terminal output with the second each line appeared, then the figures against the targets: the URLs within
30 s of `up` starting, and the whole first run (the three months of backfilled operations included: ingest, first
training as of the backfill's first day, the days after it, then the run's day through the Prefect server and the
runbooks) within 5 minutes on 2 cores; and the time of each phase, read from the progress lines. Ctrl-C (SIGINT) stops
`up` at the end, as a user would.

    .venv/bin/python bench/first_run.py            # about 5 minutes on a quiet machine
    .venv/bin/python bench/first_run.py --keep     # keep the workspace (its path is printed)
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
URL_TARGET, RUN_TARGET = 30.0, 300.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_by_server(pid: int) -> dict[str, float]:
    "CPU seconds (user + system) of each child of `up` with its own children, named by its command line."
    import psutil

    totals = {}
    for child in psutil.Process(pid).children():
        try:
            tree = [child, *child.children(recursive=True)]
            seconds = sum(sum(p.cpu_times()[:2]) for p in tree if p.is_running())
            words = child.cmdline()
            name = " ".join(words[2:5]) if words[1:2] == ["-m"] else " ".join(words[:3])
        except psutil.Error:
            continue
        totals[name] = totals.get(name, 0.0) + seconds
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the first run")
    arguments = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="stockops-first-run-"))
    shutil.copy(REPO / "settings.ini", root / "settings.ini")
    shutil.copytree(REPO / "experiments", root / "experiments")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKOPS_", "PREFECT_"))}
    env |= {f"STOCKOPS_{key}_PORT": str(free_port()) for key in ("API", "DASHBOARD", "MLFLOW_UI", "PREFECT_UI")}
    env |= {"STOCKOPS_SETTINGS": str(root / "settings.ini"), "STOCKOPS_RUNBOOKS_DIR": str(REPO / "nbs" / "runbooks"),
            "STOCKOPS_FLOWS_DIR": str(REPO / "flows"), "STOCKOPS_DASHBOARDS_DIR": str(REPO / "nbs" / "dashboards"),
            "NO_COLOR": "1"}  # fmt: skip
    load = os.getloadavg()[0]
    started, lines = time.monotonic(), []
    up = subprocess.Popen([str(REPO / ".venv" / "bin" / "stockops"), "up"], cwd=root, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip

    def read():
        for line in up.stdout:
            lines.append((time.monotonic() - started, line.rstrip("\n")))
            print(f"{lines[-1][0]:7.1f}  {lines[-1][1]}", flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def said(prefix: str) -> float | None:
        return next((at for at, line in list(lines) if line.startswith(prefix)), None)

    try:
        while not (said("serving daily (") or said("the first run did not complete")) and up.poll() is None:
            if time.monotonic() - started > arguments.timeout:
                print(f"gave up after {arguments.timeout:.0f} s", flush=True)
                break
            time.sleep(0.5)
        busy = cpu_by_server(up.pid)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=120)
        reader.join(timeout=10)
    urls, first = said("  logs "), said("the first run is ")
    ended = said("the first run completed in")
    completed = next((line for _, line in lines if line.startswith("the first run completed in")), None)
    print(f"\nmachine load average at the start: {load:.2f} (2 cores: {os.cpu_count()} CPUs here)")
    print(f"URLs printed {urls:.1f} s after `stockops up` started (target {URL_TARGET:.0f} s: "
          f"{'met' if urls is not None and urls <= URL_TARGET else 'MISSED'})" if urls is not None else "no URLs printed")  # fmt: skip
    if completed is None:
        print("the first run did not complete")
        return 1
    seconds = ended - urls  # from the URLs (the Prefect server's start included) to the first run's last line
    print(f"first run: {completed}; {ended - first:.1f} s from its first progress line to its last, {seconds:.1f} s "
          f"from the URLs (the Prefect server's start included; target {RUN_TARGET:.0f} s: "
          f"{'met' if seconds <= RUN_TARGET else 'MISSED'}), {ended:.1f} s from `stockops up`")  # fmt: skip
    phases, previous = [], None  # (phase, its first line's second) from the progress lines
    for at, line in lines:
        match = re.match(r"the first run is (.+?) \(", line)
        if match and match.group(1) != previous:
            phases.append((match.group(1), at))
            previous = match.group(1)
    for (name, at), (_, following) in zip(phases, [*phases[1:], ("end", ended)], strict=True):
        print(f"  {following - at:7.1f} s  {name}")
    print("CPU seconds while `up` ran, by process tree (the first run's share is what the servers left it):")
    for name, seconds in sorted(busy.items(), key=lambda item: -item[1]):
        print(f"  {seconds:7.1f} s  {name}")
    if arguments.keep:
        print(f"workspace kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if seconds <= RUN_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
