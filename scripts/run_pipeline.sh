#!/usr/bin/env bash
# `make run`: the pipeline end-to-end on the embedded default, as real Airflow DAG runs
# (`airflow dags test`) on SQLite, with the warehouse in SQLite and features in a local
# Parquet lake. Every piece of state lands under $SIGNALOPS_STATE_DIR (default .signalops/);
# running it again changes nothing (idempotent writers). Full Airflow logs: $LOG_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${SIGNALOPS_STATE_DIR:=$PWD/.signalops}"
: "${AIRFLOW_HOME:=$SIGNALOPS_STATE_DIR/airflow}"
export SIGNALOPS_STATE_DIR AIRFLOW_HOME
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags" AIRFLOW__CORE__PLUGINS_FOLDER="$PWD/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export PATH="$PWD/.venv/bin:$PATH"

# The history ends where the scheduler will continue it (`make airflow`): 30 days of
# 5-minute bars up to the last full hour but one, then that last full hour as the
# schedule runs it. The synthetic source is deterministic per (symbol, bar time), so a
# rerun in the same hour changes nothing; set the three variables to pin a window.
NEXT_HOUR=${NEXT_HOUR:-$(date -u +%Y-%m-%dT%H:00:00+00:00)}  # interval [NEXT_HOUR - 1h, NEXT_HOUR)
HISTORY_END=${HISTORY_END:-$(date -u -d "${NEXT_HOUR} - 1 hour" +%Y-%m-%dT%H:%M:%S+00:00)}
HISTORY_START=${HISTORY_START:-$(date -u -d "${HISTORY_END} - 30 days" +%Y-%m-%dT%H:%M:%S+00:00)}
# The runs' logical dates, one second after the hour: a manual run still covers the hourly
# interval that ends before it, and it does not take the logical date (an interval's start)
# of the scheduler's own next run, which Airflow would otherwise skip as "already exists".
HISTORY_AT=$(date -u -d "${HISTORY_END} + 1 second" +%Y-%m-%dT%H:%M:%S+00:00)
RUN_AT=$(date -u -d "${NEXT_HOUR} + 1 second" +%Y-%m-%dT%H:%M:%S+00:00)
LOG_DIR="$SIGNALOPS_STATE_DIR/logs"
mkdir -p "$LOG_DIR"
# RUN_STEPS=N runs steps 1..N only, then stops (exit 0) saying so; e.g. RUN_STEPS=2 leaves
# the history collected and featurized for the scheduler to continue. Default: all 13.
RUN_STEPS=${RUN_STEPS:-13}
[[ $RUN_STEPS =~ ^[0-9]+$ ]] || { echo "RUN_STEPS=$RUN_STEPS: expected a step number (0-13)" >&2; exit 2; }

