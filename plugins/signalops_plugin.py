"""The signalops Airflow plugin: the Signals page in the Airflow UI.

A FastAPI app (``signalops.cockpit.app``) mounted by the api-server under ``/signalops``,
a "Signals" entry in the UI's Browse menu, and a "Signals" tab on every DAG run and task
instance, each showing the page in the UI's frame. The logic lives in
``include/signalops/cockpit``; this file only registers it. Loading it is cheap: the app
reads settings, the warehouse and MLflow per request, never at import.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from signalops.cockpit.app import URL_PREFIX, create_app

# Relative to the UI's <base href>, so the views follow AIRFLOW__API__BASE_URL's path.
_PAGE = f"{URL_PREFIX.lstrip('/')}/"


class SignalopsPlugin(AirflowPlugin):
    name = "signalops"
    fastapi_apps: list[Any] = [  # noqa: RUF012 (AirflowPlugin's own attribute)
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "signalops Signals"}
    ]
    # The UI shows a view only with a url_route, and each route must be unique.
    external_views: list[Any] = [  # noqa: RUF012
        {
            "name": "Signals",
            "href": _PAGE,
            "destination": "nav",
            "url_route": "signals",
            "category": "browse",
        },
        {
            "name": "Signals",
            "href": _PAGE,
            "destination": "dag_run",
            "url_route": "signals-dag-run",
        },
        {
            "name": "Signals",
            "href": _PAGE,
            "destination": "task_instance",
            "url_route": "signals-task-instance",
        },
    ]
