"""Canary routing: a share w of traffic to the challenger, sticky per (symbol, caller key).

The bucket of a (symbol, key) pair is a stable hash mapped to [0, 1): the same caller asking
for the same symbol always lands in the same bucket, so it sees one model consistently
while w stays put, and raising w only moves callers from the champion to the challenger.
While a challenger exists and w is 0, it scores every request in the shadow.
"""

from __future__ import annotations

import hashlib

from signalops.serving.pool import LoadedModel, SignalModels


def bucket(symbol: str, key: str) -> float:
    digest = hashlib.blake2b(f"{symbol}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def route(
    models: SignalModels, symbol: str, key: str
) -> tuple[LoadedModel, str, LoadedModel | None]:
    """(model that answers, its role, model that scores in the shadow or None)."""
    champion, challenger, weight = models.champion, models.challenger, models.canary_weight
    assert champion is not None, "route() needs a champion"
    if challenger is None:
        return champion, "champion", None
    if weight <= 0.0:
        return champion, "champion", challenger
    if bucket(symbol, key) < weight:
        return challenger, "challenger", None
    return champion, "champion", None
