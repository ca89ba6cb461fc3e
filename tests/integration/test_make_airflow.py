"""A fresh checkout: ``make run``, then ``make airflow``; the scheduler continues the history.

Real processes, as a user runs them: ``make run`` limited to its two history steps
(``RUN_STEPS=2``: ``market_data`` over a short history ending one hour before the last full
hour, then ``features`` over it), then ``make airflow`` (migrate, reserialize, unpause every
DAG, ``airflow standalone``) on the same state directory, in a temporary directory and on
free ports. Within a bounded wait the scheduler must run ``market_data`` for the current
hourly interval (a ``scheduled`` run, continuing the warehouse from its newest bar) and the
``features`` run that its ``signalops/bars`` Asset event triggers (``asset_triggered``),
both successfully, with every DAG unpaused and no ``market_data`` or ``features`` run
failed. The Airflow metadata database (SQLite under the temporary AIRFLOW_HOME) is read
directly; a failed run's message carries its task logs' tails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.slack_recorder import SlackRecorder, slack_recorder

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STAMP = ".venv/.installed-stamp"  # the Makefile's $(STAMP): `make install` made it
HISTORY_DAYS = 3
WAIT_S = 240  # for the scheduled market_data run and the features run it triggers
POLL_S = 2.0
STOP_GRACE_S = 20
DAGS = ("market_data", "features")
FINISHED = {"success", "failed"}
ROLLBACK_FAILURES = 5  # the rollback DAG's max_consecutive_failed_dag_runs
PAUSE_WAIT_S = 300


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on this machine now (bound together, then released)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _env(state_dir: Path) -> dict[str, str]:
    """The caller's environment without its Airflow/signalops settings, on free ports."""
    drop = ("AIRFLOW", "SIGNALOPS_", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    api, worker_logs, trigger_logs, health, mlflow_ui = _free_ports(5)
    env.update(
        SIGNALOPS_STATE_DIR=str(state_dir),  # the Makefile derives AIRFLOW_HOME from it
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(api),
        MLFLOW_UI_PORT=str(mlflow_ui),  # the MLflow UI make airflow starts beside Airflow
        # Tasks reach the Execution API at http://localhost:8080 unless told otherwise: on a
        # machine where 8080 is someone else's Airflow they must talk to this one.
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api}/execution/",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(worker_logs),  # the scheduler's
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(trigger_logs),  # the triggerer's
        AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT=str(health),  # if enabled
        NO_COLOR="1",
    )
    return env


def _make(target: str) -> list[str]:
    # `-o STAMP`: never reinstall the shared venv from inside a test (its presence is checked).
    return ["make", "-C", str(REPO), "-o", STAMP, target]


