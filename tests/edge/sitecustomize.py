"""The network edge for processes a test starts (the CLI, Prefect's flow runs, papermill's kernels): with this folder
on PYTHONPATH and YAHOO_RECORDING naming a recorded `yfinance.download` answer (a CSV in yfinance's three-row
`to_csv()` layout, see tests/fixtures/README.md), every `yfinance.download` call in the process answers from the
recording, as Yahoo would: the requested tickers' columns, rows from `start` to before `end`, an empty frame of the
same columns for tickers it does not have. Nothing else changes; without YAHOO_RECORDING this file does nothing."""

import os

if os.environ.get("YAHOO_RECORDING"):
    import pandas as pd
    import yfinance

    _recording = pd.read_csv(os.environ["YAHOO_RECORDING"], header=[0, 1], index_col=0, parse_dates=True)

    def _download(tickers, start=None, end=None, **kwargs):
        wanted = [tickers] if isinstance(tickers, str) else list(tickers)
        have = [t for t in wanted if t in _recording.columns.get_level_values("Ticker")]
        frame = _recording.loc[:, _recording.columns.get_level_values("Ticker").isin(have)]
        rows = pd.Series(True, index=frame.index)
        if start is not None:
            rows &= frame.index >= pd.Timestamp(start)
        if end is not None:
            rows &= frame.index < pd.Timestamp(end)
        with open(os.environ["YAHOO_RECORDING"] + ".calls", "a") as calls:  # what was asked, for the test to check
            calls.write(f"{','.join(wanted)} {start} {end}\n")
        return frame[rows.to_numpy()].dropna(how="all") if have else _recording.iloc[:0, :0]

    yfinance.download = _download
