"""The retrain path against a real MLflow (SQLite store + local artifacts) and real Airflow.

In-process: first model -> champion with every artifact; same data again -> skipped;
forced -> challenger judged against the champion; a parity failure registers nothing.
Airflow (`airflow dags test retrain`): a version is registered end-to-end, then a model
trained on shuffled features is rejected by the gate with its reasons in the report, and a
window too small to train on skips the run with a Slack-ready alert.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from signalops.config import Settings, load_settings
from signalops.evaluation.gate import RULES
from signalops.features.offline_store import OfflineStore
from signalops.onnx_model import load_session, predict_onnx
from signalops.registry import Registry
from signalops.registry import contracts as c
from signalops.training import retrain as steps
from signalops.training import rundir
from signalops.training.onnx_export import ParityError
from tests.conftest import TRAIN_END, TRAIN_SYMBOLS, copy_lake
from tests.integration.test_airflow_dags import _stack
from tests.slack_recorder import slack_recorder

pytestmark = pytest.mark.integration

VERSION_FILES = {
    "MLmodel",
    c.NATIVE_MODEL,
    c.ONNX_MODEL,
    c.FEATURE_SPEC,
    c.REFERENCE_PROFILE,
    c.EVALUATION_JSON,
    c.EVALUATION_MD,
    c.SHAP_JSON,
    c.SHAP_PLOT,
    c.PARITY_JSON,
}


def _request(settings: Settings, key: str, **params: object) -> steps.RetrainRequest:
    return steps.plan_request(settings, params, run_key=key)


def test_retrain_registers_skips_compares_and_guards_parity(
    training_lake: Path, tmp_path: Path
) -> None:
    settings = copy_lake(training_lake, tmp_path)
    registry = Registry(settings)

    # 1. The first model: no champion yet, the gate passes -> champion directly.
    first = steps.run_all(settings, _request(settings, "first"))
    assert "register" in first, first["evaluate"].summary
    assert first["register"].figures == {"version": "1", "alias": c.ALIAS_CHAMPION}
    assert registry.aliases() == {c.ALIAS_CHAMPION: "1"}
    version = registry.version("1")
    for tag in (c.TAG_SNAPSHOT, c.TAG_CODE_VERSION, c.TAG_PARITY_ERROR, c.TAG_FEATURE_SET):
        assert version.tags.get(tag), f"version tag {tag} missing"
    assert float(version.tags[c.TAG_PARITY_ERROR]) <= 1e-5

    folder = registry.download_version("1", tmp_path / "v1")
    assert {p.name for p in folder.iterdir()} >= VERSION_FILES
    spec = json.loads((folder / c.FEATURE_SPEC).read_text())
    assert spec["feature_set_version"] == "v1" and spec["output"] == "probabilities"
    profile = json.loads((folder / c.REFERENCE_PROFILE).read_text())
    assert set(profile["features"]) == set(spec["names"]) and "score" in profile
    report = json.loads((folder / c.EVALUATION_JSON).read_text())
    assert report["decision"]["passed"] and report["decision"]["action"] == c.ALIAS_CHAMPION
    assert {"challenger", "baseline"} == set(report["models"])
    # Every gate rule is judged for the first model too; the champion rule does not apply.
    checks = report["decision"]["checks"]
    assert list(checks) == [rule.name for rule in RULES]
    assert checks["not_worse_than_champion"]["status"] == "not applicable"
    assert checks["net_sharpe"]["status"] == "pass"
    # 12 days of data are too few to count bars per year: the calendar's, 5-minute bars
    # around the clock.
    assert report["annualization"]["source"] == "calendar"
    assert report["annualization"]["bars_per_year"] == pytest.approx(365.2425 * 288)
    for role in report["models"].values():
        assert {"log_loss", "roc_auc", "accuracy", "precision", "recall", "f1", "brier"} <= set(
            role["ml"]
        )
        assert {"cumulative_return", "sharpe", "max_drawdown", "hit_rate", "turnover"} <= set(
            role["trading"]
        )

    # The registered ONNX reproduces the holdout scores; the MLflow model is a real pyfunc.
    run_dir = Path(first["register"].run_dir)
    scores = pd.read_parquet(run_dir / rundir.HOLDOUT_SCORES)
    dataset, split = rundir.load_dataset(run_dir), rundir.load_split(run_dir)
    p = predict_onnx(load_session(folder / c.ONNX_MODEL), dataset.x[split.valid])
    assert np.allclose(p, scores["p_onnx"].to_numpy(), atol=0, rtol=0)
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(folder))
    frame = pd.DataFrame(
        dataset.x[split.valid][:50], columns=[f"f{i}" for i in range(dataset.x.shape[1])]
    )
    assert np.allclose(
        np.asarray(pyfunc.predict(frame)), scores["p_xgboost"].to_numpy()[:50], atol=1e-7
    )

    # Tracking: per-fold metrics, holdout metrics, time and memory, params.
    run = registry.client.get_run(first["register"].mlflow_run_id)
    assert run.info.status == "FINISHED"
    history = registry.client.get_metric_history(run.info.run_id, "cv_roc_auc")
    assert sorted(m.step for m in history) == list(range(settings.training.cv_folds))
    for key in ("holdout_roc_auc", "baseline_roc_auc", "training_seconds", "peak_rss_mb"):
        assert key in run.data.metrics
    assert run.data.params["feature_set_version"] == "v1"
    assert run.data.params["data_snapshot"] == version.tags[c.TAG_SNAPSHOT]

    # 2. Same data and settings again: nothing new to learn.
    with pytest.raises(steps.AlreadyTrained, match="version 1 was already trained"):
        steps.run_all(settings, _request(settings, "again"))

    # 3. Forced: a challenger, judged against the champion with a paired bootstrap.
    forced = steps.run_all(settings, _request(settings, "forced", force=True))
    assert forced["register"].figures == {"version": "2", "alias": c.ALIAS_CHALLENGER}
    assert registry.aliases() == {c.ALIAS_CHAMPION: "1", c.ALIAS_CHALLENGER: "2"}
    assert registry.model_tags()[c.CANARY_WEIGHT_TAG] == "0"
    report2 = json.loads((Path(forced["register"].run_dir) / c.EVALUATION_JSON).read_text())
    assert report2["models"]["champion"]["version"] == "1"
    # Same data, same seed: the challenger is the champion's twin, the difference is zero.
    assert report2["comparison"]["difference"] == pytest.approx(0.0, abs=1e-12)
    assert report2["decision"]["checks"]["not_worse_than_champion"]["status"] == "pass"

    # 4. Parity cannot be met: the run fails at export, is marked FAILED, nothing registered.
    strict = settings.model_copy(
        update={"training": settings.training.model_copy(update={"max_parity_error": 1e-12})}
    )
    with pytest.raises(ParityError, match="max \\|p_onnx - p_xgboost\\|"):
        steps.run_all(strict, _request(strict, "strict", force=True))
    run_id = json.loads((rundir.run_directory(strict, "strict") / rundir.STATE).read_text())[
        "mlflow_run_id"
    ]
    failed = registry.client.get_run(run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags[c.TAG_PARITY] == "failed"
    assert "parity failed" in failed.data.tags[c.TAG_STATUS_REASON]
    assert registry.aliases() == {c.ALIAS_CHAMPION: "1", c.ALIAS_CHALLENGER: "2"}
    versions = registry.client.search_model_versions("name='direction_1h'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    from signalops.errors import BadInputError

    with pytest.raises(BadInputError, match=r"the gate did not pass|parity failed"):
        steps.register(strict, rundir.run_directory(strict, "strict"))

    # 5. A net Sharpe below the bar: rejected through the whole path, with that reason.
    picky = settings.model_copy(
        update={"evaluation": settings.evaluation.model_copy(update={"min_sharpe": 1e9})}
    )
    rejected = steps.run_all(picky, _request(picky, "picky", force=True))
    assert "register" not in rejected and not rejected["evaluate"].figures["passed"]
    assert [r.split(":")[0] for r in rejected["reject"].figures["reasons"]] == ["net_sharpe"]
    assert registry.aliases() == {c.ALIAS_CHAMPION: "1", c.ALIAS_CHALLENGER: "2"}


def _shuffle_features(settings: Settings, before: pd.Timestamp) -> None:
    """Permute feature rows across every symbol and day before ``before`` (labels stay)."""
    store = OfflineStore(settings.lake_dir)
    names = store.read_spec("v1")["names"]
    parts = [(path, pd.read_parquet(path)) for _symbol, path in store.files("v1")]
    masks = [part["ts"] < before for _path, part in parts]
    pooled = np.concatenate(
        [part.loc[m, names].to_numpy() for (_p, part), m in zip(parts, masks, strict=True)]
    )
    pooled = pooled[np.random.default_rng(0).permutation(len(pooled))]
    offset = 0
    for (path, part), mask in zip(parts, masks, strict=True):
        n = int(mask.sum())
        part.loc[mask, names] = pooled[offset : offset + n]
        offset += n
        part.to_parquet(path, index=False)


def test_retrain_dag_registers_then_rejects_a_degraded_model(
    training_lake: Path, tmp_path: Path
) -> None:
    import shutil

    shutil.copytree(training_lake, tmp_path / "state")
    with slack_recorder() as slack:
        stack = _stack(tmp_path, f"sqlite:///{tmp_path / 'airflow.db'}", None)
        stack.env.update(
            SIGNALOPS_MARKET__SYMBOLS=TRAIN_SYMBOLS,
            SIGNALOPS_EVALUATION__BOOTSTRAP_SAMPLES="200",
            SIGNALOPS_ALERTS__SLACK_WEBHOOK_URL=f"{slack.url}/hooks/test",
        )
        settings = load_settings(env=stack.env)
        registry = Registry(settings)

        first = stack.dags_test("retrain", "2026-01-13T03:00:00+00:00")
        out = first.stdout + first.stderr
        assert "DagRun Finished: dag_id=retrain" in out and "state=success" in out
        assert "gate PASSED" in out  # the markdown report is in the task log
        assert registry.aliases() == {c.ALIAS_CHAMPION: "1"}
        folder = registry.download_version("1", tmp_path / "v1")
        assert {p.name for p in folder.iterdir()} >= VERSION_FILES
        events = stack.asset_events("signalops/challenger_registered")
        assert events[-1]["version"] == "1" and events[-1]["alias"] == c.ALIAS_CHAMPION
        assert any("v1 registered" in json.dumps(r.body) for r in slack.requests)

        # Features shuffled everywhere before the holdout (the newest ~2.2 days): the model
        # learns noise, while the champion is judged on the same clean holdout rows.
        _shuffle_features(settings, pd.Timestamp(TRAIN_END - timedelta(days=2, hours=4)))
        second = stack.dags_test("retrain", "2026-01-14T03:00:00+00:00")
        out = second.stdout + second.stderr
        assert "state=success" in out and "gate REJECTED" in out
        assert registry.aliases() == {c.ALIAS_CHAMPION: "1"}  # nothing new registered
        run_dirs = sorted(
            (settings.state_dir / "retrain").iterdir(), key=lambda p: p.stat().st_mtime
        )
        report = json.loads((run_dirs[-1] / c.EVALUATION_JSON).read_text())
        assert not report["decision"]["passed"] and report["decision"]["action"] == "rejected"
        reasons = " ".join(report["decision"]["reasons"])
        assert "not_worse_than_champion" in reasons and "floor_roc_auc" in reasons
        assert report["models"]["champion"]["version"] == "1"
        assert any("rejected by the gate" in json.dumps(r.body) for r in slack.requests)
        rejected_run = registry.client.get_run(
            json.loads((run_dirs[-1] / rundir.STATE).read_text())["mlflow_run_id"]
        )
        assert rejected_run.data.tags[c.TAG_GATE] == "rejected"

        # Too little data: a clear refusal, the run skips, the alert goes out.
        before = len(slack.requests)
        third = stack.dags_test("retrain", "2026-01-15T03:00:00+00:00", {"window_days": 1})
        out = third.stdout + third.stderr
        assert "refusing to train" in out and "state=success" in out
        assert "up_for_retry" not in out
        assert any("too little data" in json.dumps(r.body) for r in slack.requests[before:])
