"""The warehouse database: its schema, its connection, and every query on its tables.

No SQL on the warehouse outside this package (tests/unit/test_no_sql_outside_warehouse.py):
``schema`` declares the tables; ``core`` holds ``Warehouse`` (the engine, SQLite pragmas)
and the one ``upsert`` (INSERT .. ON CONFLICT on PostgreSQL and SQLite); one module per
table (family) holds its queries: ``bars``, ``online_features``, ``predictions`` (reads
downstream of serving), ``scoring_errors`` (failed scorings per version), ``outcomes``,
``explanations`` (``prediction_explanations``), ``drift`` (checks + features),
``rollouts``, ``alerts`` (alerts + dag_runs). Callers open a connection
(``warehouse.connect()`` / ``warehouse.begin()``) and call those functions, e.g.
``rollouts.active(conn, signal)``.
"""

from signalops.warehouse.bars import UpsertResult
from signalops.warehouse.core import (
    UPSERT_CHUNK,
    Warehouse,
    insert_statement,
    to_utc,
    to_utc_series,
    upsert,
)
from signalops.warehouse.schema import (
    alerts_table,
    bars_table,
    create_all,
    dag_runs_table,
    drift_checks_table,
    drift_features_table,
    metadata,
    online_features_table,
    outcomes_table,
    prediction_explanations_table,
    predictions_table,
    rollouts_table,
    scoring_errors_table,
    table_names,
)

__all__ = [
    "UPSERT_CHUNK",
    "UpsertResult",
    "Warehouse",
    "alerts_table",
    "bars_table",
    "create_all",
    "dag_runs_table",
    "drift_checks_table",
    "drift_features_table",
    "insert_statement",
    "metadata",
    "online_features_table",
    "outcomes_table",
    "prediction_explanations_table",
    "predictions_table",
    "rollouts_table",
    "scoring_errors_table",
    "table_names",
    "to_utc",
    "to_utc_series",
    "upsert",
]
