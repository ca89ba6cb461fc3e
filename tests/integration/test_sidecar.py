"""The sidecar as a real server (`python -m signalops.serving`), against real services.

Models come from a real MLflow registry (SQLite store) filled by the retrain path; online
features from a real Redis; the prediction log goes to a real PostgreSQL. The tests run in
file order against one server: auth, protocol clients, the prediction log, canary share,
alias swap under load, a broken version, a PostgreSQL outage, then fuzzing.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from signalops.config import Settings
from signalops.registry import Registry
from signalops.registry import contracts as c
from signalops.training import retrain as steps
from tests.conftest import TRAIN_SYMBOLS, copy_lake, fresh_pg_database
from tests.sidecar_process import free_port, running_sidecar
from tests.slack_recorder import SlackRecorder, slack_recorder

pytestmark = [pytest.mark.integration, pytest.mark.serial]  # stops PostgreSQL

TOKEN = "test-admin-token"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    url: str
    env: dict[str, str]
    settings: Settings
    registry: Registry
    proc: subprocess.Popen[bytes]
    slack: SlackRecorder
    warehouse_url: str
    names: list[str]
    log_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def inline(self, key: str = "", **extra: Any) -> dict[str, Any]:
        return {"features": {n: 0.01 * i for i, n in enumerate(self.names)}, "key": key, **extra}

    def reload(self) -> dict[str, Any]:
        with self.client() as cl:
            r = cl.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200, r.text
            return dict(r.json())

    def logged(self, request_ids: set[str] | None = None) -> int:
        engine = sa.create_engine(self.warehouse_url)
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table("predictions"):
                    return 0  # the writer creates it with its first batch
                rows = conn.execute(
                    sa.text("SELECT request_id FROM predictions WHERE role <> 'shadow'")
                ).fetchall()
        finally:
            engine.dispose()
        ids = [r[0] for r in rows]
        return len(ids) if request_ids is None else len(set(ids) & request_ids)


@pytest.fixture(scope="module")
def server(
    training_lake: Path, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("sidecar")
    prefix = f"signalops-sidecar-{os.getpid()}"
    with fresh_pg_database("sidecar_wh") as warehouse_url, slack_recorder() as slack:
        env_overrides = {
            "SIGNALOPS_WAREHOUSE__URL": warehouse_url,
            "SIGNALOPS_ONLINE_STORE__REDIS_URL": redis_url,
            "SIGNALOPS_ONLINE_STORE__KEY_PREFIX": prefix,
            "SIGNALOPS_SERVING__POLL_INTERVAL_S": "0.5",
            "SIGNALOPS_SERVING__MAX_FEATURE_AGE_S": "1e10",  # the lake's features are old
            "SIGNALOPS_SERVING__ADMIN_TOKEN": TOKEN,
            "SIGNALOPS_SERVING__LOG_FLUSH_INTERVAL_S": "0.05",
            "SIGNALOPS_ALERTS__SLACK_WEBHOOK_URL": f"{slack.url}/hooks/sidecar",
        }
        settings = copy_lake(training_lake, tmp, **env_overrides)
        # Two registered versions: v1 champion, v2 challenger (same data, forced).
        steps.run_all(settings, steps.plan_request(settings, {}, run_key="v1"))
        steps.run_all(settings, steps.plan_request(settings, {"force": True}, run_key="v2"))
        # A second signal, so that an ensemble of two registered models can be served.
        other = settings.model_copy(update={"signal_name": "direction_b"})
        steps.run_all(other, steps.plan_request(other, {}, run_key="b1"))
        config = tmp / "signalops.yaml"
        config.write_text(
            "serving:\n"
            "  ensembles:\n"
            "    - name: blend\n"
            "      members: {direction_1h: 2.0, direction_b: 1.0}\n"
            "      method: average\n"
        )
        from signalops.features.pipeline import publish_online

        publish_online(settings)  # newest vector per symbol into Redis
        registry = Registry(settings)
        spec = json.loads(registry.download_file("1", c.FEATURE_SPEC, tmp / "spec").read_text())
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALOPS_")}
        env.update(env_overrides)
        env.update(
            SIGNALOPS_STATE_DIR=str(settings.state_dir),
            SIGNALOPS_MARKET__SYMBOLS=TRAIN_SYMBOLS,
            SIGNALOPS_SERVING__PORT=str(port),
            SIGNALOPS_CONFIG=str(config),
        )
        try:
            with running_sidecar(env, tmp, tmp / "server.log") as (url, proc):
                yield Server(
                    url,
                    env,
                    settings,
                    registry,
                    proc,
                    slack,
                    warehouse_url,
                    spec["names"],
                    tmp / "server.log",
                )
        finally:
            import redis

            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(f"{prefix}:*"))
            if keys:
                client.delete(*keys)


def test_admin_routes_need_the_token(server: Server) -> None:
    with server.client() as cl:
        assert cl.post("/v1/admin/reload").status_code == 401
        wrong = cl.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "Bearer" in wrong.json()["message"]
        assert cl.post("/v1/risk/trade-result", json={"pnl": 0.01}).status_code == 401
        ok = cl.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        for scheme in ("bearer", "BEARER", "BeArEr"):  # RFC 9110: case-insensitive
            r = cl.post("/v1/admin/reload", headers={"Authorization": f"{scheme} {TOKEN}"})
            assert r.status_code == 200, (scheme, r.text)
        basic = cl.post("/v1/admin/reload", headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        models = cl.get("/v1/models").json()["models"]
        assert {(m["version"], m["role"]) for m in models} == {
            ("1", "champion"),
            ("2", "challenger"),
        }


def test_mlflow_scoring_client_and_v2_round_trip(server: Server) -> None:
    import pandas as pd
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    host, port = server.url.rsplit(":", 1)
    client = ScoringServerClient(host.replace("http://", ""), int(port))
    client.wait_server_ready(timeout=10)
    frame = pd.DataFrame([[0.01 * i for i in range(len(server.names))]] * 3, columns=server.names)
    result = client.invoke(frame)
    p = [float(v) for v in result.get_predictions().to_numpy().ravel()]
    assert len(p) == 3 and all(0 <= v <= 1 for v in p) and len(set(p)) == 1

    with server.client() as cl:
        meta = cl.get("/v2/models/direction_1h").json()
        assert meta["inputs"][0]["shape"] == [-1, len(server.names)]
        body = {
            "id": "v2-req-1",
            "inputs": [
                {
                    "name": "features",
                    "shape": [3, len(server.names)],
                    "datatype": "FP32",
                    "data": [0.01 * i for i in range(len(server.names))] * 3,
                }
            ],
        }
        out = cl.post("/v2/models/direction_1h/infer", json=body).json()
        assert out["id"] == "v2-req-1" and out["outputs"][0]["shape"] == [3, 2]
        probs = out["outputs"][0]["data"]
        assert abs(probs[1] - p[0]) < 1e-6 and abs(probs[0] + probs[1] - 1) < 1e-6
        assert cl.get("/v2/health/ready").json() == {"ready": True}


def test_callers_can_pin_a_loaded_version(server: Server) -> None:
    """A caller of an older input schema pins the version it was built for: the V2
    versioned path, or X-Model-Version / ?version= on /invocations."""
    row = [0.01 * i for i in range(len(server.names))]
    tensor = {"name": "features", "shape": [1, len(row)], "datatype": "FP32", "data": row}
    with server.client() as cl:
        listed = {m["version"]: m for m in cl.get("/v1/models").json()["models"]}
        assert listed["2"]["features"] == server.names and listed["2"]["role"] == "challenger"
        r = cl.post("/v2/models/direction_1h/versions/2/infer", json={"inputs": [tensor]})
        assert r.status_code == 200 and r.json()["model_version"] == "2", r.text
        assert r.json()["parameters"]["role"] == "pinned"
        meta = cl.get("/v2/models/direction_1h/versions/2").json()
        assert meta["versions"] == ["2"] and meta["parameters"]["feature_names"] == server.names
        split = {"dataframe_split": {"columns": server.names, "data": [row]}}
        by_header = cl.post("/invocations", json=split, headers={"X-Model-Version": "2"})
        by_param = cl.post("/invocations?version=1", json=split)
        assert by_header.status_code == by_param.status_code == 200
        v2 = cl.post("/v2/models/direction_1h/versions/2/infer", json={"inputs": [tensor]})
        assert by_header.json()["predictions"][0] == v2.json()["outputs"][0]["data"][1]
        missing = cl.post("/invocations", json=split, headers={"X-Model-Version": "99"})
        assert missing.status_code == 404 and "loaded versions: ['1', '2']" in missing.text
        bad = cl.post("/invocations", json=split, headers={"X-Model-Version": "two"})
        assert bad.status_code == 422 and "X-Model-Version" in bad.json()["message"]


def test_signals_by_symbol_from_redis_are_logged(server: Server) -> None:
    symbols = TRAIN_SYMBOLS.split(",")
    with server.client() as cl:
        r = cl.post("/v1/signals", json={"symbols": symbols, "request_id": "by-symbol-1"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [p["symbol"] for p in body["predictions"]] == symbols
        assert all(p["signal"] in ("BUY", "SELL", "HOLD") for p in body["predictions"])
        assert body["model"]["role"] == "champion" and body["predictions"][0]["features_ts"]
        unknown = cl.post("/v1/signals", json={"symbol": "NOPE"})
        assert unknown.status_code == 404 and "NOPE" in unknown.json()["message"]
    # The shadow rows are scored after the response, so they may reach the log a flush
    # later than the champion's: wait for all six.
    engine = sa.create_engine(server.warehouse_url)
    deadline = time.time() + 10
    rows: list[Any] = []
    while len(rows) < 6 and time.time() < deadline:
        if server.logged({"by-symbol-1"}):
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT role, symbol, model_version FROM predictions "
                        "WHERE request_id = 'by-symbol-1'"
                    )
                ).fetchall()
        time.sleep(0.1)
    engine.dispose()
    # Three champion rows, and the challenger's shadow rows (w = 0).
    assert sorted((r[0], r[2]) for r in rows) == [("champion", "1")] * 3 + [("shadow", "2")] * 3


def test_weighted_ensemble_of_two_signals(server: Server) -> None:
    with server.client() as cl:
        one = cl.post("/v1/signals", json=server.inline(request_id="ens-1")).json()
        b = cl.post("/v1/signals", json=server.inline(signal="direction_b")).json()
        blend = cl.post("/v1/signals", json=server.inline(signal="blend", request_id="ens-2"))
        assert blend.status_code == 200, blend.text
        body = blend.json()
    members = {m["name"]: m for m in body["model"]["members"]}
    assert (
        set(members) == {"direction_1h", "direction_b"} and body["model"]["ensemble"] == "average"
    )
    p1, pb = one["predictions"][0]["probability"], b["predictions"][0]["probability"]
    expected = (2.0 * p1 + 1.0 * pb) / 3.0
    assert abs(body["predictions"][0]["probability"] - expected) < 1e-9
    deadline = time.time() + 10
    while server.logged({"ens-2"}) < 1 and time.time() < deadline:
        time.sleep(0.1)
    engine = sa.create_engine(server.warehouse_url)
    with engine.connect() as conn:
        names = conn.execute(
            sa.text(
                "SELECT signal_name FROM predictions WHERE request_id = 'ens-2' "
                "AND role <> 'shadow'"
            )
        ).fetchall()
    engine.dispose()
    assert sorted(n[0] for n in names) == ["direction_1h", "direction_b"]


def test_canary_share_within_two_points_over_10k_requests_and_sticky(server: Server) -> None:
    server.registry.set_model_tag(c.CANARY_WEIGHT_TAG, "0.3")
    server.reload()
    roles: dict[str, str] = {}
    with server.client() as cl:
        for i in range(10_000):
            r = cl.post("/v1/signals", json=server.inline(key=f"caller-{i}"))
            assert r.status_code == 200, r.text
            roles[f"caller-{i}"] = r.json()["model"]["role"]
        share = sum(1 for v in roles.values() if v == "challenger") / len(roles)
        assert abs(share - 0.3) <= 0.02, share
        for i in range(0, 10_000, 50):  # sticky: the same caller sees the same model
            again = cl.post("/v1/signals", json=server.inline(key=f"caller-{i}")).json()
            assert again["model"]["role"] == roles[f"caller-{i}"]
    server.registry.set_model_tag(c.CANARY_WEIGHT_TAG, "0")
    server.reload()


def _load(server: Server, stop: threading.Event, results: list[tuple[int, str]]) -> None:
    with server.client() as cl:
        i = 0
        while not stop.is_set():
            try:
                r = cl.post("/v1/signals", json=server.inline(key=f"load-{i}"))
                version = r.json()["model"]["version"] if r.status_code == 200 else ""
                results.append((r.status_code, version))
            except httpx.HTTPError as exc:
                results.append((0, type(exc).__name__))
            i += 1


def test_alias_change_is_swapped_in_with_zero_failed_requests(server: Server) -> None:
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=_load, args=(server, stop, results)) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    server.registry.set_alias(c.ALIAS_CHAMPION, "2")  # the poller (0.5 s) must pick it up
    deadline = time.time() + 15
    while time.time() < deadline and not any(v == "2" for _, v in results[-50:]):
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    statuses = {s for s, _ in results}
    assert statuses == {200}, f"failed requests during the swap: {statuses}"
    versions = [v for _, v in results]
    assert versions[0] == "1" and versions[-1] == "2"
    first_two = versions.index("2")
    assert "1" not in versions[first_two + 40 :]  # once swapped, it stays swapped


def _register_broken(server: Server, folder: Path) -> str:
    """A registered version whose ONNX file is not a graph (its spec is fine)."""
    registry = server.registry
    run_id = registry.start_run("broken", tags={})
    folder.mkdir()
    (folder / c.ONNX_MODEL).write_bytes(b"this is not an onnx graph")
    (folder / c.FEATURE_SPEC).write_text(
        json.dumps({"feature_set_version": "v1", "names": server.names})
    )
    registry.log_artifacts(run_id, folder, c.MODEL_DIR)
    return str(registry.register_version(run_id, tags={}, description="deliberately broken"))


def test_broken_version_is_not_swapped_in(server: Server, tmp_path: Path) -> None:
    registry = server.registry
    broken = _register_broken(server, tmp_path / "model")
    alerts_before = len(server.slack.requests)
    registry.set_alias(c.ALIAS_CHAMPION, broken)
    server.reload()
    with server.client() as cl:
        models = cl.get("/v1/models").json()
        champion = next(m for m in models["models"] if m["role"] == "champion")
        assert champion["version"] == "2"  # the old one keeps serving
        assert models["reload_failures"] >= 1 and f"v{broken} not loaded" in models["last_error"]
        assert cl.post("/v1/signals", json=server.inline()).status_code == 200
    # sent from the sidecar's alert thread, off the reload's path
    assert _wait_for(lambda: len(_slack_titled(server, "not loaded", alerts_before)) >= 1)
    registry.set_alias(c.ALIAS_CHAMPION, "2")


def _pg(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True,
        capture_output=True,
    )


def test_postgres_outage_loses_no_logged_prediction(server: Server) -> None:
    ids: list[str] = []
    failures: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with server.client() as cl:
            i = 0
            while not stop.is_set():
                rid = f"outage-{threading.get_ident()}-{i}"
                r = cl.post("/v1/signals", json=server.inline(key=rid, request_id=rid))
                (ids if r.status_code == 200 else failures).append(
                    rid if r.status_code == 200 else r.status_code
                )
                i += 1

    log_size = server.log_path.stat().st_size
    slack_before = len(server.slack.requests)
    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        _pg("stop")
        time.sleep(3.0)
    finally:
        _pg("start")
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert not failures, f"requests failed during the outage: {failures[:5]}"
    with server.client() as cl:
        spilled = [
            line
            for line in cl.get("/metrics").text.splitlines()
            if line.startswith("signalops_prediction_log_spilled")
        ]
    assert spilled and float(spilled[0].split()[-1]) > 0, "nothing was spilled: no outage seen"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if server.logged(set(ids)) == len(ids):
                break
        except sa.exc.OperationalError:
            pass
        time.sleep(0.5)
    assert server.logged(set(ids)) == len(ids) > 0
    # Slack heard of the spill and of the replay: once each, whatever the rows' count.
    replayed, spilling = "spilled predictions replayed", "prediction log spilling to disk"
    assert _wait_for(lambda: len(_slack_titled(server, replayed, slack_before)) >= 1, 15)
    assert len(_slack_titled(server, spilling, slack_before)) == 1
    assert len(_slack_titled(server, replayed, slack_before)) == 1
    grown = server.log_path.read_text()[log_size:]  # the outage is told once, not per row
    assert "Traceback" not in grown and len(grown.splitlines()) < 40, grown[-3000:]


# --- bad input: property-based fuzzing of every POST operation in /openapi.json ---------

from hypothesis import HealthCheck, given  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=25,
)
ROW = st.lists(SCALARS, min_size=0, max_size=30)
BODIES = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {},
        optional={"symbol": JSON, "symbols": JSON, "features": JSON, "key": JSON, "signal": JSON},
    ),
    st.fixed_dictionaries(
        {"features": st.dictionaries(st.sampled_from(["ret_1", "rsi_14", "f0", "x"]), SCALARS)}
    ),
    st.fixed_dictionaries({"instances": st.lists(ROW, max_size=4)}),
    st.fixed_dictionaries({"inputs": JSON}),
    st.fixed_dictionaries(
        {
            "dataframe_split": st.fixed_dictionaries(
                {"columns": JSON, "data": st.lists(ROW, max_size=3)}
            )
        }
    ),
    st.fixed_dictionaries(
        {"dataframe_records": st.lists(st.dictionaries(st.text(max_size=6), SCALARS), max_size=3)}
    ),
    st.fixed_dictionaries(
        {
            "inputs": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": JSON,
                        "shape": st.lists(JSON, max_size=3),
                        "datatype": JSON,
                        "data": st.lists(SCALARS, max_size=60),
                    }
                ),
                max_size=2,
            )
        }
    ),
    st.fixed_dictionaries({"pnl": JSON}),
)
RAW = st.one_of(
    BODIES.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.binary(max_size=64),
    st.just(b""),
)


@pytest.fixture(scope="module")
def post_paths(server: Server) -> list[str]:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    paths = [
        p.replace("{name}", "direction_1h") for p, ops in doc["paths"].items() if "post" in ops
    ]
    assert {"/v1/signals", "/invocations", "/v2/models/direction_1h/infer"} <= set(paths)
    return paths


@hsettings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), raw=RAW)
def test_fuzzed_bodies_get_4xx_never_5xx(
    server: Server, post_paths: list[str], data: Any, raw: bytes
) -> None:
    path = data.draw(st.sampled_from(post_paths))
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(f"{server.url}{path}", content=raw, headers=headers, timeout=10)
    assert r.status_code < 500, (path, raw[:200], r.text[:300])
    if r.status_code >= 400:
        assert r.json()["message"], r.text


def test_oversized_and_empty_bodies(server: Server) -> None:
    big = b'{"instances": [' + b"[1.0]," * 400_000 + b"[1.0]]}"
    r = httpx.post(f"{server.url}/invocations", content=big, timeout=10)
    assert r.status_code == 413 and "exceeds" in r.json()["message"]
    r = httpx.post(f"{server.url}/v1/signals", content=b"", timeout=10)
    assert r.status_code == 400 and "empty request body" in r.json()["message"]
    r = httpx.post(f"{server.url}/v1/signals", content=b"{not json", timeout=10)
    assert r.status_code == 400 and "malformed JSON" in r.json()["message"]
    with server.client() as cl:
        metrics = cl.get("/metrics").text
    assert 'signalops_errors_total{endpoint="invocations",kind="too_large"}' in metrics
    assert 'status="500"' not in metrics


def test_a_broken_version_alerts_once_across_workers(server: Server, tmp_path: Path) -> None:
    """Three processes follow the registry (this module's server and a ``--workers 2`` one);
    a version that cannot load is tried by each, and Slack hears about it once (the alert
    ledger's row counts every occurrence)."""
    env = dict(server.env, SIGNALOPS_SERVING__PORT=str(free_port()))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    registry = server.registry
    with running_sidecar(env, tmp_path, tmp_path / "broken-two.log", workers=2):
        time.sleep(2)  # the second worker may still be loading its models
        broken = _register_broken(server, tmp_path / "model")
        registry.set_alias(c.ALIAS_CHAMPION, broken)
        try:
            key = f"model_load_failed:{server.settings.signal_name}:v{broken}"

            def occurrences() -> int:
                engine = sa.create_engine(server.warehouse_url)
                try:
                    with engine.connect() as conn:
                        return int(
                            conn.execute(
                                sa.text("SELECT occurrences FROM alerts WHERE dedup_key = :k"),
                                {"k": key},
                            ).scalar()
                            or 0
                        )
                finally:
                    engine.dispose()

            deadline = time.time() + 20
            while occurrences() < 3 and time.time() < deadline:
                time.sleep(0.2)
            assert occurrences() >= 3, "not every process tried the broken version"
            title = f"v{broken} not loaded"
            assert _wait_for(lambda: len(_slack_titled(server, title)) >= 1)  # its thread
            time.sleep(1.0)  # a second send (the bug this guards against) would be here now
            sent = _slack_titled(server, title)
            assert len(sent) == 1, sent
        finally:
            registry.set_alias(c.ALIAS_CHAMPION, "2")


def _slack_titled(server: Server, title: str, since: int = 0) -> list[dict[str, Any]]:
    return [r.body for r in server.slack.requests[since:] if title in json.dumps(r.body)]


def _wait_for(check: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.time() + seconds
    while not check() and time.time() < deadline:
        time.sleep(0.1)
    return check()


def _breaker_gauge(server: Server) -> float:
    with server.client() as cl:
        lines = cl.get("/metrics").text.splitlines()
    (value,) = [float(x.split()[-1]) for x in lines if x.startswith("signalops_risk_breaker_open")]
    return value


def test_breaker_trip_and_reset_alert_once_each(server: Server) -> None:
    """Losses past the breaker's limit: one "tripped" alert however many losing trades
    follow, the breaker gauge at 1; an admin reset: one "reset" alert, the gauge at 0, and
    a new trip the same day is alerted again."""
    admin = {"Authorization": f"Bearer {TOKEN}"}
    since = len(server.slack.requests)
    with server.client() as cl:
        assert cl.post("/v1/admin/risk/reset", headers=admin).status_code == 200
        for _ in range(server.settings.serving.risk.max_consecutive_losses + 3):
            r = cl.post("/v1/risk/trade-result", json={"pnl": -0.001}, headers=admin)
            assert r.status_code == 200, r.text
        blocked = cl.post("/v1/signals", json=server.inline(request_id="breaker-open"))
    assert "circuit breaker" in blocked.text, blocked.text
    assert _wait_for(lambda: len(_slack_titled(server, "breaker tripped", since)) >= 1)
    time.sleep(1.5)  # any duplicate would have arrived by now
    tripped = _slack_titled(server, "breaker tripped", since)
    assert len(tripped) == 1, tripped
    assert "consecutive losses" in json.dumps(tripped[0])
    assert f"{server.settings.links.airflow_url}/signalops/signals/" in json.dumps(tripped[0])
    assert _wait_for(lambda: _breaker_gauge(server) == 1.0)
    with server.client() as cl:
        assert cl.post("/v1/admin/risk/reset", headers=admin).status_code == 200
    assert _wait_for(lambda: len(_slack_titled(server, "breaker reset", since)) == 1)
    assert _breaker_gauge(server) == 0.0
    with server.client() as cl:  # tripped again after the reset: a new episode
        for _ in range(server.settings.serving.risk.max_consecutive_losses):
            cl.post("/v1/risk/trade-result", json={"pnl": -0.001}, headers=admin)
        cl.post("/v1/admin/risk/reset", headers=admin)
    assert _wait_for(lambda: len(_slack_titled(server, "breaker tripped", since)) == 2)


def test_two_workers_share_one_metrics_view(server: Server, tmp_path: Path) -> None:
    """``--workers 2``: requests spread over both processes; any scrape counts them all."""
    env = dict(server.env, SIGNALOPS_SERVING__PORT=str(free_port()))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with running_sidecar(env, tmp_path, tmp_path / "two-workers.log", workers=2) as (url, _):
        time.sleep(2)  # the second worker may still be loading its models
        ids: list[str] = []
        lock = threading.Lock()

        def burst() -> None:
            for _ in range(25):  # a new connection each time: the kernel picks a worker
                r = httpx.post(f"{url}/v1/signals", json={"symbol": "AAA"}, timeout=10)
                assert r.status_code == 200, r.text
                with lock:
                    ids.append(r.json()["request_id"])

        threads = [threading.Thread(target=burst) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(ids) == 200
        workers = {rid.rsplit("-", 1)[0] for rid in ids}  # ids carry a per-process prefix
        assert len(workers) == 2, workers
        for _ in range(4):  # each scrape lands on either worker
            text = httpx.get(f"{url}/metrics", timeout=10).text
            counted = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("signalops_http_requests_total{")
                and 'endpoint="signals"' in line
                and 'status="200"' in line
            )
            assert counted == 200, text[:2000]


# --- the contract: schemathesis over /openapi.json, every check --------------------------


def test_openapi_document_is_the_truth(server: Server, tmp_path: Path) -> None:
    """Schemathesis (all checks: no 5xx, documented statuses and bodies, valid requests
    accepted, invalid ones refused, auth not ignored, 405 for other methods) over every
    operation of the live document: at least 5,000 cases, no failure. Real symbols are fed
    through tests/schemathesis_hooks.py; the seed is fixed so that CI replays one run
    (SIGNALOPS_SCHEMATHESIS_SEED=random explores)."""
    import sys

    seed = os.environ.get("SIGNALOPS_SCHEMATHESIS_SEED", "20261128")
    cli = Path(sys.executable).parent / "schemathesis"
    command = [
        str(cli),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "100",
        "--workers",
        "1",
        "-H",
        f"Authorization: Bearer {TOKEN}",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    if seed != "random":
        command += ["--seed", seed]
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS="tests.schemathesis_hooks",
        SIGNALOPS_TEST_SYMBOLS=TRAIN_SYMBOLS,
        PYTHONPATH=str(REPO),
    )
    run = subprocess.run(
        command, check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    out = run.stdout + run.stderr

    generated = re.search(r"(\d+) generated", out)
    assert run.returncode == 0, out[-6000:]
    assert generated is not None and int(generated.group(1)) >= 5000, out[-2000:]
    with server.client() as cl:
        metrics = cl.get("/metrics").text
    assert 'status="500"' not in metrics


def _hostile_bodies(names: list[str]) -> list[tuple[str, bytes, str]]:
    """(path, body, content type): NUL and control characters in every string field,
    huge, tiny and non-finite numbers, extreme dates, long strings, deep nesting."""
    record = {n: 0.01 * i for i, n in enumerate(names)}
    row = list(record.values())
    tensor = {"name": "features", "shape": [1, len(row)], "datatype": "FP32", "data": row}
    json_bodies: list[tuple[str, Any]] = []
    for text in ("\u0000", "A\u0000B", "\u001b[31m", "\u007f", "X" * 65, "Y" * 100_000, ""):
        json_bodies += [
            ("/v1/signals", {"symbol": text}),
            ("/v1/signals", {"symbols": ["AAA", text]}),
            ("/v1/signals", {"features": record, "symbol": text}),
            ("/v1/signals", {"features": record, "request_id": text}),
            ("/v1/signals", {"features": record, "key": text}),
            ("/v1/signals", {"features": record, "signal": text}),
            ("/v1/signals", {"features": record, "features_ts": text}),
            ("/v2/models/direction_1h/infer", {"id": text, "inputs": [tensor]}),
        ]
    for stamp in (
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-02-30T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2026-11-27T15:00:00",
        "2026-11-27T15:00:00Z\n",
    ):
        json_bodies.append(("/v1/signals", {"features": record, "features_ts": stamp}))
        json_bodies.append(("/v1/signals", {"features": [record], "features_ts": [stamp]}))
    for number in (1e308, -1e308, 3.5e38, 1e-320, 2**63, -(2**63), 2**64 + 1):
        json_bodies += [
            ("/v1/signals", {"features": {**record, names[0]: number}}),
            ("/invocations", {"instances": [[number] * len(row)]}),
            ("/v1/risk/trade-result", {"pnl": number}),
            ("/v2/models/direction_1h/infer", {"inputs": [{**tensor, "shape": [number, 1]}]}),
        ]
    json_bodies += [
        ("/invocations", {"instances": [row], "inputs": [row]}),
        ("/invocations", {"dataframe_split": {"columns": names, "data": [row]}, "inputs": [row]}),
        ("/v1/signals", {"features": []}),
        ("/v1/signals", {"features": record, "features_ts": []}),
        ("/v1/risk/trade-result", {"pnl": -1e300}),
    ]
    out = [(p, json.dumps(b).encode(), "application/json") for p, b in json_bodies]
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        out.append(("/v1/risk/trade-result", b'{"pnl": ' + literal + b"}", "application/json"))
        out.append(("/invocations", b'{"instances": [[' + literal + b"]]}", "application/json"))
    deep = b"[" * 5000 + b"]" * 5000
    out += [
        ("/v1/signals", deep, "application/json"),
        ("/invocations", b'{"inputs": ' + deep + b"}", "application/json"),
        ("/v1/signals", b'{"symbol": "AAA"' + b" " * (5 * 1024 * 1024) + b"}", "application/json"),
        ("/v1/signals", json.dumps({"symbol": "AAA"}).encode(), "text/plain"),
        ("/v1/signals", b"<signal><symbol>AAA</symbol></signal>", "application/xml"),
        ("/invocations", b"a,b\n1,2\n", "text/csv"),
        ("/v1/signals", b"symbol=AAA", "application/x-www-form-urlencoded"),
        ("/v1/signals", b"\xff\xfe\x00garbage", "application/json"),
        ("/v1/signals", b'{"symbol": "\\ud800"}', "application/json"),
    ]
    return out


def test_hostile_bodies_never_5xx_and_logging_goes_on(server: Server) -> None:
    results = []
    with server.client() as cl:
        for path, body, content_type in _hostile_bodies(server.names):
            r = cl.post(
                path,
                content=body,
                headers={"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"},
            )
            results.append((path, body[:80], content_type, r.status_code, r.text[:200]))
        assert cl.get("/health").status_code == 200
        risk = cl.post(
            "/v1/risk/trade-result",
            json={"pnl": 0.0},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()["state"]
        cl.post("/v1/admin/risk/reset", headers={"Authorization": f"Bearer {TOKEN}"})
        good = cl.post("/v1/signals", json=server.inline(request_id="after-hostile"))
        assert good.status_code == 200, good.text
    server_errors = [r for r in results if r[3] >= 500]
    assert not server_errors, server_errors[:5]
    by_type = {r[2]: r[3] for r in results if r[2] != "application/json"}
    assert by_type == {
        "text/plain": 415,
        "application/xml": 415,
        "text/csv": 415,
        "application/x-www-form-urlencoded": 415,
    }
    nul = [r for r in results if b"\\u0000" in r[1] and r[0] == "/v1/signals"]
    assert nul and all(r[3] == 422 and "control character" in r[4] for r in nul), nul[:3]
    assert all(math.isfinite(v) for v in risk.values()), risk  # no pnl made it infinite
    deadline = time.time() + 10
    while server.logged({"after-hostile"}) < 1 and time.time() < deadline:
        time.sleep(0.1)
    assert server.logged({"after-hostile"}) == 1


def _redis(action: str) -> None:
    if action == "stop":
        subprocess.run(
            ["redis-cli", "-p", "6379", "shutdown", "nosave"], check=False, capture_output=True
        )
        return
    subprocess.run(
        [
            *("redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379"),
            *("--save", "", "--appendonly", "no"),
        ],
        check=True,
        capture_output=True,
    )
    import redis

    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            redis.Redis(port=6379).ping()
            return
        except redis.exceptions.ConnectionError:
            time.sleep(0.1)


def test_redis_outage_gives_503_or_stale_features_never_500(server: Server) -> None:
    """Redis (online features and risk state) stopped under load: symbols read before are
    served stale (said so), a symbol never read gets 503 + Retry-After naming the store and
    no host or port, inline features keep scoring; every 200 is logged; the outage is
    logged once, not per request; /ready says the store is down, then back."""
    log_path = server.log_path
    ok_ids: list[str] = []
    statuses: dict[str, list[int]] = {"symbol": [], "inline": []}
    stale_seen: list[bool] = []
    never_read: list[tuple[int, dict[str, str], str]] = []
    stop = threading.Event()

    def load(kind: str) -> None:
        with server.client() as cl:
            i = 0
            while not stop.is_set():
                rid = f"redis-{kind}-{i}"
                body = (
                    {"symbol": "AAA", "request_id": rid}
                    if kind == "symbol"
                    else server.inline(request_id=rid)
                )
                r = cl.post("/v1/signals", json=body)
                statuses[kind].append(r.status_code)
                if r.status_code == 200:
                    ok_ids.append(rid)
                    stale_seen.append(r.json()["predictions"][0]["features_stale"])
                i += 1

    with server.client() as cl:  # AAA read once while Redis is up
        assert cl.post("/v1/signals", json={"symbol": "AAA"}).status_code == 200
    size_before = log_path.stat().st_size
    threads = [threading.Thread(target=load, args=(k,)) for k in ("symbol", "inline")]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        _redis("stop")
        time.sleep(1.5)
        with server.client() as cl:
            r = cl.post("/v1/signals", json={"symbol": "BBB-never-read"})
            never_read.append((r.status_code, dict(r.headers), r.text))
            ready = cl.get("/ready").json()
        time.sleep(1.5)
    finally:
        _redis("start")
    from signalops.features.pipeline import publish_online

    publish_online(server.settings)  # Redis came back empty (it keeps nothing on disk)
    time.sleep(2.5)
    stop.set()
    for t in threads:
        t.join()
    with server.client() as cl:
        back = cl.get("/ready").json()
    # AAA was read before the outage: served stale, never refused; inline needs no Redis.
    assert set(statuses["symbol"]) == {200} and set(statuses["inline"]) == {200}, statuses
    assert any(stale_seen) and not stale_seen[-1], "no stale serving seen, or still stale"
    status, headers, text = never_read[0]
    assert status == 503 and headers["retry-after"] == "1", text
    assert "online feature store" in text and "online_store" in text
    assert "6379" not in text and "localhost" not in text and "127.0.0.1" not in text
    assert ready["dependencies"]["online_store"]["state"] == "down", ready
    assert back["dependencies"]["online_store"]["state"] == "up", back
    grown = log_path.read_text()[size_before:]
    assert grown.count("Traceback") == 0, grown[-3000:]
    assert len(grown.splitlines()) < 40, grown[-3000:]
    deadline = time.time() + 30
    while server.logged(set(ok_ids)) < len(ok_ids) and time.time() < deadline:
        time.sleep(0.5)
    assert server.logged(set(ok_ids)) == len(ok_ids) > 0
