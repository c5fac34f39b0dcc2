"""Writes tests/data/legacy-model-1186b39/: a forecaster bundle with every model family, saved as the MLflow pyfunc
stockops registered at commit 1186b39 (before the top floors were restructured), and its predictions on IBM's last
bundled days. tests/test_legacy_model.py loads it with today's code: a registry trained before a rename still serves.

Made with the stockops of that commit on the path:
    git worktree add /tmp/stockops-1186b39 1186b39
    PYTHONPATH=/tmp/stockops-1186b39 .venv/bin/python tests/data/make_legacy_model.py
"""

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import joblib
import mlflow
import numpy as np

from stockops.features import make_features, make_targets
from stockops.models import Forecaster, HorizonModel, make_model
from stockops.prices import SampleSource
from stockops.tracking import ForecasterModel, pip_requirements

OUT = Path(__file__).resolve().parent / "legacy-model-1186b39"
FAMILIES = {1: ("naive", {}), 2: ("drift", {}), 3: ("ridge", {"alpha": 10.0}),
            5: ("hgb", {"max_iter": 20, "max_depth": 3}), 20: ("rf", {"n_estimators": 5, "max_depth": 3})}  # fmt: skip

bars = SampleSource().fetch(["IBM", "^GSPC"], dt.date(2009, 1, 2), dt.date(2013, 3, 1))
features = make_features(bars["IBM"], bars["^GSPC"])
targets = make_targets(bars["IBM"], list(FAMILIES))
rows = features.dropna()
models = {}
for horizon, (family, params) in FAMILIES.items():
    y = targets.loc[rows.index, f"target_{horizon}d"]
    known = y.notna().to_numpy()
    estimator = make_model(family, **params).fit(rows.to_numpy(dtype="float64")[known], y.to_numpy()[known])
    models[horizon] = HorizonModel(horizon, family, params, estimator, {0.8: 1.3, 0.9: 1.7}, "ewma", 500)
forecaster = Forecaster("IBM", list(features.columns), models, str(rows.index[-1].date()))
forecaster.metadata = {"index": "^GSPC", "experiment": "legacy", "as_of": "2013-03-01"}
shutil.rmtree(OUT, ignore_errors=True)
with tempfile.TemporaryDirectory() as folder:
    joblib.dump(forecaster, Path(folder) / "forecaster.joblib")
    mlflow.pyfunc.save_model(str(OUT), python_model=ForecasterModel(), pip_requirements=pip_requirements(),
                             artifacts={"forecaster": str(Path(folder) / "forecaster.joblib")})  # fmt: skip
expected = forecaster.predict(rows.tail(5))
expected.to_csv(OUT / "expected.csv", index=False)
print(
    f"{OUT}: {len(expected)} rows, horizons {sorted(FAMILIES)}, {np.isfinite(expected.select_dtypes('number')).all().all()}"
)
