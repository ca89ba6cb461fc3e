"""Model swaps: registry notifications on real Redis, reuse of loaded versions, input changes.

A real MLflow registry (SQLite store under a tmp dir) holds tiny hand-built ONNX versions
(a logistic regression graph: fast to register and to load, the same files a trained
version has). The pool polls every 60 s here, so only a notification can make it swap
within the 2 s the tests allow.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from signalops.config import Settings, load_settings
from signalops.registry import Registry
from signalops.registry import contracts as c
from signalops.rollout.canary import Canary, rollback
from signalops.serving.pool import ModelPool
from tests.sidecar_process import free_port
from tests.slack_recorder import SlackRecorder, slack_recorder

pytestmark = pytest.mark.integration

POLL_S = 60.0  # polling cannot be what swaps within a test's deadline
NAMES = ["ret_1", "ret_6", "vol_12"]


def tiny_onnx(width: int, scale: float) -> bytes:
    """``probabilities = [1 - p, p]``, ``p = sigmoid(features @ w)``: the graph contract."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((width, 1), scale, dtype=np.float32), "w")
    one = numpy_helper.from_array(np.ones((1, 1), dtype=np.float32), "one")
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        [w, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def register(
    registry: Registry, tmp: Path, names: list[str] = NAMES, feature_set: str = "v1"
) -> str:
    """A new version of ``registry.name`` with the artifacts the sidecar loads."""
    folder = tmp / uuid.uuid4().hex / c.MODEL_DIR
    folder.mkdir(parents=True)
    (folder / c.ONNX_MODEL).write_bytes(tiny_onnx(len(names), 0.1 + 0.01 * len(names)))
    spec = {"feature_set_version": feature_set, "names": names, "label": {"horizon_bars": 12}}
    (folder / c.FEATURE_SPEC).write_text(json.dumps(spec))
    run_id = registry.start_run("tiny", tags={})
    registry.log_artifacts(run_id, folder, c.MODEL_DIR)
    registry.end_run(run_id)
    return registry.register_version(run_id, tags={}, description="tiny test version")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store for the module; each test registers a model of its own name."""
    return tmp_path_factory.mktemp("swaps") / "state"


@pytest.fixture
def signal() -> str:
    return f"swap_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Settings]:
    monkeypatch.chdir(tmp_path)  # no stray signalops.yaml from the repo

    def settings(**env: str) -> Settings:
        return load_settings(env={"SIGNALOPS_STATE_DIR": str(state_dir), **env})

    return settings


@pytest.fixture
def events_settings(make: Callable[..., Settings], redis_url: str, redis_prefix: str) -> Settings:
    return make(
        SIGNALOPS_ONLINE_STORE__REDIS_URL=redis_url,
        SIGNALOPS_ONLINE_STORE__KEY_PREFIX=redis_prefix,
    )


@pytest.fixture
def started() -> Iterator[Callable[[ModelPool], ModelPool]]:
    """Starts pools (first load, poller and listener) and stops them after the test."""
    pools: list[ModelPool] = []

    def start(pool: ModelPool) -> ModelPool:
        pool.refresh()
        pool.start(POLL_S)
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pool.stop()


def wait_for(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check()`` holds (polled every 10 ms); fails after ``timeout``."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - t0


def champion_version(pool: ModelPool, signal: str) -> str | None:
    champion = pool.models[signal].champion
    return champion.version if champion is not None else None


def test_pool_follows_alias_and_weight_within_2s_of_the_write(
    events_settings: Settings,
    signal: str,
    tmp_path: Path,
    started: Callable[[ModelPool], ModelPool],
) -> None:
    registry = Registry(events_settings, signal)
    v1, v2 = register(registry, tmp_path), register(registry, tmp_path)
    registry.set_alias(c.ALIAS_CHAMPION, v1)
    other = f"{signal}_other"  # a second served signal: its events must not disturb
    register(Registry(events_settings, other), tmp_path)
    pool = started(ModelPool(events_settings, [signal, other]))
    wait_for(lambda: pool.events_connected, 10)
    assert champion_version(pool, signal) == v1

    t0 = time.monotonic()
    registry.set_alias(c.ALIAS_CHAMPION, v2)
    wait_for(lambda: champion_version(pool, signal) == v2, 2.0)
    elapsed = time.monotonic() - t0
    print(f"alias move served after {elapsed:.3f} s (poll interval {POLL_S:g} s)")

    registry.set_alias(c.ALIAS_CHALLENGER, v1)
    registry.set_model_tag(c.CANARY_WEIGHT_TAG, "0.25")
    wait_for(lambda: pool.models[signal].canary_weight == 0.25, 2.0)
    models = pool.models[signal]
    assert models.challenger is not None and models.challenger.version == v1
    registry.delete_alias(c.ALIAS_CHALLENGER)
    wait_for(lambda: pool.models[signal].challenger is None, 2.0)
    assert pool.stats.downloads == 2  # v1 came back from the retained versions
    assert pool.models[other].champion is None


def test_promoted_challenger_is_reused_and_rollback_to_a_retained_version_is_instant(
    make: Callable[..., Settings], signal: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = make()  # no Redis: refreshes are explicit here
    registry = Registry(settings, signal)
    v1, v2 = register(registry, tmp_path), register(registry, tmp_path)
    registry.set_alias(c.ALIAS_CHAMPION, v1)
    registry.set_alias(c.ALIAS_CHALLENGER, v2)
    pool = ModelPool(settings, [signal])
    request.addfinalizer(pool.stop)
    pool.refresh()
    first, challenger = pool.models[signal].champion, pool.models[signal].challenger
    assert first is not None and challenger is not None and pool.stats.downloads == 2

    # Promotion: the challenger's session becomes the champion's; nothing is downloaded.
    registry.set_alias(c.ALIAS_PREVIOUS_CHAMPION, v1)
    registry.set_alias(c.ALIAS_CHAMPION, v2)
    registry.delete_alias(c.ALIAS_CHALLENGER)
    changes = pool.refresh()
    assert changes == [
        f"{signal}@champion: v{v1} -> v{v2} (already loaded)",
        f"{signal}@challenger: v{v2} -> none",
    ]
    models = pool.models[signal]
    assert models.champion is challenger and models.challenger is None
    assert models.retained == (first,)
    assert pool.stats.downloads == 2
    assert pool.loaded_versions(signal) == {v1: first, v2: challenger}
    assert pool.get_version(signal, v1) is first
    assert pool.get_version(signal, "999") is None and pool.get_version("unknown", v1) is None

    # Rollback: the retained previous champion is swapped back, not downloaded again.
    registry.set_alias(c.ALIAS_CHAMPION, v1)
    t0 = time.perf_counter()
    pool.refresh()
    swap_s = time.perf_counter() - t0
    assert pool.models[signal].champion is first
    assert pool.models[signal].retained == (challenger,)
    assert pool.stats.downloads == 2
    print(f"rollback to the retained version: refresh took {swap_s * 1000:.1f} ms")
    x = np.zeros((1, len(NAMES)), dtype=np.float32)
    assert first.predict(x).shape == (1,)


def test_retained_versions_are_bounded_most_recent_first(
    make: Callable[..., Settings], signal: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = make(SIGNALOPS_SERVING__RETAINED_VERSIONS="2")
    registry = Registry(settings, signal)
    versions = [register(registry, tmp_path) for _ in range(4)]
    pool = ModelPool(settings, [signal])
    request.addfinalizer(pool.stop)
    for version in versions:
        registry.set_alias(c.ALIAS_CHAMPION, version)
        pool.refresh()
    assert [m.version for m in pool.models[signal].retained] == [versions[2], versions[1]]
    assert set(pool.loaded_versions(signal)) == set(versions[1:])
    assert pool.get_version(signal, versions[0]) is None
    registry.set_alias(c.ALIAS_CHAMPION, versions[0])  # evicted: downloaded again
    pool.refresh()
    assert pool.stats.downloads == 5
    assert [m.version for m in pool.models[signal].retained] == [versions[3], versions[2]]


def test_a_redis_outage_on_publish_does_not_fail_the_write(
    make: Callable[..., Settings],
    signal: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    settings = make(SIGNALOPS_ONLINE_STORE__REDIS_URL=nothing_there)
    registry = Registry(settings, signal)
    v1, v2 = register(registry, tmp_path), register(registry, tmp_path)
    with caplog.at_level(logging.WARNING, logger="signalops.registry.events"):
        registry.set_alias(c.ALIAS_CHAMPION, v1)
        registry.set_alias(c.ALIAS_CHALLENGER, v2)
        registry.set_model_tag(c.CANARY_WEIGHT_TAG, "0.1")
        registry.delete_alias(c.ALIAS_CHALLENGER)
    assert registry.aliases() == {c.ALIAS_CHAMPION: v1}
    assert registry.model_tags()[c.CANARY_WEIGHT_TAG] == "0.1"
    warnings = [r for r in caplog.records if r.name == "signalops.registry.events"]
    assert len(warnings) == 1 and "cannot publish" in warnings[0].getMessage()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A redis-server of this test's own (the shared one must never be stopped): its URL,
    and functions that stop and start it on the same port."""
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [
                    *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        import redis

        client = redis.Redis(port=port)
        wait_for(lambda: _pings(client), 10)
        client.close()

    def stop() -> None:
        procs[-1].terminate()
        procs[-1].wait(timeout=10)

    start()
    yield f"redis://127.0.0.1:{port}/0", stop, start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def _pings(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_listener_reconnects_after_an_outage_and_catches_up(
    make: Callable[..., Settings],
    own_redis: tuple[str, Callable[[], None], Callable[[], None]],
    signal: str,
    tmp_path: Path,
    started: Callable[[ModelPool], ModelPool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, stop_redis, start_redis = own_redis
    settings = make(SIGNALOPS_ONLINE_STORE__REDIS_URL=url)
    registry = Registry(settings, signal)
    v1, v2 = register(registry, tmp_path), register(registry, tmp_path)
    registry.set_alias(c.ALIAS_CHAMPION, v1)
    with caplog.at_level(logging.INFO, logger="signalops.registry.events"):
        pool = started(ModelPool(settings, [signal]))
        wait_for(lambda: pool.events_connected, 10)
        stop_redis()
        wait_for(lambda: not pool.events_connected, 10)
        registry.set_alias(c.ALIAS_CHAMPION, v2)  # its notification is lost
        time.sleep(2.0)  # several reconnection attempts
        assert champion_version(pool, signal) == v1
        start_redis()
        # Reconnected (backoff <= 4 s by now), it reads the registry: what it missed.
        wait_for(lambda: champion_version(pool, signal) == v2, 10)
    messages = [r.getMessage() for r in caplog.records if r.name == "signalops.registry.events"]
    assert sum("no subscription" in m for m in messages) == 1, messages
    assert sum("cannot publish" in m for m in messages) == 1, messages
    assert any("subscribed to" in m and "again" in m for m in messages), messages


def test_rollback_through_the_canary_is_served_from_the_retained_version(
    events_settings: Settings,
    signal: str,
    tmp_path: Path,
    started: Callable[[ModelPool], ModelPool],
) -> None:
    registry = Registry(events_settings, signal)
    v1, v2 = register(registry, tmp_path), register(registry, tmp_path)
    registry.set_alias(c.ALIAS_CHAMPION, v1)
    pool = started(ModelPool(events_settings, [signal]))
    wait_for(lambda: pool.events_connected, 10)
    rollback(events_settings, v2, reason="test: forward", signal=signal)
    wait_for(lambda: champion_version(pool, signal) == v2, 2.0)
    downloads = pool.stats.downloads
    done = rollback(events_settings, reason="test: back", signal=signal)  # previous-champion
    assert done["restored"] == v1
    served_after = wait_for(lambda: champion_version(pool, signal) == v1, 2.0)
    assert pool.stats.downloads == downloads
    print(f"rollback served {served_after:.3f} s after the canary returned")


def _rows(settings: Settings, signal: str) -> list[Any]:
    engine = sa.create_engine(settings.warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT * FROM rollouts WHERE signal_name = :s ORDER BY started_at"),
            {"s": signal},
        ).fetchall()
    engine.dispose()
    return rows


def _history(row: Any) -> list[dict[str, Any]]:
    return row.history if isinstance(row.history, list) else json.loads(row.history)


@pytest.fixture
def slack() -> Iterator[SlackRecorder]:
    with slack_recorder() as recorder:
        yield recorder


def test_rollout_row_and_alerts_name_an_input_change(
    make: Callable[..., Settings], signal: str, tmp_path: Path, slack: SlackRecorder
) -> None:
    settings = make(SIGNALOPS_ALERTS__SLACK_WEBHOOK_URL=f"{slack.url}/hooks/swaps")
    registry = Registry(settings, signal)
    v1 = register(registry, tmp_path)
    v2 = register(registry, tmp_path, ["ret_1", "vol_12", "rsi_14", "ret_24"], "v2")
    registry.set_alias(c.ALIAS_CHAMPION, v1)
    registry.set_alias(c.ALIAS_CHALLENGER, v2)
    sentence = (
        f"challenger v{v2} takes other inputs than champion v{v1}: feature set v1 -> v2; "
        "added ['rsi_14', 'ret_24']; removed ['ret_6']"
    )
    canary = Canary(settings, signal)
    try:
        assert canary.tick()["action"] == "started"
        (row,) = _rows(settings, signal)
        assert row.reason == f"started; {sentence}"
        started = _history(row)[0]
        assert started["event"] == "started"
        assert started["inputs"] == {
            "champion": v1,
            "challenger": v2,
            "feature_set": ["v1", "v2"],
            "added": ["rsi_14", "ret_24"],
            "removed": ["ret_6"],
            "reordered": False,
            "text": sentence,
        }
        # A run killed after writing "promoting": the next tick completes the promotion.
        active = canary.active()
        assert active is not None
        active.update(status="promoting", reason="every step passed")
        canary._write(active, "promote")
        assert canary.tick()["action"] == "promoted"
    finally:
        canary.close()
    (row,) = _rows(settings, signal)
    events = _history(row)
    # after the promotion comes the A/B report's entry (rollout/report.py)
    assert [e["event"] for e in events[-2:]] == ["promoted", "ab report"]
    assert events[-2]["inputs"]["text"] == sentence
    texts = [json.dumps(r.body) for r in slack.requests]
    assert sum(sentence in t for t in texts) == 2, texts  # started and promoted
    assert any("promoted to champion" in t and sentence in t for t in texts)

    # A manual rollback to a version with other inputs says so too.
    rollback(settings, v1, reason="test: back", signal=signal)
    back = (
        f"restored v{v1} takes other inputs than champion v{v2}: feature set v2 -> v1; "
        "added ['ret_6']; removed ['rsi_14', 'ret_24']"
    )
    assert _history(_rows(settings, signal)[-1])[0]["inputs"]["text"] == back
    assert back in json.dumps(slack.requests[-1].body)


def test_rollout_of_a_challenger_with_the_same_inputs_says_nothing_about_them(
    make: Callable[..., Settings], signal: str, tmp_path: Path, slack: SlackRecorder
) -> None:
    settings = make(SIGNALOPS_ALERTS__SLACK_WEBHOOK_URL=f"{slack.url}/hooks/swaps")
    registry = Registry(settings, signal)
    v1, v2 = register(registry, tmp_path), register(registry, tmp_path)
    registry.set_alias(c.ALIAS_CHAMPION, v1)
    registry.set_alias(c.ALIAS_CHALLENGER, v2)
    canary = Canary(settings, signal)
    try:
        assert canary.tick()["action"] == "started"
    finally:
        canary.close()
    (row,) = _rows(settings, signal)
    assert row.reason == "started" and "inputs" not in _history(row)[0]
    assert "other inputs" not in json.dumps([r.body for r in slack.requests])


def test_a_challenger_of_other_inputs_never_breaks_the_champions_callers(
    make: Callable[..., Settings], signal: str, tmp_path: Path
) -> None:
    """Champion on 3 features, challenger on 4 (another feature set): old callers keep
    their 200s whether the challenger shadows (w = 0) or takes the whole canary share
    (w = 1: the champion answers what the challenger cannot read), and a caller of the new
    schema pins the challenger's version."""
    from starlette.testclient import TestClient

    from signalops.serving.app import Sidecar, build_app

    settings = make(
        SIGNALOPS_SIGNAL_NAME=signal,
        SIGNALOPS_SERVING__ADMIN_TOKEN="t",
        SIGNALOPS_SERVING__POLL_INTERVAL_S=str(POLL_S),
    )
    registry = Registry(settings)
    old = register(registry, tmp_path)
    new = register(registry, tmp_path, [*NAMES, "rsi_14"], feature_set="v2")
    registry.set_alias(c.ALIAS_CHAMPION, old)
    registry.set_alias(c.ALIAS_CHALLENGER, new)
    app = build_app(settings, Sidecar(settings, start_background=False))
    admin = {"Authorization": "Bearer t"}
    with TestClient(app) as client:
        for weight in ("0", "1"):
            registry.set_model_tag(c.CANARY_WEIGHT_TAG, weight)
            assert client.post("/v1/admin/reload", headers=admin).status_code == 200
            r = client.post("/invocations", json={"instances": [[0.1, 0.2, 0.3]]})
            assert r.status_code == 200, (weight, r.text)
            inline = client.post("/v1/signals", json={"features": dict.fromkeys(NAMES, 0.1)})
            assert inline.status_code == 200, (weight, inline.text)
            assert inline.json()["model"] == {"name": signal, "version": old, "role": "champion"}
        pinned = client.post(
            "/invocations",
            json={"instances": [[0.1, 0.2, 0.3, 0.4]]},
            headers={"X-Model-Version": new},
        )
        assert pinned.status_code == 200, pinned.text
        listed = {m["version"]: m for m in client.get("/v1/models").json()["models"]}
        assert listed[new]["features"] == [*NAMES, "rsi_14"] and listed[old]["features"] == NAMES
