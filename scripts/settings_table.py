"""Print the Markdown table of every signalops setting, read from the pydantic models.

    .venv/bin/python scripts/settings_table.py          # print the table
    .venv/bin/python scripts/settings_table.py --write  # replace it in docs/configuration.md

One row per field of ``signalops.config.Settings`` (nested sections walked): the environment
variable that sets it (``SIGNALOPS_SECTION__FIELD``), its default (bar-size defaults from
``signalops.config.bar_defaults`` for 5-, 60- and 1440-minute bars) and its description (the
field's own, else the one in ``DESCRIPTIONS`` below), with the allowed values the model
enforces. ``tests/unit/test_docs_settings.py`` fails when docs/configuration.md's table
differs from what this prints.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from signalops.config import ENV_PREFIX, Settings, bar_defaults

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
START = "<!-- settings-table:start (scripts/settings_table.py --write) -->"
END = "<!-- settings-table:end -->"
BAR_SIZES = {"5 min": 5, "60 min": 60, "1 day": 1440}

# Descriptions of the fields that carry none in config.py (keyed by dotted path).
DESCRIPTIONS = {
    "state_dir": "root of all local state: warehouse and MLflow SQLite files, MLflow "
    "artifacts, feature lake, staging, validation and drift reports, retrain run "
    "directories, the prediction log's spill and dead-letter files",
    "signal_name": "the signal, and the name of its registered model in MLflow",
    "market.source": "where bars come from",
    "market.symbols": "symbols to collect",
    "market.bar_minutes": "bar size in minutes; the bar-size defaults follow it",
    "market.postgres_url": "postgres source: SQLAlchemy URL of the database with the bars",
    "market.postgres_table": "postgres source: the table of bars (or set postgres_query)",
    "market.synthetic.seed": "seed: bars are a pure function of seed, symbol and bar time",
    "market.synthetic.origin": "time of the synthetic series' first bar",
    "market.synthetic.shift_volatility_factor": "volatility multiplier from shift_at",
    "market.synthetic.shift_volume_factor": "volume multiplier from shift_at",
    "drift.accuracy_drop_medium": "fall of live accuracy below the holdout's: medium",
    "drift.accuracy_drop_high": "fall of live accuracy below the holdout's: high",
    "online_store.ttl_seconds": "TTL of a Redis online-store key",
    "online_store.key_prefix": "prefix of the Redis keys (features, risk state) and of the "
    "registry-events channel",
    "training.cv_folds": "expanding walk-forward CV folds",
    "training.seed": "training seed: same data and settings give a byte-identical model",
    "training.nthread": "XGBoost threads",
    "training.max_parity_error": "parity gate: largest |p_onnx - p_xgboost| on the holdout",
    "training.xgboost.max_depth": "XGBoost max_depth",
    "training.xgboost.eta": "XGBoost learning rate",
    "training.xgboost.subsample": "XGBoost row subsample",
    "training.xgboost.colsample_bytree": "XGBoost column subsample per tree",
    "training.xgboost.min_child_weight": "XGBoost min_child_weight",
    "training.xgboost.reg_lambda": "XGBoost L2 regularization (lambda)",
    "training.xgboost.reg_alpha": "XGBoost L1 regularization (alpha)",
    "training.xgboost.num_boost_round": "most boosting rounds (trees)",
    "training.xgboost.early_stopping_rounds": "CV folds stop after this many rounds "
    "without improvement",
    "evaluation.primary_metric": "metric of the champion and baseline comparisons",
    "evaluation.bootstrap_samples": "paired moving-block bootstrap samples (champion rule)",
    "evaluation.confidence": "confidence level of the bootstrap CI",
    "evaluation.min_roc_auc": "gate rule floor_roc_auc: holdout ROC-AUC at least this",
    "evaluation.max_log_loss": "gate rule ceiling_log_loss: holdout log loss at most this",
    "evaluation.strategy": "backtest: long/short or long/flat",
    "evaluation.threshold": "backtest: P(up) above this goes long",
    "evaluation.first_model_becomes_champion": "with no champion, the first registered model "
    "becomes champion directly",
    "alerts.slack_webhook_url": "Slack incoming webhook (a secret: set it in the environment)",
    "alerts.slack_token": "Slack bot token (a secret: set it in the environment)",
    "alerts.slack_channel": "channel the bot token posts to",
    "serving.host": "address the sidecar listens on",
    "serving.port": "port the sidecar listens on",
    "serving.max_body_bytes": "largest request body; larger: 413",
    "serving.max_batch_rows": "most rows or symbols in one request",
    "serving.buy_threshold": "P(up) at or above this: BUY",
    "serving.sell_threshold": "P(up) at or below this: SELL",
    "serving.log_batch_size": "prediction-log rows per batch",
    "serving.log_flush_interval_s": "how often queued prediction-log rows go to the writer process",
    "serving.risk.timezone": "time zone of trading_hours, trading_days and the trading day",
    "serving.risk.max_trades_per_day": "BUY/SELL calls a day; beyond: HOLD",
    "serving.risk.max_consecutive_losses": "circuit breaker: losing trades in a row",
    "serving.ensembles[].name": "the name the ensemble is served under",
}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a ``tuple[Model, ...]`` field (a list of sections in YAML)."""
    if typing.get_origin(annotation) is tuple:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(args) == 1:
            return _model_of(args[0])
    return None


