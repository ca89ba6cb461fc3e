"""The sidecar as stock clients speak to it: ``tritonclient.http`` (the reference Open
Inference Protocol client) with binary tensors (its default) and with JSON tensors, in
FP32, FP64 and INT64, and MLflow's scoring client (``mlflow.deployments`` ``predict``
against ``/invocations``). A real sidecar process on a registered model; every answer is
checked against the ONNX model scored in this process on the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from signalops.features.offline_store import OfflineStore
from signalops.onnx_model import load_session, predict_onnx
from signalops.registry import Registry
from signalops.registry import contracts as c
from signalops.training import retrain as steps
from tests.conftest import copy_lake, fresh_pg_database
from tests.sidecar_process import free_port, running_sidecar

pytestmark = pytest.mark.integration

SIGNAL = "direction_1h"


@dataclass
class Served:
    url: str
    names: list[str]
    rows: np.ndarray  # float64 [n, width], real feature rows of the lake
    expected: np.ndarray  # the champion's P(up) for them, scored here


@pytest.fixture(scope="module")
def served(training_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("stock-clients")
    with fresh_pg_database("stock_wh") as warehouse_url:
        overrides = {"SIGNALOPS_WAREHOUSE__URL": warehouse_url}
        settings = copy_lake(training_lake, tmp, **overrides)
        steps.run_all(settings, steps.plan_request(settings, {}, run_key="v1"))
        names = list(OfflineStore(settings.lake_dir).read_spec("v1")["names"])
        frame = OfflineStore(settings.lake_dir).read("v1").dropna(subset=names).tail(64)
        rows = frame[names].to_numpy(dtype=np.float64)
        registry = Registry(settings)
        champion = registry.by_alias(c.ALIAS_CHAMPION)
        assert champion is not None
        onnx = registry.download_file(champion.version, c.ONNX_MODEL, tmp / "champion")
        expected = predict_onnx(load_session(onnx), rows)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALOPS_")}
        env.update(
            overrides,
            SIGNALOPS_STATE_DIR=str(settings.state_dir),
            SIGNALOPS_SERVING__PORT=str(free_port()),
        )
        with running_sidecar(env, tmp, tmp / "sidecar.log") as (url, _):
            yield Served(url, names, rows, np.asarray(expected, dtype=np.float64))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_tritonclient(served: Served, binary: bool, datatype: str) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(SIGNAL)
        meta = client.get_model_metadata(SIGNAL)
        assert meta["inputs"][0]["name"] == "features"
        x = served.rows.astype(np.float32 if datatype == "FP32" else np.float64)
        tensor = triton.InferInput("features", list(x.shape), datatype)
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
        result = client.infer(SIGNAL, [tensor], outputs=outputs, request_id="stock-1")
        probs = result.as_numpy("probabilities")
        assert probs.dtype == np.float32 and probs.shape == (len(x), 2)
        np.testing.assert_allclose(probs[:, 1], served.expected, atol=1e-6)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
        response = result.get_response()
        assert response["id"] == "stock-1" and response["model_name"] == SIGNAL
        # no outputs named: tritonclient asks for every output in binary
        plain = client.infer(SIGNAL, [tensor])
        np.testing.assert_allclose(
            plain.as_numpy("probabilities")[:, 1], served.expected, atol=1e-6
        )
    finally:
        client.close()


def test_tritonclient_int64(served: Served) -> None:
    """Integer tensors are accepted as values (here: the rows rounded)."""
    import tritonclient.http as triton

    x = np.rint(served.rows[:4]).astype(np.int64)
    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    try:
        tensor = triton.InferInput("features", list(x.shape), "INT64")
        tensor.set_data_from_numpy(x)
        probs = client.infer(SIGNAL, [tensor]).as_numpy("probabilities")
        assert probs.shape == (4, 2) and np.isfinite(probs).all()
    finally:
        client.close()


def test_binary_requests_that_lie_get_a_clear_4xx(served: Served) -> None:
    """A binary body whose sizes disagree with its header or shape: 400/422 saying which."""
    x = served.rows[:2].astype("<f4")
    width = x.shape[1]

    def post(header: dict, data: bytes, length: int | None = None) -> httpx.Response:
        import orjson

        head = orjson.dumps(header)
        n = len(head) if length is None else length
        return httpx.post(
            f"{served.url}/v2/models/{SIGNAL}/infer",
            content=head + data,
            headers={"Inference-Header-Content-Length": str(n)},
            timeout=10,
        )

    tensor = {"name": "features", "shape": [2, width], "datatype": "FP32"}
    ok = post({"inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}]}, x.tobytes())
    assert ok.status_code == 200 and len(ok.json()["outputs"][0]["data"]) == 4
    short = post(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}]}, x.tobytes()[:-4]
    )
    assert short.status_code == 422 and "binary_data_size says" in short.json()["message"]
    wrong = post({"inputs": [{**tensor, "parameters": {"binary_data_size": 12}}]}, x.tobytes())
    assert wrong.status_code == 422 and f"is {x.nbytes} bytes" in wrong.json()["message"]
    undeclared = post({"inputs": [{**tensor, "data": x.ravel().tolist()}]}, b"\x00" * 8)
    assert undeclared.status_code == 422 and "binary_data_size" in undeclared.json()["message"]
    beyond = post({"inputs": [tensor]}, x.tobytes(), length=10**6)
    assert beyond.status_code == 400 and "Inference-Header-Content-Length" in beyond.text
    nan = np.full_like(x, np.nan)
    bad = post(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": nan.nbytes}}]}, nan.tobytes()
    )
    assert bad.status_code == 422 and "not finite" in bad.json()["message"]


def test_mlflow_scoring_client(served: Served) -> None:
    """MLflow's own client for a scoring server (what `mlflow models predict` uses against
    `mlflow models serve`): /ping, /version, /invocations with a DataFrame."""
    import pandas as pd
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    host, port = served.url.removeprefix("http://").split(":")
    client = ScoringServerClient(host, int(port))
    client.wait_server_ready(timeout=10)
    assert client.get_version().startswith("signalops-sidecar")
    out = client.invoke(pd.DataFrame(served.rows[:8], columns=served.names))
    predictions = out["predictions"]
    assert len(predictions) == 8
    p_up = [row["p_up"] if isinstance(row, dict) else row for row in predictions]
    np.testing.assert_allclose(np.asarray(p_up, dtype=float), served.expected[:8], atol=1e-6)


def test_no_benchmark_route_in_production(served: Served) -> None:
    """``/null`` (the benchmark's baseline) exists only where serving.bench_null_route asks."""
    assert httpx.post(f"{served.url}/null", json={}, timeout=10).status_code == 404
    assert "/null" not in httpx.get(f"{served.url}/openapi.json", timeout=10).json()["paths"]


def test_every_scoring_version_has_its_error_series(served: Served) -> None:
    """Versions that scored expose signalops_prediction_errors_total at 0 (rates and the
    per-version error ratio see a zero, not an absent series)."""
    body = {
        "inputs": [
            {
                "name": "features",
                "shape": [1, len(served.names)],
                "datatype": "FP64",
                "data": served.rows[0].tolist(),
            }
        ]
    }
    assert httpx.post(f"{served.url}/v2/models/{SIGNAL}/infer", json=body).status_code == 200
    text = httpx.get(f"{served.url}/metrics", timeout=10).text
    for kind in ("predict", "input"):
        line = (
            f'signalops_prediction_errors_total{{kind="{kind}",role="champion",'
            f'signal="{SIGNAL}",version="1"}} 0.0'
        )
        assert line in text, [x for x in text.splitlines() if "prediction_errors" in x]
