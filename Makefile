# stockops: the front door. `make help` lists the targets; CI runs `make test` like a person does.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# schemathesis fuzzes the running API against its OpenAPI document; its own venv keeps its pins out of the project's
SCHEMATHESIS_VENV ?= .venv-schemathesis
SCHEMATHESIS := $(SCHEMATHESIS_VENV)/bin/schemathesis

.PHONY: help install run test test-fast scaleout check export lint format bench lab monitor clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@if git rev-parse --git-dir >/dev/null 2>&1; then git config --local include.path ../.gitconfig; fi
	@touch $(STAMP)

$(SCHEMATHESIS):
	@test -x $(SCHEMATHESIS_VENV)/bin/python || $(PYTHON) -m venv $(SCHEMATHESIS_VENV)
	$(SCHEMATHESIS_VENV)/bin/python -m pip install -q 'schemathesis==4.32.5'

install: $(STAMP) ## create .venv and install stockops (editable) with the dev tools, pinned by constraints.txt

run: $(STAMP) ## bring the workspace up on the bundled data: the daily flow through Prefect, then the API, dashboards, MLflow and Prefect UIs (Ctrl-C stops)
	$(BIN)/stockops up

test: $(STAMP) $(SCHEMATHESIS) check ## check notebooks and package are in sync, run the notebooks' tests (nbdev-test) and pytest
	$(BIN)/nbdev-test --n-workers 2
	$(BIN)/pytest -q

FAST := not slow and not server and not browser and not scaleout
test-fast: $(STAMP) ## the inner loop (under 2 minutes, no servers, no browser): notebooks and package in sync, pytest without the slow, server and browser tiers
	@$(MAKE) --no-print-directory check
	$(BIN)/pytest -q -m '$(FAST)'

scaleout: $(STAMP) ## the team stack run natively (PostgreSQL, S3 server, MLflow + Prefect servers, 2 workers, 2 API replicas behind nginx) and the compose file; needs apt postgresql nginx-light docker-compose
	$(BIN)/pytest -v -m scaleout

check: $(STAMP) ## fail when pyproject.toml lacks [tool.nbdev] or nbdev-export would change stockops/
	@$(BIN)/python -c 'import sys, tomllib; nbdev = tomllib.load(open("pyproject.toml", "rb")).get("tool", {}).get("nbdev"); \
	    sys.exit(None if nbdev and "tags" in nbdev.get("allowed_cell_metadata_keys", []) else \
	    "pyproject.toml lacks [tool.nbdev] with allowed_cell_metadata_keys = [\"tags\"] (papermill needs the parameters tag)")'
	@before=$$(mktemp -d) && cp -r stockops "$$before/" && $(BIN)/nbdev-export && \
	    if ! diff -r -x __pycache__ "$$before/stockops" stockops; then \
	        echo "nbdev-export changed stockops/: the notebooks and the package were out of sync; commit the exported files"; \
	        rm -rf "$$before"; exit 1; fi; rm -rf "$$before"; echo "notebooks and stockops/ are in sync"

export: $(STAMP) ## export the notebooks in nbs/ to the stockops package
	$(BIN)/nbdev-export

lint: $(STAMP) ## ruff lint and format check (notebooks, tests, flows)
	$(BIN)/ruff check nbs tests flows bench
	$(BIN)/ruff format --check nbs tests flows bench

format: $(STAMP) ## ruff format, clean notebooks, export
	$(BIN)/ruff format nbs tests flows bench
	$(BIN)/nbdev-clean
	$(BIN)/nbdev-export

bench: $(STAMP) ## benchmarks: first training (< 3 min); daily run, plain vs Prefect + papermill; API vs bare FastAPI and MLflow (needs wrk); training on 1 vs 2 workers; 20/100/500 tickers (hours on 2 cores)
	$(BIN)/python bench/train.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/scaleout.py
	$(BIN)/python bench/universe.py

LAB_PORT ?= 8888
LAB_DIR ?= .
lab: $(STAMP) ## JupyterLab on the workspace with the project's kernel (127.0.0.1:8888; LAB_PORT, LAB_DIR to change)
	JUPYTER_PATH="$$($(BIN)/python -c 'from stockops.voila import jupyter_path; print(jupyter_path())')" \
	$(BIN)/jupyter lab --no-browser --ip 127.0.0.1 --port $(LAB_PORT) --notebook-dir $(LAB_DIR) \
	    $(if $(filter 0,$(shell id -u)),--allow-root)  # root (a container, CI) is refused without it

monitor: $(STAMP) ## Debian's Prometheus on 127.0.0.1:9090 scraping the running API (from `make run` or `stockops serve`), its alerts to Alertmanager on 127.0.0.1:9093
	@command -v prometheus >/dev/null || { echo "needs Debian's Prometheus: apt-get install prometheus"; exit 2; }
	@command -v prometheus-alertmanager >/dev/null || { echo "needs Debian's Alertmanager: apt-get install prometheus-alertmanager"; exit 2; }
	@mkdir -p data/prometheus data/alertmanager
	@cp monitor/alerts.yml data/prometheus/alerts.yml
	@port=$$($(BIN)/python -c 'from stockops.config import load_settings; print(load_settings().api_port)') && \
	    sed -e "s/api:8000/127.0.0.1:$$port/" -e "s/alertmanager:9093/127.0.0.1:9093/" monitor/prometheus.yml > data/prometheus/prometheus.yml && \
	    echo "Prometheus on http://127.0.0.1:9090 scraping http://127.0.0.1:$$port/metrics, alerts on http://127.0.0.1:9093 (Ctrl-C stops)"
	prometheus-alertmanager --config.file=deploy/alertmanager.yml --storage.path=data/alertmanager \
	    --web.listen-address=127.0.0.1:9093 --cluster.listen-address= --log.level=warn & \
	trap 'kill $$!' EXIT; prometheus --config.file=data/prometheus/prometheus.yml --storage.tsdb.path=data/prometheus/tsdb \
	    --web.listen-address=127.0.0.1:9090 --log.level=warn

clean: ## remove the workspace state (data/, reports/ outputs); keeps .venv
	rm -rf data && find reports -mindepth 1 ! -name README.md -exec rm -rf {} +