@contextmanager
def _started(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """``cmd`` in a process group of its own; SIGTERM to the group, then SIGKILL, at exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    pgid = proc.pid  # start_new_session: the group's id is the leader's pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(pgid, 0)  # anyone left in the group (the leader may be reaped already)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=10)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"({path}: {exc})"
    return "\n".join(_readable(line) for line in text[-lines:])


def _trouble(path: Path, lines: int = 30) -> str:
    """The warnings, errors and tracebacks in ``make airflow``'s output: the scheduler's
    executor reports there why a task failed before it could log anything of its own."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"({path}: {exc})"
    marks = ("[warning", "[error", "[critical", "Traceback", "Error:", "Exception")
    picked = [line[:400] for line in text if any(m in line for m in marks)]
    return "\n".join(picked[-lines:]) or "(none)"


def _readable(line: str) -> str:
    """A task log line (JSON in Airflow 3) as ``time level event``, plus any error detail."""
    try:
        rec = json.loads(line)
    except ValueError:
        return line
    if not isinstance(rec, dict):
        return line
    out = f"{rec.get('timestamp', '')} {rec.get('level', '')} {rec.get('event', '')}"
    detail = rec.get("error_detail")
    for exc in detail if isinstance(detail, list) else []:  # the chain: type, message, where
        if not isinstance(exc, dict):
            continue
        frames = [
            f"{f.get('filename')}:{f.get('lineno')} {f.get('name')}"
            for f in exc.get("frames") or []
            if isinstance(f, dict)
        ]
        out += f"\n    {exc.get('exc_type')}: {str(exc.get('exc_value'))[:2000]}"
        out += "".join(f"\n      at {frame}" for frame in frames[-4:])
    return out


class Metadata:
    """Read-only queries on the Airflow metadata database (SQLite)."""

    def __init__(self, airflow_home: Path) -> None:
        self.home = airflow_home
        self.path = airflow_home / "airflow.db"

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        uri = f"file:{self.path}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, params).fetchall()

    def runs(self) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(DAGS))
        return self.query(
            "SELECT id, dag_id, run_id, run_type, state, logical_date, data_interval_start, "
            "data_interval_end, queued_at, start_date, end_date FROM dag_run "
            f"WHERE dag_id IN ({marks}) ORDER BY id",
            DAGS,
        )

    def features_runs_of(self, market_run_id: str) -> list[sqlite3.Row]:
        """The features runs that consumed a bars event of this market_data run."""
        return self.query(
            "SELECT DISTINCT dr.id, dr.run_id, dr.run_type, dr.state, dr.start_date, "
            "dr.end_date FROM dag_run dr "
            "JOIN dagrun_asset_event dae ON dae.dag_run_id = dr.id "
            "JOIN asset_event ae ON ae.id = dae.event_id "
            "JOIN asset a ON a.id = ae.asset_id "
            "WHERE dr.dag_id = 'features' AND a.name = 'signalops/bars' "
            "AND ae.source_dag_id = 'market_data' AND ae.source_run_id = ? ORDER BY dr.id",
            (market_run_id,),
        )

    def paused(self) -> dict[str, bool]:
        return {r["dag_id"]: bool(r["is_paused"]) for r in self.query("SELECT * FROM dag")}

    def task_states(self, dag_id: str, run_id: str) -> str:
        rows = self.query(
            "SELECT task_id, state, try_number FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? ORDER BY task_id",
            (dag_id, run_id),
        )
        return ", ".join(f"{r['task_id']}={r['state']} (try {r['try_number']})" for r in rows)

    def tries(self, dag_id: str, run_id: str) -> dict[str, int]:
        rows = self.query(
            "SELECT task_id, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        )
        return {r["task_id"]: r["try_number"] for r in rows}

    def task_logs(self, dag_id: str, run_id: str, lines: int = 40) -> str:
        """The tail of every task try's log of one run, newest try last."""
        run_dir = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        files = sorted(p for p in run_dir.glob("task_id=*/**/*.log") if p.is_file())
        if not files:
            return f"(no task log under {run_dir})"
        return "\n".join(
            f"--- {p.relative_to(run_dir)} (last {lines} lines)\n{_tail(p, lines)}" for p in files
        )

    def explain(self, run: sqlite3.Row) -> str:
        return (
            f"{run['dag_id']} {run['run_id']} ({run['run_type']}) is {run['state']}; "
            f"tasks: {self.task_states(run['dag_id'], run['run_id'])}\n"
            f"{self.task_logs(run['dag_id'], run['run_id'])}"
        )


def _ts(value: str) -> datetime:
    """A metadata timestamp (SQLite stores UTC, with or without an offset)."""
    ts = datetime.fromisoformat(value)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _seconds(a: str | None, b: str | None) -> str:
    return f"{(_ts(b) - _ts(a)).total_seconds():.0f}" if a and b else "?"


@pytest.fixture
def slack() -> Iterator[SlackRecorder]:
    with slack_recorder() as recorder:
        yield recorder


def _cli_env(env: dict[str, str], state: Path) -> dict[str, str]:
    """What the Makefile exports for the ``airflow`` CLI, on the test's state directory."""
    return {
        **env,
        "AIRFLOW_HOME": str(state / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def _pause_alerts(slack: SlackRecorder, dag_id: str) -> list[str]:
    bodies = [json.dumps(r.body) for r in slack.requests]
    return [b for b in bodies if f"DAG {dag_id} paused after" in b]


def _rollback_fails_until_paused(
    meta: Metadata, env: dict[str, str], state: Path, slack: SlackRecorder, log: Path
) -> None:
    """Repeated failures under the real scheduler: Airflow pauses the DAG after its
    ``max_consecutive_failed_dag_runs``, and the DAG-level callback (run by the
    dag-processor) sends one alert, linked to the run that tipped it."""
    t0 = time.monotonic()
    conf = json.dumps({"version": "999", "reason": "no such version: this run fails"})
    for _ in range(ROLLBACK_FAILURES):
        subprocess.run(
            [str(REPO / ".venv/bin/airflow"), "dags", "trigger", "rollback", "-c", conf],
            env=_cli_env(env, state),
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
    while not (meta.paused().get("rollback") and _pause_alerts(slack, "rollback")):
        if time.monotonic() - t0 > PAUSE_WAIT_S:
            states = meta.query("SELECT run_id, state FROM dag_run WHERE dag_id = 'rollback'")
            pytest.fail(
                f"after {PAUSE_WAIT_S} s: rollback paused={meta.paused().get('rollback')}, "
                f"pause alerts={_pause_alerts(slack, 'rollback')}, runs="
                f"{[tuple(r) for r in states]}\n{_tail(log, 60)}",
                pytrace=False,
            )
        time.sleep(POLL_S)
    states = [r["state"] for r in meta.query("SELECT state FROM dag_run WHERE dag_id = 'rollback'")]
    assert states == ["failed"] * ROLLBACK_FAILURES, states
    time.sleep(3 * POLL_S)  # a second alert would have come by now
    [alert] = _pause_alerts(slack, "rollback")
    assert "/dags/rollback/runs/" in alert and str(state) not in alert
    print(f"rollback paused and alerted {time.monotonic() - t0:.0f} s after the first trigger")


def test_make_run_then_make_airflow_scheduler_continues(
    tmp_path: Path, slack: SlackRecorder
) -> None:
    if not (REPO / STAMP).exists():
        pytest.fail(f"{REPO / STAMP} is missing: run `make install` first", pytrace=False)
    if shutil.which("make") is None:
        pytest.fail("`make` is not on PATH (apt-get install make)", pytrace=False)

    state = tmp_path / "state"
    meta = Metadata(state / "airflow")
    env = _env(state)
    env["SIGNALOPS_ALERTS__SLACK_WEBHOOK_URL"] = f"{slack.url}/hooks/airflow"
    env["AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY"] = "1"  # a retried task does not wait
    # The default relative end (one hour before the last full hour: the scheduler's next
    # interval continues it), a short start: HISTORY_DAYS before that end.
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    history_start = hour - timedelta(hours=1) - timedelta(days=HISTORY_DAYS)
    run_env = {**env, "RUN_STEPS": "2", "HISTORY_START": history_start.isoformat()}

    t0 = time.monotonic()
    made = subprocess.run(
        _make("run"),
        env=run_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = made.stdout + made.stderr
    assert made.returncode == 0, f"make run failed ({made.returncode}):\n{output[-6000:]}"
    assert "Stopped after step 2 of 13 (RUN_STEPS=2)" in made.stdout, output[-6000:]
    assert "step 3/13" not in output.lower()
    print(f"\nmake run (RUN_STEPS=2, {HISTORY_DAYS} days): {time.monotonic() - t0:.0f} s")
    manual = [r for r in meta.runs() if r["run_type"] == "manual"]
    assert {r["dag_id"] for r in manual} == set(DAGS), [dict(r) for r in manual]
    assert all(r["state"] == "success" for r in manual), [dict(r) for r in manual]
    first_id = max(r["id"] for r in meta.runs())  # runs after this one: the scheduler's

    log = tmp_path / "make_airflow.log"
    t1 = time.monotonic()
    with _started(_make("airflow"), env, log) as proc:
        deadline = t1 + WAIT_S
        market = features = None
        market_s = features_s = None
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"make airflow exited ({proc.returncode}) after "
                    f"{time.monotonic() - t1:.0f} s:\n{_tail(log, 80)}",
                    pytrace=False,
                )
            runs = meta.runs() if meta.path.exists() else []
            new = [r for r in runs if r["id"] > first_id]
            failed = [r for r in runs if r["state"] == "failed"]
            if failed:
                pytest.fail(
                    "a run failed after make airflow:\n"
                    + "\n\n".join(meta.explain(r) for r in failed)
                    + f"\n\nmake airflow's warnings and errors (tail):\n{_trouble(log)}",
                    pytrace=False,
                )
            scheduled = [r for r in new if r["dag_id"] == "market_data"]
            assert all(r["run_type"] == "scheduled" for r in scheduled), [
                dict(r) for r in scheduled
            ]
            done = [r for r in scheduled if r["state"] == "success"]
            if done and market is None:
                market, market_s = done[0], time.monotonic() - t1
            if market is not None and features is None:
                consumed = [
                    r
                    for r in meta.features_runs_of(market["run_id"])
                    if r["run_type"] == "asset_triggered" and r["state"] == "success"
                ]
                if consumed:
                    features, features_s = consumed[0], time.monotonic() - t1
            in_flight = [r for r in new if r["state"] not in FINISHED]
            if features is not None and not in_flight:
                break
            if time.monotonic() > deadline:
                if features is not None:  # e.g. an hour began: the next interval still runs
                    left = [(r["run_id"], r["state"]) for r in in_flight]
                    print(f"in flight at the deadline (none failed): {left}")
                    break
                pytest.fail(
                    f"after {WAIT_S} s: scheduled market_data success={market is not None}, "
                    "asset-triggered features success=False. Runs since make airflow:\n"
                    + ("\n\n".join(meta.explain(r) for r in new) or "(none)")
                    + f"\n\nmake airflow output (tail):\n{_tail(log, 60)}",
                    pytrace=False,
                )
            time.sleep(POLL_S)

        paused = meta.paused()
        # The MLflow UI that the Signals page and the alerts link to, on the same store
        ui = httpx.get(f"http://127.0.0.1:{env['MLFLOW_UI_PORT']}/health", timeout=10)
        assert ui.status_code == 200, ui.text
        _rollback_fails_until_paused(meta, env, state, slack, log)

    assert {"market_data", "features"} <= set(paused), paused
    assert not any(paused.values()), f"paused DAGs after make airflow: {paused}"
    # standalone starts the scheduler before its api-server answers: the first tasks'
    # workers wait for it (the Makefile's execution-API retries) and lose no try.
    for dag_id, run in (("market_data", market), ("features", features)):
        tries = meta.tries(dag_id, run["run_id"])
        assert 1 in tries.values() and all(n <= 1 for n in tries.values()), (
            f"{dag_id} {run['run_id']}: tries {tries}; make airflow's warnings and errors:\n"
            f"{_trouble(log)}"
        )
    # The scheduled run covers the hourly interval right after make run's history (or later).
    assert _ts(market["data_interval_end"]) >= hour, dict(market)
    print(
        f"make airflow -> scheduled market_data {market['run_id']} success after "
        f"{market_s:.0f} s (run {_seconds(market['start_date'], market['end_date'])} s); "
        f"asset-triggered features {features['run_id']} success after {features_s:.0f} s "
        f"(run {_seconds(features['start_date'], features['end_date'])} s)"
    )
