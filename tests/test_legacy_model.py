"""A registry trained before a rename still serves: the pyfunc stockops registered at commit 1186b39 (every model
family in one bundle, made by tests/data/make_legacy_model.py) loads with today's code and forecasts exactly what it
forecast then. Registered models pickle `stockops.tracking.ForecasterModel` and `stockops.models.*` by name."""

import datetime as dt
import pickletools
from pathlib import Path

import mlflow
import pandas as pd

from stockops.features import make_features
from stockops.sources import SampleSource

LEGACY = Path(__file__).resolve().parent / "data" / "legacy-model-1186b39"


def pickled_globals(path: Path) -> set[str]:
    "`module name` pairs a pickle refers to (what must stay importable)."
    names, strings = set(), []
    for opcode, argument, _ in pickletools.genops(path.read_bytes()):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(argument)
        elif opcode.name == "STACK_GLOBAL":
            names.add(f"{strings[-2]} {strings[-1]}")
        elif opcode.name == "GLOBAL":
            names.add(argument)
    return {name for name in names if name.startswith("stockops")}


def joblib_globals(path: Path) -> set[str]:
    "The same for a joblib file (numpy arrays inline: read with joblib's own unpickler, recording each class looked up)."
    from joblib.numpy_pickle import NumpyUnpickler

    found = set()

    class Recording(NumpyUnpickler):
        def find_class(self, module, name):
            found.add(f"{module} {name}")
            return super().find_class(module, name)

    with open(path, "rb") as handle:
        Recording(str(path), handle, ensure_native_byte_order=True).load()
    return {name for name in found if name.startswith("stockops")}


def test_a_model_registered_before_the_restructuring_loads_and_forecasts_the_same():
    assert pickled_globals(LEGACY / "python_model.pkl") == {"stockops.tracking ForecasterModel"}
    assert joblib_globals(LEGACY / "artifacts" / "forecaster.joblib") == {
        "stockops.models Forecaster", "stockops.models HorizonModel", "stockops.models MeanReturn",
        "stockops.models ZeroReturn",
    }  # fmt: skip
    model = mlflow.pyfunc.load_model(str(LEGACY))
    forecaster = model.unwrap_python_model().forecaster
    assert type(forecaster).__module__ == "stockops.models"
    assert forecaster.families() == {1: "naive", 2: "drift", 3: "ridge", 5: "hgb", 20: "rf"}
    bars = SampleSource().fetch(["IBM", "^GSPC"], dt.date(2009, 1, 2), dt.date(2013, 3, 1))
    rows = make_features(bars["IBM"], bars[forecaster.metadata["index"]]).dropna().tail(5)
    expected = pd.read_csv(LEGACY / "expected.csv", parse_dates=["date"])
    pd.testing.assert_frame_equal(
        forecaster.predict(rows).reset_index(drop=True), expected, check_exact=False, rtol=1e-12
    )
    served = model.predict(rows)  # through MLflow's pyfunc interface, as the registry serves it
    pd.testing.assert_frame_equal(
        served.reset_index(drop=True), expected.drop(columns=["date"]), check_exact=False, rtol=1e-12
    )
