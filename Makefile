# signalops: the two set-up commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed-stamp

# The embedded default: every piece of state under one directory.
export SIGNALOPS_STATE_DIR ?= $(CURDIR)/.signalops
export AIRFLOW_HOME ?= $(SIGNALOPS_STATE_DIR)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export AIRFLOW__LOGGING__LOGGING_LEVEL ?= INFO
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help install run test test-unit test-integration airflow stack stack-down lint format typecheck bench constraints clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) pip install --python $(PY) --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(UV) pip install --python $(PY) --quiet --no-deps -e .
	touch $@

install: $(STAMP)  ## create .venv and install pinned dependencies + signalops

run: $(STAMP)  ## run the pipeline end-to-end on the embedded default (SQLite, local files)
	scripts/run_pipeline.sh

# Two workers (one per core; a module's tests stay on one worker, so module fixtures are
# built once), then the tests that stop PostgreSQL, alone.
test: $(STAMP)  ## run the whole test suite (needs PostgreSQL on :5432 and Redis on :6379)
	$(PY) -m pytest -n 2 --dist loadscope -m "not serial" --durations=25
	$(PY) -m pytest -m serial --durations=10

test-unit: $(STAMP)  ## unit + DAG integrity tests only (no services)
	$(PY) -m pytest tests/unit tests/dags

test-integration: $(STAMP)  ## integration tests (real PostgreSQL, Redis, Airflow)
	$(PY) -m pytest tests/integration

# Local UI without a login (simple auth manager, everyone admin): for this machine only.
airflow: $(STAMP)  ## start `airflow standalone` on the embedded default (UI on :8080)
	@# DAGs that `make run` created (`airflow dags test`) were stored paused, and the
	@# paused-at-creation setting below only applies to new ones: unpause them all.
	$(VENV)/bin/airflow db migrate >/dev/null
	$(VENV)/bin/airflow dags reserialize >/dev/null
	$(VENV)/bin/airflow dags unpause --treat-dag-id-as-regex --yes '.*' >/dev/null
	@# The MLflow UI that the Signals page and the alerts link to (the same store), stopped
	@# with standalone; MLFLOW_UI_PORT moves it. Framable (local only): the Signals page opens
	@# its MLflow links inside the Airflow UI.
	@# standalone starts the scheduler with the api-server, which needs 15-60 s on 2 cores;
	@# the first tasks' workers wait for it (10 tries, up to ~3 min) instead of failing.
	mkdir -p "$(SIGNALOPS_STATE_DIR)"
	$(VENV)/bin/mlflow server --backend-store-uri "$${SIGNALOPS_MLFLOW__TRACKING_URI:-sqlite:///$(SIGNALOPS_STATE_DIR)/mlflow.db}" \
	  --host 127.0.0.1 --port $${MLFLOW_UI_PORT:-5000} --workers 1 --x-frame-options NONE >"$(SIGNALOPS_STATE_DIR)/mlflow-ui.log" 2>&1 & \
	mlflow_ui=$$!; trap "kill $$mlflow_ui 2>/dev/null" EXIT; \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True \
	AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=$${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://localhost:$${AIRFLOW__API__PORT:-8080}/execution/} \
	AIRFLOW__WORKERS__EXECUTION_API_RETRIES=$${AIRFLOW__WORKERS__EXECUTION_API_RETRIES:-10} \
	AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MIN=$${AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MIN:-2} \
	SIGNALOPS_LINKS__AIRFLOW_URL=$${SIGNALOPS_LINKS__AIRFLOW_URL:-http://localhost:$${AIRFLOW__API__PORT:-8080}} \
	SIGNALOPS_LINKS__MLFLOW_URL=$${SIGNALOPS_LINKS__MLFLOW_URL:-http://localhost:$${MLFLOW_UI_PORT:-5000}} \
	$(VENV)/bin/airflow standalone

lint: $(STAMP)  ## ruff lint + format check, mypy on include/signalops
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)  ## run the benchmarks under bench/
	$(PY) bench/features.py
	$(PY) bench/retrain.py --repeats 3
	$(PY) bench/drift.py
	$(PY) bench/rollback.py
	$(PY) bench/serve_path.py
	@if command -v wrk >/dev/null; then $(PY) bench/serve.py; \
	 else echo "bench/serve.py needs wrk (apt-get install wrk): not run"; fi

constraints: $(STAMP)  ## re-pin constraints.txt from the current venv
	{ echo "# Full, transitive pin set for requirements.txt + requirements-dev.txt on Python 3.11"; \
	  echo "# (regenerate: make constraints). Plays the role of Airflow's constraints files."; \
	  $(UV) pip freeze --python $(PY) | grep -v -E "^(uv|signalops)[= ]|^-e " | LC_ALL=C sort -f; } > constraints.txt

clean:  ## remove all local state (.signalops/); keeps .venv
	rm -rf $(SIGNALOPS_STATE_DIR)

stack: $(STAMP)  ## start the production topology natively (CeleryExecutor, PostgreSQL, MLflow server, sidecar)
	$(PY) -m signalops.stack up

stack-down: $(STAMP)  ## stop what `make stack` started
	$(PY) -m signalops.stack down
