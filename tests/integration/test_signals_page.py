"""The Signals page in a real Airflow api-server, opened in a real browser.

State comes from the library's own functions, as the DAGs run them: a lake of synthetic
bars and features (the source shifts a day before its end), a champion and a challenger
(two retrain runs), the canary started and judged once on real traffic (the sidecar
serves historical feature rows, the outcomes join labels them), the GX gate's data docs,
three drift checks (the newest sees the shift: its Evidently report and its alert). Then
``airflow api-server`` (own AIRFLOW_HOME, SQLite, the simple auth manager) loads
``plugins/`` and an MLflow server serves the same store. The page and its JSON give nothing
without a login; with the api-server's JWT, headless Chromium shows the champion version,
the rollout step and the drift plot; every link on the page answers 200 (MLflow's through
its API: the UI routes by URL fragment); Browse → Signals in the Airflow UI frames the
page. The screenshot lands in the test's tmp dir (and at ``$SIGNALOPS_SCREENSHOT_TO``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from signalops.config import Settings
from signalops.registry import Registry
from signalops.training import retrain as steps
from tests.conftest import TRAIN_END, TRAIN_START, TRAIN_SYMBOLS, build_lake, training_settings
from tests.sidecar_process import free_port, running_sidecar, wait_http

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
SIGNAL = "direction_1h"
V1_END = TRAIN_END - timedelta(days=4)  # the models' data ends here; traffic comes after
V1_KEY, V2_KEY = "manual__2026-01-09T00:00:00+00:00", "manual__2026-01-09T06:00:00+00:00"


@dataclass
class Deployment:
    settings: Settings
    airflow: str
    mlflow: str
    tmp: Path

    def token(self) -> str:
        passwords = self.tmp / "airflow" / "passwords.json"
        password = json.loads(passwords.read_text())["admin"]
        r = httpx.post(
            f"{self.airflow}/auth/token",
            json={"username": "admin", "password": password},
            timeout=30,
        )
        assert r.status_code in (200, 201), r.text
        return str(r.json()["access_token"])


# The source's distribution shift starts a day before the lake ends: the newest drift window
# sees it, the two before do not. Both models train on the market before it.
SHIFT_AT = TRAIN_END - timedelta(days=1)
OVERRIDES = {
    "SIGNALOPS_MARKET__SYNTHETIC__SHIFT_AT": SHIFT_AT.isoformat(),
    "SIGNALOPS_SERVING__LOG_FLUSH_INTERVAL_S": "0.05",
    # Small canary thresholds: one batch of traffic is enough to judge the shadow step.
    "SIGNALOPS_ROLLOUT__MIN_STEP_MINUTES": "0",
    "SIGNALOPS_ROLLOUT__MIN_PREDICTIONS": "50",
    "SIGNALOPS_ROLLOUT__MIN_OUTCOMES": "100",
    "SIGNALOPS_ROLLOUT__MAX_LATENCY_RATIO": "20",  # latency is judged in the unit tests
    "SIGNALOPS_SERVING__RISK__MAX_TRADES_PER_DAY": "100000000",
}


def _send_traffic(settings: Settings, env: dict[str, str], tmp: Path, requests: int) -> None:
    """Historical feature rows (after the champion's training window) through the real
    sidecar: the champion answers, the challenger scores in shadow, both are logged."""
    from signalops.features.offline_store import OfflineStore

    store = OfflineStore(settings.lake_dir)
    names = list(store.read_spec("v1")["names"])
    rows = store.read("v1", start=V1_END, end=SHIFT_AT).dropna(subset=["label_up"])
    by_symbol = [group.sort_values("ts") for _, group in rows.groupby("symbol")]
    env = {**env, "SIGNALOPS_SERVING__PORT": str(free_port())}
    with running_sidecar(env, tmp, tmp / "sidecar.log") as (url, _), httpx.Client() as client:
        for i in range(requests):  # ten consecutive bars of one symbol each
            start = i // len(by_symbol) * 10
            chunk = by_symbol[i % len(by_symbol)].iloc[start : start + 10]
            body = {
                "symbol": chunk["symbol"].iloc[0],
                "features": chunk[names].to_dict("records"),
                "features_ts": [t.isoformat() for t in chunk["ts"]],
                "key": f"page-{i}",
            }
            r = client.post(f"{url}/v1/signals", json=body, timeout=30)
            assert r.status_code == 200, r.text
        time.sleep(0.6)  # the log ships every 50 ms; the writer inserts right after


def _drift_and_docs(settings: Settings) -> None:
    """The GX gate's data docs; three drift checks, the newest (shifted) one with its
    Evidently report and its alert, as the drift_monitor DAG makes them."""
    from signalops.alerts.ledger import deliver
    from signalops.data.collect import extract_bars
    from signalops.drift.alert import drift_alert
    from signalops.drift.monitor import load_champion, read_window, run_check
    from signalops.drift.records import mark_alerted, set_report_path
    from signalops.drift.report import write_report
    from signalops.validation.gate import gate_bars

    staged = extract_bars(settings, TRAIN_END - timedelta(hours=2), TRAIN_END)
    gate_bars(settings, staged.as_dict(), "signals-page")
    for hours in (48, 24, 0):
        check = run_check(settings, TRAIN_END - timedelta(hours=hours))
        assert check.status == "checked", check.summary()
    assert check.severity in ("medium", "high"), check.summary()
    champion = load_champion(settings, SIGNAL, settings.state_dir / "drift" / "champion")
    assert champion is not None
    names = list(champion.spec["names"])
    current = read_window(settings, champion.spec, TRAIN_END, settings.drift.window_bars, names)
    set_report_path(settings, check, str(write_report(settings, check, current, champion)))
    summary = check.as_dict()
    alert, key, window = drift_alert(settings, summary)
    assert deliver(alert, settings, kind="drift", key=key, window=window) == "sent"
    mark_alerted(settings, summary)


def _train(settings: Settings) -> None:
    """The lake, a champion and a challenger: the same recipe retrained (test_rollout's good
    challenger), so the canary's guards hold at the shadow step."""
    build_lake(settings, TRAIN_START, TRAIN_END)
    for key, params in ((V1_KEY, {}), (V2_KEY, {"force": True})):
        request = steps.plan_request(settings, {"end": V1_END.isoformat(), **params}, key)
        results = steps.run_all(settings, request)
        assert "register" in results, {k: v.summary for k, v in results.items()}


def _operate(settings: Settings, env: dict[str, str], tmp: Path) -> None:
    """As the DAGs go on: a canary judged once on real traffic, data docs, drift checks
    (the newest one shifted: its report and its alert)."""
    from signalops.rollout.canary import tick
    from signalops.rollout.outcomes import join_outcomes

    assert tick(settings)["action"] == "started"
    # The drift monitor works while the sidecar starts and serves (wall time).
    with ThreadPoolExecutor(1) as pool:
        drift = pool.submit(_drift_and_docs, settings)
        _send_traffic(settings, env, tmp, requests=30)
        drift.result()
    assert join_outcomes(settings)["joined"] > 0
    judged = tick(settings)
    assert judged["action"] == "advanced", judged


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    for path in (CHROMEDRIVER, CHROMIUM):
        if not path.exists():
            pytest.fail(f"{path} is missing: apt-get install chromium chromium-driver")
    tmp = tmp_path_factory.mktemp("signals_page")
    airflow_port, mlflow_port = free_port(), free_port()
    airflow_url, mlflow_url = f"http://127.0.0.1:{airflow_port}", f"http://127.0.0.1:{mlflow_port}"
    overrides = {
        **OVERRIDES,
        "SIGNALOPS_LINKS__AIRFLOW_URL": airflow_url,
        "SIGNALOPS_LINKS__MLFLOW_URL": mlflow_url,
    }
    settings = training_settings(tmp, **overrides)
    home = tmp / "airflow"
    (home / "dags").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALOPS_", "AIRFLOW"))}
    env.update(
        overrides,
        SIGNALOPS_STATE_DIR=str(settings.state_dir),
        SIGNALOPS_MARKET__SYMBOLS=TRAIN_SYMBOLS,
        SIGNALOPS_EVALUATION__BOOTSTRAP_SAMPLES="200",
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__API__PORT=str(airflow_port),
        AIRFLOW__API__BASE_URL=airflow_url,
        AIRFLOW__API_AUTH__JWT_SECRET="signals-page-test-jwt-secret-" + "0" * 40,
        AIRFLOW__API__SECRET_KEY="signals-page-test-key",
    )
    airflow = shutil.which("airflow", path=str(Path(sys.executable).parent))
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    assert airflow and mlflow
    api_log, mlflow_log = tmp / "api-server.log", tmp / "mlflow.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # Airflow migrates its metadata DB and starts while the pipeline makes its state
        # (the plugin reads that state per request); MLflow's server starts once the first
        # retrain has created its store (two processes creating one SQLite store would race).
        with open(api_log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    ["sh", "-c", f'"{airflow}" db migrate && exec "{airflow}" api-server '
                     f"--port {airflow_port} --workers 1"],
                    env=env,
                    cwd=tmp,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
        _train(settings)
        with open(mlflow_log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    [mlflow, "server", "--backend-store-uri", settings.mlflow_tracking_uri,
                     "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
                    # No job runner (its worker processes cost seconds of CPU at start).
                    env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                    cwd=tmp,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
        _operate(settings, env, tmp)
        wait_http(f"{airflow_url}/api/v2/monitor/health", procs[0], api_log, 180)
        deployment = Deployment(settings, airflow_url, mlflow_url, tmp)
        # The first page imports MLflow into the api-server (seconds on a busy machine).
        warm = httpx.get(
            f"{airflow_url}/signalops/api/signals/{SIGNAL}",
            headers={"Authorization": f"Bearer {deployment.token()}"},
            timeout=120,
        )
        assert warm.status_code == 200, warm.text[-2000:]
        wait_http(f"{mlflow_url}/health", procs[1], mlflow_log, 120)
        yield deployment
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


def test_no_data_without_a_login(deployment: Deployment) -> None:
    base = f"{deployment.airflow}/signalops"
    page = httpx.get(f"{base}/signals/{SIGNAL}", timeout=30)
    assert page.status_code == 307, page.text
    assert "/auth/login" in page.headers["location"]
    assert "champion" not in page.text
    for path in ("/api/signals", f"/api/signals/{SIGNAL}", "/", "/artifacts/state/drift"):
        r = httpx.get(f"{base}{path}", timeout=30)
        assert r.status_code in (307, 401), (path, r.status_code)
        assert "champion" not in r.text and "rollout" not in r.text
    bad = httpx.get(
        f"{base}/api/signals/{SIGNAL}", headers={"Authorization": "Bearer nope"}, timeout=30
    )
    assert bad.status_code in (401, 403) and "champion" not in bad.text
    forged = httpx.get(f"{base}/api/signals/{SIGNAL}", cookies={"_token": "nope"}, timeout=30)
    assert forged.status_code in (401, 403) and "champion" not in forged.text


def test_paths_cannot_escape(deployment: Deployment) -> None:
    auth = {"Authorization": f"Bearer {deployment.token()}"}
    base = f"{deployment.airflow}/signalops/artifacts"
    with httpx.Client(headers=auth, timeout=30) as client:
        for path, statuses in (
            ("/state/drift/%2e%2e/warehouse.db", (400,)),
            ("/state/warehouse.db", (404,)),
            ("/state/drift/..%2f..%2f..%2fetc%2fpasswd", (400, 404)),
            (f"/runs/{'0' * 32}/%2e%2e/%2e%2e/mlflow.db", (400,)),
            ("/runs/zzz/evaluation/evaluation.md", (400,)),
        ):
            r = client.get(f"{base}{path}")
            assert r.status_code in statuses, (path, r.status_code, r.text[:200])


def test_signals_page_in_a_browser(deployment: Deployment, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    token = deployment.token()
    auth = {"Authorization": f"Bearer {token}"}
    aliases = Registry(deployment.settings).aliases()
    api = f"{deployment.airflow}/signalops/api/signals/{SIGNAL}"
    data = httpx.get(api, headers=auth, timeout=30).json()
    assert {v["alias"]: v["version"] for v in data["versions"]} == aliases
    assert all(v["evaluation"]["passed"] and v["evaluation"]["rules"] for v in data["versions"])
    rollout = data["rollout"]
    assert (rollout["step"], rollout["status"]) == (1, "active")
    assert [h["event"] for h in rollout["history"]] == ["started", "advanced"]
    assert rollout["guards"], "the judged step's guard values"
    live = {m["version"]: m for m in data["live"]}
    assert set(live) == {aliases["champion"], aliases["challenger"]}
    assert all(m["predictions"] == 300 and m["outcomes"] > 0 for m in live.values())
    assert [d["severity"] for d in data["drift"]][:2] == ["none", "none"]
    assert data["drift"][-1]["drifted_features"], "the shifted window"
    assert {a["kind"] for a in data["alerts"]} >= {"drift", "rollout"}

    # The external views: Airflow lists the plugin's "Signals" entry and tabs (the UI shows
    # only views with a url_route).
    plugins = httpx.get(f"{deployment.airflow}/api/v2/plugins", headers=auth, timeout=30)
    ours = next(p for p in plugins.json()["plugins"] if p["name"] == "signalops")
    assert {(v["destination"], v["url_route"]) for v in ours["external_views"]} == {
        ("nav", "signals"),
        ("dag_run", "signals-dag-run"),
        ("task_instance", "signals-task-instance"),
    }
    assert ours["fastapi_apps"][0]["url_prefix"] == "/signalops"

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    wait = WebDriverWait(driver, 30)
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"{deployment.airflow}/api/v2/monitor/health")  # the origin, for the cookie
        driver.add_cookie({"name": "_token", "value": token, "path": "/"})
        driver.get(deployment.settings.signal_page_url(SIGNAL))
        card = driver.find_element(By.CSS_SELECTOR, "#version-champion .version")
        assert card.text == f"v{aliases['champion']}"
        assert "step 1" in driver.find_element(By.ID, "rollout-step").text
        plot = driver.find_element(By.CSS_SELECTOR, "svg.drift-plot")
        assert plot.is_displayed() and plot.size["height"] > 100
        assert len(plot.find_elements(By.TAG_NAME, "circle")) == 3
        assert len(driver.find_elements(By.CSS_SELECTOR, "#live tr")) == 1 + len(live)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, height + 140)  # the whole page in one screenshot
        shot = tmp_path / "signals-page.png"
        driver.save_screenshot(str(shot))
        links = driver.find_elements(By.TAG_NAME, "a")
        hrefs = sorted({str(a.get_attribute("href") or "") for a in links})

        # The Airflow UI: "Signals" under Browse opens the page in the UI's frame.
        driver.set_window_size(1280, 1000)
        driver.get(deployment.airflow)
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Browse']")))
        driver.find_element(By.CSS_SELECTOR, "button[aria-label='Browse']").click()
        item = "a[role='menuitem'][href='/plugin/signals']"
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, item))).click()
        frame = wait.until(ec.presence_of_element_located((By.TAG_NAME, "iframe")))
        assert str(frame.get_attribute("src")) == deployment.settings.signals_url
        driver.switch_to.frame(frame)
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Signals"))
        driver.switch_to.default_content()
        driver.save_screenshot(str(tmp_path / "airflow-ui-signals.png"))
    finally:
        driver.quit()
    if os.environ.get("SIGNALOPS_SCREENSHOT_TO"):  # docs/signals-page.png is made this way
        shutil.copyfile(shot, os.environ["SIGNALOPS_SCREENSHOT_TO"])

    kinds = {"mlflow": 0, "artifacts/runs": 0, "artifacts/state": 0, "/dags/retrain/runs/": 0}
    with httpx.Client(headers=auth, timeout=60) as client:
        for href in hrefs:
            assert href, "a link without an address"
            r = client.get(href)
            assert r.status_code == 200, (href, r.status_code, r.text[:300])
            for kind in kinds:
                kinds[kind] += kind in href or (kind == "mlflow" and deployment.mlflow in href)
            if href.startswith(deployment.mlflow):
                _check_mlflow_route(client, deployment.mlflow, href)
            if href.endswith("evaluation.md"):
                assert "gate" in r.text.lower()
            if href.endswith(".png"):
                assert r.content.startswith(b"\x89PNG")
            if "drift/reports/" in href:
                assert r.headers["content-type"].startswith("text/html") and "Drift" in r.text
    assert all(kinds.values()), kinds
    assert any("data_docs/index.html" in h for h in hrefs)
    assert any("drift/reports/" in h for h in hrefs)


def _check_mlflow_route(client: httpx.Client, mlflow: str, href: str) -> None:
    """The MLflow UI routes by the URL's fragment, which an HTTP GET does not send: ask its
    API for the model version or run the fragment names."""
    route = href.partition("#")[2]
    parts = route.strip("/").split("/")
    if parts[0] == "models" and len(parts) == 4:
        api = f"{mlflow}/api/2.0/mlflow/model-versions/get"
        r = client.get(api, params={"name": unquote(parts[1]), "version": parts[3]})
    elif parts[0] == "experiments" and len(parts) == 4:
        r = client.get(f"{mlflow}/api/2.0/mlflow/runs/get", params={"run_id": parts[3]})
        assert r.status_code == 200 and r.json()["run"]["info"]["experiment_id"] == parts[1]
    else:
        assert route == "", href  # the MLflow home
        return
    assert r.status_code == 200, (href, r.text[:300])


def test_metrics_route(deployment: Deployment) -> None:
    r = httpx.get(f"{deployment.airflow}/signalops/metrics", timeout=30)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("text/plain")
