"""Canary rollouts end to end: the real sidecar (`python -m signalops.serving`), a real
PostgreSQL warehouse (bars, prediction log, outcomes, rollouts) and a real MLflow registry.

Traffic is historical feature rows the champion never trained on, sent inline with their
bar times, so the outcomes DAG's join labels them from the bars. A good challenger (the
same recipe, retrained) advances through every step and is promoted; a run killed between
writing "promoting" and moving the aliases is repaired by the next run; a bad challenger
(trained on sign-flipped features: good on its own holdout, wrong live) is rolled back at
the shadow step, as soon as the guards can judge. A manual rollback
restores the previous champion and the sidecar serves it on its own (no reload).

A promoted challenger is watched (``rollout.watch_hours``): the good one ends its watch
``done``; the bad one, promoted by a canary whose outcomes had not matured, is rolled back
during its watch. A challenger that cannot read a share of the requests routed to it
(another feature list; the sidecar records the failures) is rolled back on its error rate
at the first step that judges it. Each finished rollout's A/B report is on the
challenger's MLflow run, linked from its row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from signalops.config import Settings
from signalops.features.offline_store import OfflineStore
from signalops.registry import Registry
from signalops.registry import contracts as c
from signalops.rollout.canary import Canary, rollback
from signalops.rollout.outcomes import join_outcomes
from signalops.training import retrain as steps
from tests.conftest import TRAIN_END, TRAIN_START, build_lake, fresh_pg_database, training_settings
from tests.sidecar_process import free_port, running_sidecar
from tests.slack_recorder import SlackRecorder, slack_recorder

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOKEN = "rollout-token"
TRAINED_UNTIL = TRAIN_END - timedelta(days=4)  # traffic comes from the 4 days after


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    url: str
    proc: subprocess.Popen[bytes]
    slack: SlackRecorder
    rows: pd.DataFrame  # traffic: labeled feature rows after the training window
    names: list[str]

    def reload(self) -> None:
        r = httpx.post(
            f"{self.url}/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert r.status_code == 200, r.text

    def send(self, requests: int, offset: int, batch: int = 10) -> list[dict[str, Any]]:
        """``requests`` POSTs of ``batch`` consecutive bars of one symbol, distinct keys."""
        rows = self.rows

        def one(i: int) -> dict[str, Any]:
            start = ((offset + i) * batch) % (len(rows) - batch)
            chunk = rows.iloc[start : start + batch]
            chunk = chunk[chunk["symbol"] == chunk["symbol"].iloc[0]]
            body = {
                "symbol": chunk["symbol"].iloc[0],
                "features": chunk[self.names].to_dict("records"),
                "features_ts": [t.isoformat() for t in chunk["ts"]],
                "key": f"caller-{offset + i}",
            }
            r = httpx.post(f"{self.url}/v1/signals", json=body, timeout=30)
            assert r.status_code == 200, r.text
            return dict(r.json()["model"])

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, range(requests)))

    def flush(self) -> None:
        time.sleep(0.6)  # the log ships every 50 ms; the writer inserts right after


def _retrain(settings: Settings, key: str, **params: Any) -> dict[str, Any]:
    results = steps.run_all(settings, steps.plan_request(settings, params, run_key=key))
    return {k: v.summary for k, v in results.items()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("rollout")
    with fresh_pg_database("rollout_wh") as warehouse_url, slack_recorder() as slack:
        env_overrides = {
            "SIGNALOPS_WAREHOUSE__URL": warehouse_url,
            "SIGNALOPS_SERVING__ADMIN_TOKEN": TOKEN,
            "SIGNALOPS_SERVING__LOG_FLUSH_INTERVAL_S": "0.05",
            "SIGNALOPS_ALERTS__SLACK_WEBHOOK_URL": f"{slack.url}/hooks/rollout",
            "SIGNALOPS_ROLLOUT__MIN_STEP_MINUTES": "0",
            "SIGNALOPS_ROLLOUT__MIN_PREDICTIONS": "50",
            "SIGNALOPS_ROLLOUT__MIN_OUTCOMES": "300",
            # Latency is judged in the unit tests; here other tests share the CPU.
            "SIGNALOPS_ROLLOUT__MAX_LATENCY_RATIO": "20",
            "SIGNALOPS_ROLLOUT__WATCH_HOURS": "1",
            # Permissive risk limits: the guard must not turn signals into HOLDs here.
            "SIGNALOPS_SERVING__RISK__MAX_TRADES_PER_DAY": "100000000",
        }
        settings = training_settings(tmp, **env_overrides)
        build_lake(settings, TRAIN_START, TRAIN_END)
        first = _retrain(settings, "v1", end=TRAINED_UNTIL.isoformat())
        assert "register" in first, first
        store = OfflineStore(settings.lake_dir)
        names = list(store.read_spec("v1")["names"])
        rows = store.read("v1", start=TRAINED_UNTIL, end=TRAIN_END - timedelta(hours=2))
        rows = rows.dropna(subset=["label_up"]).reset_index(drop=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALOPS_")}
        env.update(env_overrides)
        env.update(
            SIGNALOPS_STATE_DIR=str(settings.state_dir),
            SIGNALOPS_MARKET__SYMBOLS="AAA,BBB,CCC",
            SIGNALOPS_EVALUATION__BOOTSTRAP_SAMPLES="200",
            SIGNALOPS_SERVING__PORT=str(free_port()),
        )
        with running_sidecar(env, tmp, tmp / "sidecar.log") as (url, proc):
            yield Stack(settings, env, url, proc, slack, rows, names)


def _rollouts(settings: Settings) -> list[Any]:
    engine = sa.create_engine(settings.warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM rollouts ORDER BY started_at")).fetchall()
    engine.dispose()
    return rows


def _messages(slack: SlackRecorder) -> str:
    return json.dumps([r.body for r in slack.requests])


def _tick(
    stack: Stack, now: datetime | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    join_outcomes(stack.settings)
    canary = Canary(settings or stack.settings)
    try:
        return canary.tick(now)
    finally:
        canary.close()


def _with_rollout(settings: Settings, **rollout: Any) -> Settings:
    return settings.model_copy(update={"rollout": settings.rollout.model_copy(update=rollout)})


def _history(row: Any) -> list[dict[str, Any]]:
    return row.history if isinstance(row.history, list) else json.loads(row.history)


def _ab_report(settings: Settings, row: Any, tmp: Path) -> dict[str, Any]:
    """The A/B report linked from the row, read back from the challenger's run."""
    (link,) = [h["report"] for h in _history(row) if h["event"] == "ab report"]
    registry = Registry(settings)
    assert link["run_id"] == registry.version(row.challenger_version).run_id
    assert link["uri"] == f"runs:/{link['run_id']}/ab_report/ab_report.json"
    folder = Path(registry.client.download_artifacts(link["run_id"], "ab_report", str(tmp)))
    assert (folder / "ab_report.md").read_text().startswith("# A/B report")
    return dict(json.loads((folder / "ab_report.json").read_text()))


