"""``signalops`` command line: the pipeline's jobs without Airflow, and a status summary.

python -m signalops.cli collect --start 2026-09-01 --end 2026-09-02
python -m signalops.cli features --start 2026-09-01 --end 2026-09-02 [--version v2]
python -m signalops.cli summary
python -m signalops.cli explain REQUEST_ID | --last 10 [--signal NAME] [--json]

Exit codes: 0 done; 2 bad input or data (the message says what and where); 3 skipped,
nothing to do, as the DAG's task ends ``skipped`` (retrain: too little data, or this exact
data was already trained on).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from signalops.config import ConfigError, Settings, load_settings

EXIT_BAD_INPUT = 2
EXIT_SKIPPED = 3


def _summary(settings: Settings) -> dict[str, Any]:
    from signalops.features.definitions import FEATURE_SETS
    from signalops.features.offline_store import OfflineStore
    from signalops.features.online_store import online_store_from_settings
    from signalops.warehouse import Warehouse
    from signalops.warehouse import explanations as explanation_rows

    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        stats = warehouse.bar_stats()
        predictions = _prediction_counts(warehouse)
        with warehouse.connect() as conn:
            explained = explanation_rows.count_by_status(conn)
        drift = _drift_checks(warehouse)
        rollouts = _rollouts(warehouse)
    store = OfflineStore(settings.lake_dir)
    offline = {}
    for version in FEATURE_SETS:
        files = store.files(version)
        if files:
            frame = store.read(version, columns=["label_up"])
            offline[version] = {
                "files": len(files),
                "rows": len(frame),
                "labeled_rows": int(frame["label_up"].notna().sum()),
                "first_ts": frame["ts"].min().isoformat(),
                "last_ts": frame["ts"].max().isoformat(),
                "path": str(store.version_dir(version)),
            }
    online = online_store_from_settings(settings)
    try:
        vectors = {v: online.read(v, list(settings.market.symbols)) for v in offline}
    finally:
        online.close()
    return {
        "state_dir": str(settings.state_dir.resolve()),
        "warehouse": settings.warehouse_url.split("@")[-1],
        "bars": {
            r.symbol: {
                "bars": int(r.bars),
                "first_ts": r.first_ts.isoformat(),
                "last_ts": r.last_ts.isoformat(),
            }
            for r in stats.itertuples()
        },
        "offline_features": offline,
        "online_features": {
            v: {
                s: {"ts": fv.ts.isoformat(), "n_features": len(fv.values)} for s, fv in vecs.items()
            }
            for v, vecs in vectors.items()
        },
        "registry": _registry_summary(settings),
        "predictions": predictions,
        "prediction_explanations": explained,
        "drift_checks": drift,
        "rollouts": rollouts,
    }


def _rollouts(warehouse: Any) -> list[dict[str, Any]]:
    """The newest rollouts (canary and manual rollbacks) and where they stand."""
    from signalops.warehouse import rollouts as rollout_rows

    with warehouse.connect() as conn:
        rows = rollout_rows.latest_updated(conn, limit=5)
    return [
        {
            "signal": r.signal_name,
            "champion": r.champion_version,
            "challenger": r.challenger_version,
            "status": r.status,
            "weight": r.weight,
            "reason": r.reason,
            "updated_at": str(r.updated_at),
        }
        for r in rows
    ]


def _drift_checks(warehouse: Any) -> list[dict[str, Any]]:
    """The newest drift checks (severity, drifted share, report)."""
    from signalops.warehouse import drift as drift_rows

    with warehouse.connect() as conn:
        rows = drift_rows.latest_checks(conn, limit=5)
    return [
        {
            "signal": r.signal_name,
            "model_version": r.model_version,
            "window_end": str(r.window_end),
            "severity": r.severity,
            "share_drifted": round(float(r.share_drifted), 3),
            "alerted": bool(r.alerted),
            "report": r.report_path,
        }
        for r in rows
    ]


def _show(settings: Settings, args: argparse.Namespace) -> int:
    """The read-only commands: ``summary`` (JSON) and ``explain``."""
    if args.command == "explain":
        return _explain(settings, args)
    print(json.dumps(_summary(settings), indent=2))
    return 0


def _add_explain(sub: Any) -> None:
    explain = sub.add_parser(
        "explain",
        help="show a logged prediction's TreeSHAP explanation (by request id), or the newest "
        "explained predictions of a signal",
    )
    explain.add_argument("request_id", nargs="?", help="the prediction's request id")
    explain.add_argument("--signal", default=None, help="default: signal_name")
    explain.add_argument("--last", type=int, default=10, help="how many (no request id)")
    explain.add_argument("--role", default=None, help="champion, challenger, shadow, pinned")
    explain.add_argument("--json", action="store_true", help="print the rows as JSON")


def _explain(settings: Settings, args: argparse.Namespace) -> int:
    """Print explanations: one request's rows, or a signal's newest; 2 when there are none."""
    from signalops.explanations import format_explanation
    from signalops.warehouse import Warehouse
    from signalops.warehouse import explanations as explanation_rows

    signal = args.signal or settings.signal_name
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        with warehouse.connect() as conn:
            if args.request_id:
                rows = explanation_rows.of_request(conn, args.request_id)
            else:
                rows = explanation_rows.newest(conn, signal, max(1, args.last), args.role)
    if not rows:
        what = f"request {args.request_id!r}" if args.request_id else f"signal {signal!r}"
        print(
            f"no explanations for {what}: not logged, or not explained yet (the outcomes "
            "DAG's explain task explains new predictions every hour)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print("\n\n".join(format_explanation(r) for r in rows))
    return 0


def _prediction_counts(warehouse: Any) -> dict[str, int]:
    """Rows of the sidecar's prediction log, by role."""
    from signalops.warehouse import predictions as prediction_rows

    with warehouse.connect() as conn:
        return prediction_rows.count_by_role(conn)


