"""The Signals page: a FastAPI app the signalops Airflow plugin mounts under ``/signalops``.

Routes (relative to the mount point; alerts link to the first two):

| route | what |
| --- | --- |
| ``GET /`` | every signal: champion, challenger, rollout step, newest drift |
| ``GET /signals/{name}`` | a signal: versions + gate, rollout, drift (SVG), live metrics, alerts |
| ``GET /api/signals``, ``GET /api/signals/{name}`` | the same as JSON |
| ``GET /artifacts/state/{path}`` | a report under the state dir (Evidently, GX data docs) |
| ``GET /artifacts/runs/{run_id}/{path}`` | an MLflow artifact of a run (evaluation.md, SHAP plot) |
| ``GET /metrics`` | Prometheus exposition (``signalops.cockpit.exporter``), unauthenticated |

Every route but ``/metrics`` needs an Airflow user: the api-server's JWT as a bearer token
or the UI's ``_token`` cookie, checked by Airflow's own ``get_user`` dependency, and the
right to read DAGs. Without one, pages redirect to Airflow's login and everything else
answers 401 (403 for a bad token), with no data.

This module holds the routes and the checks on their paths; the user check is in
``signalops.cockpit.auth``, the HTML in ``signalops.cockpit.render`` and the data in
``signalops.cockpit.state``.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)

from signalops.cockpit import state
from signalops.cockpit.auth import LoginRequired, airflow_user
from signalops.cockpit.render import render_overview, render_signal
from signalops.cockpit.state_registry import mlflow_store_exists
from signalops.config import Settings, load_settings

log = logging.getLogger(__name__)

URL_PREFIX = "/signalops"
STATE_ROOTS = ("drift", "validation")  # what /artifacts/state serves (not the databases)
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
Authenticate = Callable[[Request], Awaitable[Any]]


def login_url(request: Request) -> str:
    """Airflow's login page, coming back to this page."""
    target = f"{URL_PREFIX}{request.url.path.removeprefix(URL_PREFIX)}"
    try:
        from airflow.api_fastapi.app import get_auth_manager

        return str(get_auth_manager().get_url_login(next_url=target))
    except Exception:  # no auth manager (outside the api-server)
        return f"/auth/login?next={quote(target)}"


def create_app(
    settings_loader: Callable[[], Settings] = load_settings,
    authenticate: Authenticate = airflow_user,
) -> FastAPI:
    """The app; ``settings_loader`` runs per request (settings are cheap and env-driven)."""
    app = FastAPI(
        title="signalops Signals",
        description="Champion, challenger, rollout, drift and live metrics of each signal.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    async def user(request: Request) -> Any:
        return await authenticate(request)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        page = request.url.path.rstrip("/").endswith(URL_PREFIX) or "/signals/" in request.url.path
        if page and "api" not in request.url.path.split("/") and exc.status_code == 401:
            return RedirectResponse(login_url(request), status_code=307)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get("/", response_class=HTMLResponse, dependencies=[Depends(user)])
    def overview_page() -> HTMLResponse:
        settings = settings_loader()
        return HTMLResponse(render_overview(settings, state.overview(settings)))

    @app.get("/signals/{name}", response_class=HTMLResponse, dependencies=[Depends(user)])
    def signal_page(name: str) -> HTMLResponse:
        settings = settings_loader()
        return HTMLResponse(render_signal(settings, state.signal_state(settings, name)))

    @app.get("/api/signals", dependencies=[Depends(user)])
    def signals_json() -> list[dict[str, Any]]:
        return [s.as_dict() for s in state.overview(settings_loader())]

    @app.get("/api/signals/{name}", dependencies=[Depends(user)])
    def signal_json(name: str) -> dict[str, Any]:
        return state.signal_state(settings_loader(), name).as_dict()

    @app.get("/artifacts/state/{path:path}", dependencies=[Depends(user)])
    def state_file(path: str) -> FileResponse:
        return FileResponse(resolve_state_file(settings_loader(), path), media_type=_media(path))

    @app.get("/artifacts/runs/{run_id}/{path:path}", dependencies=[Depends(user)])
    def run_artifact(run_id: str, path: str) -> Response:
        settings = settings_loader()
        parts = _safe_parts(path)
        if not RUN_ID.match(run_id):
            raise HTTPException(400, "not an MLflow run id")
        if not mlflow_store_exists(settings):
            raise HTTPException(404, "no MLflow store yet")
        from mlflow import MlflowClient

        client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
        with tempfile.TemporaryDirectory(prefix="signalops-artifact-") as tmp:
            try:
                local = Path(client.download_artifacts(run_id, "/".join(parts), tmp))
            except Exception as exc:  # unknown run or path
                raise HTTPException(404, f"no artifact {path} in run {run_id}") from exc
            if not local.is_file():
                raise HTTPException(404, f"{path} is not a file")
            return Response(local.read_bytes(), media_type=_media(path))

    @app.get("/metrics")
    def metrics() -> Response:
        from signalops.cockpit.exporter import metrics_payload

        body, content_type = metrics_payload(settings_loader())
        return Response(body, media_type=content_type)

    return app


def _safe_parts(path: str) -> list[str]:
    """The path's segments; 400 on anything that could climb out (``..``, absolute, NUL)."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise HTTPException(400, "bad path")
    if any(p in ("", ".", "..") for p in parts):
        raise HTTPException(400, "bad path")
    return parts


def resolve_state_file(settings: Settings, path: str) -> Path:
    """A file under one of ``STATE_ROOTS`` of the state dir; 400/404 for anything else."""
    parts = _safe_parts(path)
    if parts[0] not in STATE_ROOTS:
        raise HTTPException(404, "not a served report")
    root = settings.state_dir.resolve()
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(root / parts[0]) or not target.is_file():
        raise HTTPException(404, "no such report")
    return target


def _media(path: str) -> str:
    if path.endswith(".md"):
        return "text/plain; charset=utf-8"  # shown in the browser, not downloaded
    return mimetypes.guess_type(path)[0] or "application/octet-stream"