def test_good_challenger_goes_through_every_step_and_is_promoted(
    stack: Stack, tmp_path: Path
) -> None:
    second = _retrain(stack.settings, "v2", end=TRAINED_UNTIL.isoformat(), force=True)
    assert "register" in second, second
    registry = Registry(stack.settings)
    assert registry.aliases() == {c.ALIAS_CHAMPION: "1", c.ALIAS_CHALLENGER: "2"}

    started = _tick(stack)
    assert started["action"] == "started" and started["weight"] == 0.0
    stack.reload()
    weights_seen = []
    offset = 0
    for _ in range(12):
        row = Canary(stack.settings).active()
        if row is None:
            break
        weight = row["weight"]
        weights_seen.append(weight)
        # Enough requests for min_predictions challenger rows at this weight.
        need = 60 if weight == 0 else int(np.ceil(8 / max(weight, 0.01))) + 40
        served = stack.send(need, offset)
        offset += need
        roles = {m["role"] for m in served}
        assert roles == (
            {"champion"}
            if weight == 0
            else {"champion", "challenger"}
            if weight < 1
            else {"challenger"}
        )
        stack.flush()
        if weight == 1.0:
            break
        result = _tick(stack)
        assert result["action"] in ("advanced", "wait"), result
        stack.reload()
    assert list(dict.fromkeys(weights_seen)) == [0.0, 0.01, 0.1, 0.5, 1.0]

    # The promotion tick is killed right after it wrote "promoting" (before any alias moved).
    script = textwrap.dedent(
        """
        import os
        from signalops.config import load_settings
        from signalops.rollout.canary import Canary
        from signalops.rollout.outcomes import join_outcomes
        settings = load_settings()
        join_outcomes(settings)
        canary = Canary(settings)
        canary._apply_promotion = lambda row: os._exit(9)  # killed between the two writes
        canary.tick()
        """
    )
    killed = subprocess.run(
        [sys.executable, "-c", script],
        env=stack.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == 9, killed.stderr[-2000:]
    half = Canary(stack.settings).active()
    assert half is not None and half["status"] == "promoting"
    assert registry.aliases()[c.ALIAS_CHAMPION] == "1"  # nothing moved yet: one champion
    repaired = _tick(stack)
    assert repaired["action"] == "promoted"
    assert registry.aliases() == {c.ALIAS_CHAMPION: "2", c.ALIAS_PREVIOUS_CHAMPION: "1"}
    assert registry.model_tags()[c.CANARY_WEIGHT_TAG] == "0"
    (rollout,) = _rollouts(stack.settings)
    assert rollout.status == "watching" and rollout.challenger_version == "2"
    history = _history(rollout)
    events = [h["event"] for h in history]
    assert events[0] == "started" and events.count("advanced") == 4
    assert events[-3:] == ["promote", "promoted", "ab report"]
    assert all("numbers" in h for h in history if h["event"] == "advanced")
    messages = _messages(stack.slack)
    assert (
        "v2 started" in messages and "advanced" in messages and "promoted to champion" in messages
    )
    # The A/B report on v2's run: the figures of the whole rollout, the numbers the guards
    # saw at each judged step, the decision.
    report = _ab_report(stack.settings, rollout, tmp_path)
    assert report["decision"] == "promoted" and report["challenger_version"] == "2"
    assert report["challenger"]["predictions"] > 0 and report["champion"]["predictions"] > 0
    judged = [h for h in history if h.get("numbers")]
    assert [g["numbers"] for g in report["guards"]] == [h["numbers"] for h in judged]
    assert report["challenger"]["error_rate"] == 0.0
    stack.reload()
    assert stack.send(3, offset)[0]["version"] == "2"

    # The watch: v2 as champion on the same traffic as v1's record (the canary's requests,
    # replayed: accuracy differs by market regime, so other rows would not compare); it
    # holds for rollout.watch_hours and ends "done".
    served = stack.send(1020, 0)
    assert {(m["version"], m["role"]) for m in served} == {("2", "champion")}
    stack.flush()
    watching = _tick(stack)
    assert watching["action"] == "watching", watching
    later = datetime.now(UTC) + timedelta(hours=1, minutes=1)
    done = _tick(stack, later)
    assert done["action"] == "watch_done", done
    (rollout,) = _rollouts(stack.settings)
    assert rollout.status == "done" and _history(rollout)[-1]["event"] == "watch done"
    assert registry.aliases() == {c.ALIAS_CHAMPION: "2", c.ALIAS_PREVIOUS_CHAMPION: "1"}
    assert "passed its watch" in _messages(stack.slack)


def _negate_before(settings: Settings, before: pd.Timestamp) -> list[tuple[Path, bytes]]:
    """Flip the sign of every feature before ``before``; return the original files."""
    store = OfflineStore(settings.lake_dir)
    names = store.read_spec("v1")["names"]
    saved = [(path, path.read_bytes()) for _symbol, path in store.files("v1")]
    for path, _ in saved:
        part = pd.read_parquet(path)
        mask = part["ts"] < before
        part.loc[mask, names] = -part.loc[mask, names]
        part.to_parquet(path, index=False)
    return saved


def test_bad_challenger_is_rolled_back_at_the_shadow_step(stack: Stack, tmp_path: Path) -> None:
    registry = Registry(stack.settings)
    # Trained (and evaluated on its holdout) where every feature had its sign flipped: it
    # looks good offline, beats the champion there, and is wrong on the live market.
    saved = _negate_before(stack.settings, pd.Timestamp(TRAINED_UNTIL))
    try:
        third = _retrain(stack.settings, "v3-bad", end=TRAINED_UNTIL.isoformat(), force=True)
    finally:
        for path, data in saved:
            path.write_bytes(data)
    assert "register" in third, third
    assert registry.aliases()[c.ALIAS_CHALLENGER] == "3"

    assert _tick(stack)["action"] == "started"
    # Held at the shadow step past rollout.max_step_hours (no traffic yet): one "stuck"
    # alert, however many ticks see it, linking to the Signals page.
    canary = Canary(stack.settings)
    try:
        later = datetime.now(UTC) + timedelta(hours=stack.settings.rollout.max_step_hours + 1)
        for minutes in (0, 15, 30):
            assert canary.tick(later + timedelta(minutes=minutes))["action"] == "wait"
    finally:
        canary.close()
    stuck = [r.body for r in stack.slack.requests if "v3 stuck at step 0" in json.dumps(r.body)]
    assert len(stuck) == 1, stuck
    assert f"{stack.settings.links.airflow_url}/signalops/signals/" in json.dumps(stuck[0])
    stack.reload()
    result: dict[str, Any] = {}
    for round_ in range(10):
        stack.send(80, 10_000 + round_ * 80)
        stack.flush()
        result = _tick(stack)
        if result["action"] != "wait":
            break
    assert result["action"] == "rolled_back", result
    assert any(g in result["reason"] for g in ("accuracy", "log loss", "PSI", "agreement"))
    rolled = _rollouts(stack.settings)[-1]
    assert rolled.status == "rolled_back" and rolled.challenger_version == "3"
    assert rolled.step == 0  # judged and stopped in the shadow step: no caller saw v3
    assert registry.aliases().get(c.ALIAS_CHALLENGER) is None
    assert registry.aliases()[c.ALIAS_CHAMPION] == "2"
    assert "rolled back" in _messages(stack.slack)
    engine = sa.create_engine(stack.settings.warehouse_url)
    with engine.connect() as conn:
        served_v3 = conn.execute(
            sa.text(
                "SELECT count(*) FROM predictions WHERE model_version = '3' AND role <> 'shadow'"
            )
        ).scalar_one()
        outcomes = conn.execute(sa.text("SELECT count(*) FROM outcomes")).scalar_one()
    engine.dispose()
    assert served_v3 == 0 and outcomes > 0
    report = _ab_report(stack.settings, rolled, tmp_path)
    assert report["decision"] == "rolled_back" and report["reason"] == rolled.reason
    breached = [h for h in _history(rolled) if h["event"] == "guard breached"][-1]
    assert report["guards"][-1]["numbers"] == breached["numbers"]


def test_manual_rollback_is_served_without_a_restart(stack: Stack) -> None:
    restored = rollback(stack.settings, reason="test: back to v1")
    assert restored["restored"] == "1" and restored["changed"]
    registry = Registry(stack.settings)
    assert registry.aliases()[c.ALIAS_CHAMPION] == "1"
    assert registry.aliases()[c.ALIAS_PREVIOUS_CHAMPION] == "2"
    changed_at = pd.Timestamp(restored["alias_changed_at"]).timestamp()
    deadline = time.time() + 60  # functional bound only; the time itself: bench/rollback.py
    version = None
    while time.time() < deadline:
        version = stack.send(1, 50_000)[0]["version"]
        if version == "1":
            break
        time.sleep(0.05)
    assert version == "1"
    print(f"rollback served after {time.time() - changed_at:.2f} s")
    manual = _rollouts(stack.settings)[-1]
    assert manual.status == "manual" and manual.challenger_version == "1"
    assert "rolled back to v1" in _messages(stack.slack)


def test_the_dags_drive_the_same_functions(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`airflow dags test` of outcomes, canary and rollback on this stack's state."""
    from tests.integration.test_airflow_dags import _stack

    tmp = tmp_path_factory.mktemp("rollout-airflow")
    airflow = _stack(tmp, f"sqlite:///{tmp / 'airflow.db'}", None)
    airflow.env.update({k: v for k, v in stack.env.items() if k.startswith("SIGNALOPS_")})
    when = "2026-01-13T00:00:00+00:00"
    out = airflow.dags_test("outcomes", when)
    assert "state=success" in out.stdout + out.stderr
    out = airflow.dags_test("canary", when)  # no challenger now: idle, weight 0
    assert "'action': 'idle'" in out.stdout + out.stderr
    out = airflow.dags_test("rollback", when, {"version": "2", "reason": "dags test"})
    assert "state=success" in out.stdout + out.stderr
    assert Registry(stack.settings).aliases()[c.ALIAS_CHAMPION] == "2"
    bad = airflow.dags_test("rollback", when, {"version": "99"}, check=False)
    assert bad.returncode != 0 and "no version '99'" in bad.stdout + bad.stderr
    assert "up_for_retry" not in bad.stdout + bad.stderr


def test_a_tick_before_any_model_is_registered_is_idle(settings: Settings) -> None:
    """A new deployment: the canary DAG's 15-minute tick runs before the first retrain.
    Nothing is registered: the tick is idle and writes nothing (no tag on a missing model)."""
    from signalops.rollout.canary import tick

    assert tick(settings) == {"action": "idle", "reason": "no registered model yet"}
    assert Registry(settings).aliases() == {}


def _keys(symbol: str, to_challenger: bool, weight: float, n: int, prefix: str) -> list[str]:
    """Caller keys the sidecar routes to the challenger (or not) at ``weight``: routing is
    sticky per (symbol, key), so the requests the guard counts are known in advance."""
    from signalops.serving.routing import bucket

    keys = (f"{prefix}-{i}" for i in range(1_000_000))
    return [k for k in keys if (bucket(symbol, k) < weight) == to_challenger][:n]


def test_challenger_that_fails_requests_is_rolled_back_on_its_error_rate(
    stack: Stack, tmp_path: Path
) -> None:
    """A challenger that takes one more feature than the champion: the requests routed to
    it that lack the feature fail for it (the champion answers; the sidecar records them
    in ``scoring_errors``). No shadow step: a challenger of other inputs can read no
    request the champion can, so the shadow would score nothing."""
    from tests.integration.test_swaps import register

    registry = Registry(stack.settings)
    version = register(registry, tmp_path, names=[*stack.names, "extra_feature"])
    registry.set_alias(c.ALIAS_CHALLENGER, version)
    settings = _with_rollout(stack.settings, steps=(0.01, 0.1, 0.5, 1.0))
    started = _tick(stack, settings=settings)
    assert started["action"] == "started" and started["weight"] == 0.01
    stack.reload()

    row = stack.rows.iloc[0]
    symbol, features = str(row["symbol"]), {n: float(row[n]) for n in stack.names}

    def send(key: str, extra: bool) -> dict[str, Any]:
        body = {
            "symbol": symbol,
            "features": {**features, "extra_feature": 0.5} if extra else features,
            "key": key,
        }
        r = httpx.post(f"{stack.url}/v1/signals", json=body, timeout=30)
        assert r.status_code == 200, r.text
        return dict(r.json()["model"])

    to_challenger = _keys(symbol, True, 0.01, 60, "err")
    to_champion = _keys(symbol, False, 0.01, 30, "err")
    # 20 of the 60 routed to the challenger lack its extra feature: an error rate of 1/3.
    answered = [send(k, extra=i >= 20) for i, k in enumerate(to_challenger)]
    answered += [send(k, extra=False) for k in to_champion]
    assert [m["role"] for m in answered[:20]] == ["champion"] * 20
    assert {(m["version"], m["role"]) for m in answered[20:60]} == {(version, "challenger")}
    time.sleep(3)  # the sidecar writes its failure counts every 2 s
    result = _tick(stack, settings=settings)
    assert result["action"] == "rolled_back", result
    assert "error rate 0.333 (20 of 60 scorings failed)" in result["reason"]
    rolled = _rollouts(stack.settings)[-1]
    assert rolled.status == "rolled_back" and rolled.challenger_version == version
    assert rolled.step == 0  # the first step that could judge it
    breached = [h for h in _history(rolled) if h["event"] == "guard breached"][-1]
    assert breached["numbers"]["p_error_rate_worse"] < stack.settings.rollout.significance
    assert registry.aliases().get(c.ALIAS_CHALLENGER) is None
    assert registry.aliases()[c.ALIAS_CHAMPION] == "2"
    assert "error rate" in _messages(stack.slack)
    report = _ab_report(stack.settings, rolled, tmp_path / "report")
    assert report["challenger"]["failures"] == 20 and report["challenger"]["predictions"] == 40
    assert report["tests"]["p_error_rate_worse"] < 0.05


def test_promoted_challenger_worse_than_the_record_is_rolled_back_in_its_watch(
    stack: Stack,
) -> None:
    """v3 (wrong on the live market) promoted by a canary that saw no matured outcomes
    (outcomes mature slower than a short canary): its watch compares it, as champion, with
    v2's record as champion and rolls it back."""
    registry = Registry(stack.settings)
    assert registry.aliases()[c.ALIAS_CHAMPION] == "2"
    registry.set_alias(c.ALIAS_CHALLENGER, "3")
    blind = _with_rollout(stack.settings, steps=(0.5, 1.0), min_outcomes=10**6)
    assert _tick(stack, settings=blind)["action"] == "started"
    result: dict[str, Any] = {}
    offset = 70_000
    for _ in range(4):
        stack.reload()
        stack.send(20, offset)
        offset += 20
        stack.flush()
        result = _tick(stack, settings=blind)
        if result["action"] == "promoted":
            break
    assert result["action"] == "promoted" and result["status"] == "watching", result
    assert registry.aliases()[c.ALIAS_CHAMPION] == "3"
    stack.reload()
    for _ in range(6):
        served = stack.send(60, offset)
        offset += 60
        assert {(m["version"], m["role"]) for m in served} == {("3", "champion")}
        stack.flush()
        result = _tick(stack)  # the watch, with the stack's own settings
        if result["action"] != "watching":
            break
    assert result["action"] == "rolled_back", result
    assert result["reason"].startswith("watch: ")
    rolled = _rollouts(stack.settings)[-1]
    assert rolled.status == "rolled_back" and rolled.challenger_version == "3"
    assert [h["event"] for h in _history(rolled)][-2:] == ["watch breached", "rolled back"]
    assert registry.aliases() == {c.ALIAS_CHAMPION: "2", c.ALIAS_PREVIOUS_CHAMPION: "3"}
    assert "rolled back during its watch" in _messages(stack.slack)
    stack.reload()
    assert stack.send(1, offset)[0]["version"] == "2"
