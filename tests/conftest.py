"""Shared fixtures: settings in tmp_path, small bar frames, and the real services.

PostgreSQL and Redis are used for real. When one is not reachable the tests that need it
FAIL with a message saying how to start it: they never skip (CI must not go green on a
machine without the services).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from signalops.config import Settings, load_settings
from signalops.data.synthetic import SyntheticSource

PG_ADMIN_URL = os.environ.get(
    "SIGNALOPS_TEST_PG_URL", "postgresql+psycopg2://postgres@localhost:5432/postgres"
)
REDIS_URL = os.environ.get("SIGNALOPS_TEST_REDIS_URL", "redis://localhost:6379/15")
ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)
BAR = timedelta(minutes=5)


def make_settings(tmp_path: Path, **env: str) -> Settings:
    """Settings as a task would load them, with the state under tmp_path."""
    base = {"SIGNALOPS_STATE_DIR": str(tmp_path / "state")}
    base.update(env)
    return load_settings(env=base)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)  # no stray signalops.yaml from the repo
    return make_settings(tmp_path)


@pytest.fixture
def synthetic() -> SyntheticSource:
    return SyntheticSource(symbols=("AAA", "BBB"), bar=BAR, seed=11, origin=ORIGIN)


@pytest.fixture
def bars(synthetic: SyntheticSource) -> pd.DataFrame:
    """Four days of 5-minute bars for two symbols."""
    return synthetic.fetch(ORIGIN, ORIGIN + timedelta(days=4))


@contextmanager
def fresh_pg_database(prefix: str = "signalops_test") -> Iterator[str]:
    """Create a new PostgreSQL database, yield its SQLAlchemy URL, drop it afterwards."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc.__class__.__name__}). Start it: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            pytrace=False,
        )
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; its SQLAlchemy URL."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """The session database, emptied of signalops tables before each test."""
    from signalops.warehouse import metadata

    engine = sa.create_engine(pg_database)
    metadata.drop_all(engine)
    engine.dispose()
    yield pg_database


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}). Start it: "
            'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
            pytrace=False,
        )
    client.close()
    yield REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of its own for one test; its keys are deleted afterwards."""
    import redis

    prefix = f"signalops-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


# --- training data -------------------------------------------------------------------

TRAIN_SYMBOLS = "AAA,BBB,CCC"
TRAIN_START = ORIGIN
TRAIN_END = ORIGIN + timedelta(days=12)


def build_lake(settings: Settings, start: datetime, end: datetime) -> None:
    """Bars from the configured (synthetic) source and feature set v1, as the DAGs do."""
    from signalops.data.collect import extract_bars, load_bars
    from signalops.features.pipeline import build_features

    staged = extract_bars(settings, start, end)
    load_bars(settings, staged.path, staged.source)
    build_features(settings, start, end)


def training_settings(tmp_path: Path, **env: str) -> Settings:
    """Three synthetic symbols, a small but learnable history, fast bootstrap."""
    base = {
        "SIGNALOPS_MARKET__SYMBOLS": TRAIN_SYMBOLS,
        "SIGNALOPS_EVALUATION__BOOTSTRAP_SAMPLES": "200",
    }
    return make_settings(tmp_path, **{**base, **env})


@pytest.fixture(scope="module")
def training_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir holding 12 days of bars and v1 features for three symbols (built once)."""
    tmp = tmp_path_factory.mktemp("lake")
    build_lake(training_settings(tmp), TRAIN_START, TRAIN_END)
    return tmp / "state"


def copy_lake(lake: Path, tmp_path: Path, **env: str) -> Settings:
    """Settings whose state dir is a private copy of a built lake."""
    import shutil

    shutil.copytree(lake, tmp_path / "state")
    return training_settings(tmp_path, **env)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What each injected fault cost (``record_property("fault costs", [...])``), printed at
    the end of the run, also under pytest-xdist (the property travels with the report)."""
    lines: list[str] = []
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get(
        "failed", []
    ):
        for name, value in getattr(report, "user_properties", []):
            if name == "fault costs":
                lines += [f"{report.nodeid}:", *(f"  {line}" for line in value)]
    if lines:
        terminalreporter.section("fault costs")
        for line in lines:
            terminalreporter.line(line)
