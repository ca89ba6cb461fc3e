"""Names shared between retrain, the sidecar, the drift monitor and the rollout.

One name each, kept here (no MLflow import, so the sidecar and DAG files can read them
cheaply). A model version's artifacts live in one directory, ``MODEL_DIR`` of its run,
which is also a complete MLflow model (xgboost flavor, pyfunc), so ``mlflow models serve
-m models:/<signal>@champion`` works on the same version the sidecar serves.
"""

from __future__ import annotations

ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"
ALIAS_PREVIOUS_CHAMPION = "previous-champion"
ALIASES = (ALIAS_CHAMPION, ALIAS_CHALLENGER, ALIAS_PREVIOUS_CHAMPION)

MODEL_DIR = "model"  # run artifact directory registered as the version's source
ONNX_MODEL = "model.onnx"  # input "features" (float32 [n, k]), output "probabilities" [n, 2]
NATIVE_MODEL = "model.ubj"  # XGBoost's own format, written by mlflow.xgboost
FEATURE_SPEC = "feature_spec.json"  # feature-set version, ordered names, dtypes, horizon
REFERENCE_PROFILE = "reference_profile.json"  # drift reference (drift.profile)
EVALUATION_JSON = "evaluation.json"
EVALUATION_MD = "evaluation.md"
SHAP_JSON = "shap_importance.json"
SHAP_PLOT = "shap_importance.png"
PARITY_JSON = "parity.json"
BEST_PARAMS = "best_params.json"  # a tuned version: its study's best parameters (training.tune)

# Registered-model tag: the share of traffic the sidecar sends to the challenger ("0".."1").
CANARY_WEIGHT_TAG = "signalops.canary_weight"
# Registered-model tag per feature set (+ "." + version): the last tuning's best parameters
# (JSON), which later retrains train with (training.tune).
TUNED_PARAMS_TAG = "signalops.tuned_params"

# Run and model-version tags.
TAG_SNAPSHOT = "signalops.data_snapshot"
TAG_CODE_VERSION = "signalops.code_version"
TAG_PARITY_ERROR = "signalops.parity_max_abs_error"
TAG_PARITY = "signalops.parity"  # passed | failed
TAG_FEATURE_SET = "signalops.feature_set_version"
TAG_GATE = "signalops.gate"  # passed | rejected
TAG_GATE_REASONS = "signalops.gate_reasons"
TAG_TRAINING_KEY = "signalops.training_key"  # data snapshot + settings: retrain dedupe
TAG_RUN_KEY = "signalops.run_key"  # the Airflow run (or CLI run) that trained it
TAG_MODEL_VERSION = "signalops.model_version"  # on the run, once registered
TAG_STATUS_REASON = "signalops.status_reason"
TAG_PARAMS_SOURCE = "signalops.params_source"  # where the run's hyperparameters came from
TAG_TRIAL = "signalops.trial"  # a tuning trial's nested run: its number in the study
TAG_TRIAL_STATE = "signalops.trial_state"  # complete | pruned | failed
