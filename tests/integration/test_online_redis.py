"""The Redis online store, against a real Redis."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import redis

from signalops.features.compute import compute_features
from signalops.features.definitions import get_feature_set
from signalops.features.online_store import RedisOnlineStore, online_store_from_settings
from signalops.features.pipeline import build_features, publish_online
from signalops.warehouse import Warehouse
from tests.conftest import ORIGIN, make_settings

pytestmark = pytest.mark.integration
V1 = get_feature_set("v1")


def test_write_read_ttl_and_version_in_key(
    redis_url: str, redis_prefix: str, bars: pd.DataFrame
) -> None:
    features = compute_features(bars, V1, 12)
    store = RedisOnlineStore(redis_url, ttl_seconds=120, key_prefix=redis_prefix)
    newest = features.groupby("symbol").tail(1)
    assert store.write("v1", newest, V1.names) == 2
    client = redis.Redis.from_url(redis_url)
    key = f"{redis_prefix}:features:v1:AAA"
    assert 0 < client.ttl(key) <= 120
    stored = json.loads(client.hget(key, "features"))
    assert list(stored) == V1.names
    got = store.read("v1", ["AAA", "BBB", "NOPE"])
    assert set(got) == {"AAA", "BBB"}
    row = newest[newest.symbol == "BBB"].iloc[0]
    assert got["BBB"].ts == row.ts.to_pydatetime()
    assert got["BBB"].values == {n: row[n] for n in V1.names}
    assert store.read("v2", ["AAA"]) == {}  # versions never mix
    client.close()
    store.close()


def test_older_vector_never_replaces_newer(
    redis_url: str, redis_prefix: str, bars: pd.DataFrame
) -> None:
    features = compute_features(bars, V1, 12)
    store = RedisOnlineStore(redis_url, ttl_seconds=600, key_prefix=redis_prefix)
    newest, older = features.groupby("symbol").tail(1), features.groupby("symbol").nth(-5)
    store.write("v1", newest, V1.names)
    assert store.write("v1", older, V1.names) == 0
    assert (
        store.read("v1", ["AAA"])["AAA"].ts
        == newest[newest.symbol == "AAA"].ts.iloc[0].to_pydatetime()
    )
    assert store.write("v1", newest, V1.names) == 2  # same bar again: idempotent overwrite
    store.close()


def test_pipeline_publishes_to_redis_when_configured(
    tmp_path, redis_url, redis_prefix, synthetic
) -> None:
    settings = make_settings(
        tmp_path,
        SIGNALOPS_MARKET__SYMBOLS="AAA,BBB",
        SIGNALOPS_ONLINE_STORE__REDIS_URL=redis_url,
        SIGNALOPS_ONLINE_STORE__KEY_PREFIX=redis_prefix,
    )
    bars = synthetic.fetch(ORIGIN, ORIGIN + pd.Timedelta(days=3))
    with Warehouse(settings.warehouse_url) as wh:
        wh.create_all()
        wh.upsert_bars(bars, "synthetic")
    build_features(settings, ORIGIN, ORIGIN + pd.Timedelta(days=3))
    result = publish_online(settings)
    assert result["backend"] == "redis" and result["replaced"] == 2
    store = online_store_from_settings(settings)
    assert isinstance(store, RedisOnlineStore)
    assert {s: v.ts for s, v in store.read("v1", ["AAA", "BBB"]).items()} == {
        s: bars[bars.symbol == s].ts.max().to_pydatetime() for s in ("AAA", "BBB")
    }
    store.close()
