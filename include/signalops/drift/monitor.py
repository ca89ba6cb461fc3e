"""The drift check as the ``drift_monitor`` DAG runs it: the champion against the newest window.

``run_check`` loads the champion from the registry (``load_champion``: its version,
reference profile, feature spec, holdout figures and ONNX model), reads the current window
from the offline store (``read_window``: each symbol's last ``drift.window_bars`` feature
rows), scores it with the champion, has ``signalops.drift.severity.assess`` judge it, and
writes the check with ``signalops.drift.records.persist`` (which also decides whether it
alerts). How severity is judged: ``signalops.drift.severity``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signalops.config import Settings
from signalops.drift.check import DriftCheck
from signalops.drift.records import persist
from signalops.drift.severity import assess

log = logging.getLogger(__name__)


@dataclass
class Champion:
    version: str
    profile: dict[str, Any]
    spec: dict[str, Any]
    holdout: dict[str, float]
    model_path: Path


def load_champion(settings: Settings, signal: str, work: Path) -> Champion | None:
    """The champion's version and artifacts (None when there is no champion yet)."""
    from signalops.registry import Registry
    from signalops.registry import contracts as c

    registry = Registry(settings, signal)
    info = registry.by_alias(c.ALIAS_CHAMPION)
    if info is None:
        return None
    folder = work / f"v{info.version}"

    def fetch(name: str) -> Path:
        return registry.download_file(info.version, name, folder)

    profile = json.loads(fetch(c.REFERENCE_PROFILE).read_text())
    spec = json.loads(fetch(c.FEATURE_SPEC).read_text())
    evaluation = json.loads(fetch(c.EVALUATION_JSON).read_text())
    ml = evaluation.get("models", {}).get("challenger", {}).get("ml", {})  # its own figures
    return Champion(
        info.version,
        profile,
        spec,
        {k: float(ml[k]) for k in ("accuracy", "brier") if k in ml},
        fetch(c.ONNX_MODEL),
    )


def read_window(
    settings: Settings, spec: dict[str, Any], end: datetime, window_bars: int, columns: list[str]
) -> pd.DataFrame:
    """Each symbol's last ``window_bars`` feature rows before ``end`` (rows missing a
    feature dropped), in (ts, symbol) order: the store is read over the calendar span that
    surely holds that many bars, ``[end - market_calendar.span_for(window_bars), end)``."""
    from signalops.features.offline_store import OfflineStore

    names = list(spec["names"])
    start = end - settings.market.market_calendar.span_for(window_bars)
    frame = OfflineStore(settings.lake_dir).read(
        spec["feature_set_version"], start=start, end=end, columns=columns
    )
    frame = frame.dropna(subset=names)
    frame = frame.sort_values(["symbol", "ts"], kind="stable").groupby("symbol").tail(window_bars)
    return frame.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


def run_check(
    settings: Settings,
    end: datetime,
    window_bars: int | None = None,
    signal: str | None = None,
) -> DriftCheck:
    """Check each symbol's last ``window_bars`` bars before ``end`` against the champion;
    persist it; decide on alerting."""
    from signalops.features.definitions import LABEL_UP
    from signalops.onnx_model import load_session, predict_onnx

    cfg = settings.drift
    signal = signal or settings.signal_name
    bars = int(window_bars or cfg.window_bars)
    start = end - settings.market.market_calendar.span_for(bars)
    work = settings.state_dir / "drift" / "champion"
    champion = load_champion(settings, signal, work)
    if champion is None:
        return DriftCheck(
            signal,
            "",
            start.isoformat(),
            end.isoformat(),
            0,
            "skipped",
            "no champion registered yet",
            window_bars=bars,
        )
    names = list(champion.spec["names"])
    current = read_window(settings, champion.spec, end, bars, [*names, LABEL_UP])
    if len(current):  # the window starts at its first bar, not at the span read
        start = pd.Timestamp(current["ts"].min()).to_pydatetime()
    window = (start.isoformat(), end.isoformat())
    if len(current) < cfg.min_rows:
        return DriftCheck(
            signal,
            champion.version,
            *window,
            len(current),
            "skipped",
            f"only {len(current)} feature rows in the last {bars} bars of each symbol before "
            f"{window[1]} (drift.min_rows is {cfg.min_rows}): too few to judge, no verdict",
            window_bars=bars,
        )
    session = load_session(champion.model_path)
    scores = predict_onnx(session, current[names].to_numpy(np.float32))
    matured = current[LABEL_UP].notna().to_numpy()
    outcomes = (current.loc[matured, LABEL_UP].to_numpy(np.float64), scores[matured])
    verdict = assess(champion.profile, current, names, cfg, scores, outcomes, champion.holdout)
    check = DriftCheck(
        signal,
        champion.version,
        *window,
        len(current),
        "checked",
        window_bars=bars,
        holdout_accuracy=champion.holdout.get("accuracy"),
        holdout_brier=champion.holdout.get("brier"),
        **verdict,
    )
    check.alert = persist(settings, check)
    log.info("drift: %s", check.summary())
    return check