step() {  # step "N/13 what": stops here when N is past RUN_STEPS
  local n=${1%%/*}
  if [[ $n =~ ^[0-9]+$ ]] && ((10#$n > 10#$RUN_STEPS)); then
    printf '\nStopped after step %s of 13 (RUN_STEPS=%s). State: %s\n' "$RUN_STEPS" "$RUN_STEPS" "$SIGNALOPS_STATE_DIR"
    exit 0
  fi
  printf '\n\033[1m==> %s\033[0m\n' "$*"
}

dag_test() {  # dag_test NAME LOGICAL_DATE [CONF_JSON]
  local dag=$1 when=$2 conf=${3:-"{}"} log="$LOG_DIR/${1}_$(date +%Y%m%dT%H%M%S).log"
  if ! airflow dags test "$dag" "$when" -c "$conf" >"$log" 2>&1; then
    grep -E "Error|error|Traceback|raise " "$log" | tail -20 || true
    echo "FAILED: airflow dags test $dag $when (full log: $log)" >&2
    exit 1
  fi
  # Show what each task returned, and the run's final state.
  grep -oE "\[DAG TEST\] end task task_id=[a-z_]+|Returned value was: .*\[airflow\.task|DagRun Finished: dag_id=[a-z_]+, .*state=[a-z]+" "$log" \
    | sed -E 's/ \[airflow\.task$//; s/^/    /; s/run_start_date=[^,]*, run_end_date=[^,]*, run_duration=[^,]*, //'
}

step "Airflow metadata database (SQLite under $AIRFLOW_HOME)"
airflow db migrate >"$LOG_DIR/db_migrate.log" 2>&1 || { tail -20 "$LOG_DIR/db_migrate.log"; exit 1; }
echo "    ok"

step "1/13 market_data: collect history $HISTORY_START .. $HISTORY_END"
dag_test market_data "$HISTORY_AT" "{\"start\": \"$HISTORY_START\", \"end\": \"$HISTORY_END\"}"

step "2/13 features: feature set over the history (offline Parquet + online store)"
dag_test features "$HISTORY_AT" "{\"start\": \"$HISTORY_START\", \"end\": \"$HISTORY_END\"}"

step "3/13 market_data: the scheduled hourly interval ending $NEXT_HOUR"
dag_test market_data "$RUN_AT"

step "4/13 features: the new hour (what the signalops/bars Asset event triggers)"
dag_test features "$RUN_AT" "{\"start\": \"$HISTORY_END\", \"end\": \"$NEXT_HOUR\"}"

step "5/13 features: backfill feature set v2 over the whole history in one run"
dag_test features "$RUN_AT" "{\"feature_set_version\": \"v2\", \"start\": \"$HISTORY_START\", \"end\": \"$NEXT_HOUR\"}"

step "6/13 retrain: first model on feature set v1 (no champion yet: the gate decides)"
dag_test retrain "$RUN_AT" '{"feature_set_version": "v1"}'

step "7/13 retrain: a v2 challenger, tuned first (3 Optuna trials, nested MLflow runs), judged against the v1 champion on the same holdout"
dag_test retrain "$RUN_AT" '{"feature_set_version": "v2", "tune_trials": 3}'

step "8/13 drift_monitor: the champion's reference profile vs the last day of bars (drift.window_bars, 288)"
dag_test drift_monitor "$RUN_AT"

step "9/13 canary: the v2 challenger's rollout starts (shadow step: weight 0)"
dag_test canary "$RUN_AT"

step "10/13 serving sidecar: the registry's champion as ONNX (native, MLflow and V2 protocols)"
python scripts/sidecar_demo.py

step "11/13 outcomes: label the logged predictions whose horizon has matured"
dag_test outcomes "$RUN_AT"

step "12/13 rollback (manual DAG): champion to v1 (already the champion: nothing to move)"
dag_test rollback "$RUN_AT" '{"version": "1", "reason": "make run demo"}'

step "13/13 real daily market data (GOOG 2004-2013, shipped by the backtesting package), only four settings"
# Its own state directory: source csv, the file, the symbol, daily bars; every other
# setting follows the bar size (weekday calendar, feature set d1, horizon 5 bars, ...).
GOOG_CSV=$(python -c 'import backtesting, pathlib; print(pathlib.Path(backtesting.__file__).parent / "test" / "GOOG.csv")')
(
  export SIGNALOPS_STATE_DIR="$SIGNALOPS_STATE_DIR/real-goog-daily" SIGNALOPS_MARKET__SOURCE=csv \
    SIGNALOPS_MARKET__PATH="$GOOG_CSV" SIGNALOPS_MARKET__SYMBOLS=GOOG SIGNALOPS_MARKET__BAR_MINUTES=1440
  log="$LOG_DIR/real_goog_daily.log"
  for cmd in "collect --start 2004-01-01 --end 2014-01-01" "features --start 2004-01-01 --end 2014-01-01" "retrain --run-key goog-daily"; do
    rc=0
    python -m signalops.cli $cmd >>"$log" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { tail -20 "$log"; echo "FAILED: signalops $cmd (log: $log)" >&2; exit 1; }
  done
  grep -E '^\{"rows"|"offline"|^(assemble|tune|train|export|evaluate|register|reject): |retrain: skipped' "$log" \
    | sed -E 's/"validation".*//; s/^/    /' | cut -c1-240
)

step "What the pipeline holds now"
python -m signalops.cli summary
printf '\nDone. State: %s   Airflow UI: make airflow\n' "$SIGNALOPS_STATE_DIR"