def _is_container(annotation: Any) -> bool:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_container(a) for a in args if a is not type(None))
    return typing.get_origin(annotation) in (tuple, dict, list)


def _splits_strings(model: type[BaseModel], name: str) -> bool:
    """A "before" validator on the field: it accepts a comma-separated string."""
    return any(
        name in d.info.fields and d.info.mode == "before"
        for d in model.__pydantic_decorators__.field_validators.values()
    )


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list):
        return f"`{', '.join(str(v) for v in value)}`" if value else "empty"
    if isinstance(value, datetime):
        return f"`{value.isoformat()}`"
    return f"`{value}`"


def _allowed(annotation: Any, info: FieldInfo) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(annotation))
    signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    bounds = [
        f"{sign} {getattr(meta, attr)}"
        for meta in info.metadata
        for attr, sign in signs.items()
        if getattr(meta, attr, None) is not None
    ]
    return ", ".join(bounds)


def _default(path: tuple[str, ...], info: FieldInfo) -> str:
    if not info.is_required():
        return _value(info.get_default(call_default_factory=True))
    if len(path) == 2:
        by_size = [
            (label, bar_defaults(minutes).get(path[0], {}).get(path[1], None))
            for label, minutes in BAR_SIZES.items()
        ]
        if all(v is not None for _, v in by_size):
            return "by bar size: " + "; ".join(f"{label} {_value(v)}" for label, v in by_size)
    return "required"


def rows(
    model: type[BaseModel] = Settings, prefix: tuple[str, ...] = (), yaml_only: bool = False
) -> Iterator[tuple[str, str, str]]:
    """(setting, default, description) for every field under ``model``."""
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        dotted = ".".join(path)
        section = _model_of(info.annotation)
        if section is not None:
            yield from rows(section, path, yaml_only)
            continue
        description = info.description or DESCRIPTIONS.get(dotted)
        if not description:
            raise SystemExit(
                f"settings_table: {dotted} has no description (add it to DESCRIPTIONS)"
            )
        notes = [description.strip()]
        allowed = _allowed(info.annotation, info)
        if allowed and not (allowed.startswith("one of") and "one of" in description):
            notes.append(allowed)
        item = _item_model(info.annotation)
        if yaml_only or (_is_container(info.annotation) and not _splits_strings(model, name)):
            setting = f"`{dotted}` (YAML only)"
        else:
            setting = f"`{ENV_PREFIX}{'__'.join(path).upper()}`"
            if _is_container(info.annotation):
                notes.append("in the environment: comma-separated")
        yield setting, _default(path, info), "; ".join(notes).replace("|", "\\|")
        if item is not None:
            yield from rows(item, (*prefix, f"{name}[]"), yaml_only=True)


def table() -> str:
    lines = ["| setting | default | description |", "| --- | --- | --- |"]
    lines += [f"| {s} | {d} | {t} |" for s, d, t in rows()]
    described = {".".join(p): bool(info.description) for p, info in _fields(Settings)}
    stale = sorted(k for k in DESCRIPTIONS if described.get(k, True))
    if stale:
        raise SystemExit(
            f"settings_table: DESCRIPTIONS names settings that are gone or described in "
            f"config.py: {stale}"
        )
    return "\n".join(lines) + "\n"


def _fields(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """(path, field) of every setting under ``model``, list items as ``name[]``."""
    for name, info in model.model_fields.items():
        section = _model_of(info.annotation)
        item = _item_model(info.annotation)
        if section is not None:
            yield from _fields(section, (*prefix, name))
        else:
            yield (*prefix, name), info
            if item is not None:
                yield from _fields(item, (*prefix, f"{name}[]"))


def documented(text: str) -> str:
    """The table between the markers of docs/configuration.md."""
    try:
        start = text.index(START) + len(START)
        end = text.index(END, start)
    except ValueError:
        raise SystemExit(f"settings_table: {DOC} lacks the markers {START!r} ... {END!r}") from None
    return text[start:end].strip("\n") + "\n"


def write(path: Path = DOC) -> None:
    text = path.read_text()
    old = documented(text)
    start = text.index(START) + len(START)
    end = text.index(END, start)
    path.write_text(text[:start] + "\n" + table() + text[end:])
    print(f"{path}: {'unchanged' if old == table() else 'table rewritten'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite the table in {DOC}")
    args = parser.parse_args(argv)
    if args.write:
        write()
    else:
        sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