def _registry_summary(settings: Settings) -> dict[str, Any]:
    from signalops.registry import Registry
    from signalops.registry import contracts as c

    registry = Registry(settings)
    aliases = registry.aliases()
    versions = [
        {
            "version": str(mv.version),
            # search results carry no aliases on the SQL store: map them here
            "aliases": sorted(a for a, v in aliases.items() if v == str(mv.version)),
            "feature_set": (mv.tags or {}).get(c.TAG_FEATURE_SET),
            "parity_error": (mv.tags or {}).get(c.TAG_PARITY_ERROR),
            "run_id": mv.run_id,
        }
        for mv in registry.client.search_model_versions(f"name = '{registry.name}'")
    ]
    return {
        "tracking_uri": registry.tracking_uri,
        "model": registry.name,
        "aliases": aliases,
        "versions": sorted(versions, key=lambda v: int(v["version"])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="signalops", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    collect = sub.add_parser("collect", help="collect bars for [start, end) into the warehouse")
    features = sub.add_parser("features", help="build offline + online features for [start, end)")
    for p in (collect, features):
        p.add_argument("--start", required=True)
        p.add_argument("--end", required=True)
    features.add_argument(
        "--version", default=None, help="feature-set version (default: configured)"
    )
    sub.add_parser("summary", help="print what the warehouse and feature stores hold (JSON)")
    retrain = sub.add_parser("retrain", help="run the retrain path in this process (no Airflow)")
    retrain.add_argument("--start", default=None, help="default: end - training.window_days")
    retrain.add_argument("--end", default=None, help="default: the newest features")
    retrain.add_argument("--version", default=None, help="feature-set version")
    retrain.add_argument("--force", action="store_true", help="retrain on an already-seen snapshot")
    retrain.add_argument("--run-key", default=None, help="names the run directory")
    _add_explain(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT

    from signalops.windows import resolve_window

    if args.command in ("summary", "explain"):
        return _show(settings, args)
    if args.command == "retrain":
        from signalops.training.retrain import plan_request, run_all

        params = {
            "start": args.start,
            "end": args.end,
            "feature_set_version": args.version,
            "force": args.force,
        }
        from signalops.training.dataset import InsufficientDataError
        from signalops.training.retrain import AlreadyTrained

        run_key = args.run_key or f"cli__{datetime.now(UTC):%Y%m%dT%H%M%S}"
        try:
            results = run_all(settings, plan_request(settings, params, run_key))
        except (InsufficientDataError, AlreadyTrained) as exc:
            print(f"retrain: skipped: {exc}")
            return EXIT_SKIPPED
        for step, result in results.items():
            print(f"{step}: {result.summary}")
        return 0
    start, end = resolve_window(args.start, args.end, what=args.command)
    if args.command == "collect":
        from signalops.data.collect import extract_bars, load_bars
        from signalops.validation.gate import gate_bars

        staged = extract_bars(settings, start, end)
        if staged.rows:
            gate_bars(settings, staged.as_dict(), f"cli__{datetime.now(UTC):%Y%m%dT%H%M%S}")
        print(json.dumps(load_bars(settings, staged.path, staged.source)))
    else:
        from signalops.features.pipeline import build_features, publish_online
        from signalops.validation.gate import features_staging, gate_features

        version = args.version or settings.features.feature_set_version
        staging = features_staging(settings, version, start.isoformat(), end.isoformat())
        built = build_features(settings, start, end, version, staging=staging)
        gate = gate_features(settings, built.as_dict(), f"cli__{datetime.now(UTC):%Y%m%dT%H%M%S}")
        print(
            json.dumps(
                {
                    "offline": built.as_dict(),
                    "validation": {k: gate[k] for k in ("success", "rows", "json_path")},
                    "online": publish_online(settings, built.feature_set_version),
                }
            )
        )
    return 0


def run(argv: list[str] | None = None) -> int:
    """``main`` with bad input (data, parameters) as a one-paragraph error and exit code 2."""
    from signalops.errors import BadInputError

    try:
        return main(argv)
    except BadInputError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(run())
