"""The signalops plugin loads through Airflow's plugin manager, cheaply: no heavy library,
no connection, no settings read while the api-server (or `airflow plugins`) loads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.dags.probe import probe
from tests.dags.test_dag_integrity import HEAVY

REPO = Path(__file__).resolve().parents[2]

_PROBE = probe(
    "airflow.plugins_manager as plugins_manager",
    "while loading plugins",
    """\
plugins, errors = plugins_manager._get_plugins()
apps, _ = plugins_manager.get_fastapi_plugins()
views, _ = plugins_manager._get_ui_plugins()
print(json.dumps({
    "new_modules": sorted(set(sys.modules) - before),
    "calls": calls,
    "errors": errors,
    "plugins": [p.name for p in plugins],
    "apps": [a["url_prefix"] for a in apps],
    "views": [[v["destination"], v["url_route"], v["href"]] for v in views],
}))
""",
)


def test_plugin_loads_cheaply(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SIGNALOPS_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
    )
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["errors"] == {} and report["calls"] == []
    assert "signalops" in report["plugins"] and "/signalops" in report["apps"]
    # Each view has a url_route of its own (the UI shows no view without one).
    assert sorted(report["views"]) == [
        ["dag_run", "signals-dag-run", "signalops/"],
        ["nav", "signals", "signalops/"],
        ["task_instance", "signals-task-instance", "signalops/"],
    ]
    heavy = [m for m in report["new_modules"] if m.split(".")[0] in HEAVY]
    assert heavy == [], f"loading the plugin imports heavy modules: {heavy[:10]}"
    assert not list(tmp_path.glob("**/*.db")), "loading the plugin created a database"
