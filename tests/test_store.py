"""The store survives a crash mid-write: the previous file stays readable and a rerun completes."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd

from stockops.prices import PriceStore

CRASH_DURING_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    import pandas as pd
    from stockops.cli import main

    real_to_parquet = pd.DataFrame.to_parquet

    def dying_to_parquet(self, sink, *args, **kwargs):
        # write the real bytes, keep only the first half in the temporary file, then die like a power cut
        real_to_parquet(self, sink, *args, **kwargs)
        sink.flush()
        size = os.fstat(sink.fileno()).st_size
        os.ftruncate(sink.fileno(), size // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    pd.DataFrame.to_parquet = dying_to_parquet
    sys.argv = ["stockops", *sys.argv[1:]]
    main()
    """
)


def test_crash_mid_write_leaves_previous_data_readable_and_rerun_completes(workspace):
    assert workspace.run("ingest", "--tickers", "IBM", "--end", "2012-12-31").returncode == 0
    path = workspace.data / "prices" / "IBM.parquet"
    previous = pd.read_parquet(path)

    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_DURING_WRITE, "ingest", "--tickers", "IBM"],
        cwd=workspace.root, env=workspace.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    leftovers = list(path.parent.glob(".IBM.parquet.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0  # the half-written file is there ...
    pd.testing.assert_frame_equal(pd.read_parquet(path), previous)  # ... and the store still reads the old one
    assert PriceStore(path.parent).tickers() == ["IBM"]

    rerun = workspace.run("ingest", "--tickers", "IBM")
    assert rerun.returncode == 0, rerun.stderr
    after = pd.read_parquet(path)
    assert len(after) == 3270 and str(after["date"].max().date()) == "2013-03-01"
    pd.testing.assert_frame_equal(after.iloc[: len(previous)], previous)
    assert not list(path.parent.glob(".IBM.parquet.*.tmp"))  # the rerun cleaned up the stale temporary file


def test_crash_before_any_write_changes_nothing(workspace):
    "A crash while fetching (before the first write) leaves every file as it was."
    assert workspace.run("ingest", "--tickers", "IBM", "--end", "2012-12-31").returncode == 0
    before = workspace.files()
    killer = CRASH_DURING_WRITE.replace("real_to_parquet(self, sink, *args, **kwargs)", "pass").replace(
        "pd.DataFrame.to_parquet = dying_to_parquet",
        "import stockops.sources as p; p.SampleSource.fetch = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)",
    )
    crashed = subprocess.run(
        [sys.executable, "-c", killer, "ingest", "--tickers", "IBM"],
        cwd=workspace.root, env=workspace.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL
    after = workspace.files()
    stale = json.loads(after.pop("data/workspace.lock"))  # the dead holder's record (the kernel released its lock)
    assert after == before and (stale["command"], stale["state"]) == ("stockops ingest", "held")
    assert os.listdir(workspace.data / "prices") == ["IBM.parquet"]
    rerun = workspace.run("ingest", "--tickers", "IBM", "--end", "2012-12-31")  # takes the lock over, says so
    assert rerun.returncode == 0, rerun.stderr
    assert f"stockops ingest (pid {stale['pid']}) ended without releasing it" in rerun.stderr, rerun.stderr
    assert not (workspace.data / "workspace.lock").exists()
