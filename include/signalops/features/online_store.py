"""The online feature store: the latest feature vector per symbol, for serving.

Two backends behind one interface: Redis (production; a hash per key
``<prefix>:features:<version>:<symbol>`` with a TTL) and a warehouse table (embedded
default). A write only replaces a stored vector with one at the same or a newer bar time,
so backfilling old history never rolls the online store back.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import pandas as pd

from signalops.config import Settings
from signalops.warehouse import Warehouse, online_features, to_utc_series


@dataclass(frozen=True)
class FeatureVector:
    symbol: str
    ts: datetime
    feature_set_version: str
    values: dict[str, float]


class OnlineStore(Protocol):
    def write(self, version: str, rows: pd.DataFrame, names: list[str]) -> int:
        """Store each row (one per symbol); return how many replaced an older vector."""
        ...

    def read(self, version: str, symbols: list[str]) -> dict[str, FeatureVector]: ...

    def close(self) -> None: ...


def _vectors(rows: pd.DataFrame, names: list[str]) -> list[tuple[str, datetime, dict[str, float]]]:
    if rows["symbol"].duplicated().any():
        raise ValueError("online store rows must hold one row per symbol")
    out = []
    for record in rows.to_dict("records"):
        values = {n: float(record[n]) for n in names}
        bad = [n for n, v in values.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"online features for {record['symbol']} are not finite: {bad}")
        out.append((str(record["symbol"]), pd.Timestamp(record["ts"]).to_pydatetime(), values))
    return out


# Compare-and-set on the bar time, atomically inside Redis.
_CAS_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'ts')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'features', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisOnlineStore:
    def __init__(self, url: str, ttl_seconds: int, key_prefix: str = "signalops"):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.ttl = ttl_seconds
        self.prefix = key_prefix
        self._cas = self.client.register_script(_CAS_SCRIPT)

    def key(self, version: str, symbol: str) -> str:
        return f"{self.prefix}:features:{version}:{symbol}"

    def write(self, version: str, rows: pd.DataFrame, names: list[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for symbol, ts, values in _vectors(rows, names):
            self._cas(
                keys=[self.key(version, symbol)],
                args=[f"{ts.timestamp():.6f}", json.dumps(values), self.ttl],
                client=pipe,
            )
        return int(sum(pipe.execute()))

    def read(self, version: str, symbols: list[str]) -> dict[str, FeatureVector]:
        pipe = self.client.pipeline(transaction=False)
        for symbol in symbols:
            pipe.hmget(self.key(version, symbol), "ts", "features")
        found = {}
        for symbol, (ts, features) in zip(symbols, pipe.execute(), strict=True):
            if ts is None or features is None:
                continue
            found[symbol] = FeatureVector(
                symbol, datetime.fromtimestamp(float(ts), UTC), version, json.loads(features)
            )
        return found

    def close(self) -> None:
        self.client.close()


class SqlOnlineStore:
    """The warehouse ``online_features`` table (embedded default)."""

    def __init__(self, warehouse: Warehouse):
        self.warehouse = warehouse
        warehouse.create_all()

    def write(self, version: str, rows: pd.DataFrame, names: list[str]) -> int:
        now = datetime.now(UTC)
        records = [
            {
                "feature_set_version": version,
                "symbol": s,
                "ts": ts,
                "features": v,
                "updated_at": now,
            }
            for s, ts, v in _vectors(rows, names)
        ]
        if not records:
            return 0
        with self.warehouse.begin() as conn:
            return online_features.write(conn, records)

    def read(self, version: str, symbols: list[str]) -> dict[str, FeatureVector]:
        with self.warehouse.connect() as conn:
            rows = online_features.read(conn, version, symbols)
        if not rows:
            return {}
        stamps = to_utc_series(pd.Series([r.ts for r in rows]))
        return {
            r.symbol: FeatureVector(
                r.symbol, stamps.iloc[i].to_pydatetime(), version, dict(r.features)
            )
            for i, r in enumerate(rows)
        }

    def close(self) -> None:
        self.warehouse.dispose()


def online_store_from_settings(settings: Settings) -> OnlineStore:
    cfg = settings.online_store
    if cfg.redis_url:
        return RedisOnlineStore(cfg.redis_url, cfg.ttl_seconds, cfg.key_prefix)
    return SqlOnlineStore(Warehouse(settings.warehouse_url))
