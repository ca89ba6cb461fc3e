"""Every DAG imports cleanly, follows the conventions, and does no work at parse time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from tests.dags.probe import probe

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
EXPECTED = {"market_data", "features", "retrain"}
HEAVY = (
    "pandas",
    "numpy",
    "pyarrow",
    "scipy",
    "xgboost",
    "optuna",
    "shap",
    "mlflow",
    "great_expectations",
    "evidently",
    "onnxruntime",
    "redis",
    "psycopg2",
    "slack_sdk",
    "sklearn",
)


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= EXPECTED


def test_conventions(dagbag: DagBag) -> None:
    for dag_id, dag in dagbag.dags.items():
        where = f"DAG {dag_id}"
        assert dag.doc_md and len(dag.doc_md.strip()) > 100, f"{where}: needs a Markdown doc"
        assert "signalops" in dag.tags and len(dag.tags) >= 2, f"{where}: tags"
        assert dag.catchup is False, f"{where}: catchup must be off"
        assert dag.start_date is not None and dag.start_date.tzinfo is not None, (
            f"{where}: aware start_date"
        )
        assert dag.max_consecutive_failed_dag_runs > 0, f"{where}: auto-pause after failures"
        # ... and the alert when it happens (the DAG-level callbacks count the runs)
        assert dag.on_failure_callback and dag.on_success_callback, f"{where}: run callbacks"
        for name, param in dag.params.items():
            assert param.description, f"{where}: param {name} needs a description"
        for task in dag.tasks:
            at = f"{where}.{task.task_id}"
            assert task.owner == "signalops", f"{at}: owner"
            assert task.retries >= 2, f"{at}: retries"
            assert task.retry_delay.total_seconds() > 0, f"{at}: retry_delay"
            assert task.on_failure_callback, f"{at}: failure notification"
            assert (
                task.doc_md
                or task.doc
                or (task.python_callable.__doc__ if hasattr(task, "python_callable") else None)
            ), f"{at}: docstring"


_PROBE = probe(
    "airflow.sdk",
    "at DAG parse time",
    """\
for path in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location("dagfile_" + path.rsplit("/", 1)[-1][:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
print(json.dumps({"new_modules": sorted(set(sys.modules) - before), "calls": calls}))
""",
)


def test_parsing_does_no_work() -> None:
    """Parsing imports no heavy library, opens no connection and reads no settings."""
    files = sorted(str(p) for p in DAGS_DIR.glob("*.py"))
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["calls"] == []
    heavy = [m for m in report["new_modules"] if m.split(".")[0] in HEAVY]
    assert heavy == [], f"DAG files import heavy modules at parse time: {heavy[:10]}"
