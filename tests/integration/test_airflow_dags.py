"""Real Airflow runs (``airflow dags test``) of market_data then features.

On two stacks: Airflow metadata + warehouse in SQLite (the embedded default), and both in
PostgreSQL (production). Each pipeline runs twice for the same interval: the row counts must
not move. The bars Asset event must be recorded with its window.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from signalops.config import load_settings
from signalops.features.offline_store import OfflineStore
from signalops.features.online_store import online_store_from_settings
from signalops.warehouse import Warehouse
from tests.conftest import fresh_pg_database

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
START, END = "2026-01-01T00:00:00+00:00", "2026-01-04T00:00:00+00:00"
SYMBOLS = "AAA,BBB"


@dataclass
class AirflowStack:
    env: dict[str, str]
    metadata_url: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [AIRFLOW, *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if check and proc.returncode != 0:
            output = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            pytest.fail(f"airflow {' '.join(args)} failed ({proc.returncode}):\n{output}")
        return proc

    def dags_test(
        self, dag_id: str, logical_date: str, conf: dict | None = None, check: bool = True
    ):
        return self.run(
            "dags", "test", dag_id, logical_date, "-c", json.dumps(conf or {}), check=check
        )

    def counts(self) -> dict[str, int]:
        settings = load_settings(env=self.env)
        with Warehouse(settings.warehouse_url) as wh:
            wh.create_all()  # so that "no table yet" reads as zero rows
            bars = int(wh.bar_stats()["bars"].sum())
        offline = OfflineStore(settings.lake_dir).read("v1", columns=["label_up"])
        online = online_store_from_settings(settings)
        try:
            vectors = online.read("v1", ["AAA", "BBB"])
        finally:
            online.close()
        return {
            "bars": bars,
            "offline_rows": len(offline),
            "labeled": int(offline["label_up"].notna().sum()),
            "online": len(vectors),
        }

    def asset_events(self, name: str) -> list[dict]:
        """The ``extra`` of every event of the Asset ``name``, oldest first."""
        engine = sa.create_engine(self.metadata_url)
        query = sa.text(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.name = :name ORDER BY e.id"
        )
        with engine.connect() as conn:
            rows = [r[0] for r in conn.execute(query, {"name": name})]
        engine.dispose()
        return [json.loads(r) if isinstance(r, str) else r for r in rows]

    def bars_asset_events(self) -> list[dict]:
        return self.asset_events("signalops/bars")


def _stack(tmp: Path, metadata_url: str, warehouse_url: str | None) -> AirflowStack:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SIGNALOPS_"))}
    env.update(
        AIRFLOW_HOME=str(tmp / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=metadata_url,
        SIGNALOPS_STATE_DIR=str(tmp / "state"),
        SIGNALOPS_MARKET__SYMBOLS=SYMBOLS,
    )
    if warehouse_url:
        env["SIGNALOPS_WAREHOUSE__URL"] = warehouse_url
    stack = AirflowStack(env, metadata_url)
    stack.run("db", "migrate")
    return stack


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowStack]:
    tmp = tmp_path_factory.mktemp(f"airflow-{request.param}")
    if request.param == "sqlite":
        yield _stack(tmp, f"sqlite:///{tmp / 'airflow.db'}", None)
        return
    with fresh_pg_database("airflow_meta") as meta, fresh_pg_database("signalops_wh") as warehouse:
        yield _stack(tmp, meta, warehouse)


def test_collect_then_features_twice_gives_identical_rows(stack: AirflowStack) -> None:
    window = {"start": START, "end": END}
    stack.dags_test("market_data", END, window)
    stack.dags_test("features", END, window)
    first = stack.counts()
    assert first["bars"] == 2 * 3 * 288
    assert first["offline_rows"] > 0 and first["online"] == 2

    again = stack.dags_test("market_data", END, window)
    assert "0 inserted, 0 updated (late corrections), 1728 unchanged" in again.stdout + again.stderr
    stack.dags_test("features", END, window)
    assert stack.counts() == first

    events = stack.bars_asset_events()
    assert len(events) == 2
    assert all(e["start"] == START and e["end"] == END for e in events)

    # The scheduled hourly run collects its data interval [END, END + 1h) only.
    hourly = stack.dags_test("market_data", "2026-01-04T01:00:00+00:00")
    assert "2026-01-04T00:00:00+00:00 .. 2026-01-04T01:00:00+00:00" in hourly.stdout + hourly.stderr
    stack.dags_test(
        "features", "2026-01-04T01:00:00+00:00", {"start": END, "end": "2026-01-04T01:00:00+00:00"}
    )
    after = stack.counts()
    assert after["bars"] == first["bars"] + 2 * 12
    assert after["offline_rows"] == first["offline_rows"] + 2 * 12
    assert after["labeled"] == first["labeled"] + 2 * 12  # the previous last hour's labels matured

    # Backfilling a new feature-set version over the whole history is one run with params.
    stack.dags_test(
        "features",
        "2026-01-04T02:00:00+00:00",
        {"feature_set_version": "v2", "start": START, "end": "2026-01-04T01:00:00+00:00"},
    )
    settings = load_settings(env=stack.env)
    v2 = OfflineStore(settings.lake_dir).read("v2")
    assert len(v2) == after["offline_rows"]
    assert {"ret_96", "rv_96", "volume_z_96"} <= set(v2.columns)


def test_bad_file_fails_fast_and_writes_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("airflow-bad")
    bad = tmp / "bars.csv"
    bad.write_text(
        "symbol,ts,open,high,low,close,volume\n"
        "AAA,2026-01-01T00:00:00Z,10,11,9,10.5,100\n"
        "AAA,2026-01-01T00:05:00Z,10,9,11,10.5,100\n"
    )
    stack = _stack(tmp, f"sqlite:///{tmp / 'airflow.db'}", None)
    stack.env.update(SIGNALOPS_MARKET__SOURCE="csv", SIGNALOPS_MARKET__PATH=str(bad))
    proc = stack.dags_test("market_data", "2026-01-01T01:00:00+00:00", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "column 'high': high < low at line 3" in out
    assert "up_for_retry" not in out  # bad input is not retried
    assert stack.counts()["bars"] == 0
