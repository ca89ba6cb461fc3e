"""Who may see the Signals page: an Airflow user allowed to read DAGs.

``airflow_user`` checks the request with the api-server's own ``get_user`` dependency (its
JWT as a bearer token, or the UI's ``_token`` cookie) and Airflow's auth manager; a request
without one raises ``LoginRequired``, which the app (``signalops.cockpit.app``) answers
with a redirect to Airflow's login (pages) or a 401/403 (everything else). Airflow is
imported per request, never when the plugin is loaded.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request


class LoginRequired(Exception):
    """No Airflow user, or one who may not read DAGs (``status_code``: 401 or 403)."""

    def __init__(self, status_code: int, detail: str):
        self.status_code, self.detail = status_code, detail


async def airflow_user(request: Request) -> Any:
    """The Airflow user of the request (bearer JWT or ``_token`` cookie) allowed to read DAGs."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPAuthorizationCredentials

    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
        if scheme.lower() == "bearer" and token.strip()
        else None
    )
    try:
        user = await get_user(request, None, bearer)
    except HTTPException as exc:
        raise LoginRequired(exc.status_code, str(exc.detail)) from None
    if not get_auth_manager().is_authorized_dag(method="GET", user=user):
        raise LoginRequired(403, "this user may not read DAGs")
    return user
